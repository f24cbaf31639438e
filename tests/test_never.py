"""What must never happen (rules page section 5), on its own vignettes and across every
response-, pt-, referral- and never- vignette."""

from __future__ import annotations

import re
from typing import Any

import pytest

from conftest import (
    TOPIC_SYSTEM,
    VIGNETTES,
    card,
    evaluate,
    evaluate_vignette,
    load_vignette,
    resource,
)

TOPICS = {"tpi-safety", "tpi-eligibility", "pt-integration", "specialist-referral"}
SNOMED = "http://snomed.info/sct"
MINE = sorted(
    path.stem
    for prefix in ("response-", "pt-", "referral-", "never-")
    for path in VIGNETTES.glob(f"{prefix}*.json")
)


def suggested_codings(c: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for s in c.get("suggestions", []):
        for action in s["actions"]:
            if action["type"] == "create" and "code" in action["resource"]:
                out += [(x["system"], x["code"]) for x in action["resource"]["code"]["coding"]]
    return out


def ordered_codings(request: dict[str, Any]) -> set[tuple[str, str]]:
    """Codes of the orders being placed now and of the active orders already on record."""
    orders = [e["resource"] for e in request["context"].get("draftOrders", {}).get("entry", [])]
    orders += [
        e["resource"]
        for e in request["prefetch"]["serviceRequests"]["entry"]
        if e["resource"]["status"] == "active"
    ]
    return {
        (x["system"], x["code"])
        for r in orders
        if r["resourceType"] == "ServiceRequest"
        for x in r["code"]["coding"]
    }


def empty_values(value: Any, path: str = "") -> list[str]:
    """Paths of null, "", [] or {} anywhere inside a card."""
    if value is None or value in ("", [], {}):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in empty_values(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in empty_values(v, f"{path}[{i}]")]
    return []


# ---------------------------------------------------------------- not a TPI


def test_lipid_panel_order_gets_no_cards():
    """order-select of a lipid panel, for a patient with cellulitis, apixaban and two failed
    TPIs: not a TPI order, so exactly no advice."""
    assert evaluate_vignette("never-lipid-panel-order") == {"cards": []}


def test_tpi_draft_not_among_selections_gets_no_cards():
    """A TPI sits in the draft orders but the clinician selected the lipid panel: no cards."""
    assert evaluate_vignette("never-tpi-draft-not-selected") == {"cards": []}


def test_selecting_the_tpi_itself_gives_advice():
    """Counterpart: select the TPI draft of the same request and cards appear (no PT in place)."""
    request = load_vignette("never-tpi-draft-not-selected")
    request["context"]["selections"] = ["ServiceRequest/tpi-1"]
    c = card(evaluate(request), "pt-integration")
    assert c is not None
    assert c["indicator"] == "warning"


# ---------------------------------------------------------------- critical only for S1/S2


def test_everything_but_infection_or_allergy_is_never_critical():
    """Apixaban, thrombocytopenia, steroid with uncontrolled diabetes, no qualifying diagnosis,
    fibromyalgia, three failed sessions (last 21 days ago), no PT, migraine, radiculopathy, a
    resolved cellulitis and a refuted lidocaine allergy: every topic speaks, none is critical."""
    response = evaluate_vignette("never-everything-but-infection-or-allergy")
    assert {c["source"]["topic"]["code"] for c in response["cards"]} == TOPICS
    assert [c["indicator"] for c in response["cards"]].count("critical") == 0
    for topic in TOPICS:
        c = card(response, topic)
        assert c is not None
        assert c["indicator"] == "warning"


def test_active_cellulitis_makes_the_safety_card_critical_and_only_it():
    """Counterpart: the cellulitis active again (S1): the safety card is critical with a
    suggestion to remove the TPI draft; no other topic turns critical."""
    request = load_vignette("never-everything-but-infection-or-allergy")
    cellulitis = resource(request, "conditions", "cond-never-all-l03113")
    cellulitis["clinicalStatus"]["coding"][0].update(code="active", display="active")
    del cellulitis["abatementDateTime"]
    cellulitis["onsetDateTime"] = "2026-11-19"
    response = evaluate(request)
    safety = card(response, "tpi-safety")
    assert safety is not None
    assert safety["indicator"] == "critical"
    deletes = [
        a["resourceId"]
        for s in safety["suggestions"]
        for a in s["actions"]
        if a["type"] == "delete"
    ]
    assert "ServiceRequest/tpi-1" in deletes
    others = [c for c in response["cards"] if c is not safety]
    assert others
    assert all(c["indicator"] != "critical" for c in others)


def test_confirmed_lidocaine_allergy_makes_the_safety_card_critical():
    """Counterpart: the lidocaine allergy confirmed and active (S2): safety card critical."""
    request = load_vignette("never-everything-but-infection-or-allergy")
    allergy = resource(request, "allergies", "allergy-lidocaine-refuted")
    allergy["clinicalStatus"]["coding"][0].update(code="active", display="Active")
    allergy["verificationStatus"]["coding"][0].update(code="confirmed", display="Confirmed")
    allergy["code"]["text"] = "Lidocaine"
    response = evaluate(request)
    safety = card(response, "tpi-safety")
    assert safety is not None
    assert safety["indicator"] == "critical"
    assert all(
        c["indicator"] != "critical"
        for c in response["cards"]
        if c["source"]["topic"]["code"] != "tpi-safety"
    )


# ---------------------------------------------------------------- unknown is said as unknown


def test_missing_follow_up_is_said_missing_not_no_relief():
    """One TPI on 2026-09-28 with a baseline of 7 and no score since: the eligibility card says
    the follow-up is missing (info); it never reports 0 % or 'no relief'; no referral."""
    response = evaluate_vignette("never-unknown-response-no-followup")
    assert card(response, "specialist-referral") is None
    eligibility = card(response, "tpi-eligibility")
    assert eligibility is not None
    assert eligibility["indicator"] == "info"
    detail = eligibility["detail"]
    assert "missing" in detail.lower()
    assert "2026-09-28" in detail
    for c in response["cards"]:
        text = (c["summary"] + " " + c["detail"]).lower()
        assert "no relief" not in text
        assert not re.search(r"(?<![\d.])0 ?%", text)


def test_missing_baseline_is_said_missing():
    """The only score moved to 45 days before the TPI: no baseline either; still 'missing',
    still info."""
    request = load_vignette("never-unknown-response-no-followup")
    resource(request, "observations", "pain-2026-09-28")["effectiveDateTime"] = (
        "2026-08-14T09:20:00-05:00"
    )
    eligibility = card(evaluate(request), "tpi-eligibility")
    assert eligibility is not None
    assert eligibility["indicator"] == "info"
    assert "missing" in eligibility["detail"].lower()
    assert "no relief" not in eligibility["detail"].lower()


# ---------------------------------------------------------------- no duplicate orders


def test_no_suggestion_duplicates_pt_or_pain_referral_in_the_drafts():
    """Drafts hold the TPI, a PT referral and a pain-medicine referral; two failed TPIs: no PT
    card (PT is being ordered), and the referral card offers PM&R only, recommended."""
    response = evaluate_vignette("never-draft-pt-and-pain-referral")
    assert card(response, "pt-integration") is None
    c = card(response, "specialist-referral")
    assert c is not None
    assert c["indicator"] == "warning"
    codes = [code for system, code in suggested_codings(c) if system == SNOMED]
    assert codes == ["306289000"]
    (s,) = c["suggestions"]
    assert s["isRecommended"] is True


# ---------------------------------------------------------------- across all vignettes


@pytest.mark.parametrize("name", MINE)
def test_critical_only_on_the_safety_card(name):
    """Only S1/S2 (topic tpi-safety) may be critical."""
    for c in evaluate_vignette(name)["cards"]:
        if c["indicator"] == "critical":
            assert c["source"]["topic"]["code"] == "tpi-safety"


@pytest.mark.parametrize("name", MINE)
def test_no_suggestion_duplicates_an_order_being_placed_or_active(name):
    """No created ServiceRequest repeats the code of a draft order or an active one."""
    request = load_vignette(name)
    existing = ordered_codings(request)
    for c in evaluate(request)["cards"]:
        assert not set(suggested_codings(c)) & existing, c["summary"]


@pytest.mark.parametrize("name", MINE)
def test_cards_keep_the_promised_shape(name):
    """Every card: uuid, short summary, detail, indicator, labelled source with a known topic,
    https links, override reasons with display; suggestions with uuid and label and a
    selectionBehavior; at most one card per topic; no null or empty optional field."""
    response = evaluate_vignette(name)
    assert set(response) == {"cards"} or "systemActions" in response
    seen_topics: list[str] = []
    uuids: list[str] = []
    for c in response["cards"]:
        assert not empty_values(c), empty_values(c)
        uuids.append(c["uuid"])
        assert len(c["summary"]) < 140
        assert c["detail"].strip()
        assert c["indicator"] in {"info", "warning", "critical"}
        assert c["source"]["label"]
        assert c["source"]["topic"]["system"] == TOPIC_SYSTEM
        assert c["source"]["topic"]["code"] in TOPICS
        seen_topics.append(c["source"]["topic"]["code"])
        assert c["links"]
        for link in c["links"]:
            assert link["label"]
            assert link["url"].startswith("https://")
            assert link["type"] == "absolute"
        assert c["overrideReasons"]
        assert all(reason["display"] for reason in c["overrideReasons"])
        if "suggestions" in c:
            assert c["selectionBehavior"] in {"at-most-one", "any"}
            for s in c["suggestions"]:
                assert s["label"]
                uuids.append(s["uuid"])
    assert len(seen_topics) == len(set(seen_topics))
    assert len(uuids) == len(set(uuids))
