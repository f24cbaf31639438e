"""Shared test helpers: run a vignette (a CDS Hooks request on disk) through the engine."""

from __future__ import annotations

import json
from datetime import date
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


def card(response: dict[str, Any], topic: str) -> dict[str, Any] | None:
    """The response's card for a topic code, or None; fails if the topic appears twice."""
    found = [c for c in response["cards"] if c["source"]["topic"]["code"] == topic]
    assert len(found) <= 1, f"more than one {topic} card"
    return found[0] if found else None


def topics(response: dict[str, Any]) -> set[str]:
    return {c["source"]["topic"]["code"] for c in response["cards"]}


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (a bare clone): shared fixtures not available")
    return SHARED
