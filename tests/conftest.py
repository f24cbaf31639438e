"""Shared test helpers: run a vignette (a CDS Hooks request on disk) through the engine."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from cds_service.evaluation import evaluate_request
from cds_service.settings import EngineSettings

TESTS_DIR = Path(__file__).parent
VIGNETTES = TESTS_DIR / "vignettes"
SHARED = TESTS_DIR.parent.parent / "shared"
TODAY = date(2026, 11, 23)
TOPIC_SYSTEM = "urn:tpi-cds:topic"
TOPICS = {"tpi-safety", "tpi-eligibility", "pt-integration", "specialist-referral"}


class FixedToday(EngineSettings):
    """The vignettes are written for 2026-11-23: the service judges by that day in tests."""

    def today(self) -> date:
        return TODAY


def load_vignette(name: str) -> dict[str, Any]:
    """A vignette is a whole CDS Hooks request body, stored as readable FHIR JSON."""
    path = VIGNETTES / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def evaluate(
    request: dict[str, Any],
    *,
    today: date = TODAY,
    profile: str = "medicare",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The response body the service would send for this request."""
    settings = EngineSettings(profile=profile, policy_overrides=overrides or {})
    return evaluate_request(request, today=today, engine=settings.build_engine())


def evaluate_vignette(name: str, **kwargs: Any) -> dict[str, Any]:
    return evaluate(load_vignette(name), **kwargs)


def resource(request: dict[str, Any], key: str, rid: str) -> dict[str, Any]:
    """One resource of a vignette's prefetch, by key and id, to vary a story in place."""
    for entry in request["prefetch"][key]["entry"]:
        if entry["resource"]["id"] == rid:
            return entry["resource"]
    raise KeyError(f"{key}/{rid}")


def day(days_ago: int) -> str:
    """A date the vignettes' "today" minus some days, as FHIR writes it."""
    return (TODAY - timedelta(days=days_ago)).isoformat()


def resources(request: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The resources of one prefetch searchset (live objects: edit them in place)."""
    return [e["resource"] for e in request["prefetch"][key].get("entry", [])]


def add_resource(request: dict[str, Any], key: str, resource: dict[str, Any]) -> None:
    """Add a resource to a prefetch searchset (made if the key is absent)."""
    request["prefetch"].setdefault(key, {"resourceType": "Bundle", "type": "searchset"})
    request["prefetch"][key].setdefault("entry", []).append(
        {"resource": resource, "search": {"mode": "match"}}
    )


def remove_resource(request: dict[str, Any], key: str, resource: dict[str, Any]) -> None:
    entries = request["prefetch"][key]["entry"]
    request["prefetch"][key]["entry"] = [e for e in entries if e["resource"] is not resource]


def drafts(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in request["context"]["draftOrders"]["entry"]]


def mentions(text: str, *alternatives: str) -> bool:
    """Does the text name any of these words (case-insensitive)?"""
    low = text.lower()
    return any(a.lower() in low for a in alternatives)


def rules(c: dict[str, Any]) -> list[str]:
    """The rule ids a card rests on (its ``extension["tpi-rules"]``)."""
    return c["extension"]["tpi-rules"]


def card(response: dict[str, Any], topic: str) -> dict[str, Any] | None:
    """The response's card for a topic code, or None; fails if the topic appears twice."""
    found = [c for c in response["cards"] if c["source"]["topic"]["code"] == topic]
    assert len(found) <= 1, f"more than one {topic} card"
    return found[0] if found else None


def topic_card(request: dict[str, Any], topic: str, **kwargs: Any) -> dict[str, Any] | None:
    """A request's card of one topic, checked for shape (assert_well_formed), or None."""
    c = card(evaluate(request, **kwargs), topic)
    if c is not None:
        assert_well_formed(c)
    return c


def topics(response: dict[str, Any]) -> set[str]:
    return {c["source"]["topic"]["code"] for c in response["cards"]}


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (a bare clone): shared fixtures not available")
    return SHARED


def without_uuids(value: Any) -> Any:
    """A response with every uuid removed: what must match between two runs."""
    if isinstance(value, dict):
        return {k: without_uuids(v) for k, v in value.items() if k != "uuid"}
    if isinstance(value, list):
        return [without_uuids(v) for v in value]
    return value


def service_client(tmp_path: Path, **settings: Any) -> Any:
    """A Flask test client for the web service, judging by TODAY, storing under tmp_path."""
    from cds_service.app import create_app
    from cds_service.settings import ServiceSettings

    settings.setdefault("engine", FixedToday())
    settings.setdefault("data_dir", str(tmp_path))
    # The test client calls http://localhost/...: the service's own loopback address here.
    settings.setdefault("bind", "localhost:80")
    return create_app(ServiceSettings(**settings)).test_client()


def assert_well_formed(c: dict[str, Any]) -> None:
    """What the engine promises for every card (CDS Hooks 2.0 and the rules page, section 4)."""
    assert c["uuid"]
    assert 0 < len(c["summary"]) < 140
    assert c["detail"].strip()
    assert c["indicator"] in {"info", "warning", "critical"}
    assert c["source"]["label"]
    assert c["source"]["topic"]["system"] == TOPIC_SYSTEM
    assert c["source"]["topic"]["code"] in TOPICS
    assert c["links"]
    for link in c["links"]:
        assert link["url"].startswith("https://"), link
        assert link["label"]
    assert c["overrideReasons"]
    for reason in c["overrideReasons"]:
        assert reason["display"]
    if "suggestions" in c:
        assert c["suggestions"], "suggestions present but empty"
        assert c["selectionBehavior"] in {"at-most-one", "any"}
        for s in c["suggestions"]:
            assert s["uuid"]
            assert s["label"]
    for key, value in c.items():
        assert value is not None and value not in ("", [], {}), f"empty optional {key}"
    # No internal rule ids or page jargon in the summary.
    assert not re.search(r"\b[SEPR]\d\b", c["summary"]), c["summary"]
    assert "payer responder" not in c["summary"].lower()
    assert "payer non-responder" not in c["summary"].lower()
