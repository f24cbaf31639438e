"""What must never happen (rules page section 5), on its own vignettes and across every
vignette of the library (tests/vignettes/*.json, whoever wrote it)."""

from __future__ import annotations

import copy
import re
from functools import cache
from typing import Any

import pytest

from cards import Terminology
from conftest import (
    TOPIC_SYSTEM,
    VIGNETTES,
    assert_well_formed,
    card,
    evaluate,
    evaluate_vignette,
    load_vignette,
    resource,
)

TOPICS = {"tpi-safety", "tpi-eligibility", "pt-integration", "specialist-referral"}
SNOMED = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
CPT = "http://www.ama-assn.org/go/cpt"
TPI_CODES = {(CPT, "20552"), (CPT, "20553")}
LIPID_PANEL = {
    "coding": [
        {
            "system": "http://loinc.org",
            "code": "24331-1",
            "display": "Lipid 1996 panel - Serum or Plasma",
        }
    ],
    "text": "Lipid panel, fasting",
}
ALL = sorted(path.stem for path in VIGNETTES.glob("*.json"))
ORDER_HOOKS = [n for n in ALL if load_vignette(n)["hook"] in ("order-select", "order-sign")]
# The referral and specialty value sets by category (rules page section 3, "Whom to refer to").
SPECIALTIES = ("pain-medicine", "rehabilitation", "rheumatology", "neurology")


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


def rules(c: dict[str, Any]) -> list[str]:
    return c["extension"]["tpi-rules"]


def deletes(c: dict[str, Any]) -> list[str]:
    """The resourceIds a card's suggestions would delete."""
    return [
        a["resourceId"]
        for s in c.get("suggestions", [])
        for a in s["actions"]
        if a["type"] == "delete"
    ]


def tpi_order_ids(request: dict[str, Any]) -> set[str]:
    """References of the draft orders that are TPIs (CPT 20552 / 20553)."""
    return {
        f"ServiceRequest/{r['id']}"
        for e in request["context"].get("draftOrders", {}).get("entry", [])
        for r in [e["resource"]]
        if r["resourceType"] == "ServiceRequest"
        and {(c.get("system"), c.get("code")) for c in r["code"].get("coding", [])} & TPI_CODES
    }


@cache
def terminology() -> Terminology:
    return Terminology.load()


def user_specialties(request: dict[str, Any]) -> set[str]:
    """The referral categories of the ordering user's own specialty (PractitionerRole)."""
    role = request.get("prefetch", {}).get("practitionerRole")
    user = request["context"].get("userId", "")
    if not role or role.get("resourceType") != "PractitionerRole":
        return set()
    if user.startswith("PractitionerRole/") and user != f"PractitionerRole/{role['id']}":
        return set()
    codings = [c for s in role.get("specialty", []) for c in s.get("coding", [])]
    return {
        category
        for category in SPECIALTIES
        if any(
            terminology()[f"specialty-{category}"].contains(c.get("system"), c.get("code"))
            for c in codings
        )
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
    """Counterpart: select the TPI draft of the same request and cards appear. A first TPI
    (no session on record) with no PT in place: P1 at info (version 2: warning only for a
    repeat)."""
    request = load_vignette("never-tpi-draft-not-selected")
    request["context"]["selections"] = ["ServiceRequest/tpi-1"]
    response = evaluate(request)
    c = card(response, "pt-integration")
    assert c is not None
    assert_well_formed(c)
    assert c["indicator"] == "info"
    assert rules(c) == ["P1"]


def test_at_order_sign_every_draft_tpi_counts():
    """The same request sent as order-sign (no selections): every draft order counts, the TPI
    among them, so the advice appears (first TPI, no PT: P1 at info)."""
    request = load_vignette("never-tpi-draft-not-selected")
    request["hook"] = "order-sign"
    del request["context"]["selections"]
    c = card(evaluate(request), "pt-integration")
    assert c is not None
    assert_well_formed(c)
    assert (c["indicator"], rules(c)) == ("info", ["P1"])


@pytest.mark.parametrize("name", ORDER_HOOKS)
def test_the_same_story_with_a_lipid_panel_instead_of_the_tpi_gets_no_cards(name):
    """Every order-hook vignette, its TPI draft(s) recoded as a lipid panel: no card at all,
    whatever the record holds (section 5: no card on an order that is not a TPI)."""
    request = load_vignette(name)
    for entry in request["context"]["draftOrders"]["entry"]:
        order = entry["resource"]
        if f"ServiceRequest/{order['id']}" in tpi_order_ids(request):
            order["code"] = copy.deepcopy(LIPID_PANEL)
    assert evaluate(request) == {"cards": []}


# ---------------------------------------------------------------- critical only for S1/S2


def test_everything_but_infection_or_allergy_is_never_critical():
    """Apixaban, thrombocytopenia, steroid with uncontrolled diabetes, no qualifying diagnosis,
    fibromyalgia, three failed sessions (last 21 days ago), no PT, migraine, radiculopathy, a
    resolved cellulitis and a refuted lidocaine allergy: every topic speaks, none is critical,
    and neither S1 nor S2 is among the findings."""
    response = evaluate_vignette("never-everything-but-infection-or-allergy")
    assert {c["source"]["topic"]["code"] for c in response["cards"]} == TOPICS
    assert [c["indicator"] for c in response["cards"]].count("critical") == 0
    for topic in TOPICS:
        c = card(response, topic)
        assert c is not None
        assert_well_formed(c)
        assert c["indicator"] == "warning"
        assert not {"S1", "S2"} & set(rules(c))


def activate_cellulitis(request: dict[str, Any], code: str, display: str) -> None:
    """The resolved 2025 cellulitis made active again, with onset 4 days ago."""
    cellulitis = resource(request, "conditions", "cond-never-all-l03113")
    cellulitis["clinicalStatus"]["coding"][0].update(code="active", display="active")
    del cellulitis["abatementDateTime"]
    cellulitis["onsetDateTime"] = "2026-11-19"
    cellulitis["code"] = {"coding": [{"system": ICD, "code": code, "display": display}]}


def test_cellulitis_of_the_arm_before_a_neck_tpi_is_a_warning_and_hides_nothing():
    """The cellulitis of the right arm active again (onset 2026-11-19) and a neck TPI: S1 at
    warning (infection elsewhere, a known different region): no suggestion to remove the TPI,
    no critical card, and the other three topics still speak."""
    request = load_vignette("never-everything-but-infection-or-allergy")
    activate_cellulitis(request, "L03.113", "Cellulitis of right upper limb")
    response = evaluate(request)
    safety = card(response, "tpi-safety")
    assert safety is not None
    assert_well_formed(safety)
    assert safety["indicator"] == "warning"
    assert "S1" in rules(safety)
    assert "ServiceRequest/tpi-1" not in deletes(safety)
    assert "upper limb" in safety["detail"]
    assert all(c["indicator"] != "critical" for c in response["cards"])
    assert {c["source"]["topic"]["code"] for c in response["cards"]} == TOPICS


def test_cellulitis_of_the_neck_before_a_neck_tpi_is_critical_and_alone():
    """Counterpart: the same cellulitis coded at the neck (L03.221), where the TPI goes: S1
    critical. The response holds the safety card alone (precedence: the other topics are moot
    while the injection should not happen); it removes the TPI draft and, for the steroid with
    uncontrolled diabetes (S5), the triamcinolone draft: two suggestions, selectionBehavior
    any."""
    request = load_vignette("never-everything-but-infection-or-allergy")
    activate_cellulitis(request, "L03.221", "Cellulitis of neck")
    response = evaluate(request)
    assert len(response["cards"]) == 1
    safety = card(response, "tpi-safety")
    assert safety is not None
    assert_well_formed(safety)
    assert safety["indicator"] == "critical"
    assert {"S1", "S5"} <= set(rules(safety))
    assert sorted(deletes(safety)) == ["MedicationRequest/triam-1", "ServiceRequest/tpi-1"]
    assert safety["selectionBehavior"] == "any"


def test_confirmed_lidocaine_allergy_is_critical_and_hides_nothing():
    """Counterpart: the lidocaine allergy confirmed and active, with neither type nor
    criticality (severe by default: safety first): S2 critical. A critical S2 hides nothing
    (another injectate can be used): all four topics speak, only the safety card is critical,
    and it removes the lidocaine draft, never the TPI order."""
    request = load_vignette("never-everything-but-infection-or-allergy")
    allergy = resource(request, "allergies", "allergy-lidocaine-refuted")
    allergy["clinicalStatus"]["coding"][0].update(code="active", display="Active")
    allergy["verificationStatus"]["coding"][0].update(code="confirmed", display="Confirmed")
    allergy["code"]["text"] = "Lidocaine"
    response = evaluate(request)
    assert {c["source"]["topic"]["code"] for c in response["cards"]} == TOPICS
    safety = card(response, "tpi-safety")
    assert safety is not None
    assert_well_formed(safety)
    assert safety["indicator"] == "critical"
    assert "S2" in rules(safety)
    assert "MedicationRequest/lido-1" in deletes(safety)
    assert "ServiceRequest/tpi-1" not in deletes(safety)
    assert all(
        c["indicator"] != "critical"
        for c in response["cards"]
        if c["source"]["topic"]["code"] != "tpi-safety"
    )


# ---------------------------------------------------------------- the injectate, not the TPI


def test_anaphylaxis_to_xylocaine_removes_the_lidocaine_draft_not_the_tpi():
    """A first neck TPI for a woman whose allergy list says "Xylocaine" (text only, the brand)
    with anaphylaxis in 2014, a lidocaine draft in the order set: S2 critical, its one
    suggestion deletes MedicationRequest/lido-1; no card suggests removing the TPI order; the
    PT card (first TPI, no therapy: info) is still there."""
    response = evaluate_vignette("never-s2-xylocaine-anaphylaxis")
    safety = card(response, "tpi-safety")
    assert safety is not None
    assert_well_formed(safety)
    assert safety["indicator"] == "critical"
    assert rules(safety) == ["S2"]
    assert "lidocaine" in safety["summary"].lower()
    assert "anaphylaxis" in safety["detail"].lower()
    assert deletes(safety) == ["MedicationRequest/lido-1"]
    assert all("ServiceRequest/tpi-1" not in deletes(c) for c in response["cards"])
    pt = card(response, "pt-integration")
    assert pt is not None
    assert (pt["indicator"], rules(pt)) == ("info", ["P1"])


def test_an_anesthetic_allergy_status_alone_removes_no_draft():
    """Counterpart: no AllergyIntolerance, only Z88.4 (allergy status to an anesthetic agent,
    agent not named) on the problem list: S2 at warning ("check which agent"), and no draft is
    removed — neither the lidocaine nor the TPI."""
    request = load_vignette("never-s2-xylocaine-anaphylaxis")
    request["prefetch"]["allergies"]["entry"] = []
    request["prefetch"]["allergies"].pop("total", None)
    request["prefetch"]["conditions"]["entry"].append(
        {
            "resource": {
                "resourceType": "Condition",
                "id": "cond-never-xylocaine-z884",
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {
                    "coding": [
                        {
                            "system": ICD,
                            "code": "Z88.4",
                            "display": "Allergy status to anesthetic agent",
                        }
                    ]
                },
                "subject": {"reference": "Patient/never-xylocaine"},
                "recordedDate": "2015-01-10",
            }
        }
    )
    response = evaluate(request)
    safety = card(response, "tpi-safety")
    assert safety is not None
    assert_well_formed(safety)
    assert safety["indicator"] == "warning"
    assert rules(safety) == ["S2"]
    assert "suggestions" not in safety
    assert all(not deletes(c) for c in response["cards"])


# ---------------------------------------------------------------- not to one's own specialty


def test_a_rheumatologist_is_not_told_to_refer_to_rheumatology():
    """A rheumatologist (PractitionerRole specialty SNOMED 394810000) orders a neck TPI for her
    patient with fibromyalgia and coded neck myalgia, PT already under way: R3 (fibromyalgia)
    would suggest rheumatology, the user's own specialty; with its only candidate suppressed
    an info-level finding gives no card — and nothing else needs saying."""
    assert evaluate_vignette("never-rheumatologist-fibromyalgia-tpi") == {"cards": []}


def test_the_same_order_from_a_generalist_suggests_rheumatology():
    """Counterpart: the same order from a practitioner with no PractitionerRole: the referral
    card appears at info (R3 alone), recommending rheumatology."""
    request = load_vignette("never-rheumatologist-fibromyalgia-tpi")
    request["context"]["userId"] = "Practitioner/dr-adeyemi"
    del request["prefetch"]["practitionerRole"]
    response = evaluate(request)
    c = card(response, "specialist-referral")
    assert c is not None
    assert_well_formed(c)
    assert (c["indicator"], rules(c)) == ("info", ["R3"])
    rheumatology = terminology()["referral-rheumatology"]
    (s,) = c["suggestions"]
    assert s["isRecommended"] is True
    assert any(rheumatology.contains(system, code) for system, code in suggested_codings(c))


# ---------------------------------------------------------------- unknown is said as unknown


def test_missing_follow_up_is_said_missing_not_no_relief():
    """One TPI on 2026-09-28 with a baseline of 7 and no score since: the eligibility card says
    lasting relief is not documented (E5 at info, payer response unknown), names what exists
    (the baseline) and what is missing (any follow-up score); it never reports 0 % or 'no
    relief'; no referral (unknown is not non-response)."""
    response = evaluate_vignette("never-unknown-response-no-followup")
    assert card(response, "specialist-referral") is None
    eligibility = card(response, "tpi-eligibility")
    assert eligibility is not None
    assert_well_formed(eligibility)
    assert eligibility["indicator"] == "info"
    assert "E5" in rules(eligibility)
    assert "not documented" in eligibility["summary"].lower()
    detail = eligibility["detail"]
    assert "2026-09-28" in detail
    assert "baseline 7" in detail
    assert "no follow-up score" in detail.lower()
    for c in response["cards"]:
        text = (c["summary"] + " " + c["detail"]).lower()
        assert "no relief" not in text
        assert not re.search(r"(?<![\d.])0 ?%", text)


def test_missing_baseline_is_said_missing():
    """The only score moved to 45 days before the TPI: no baseline either (the 30 days before
    the session hold none); the card says so, still info, never 'no relief'."""
    request = load_vignette("never-unknown-response-no-followup")
    resource(request, "observations", "pain-2026-09-28")["effectiveDateTime"] = (
        "2026-08-14T09:20:00-05:00"
    )
    eligibility = card(evaluate(request), "tpi-eligibility")
    assert eligibility is not None
    assert_well_formed(eligibility)
    assert eligibility["indicator"] == "info"
    assert "E5" in rules(eligibility)
    detail = eligibility["detail"].lower()
    assert "not documented" in detail
    assert "no pain score before it" in detail
    assert "no relief" not in detail
    assert not re.search(r"(?<![\d.])0 ?%", detail)


# ---------------------------------------------------------------- no duplicate orders


def test_no_suggestion_duplicates_pt_or_pain_referral_in_the_drafts():
    """Drafts hold the TPI, a PT referral and a pain-medicine referral; two failed TPIs: no PT
    card (PT is being ordered), and the referral card offers PM&R only, recommended."""
    response = evaluate_vignette("never-draft-pt-and-pain-referral")
    assert card(response, "pt-integration") is None
    c = card(response, "specialist-referral")
    assert c is not None
    assert_well_formed(c)
    assert c["indicator"] == "warning"
    assert rules(c) == ["R1"]
    codes = [code for system, code in suggested_codings(c) if system == SNOMED]
    assert codes == ["306289000"]
    (s,) = c["suggestions"]
    assert s["isRecommended"] is True


# ---------------------------------------------------------------- across all vignettes


@pytest.mark.parametrize("name", ALL)
def test_critical_only_for_infection_or_allergy(name):
    """Only the safety card may be critical, and only for S1 or S2; a critical S1 card is
    alone in its response."""
    response = evaluate_vignette(name)
    for c in response["cards"]:
        if c["indicator"] == "critical":
            assert c["source"]["topic"]["code"] == "tpi-safety"
            assert {"S1", "S2"} & set(rules(c)), rules(c)
            if "S1" in rules(c) and "S2" not in rules(c):
                assert len(response["cards"]) == 1, "a critical S1 card must be sent alone"


@pytest.mark.parametrize("name", ALL)
def test_no_suggestion_duplicates_an_order_being_placed_or_active(name):
    """No created ServiceRequest repeats the code of a draft order or an active one."""
    request = load_vignette(name)
    existing = ordered_codings(request)
    for c in evaluate(request)["cards"]:
        assert not set(suggested_codings(c)) & existing, c["summary"]


@pytest.mark.parametrize("name", ALL)
def test_the_tpi_order_is_removed_only_for_infection_or_a_payer_limit(name):
    """A suggestion deletes a TPI draft only on a critical S1 safety card, or on an eligibility
    card with E3, E4 or E5 — never for an anesthetic allergy (the injectate must change)."""
    request = load_vignette(name)
    tpis = tpi_order_ids(request)
    for c in evaluate(request)["cards"]:
        if not set(deletes(c)) & tpis:
            continue
        topic = c["source"]["topic"]["code"]
        if topic == "tpi-safety":
            assert c["indicator"] == "critical" and "S1" in rules(c), rules(c)
        else:
            assert topic == "tpi-eligibility", topic
            assert {"E3", "E4", "E5"} & set(rules(c)), rules(c)


@pytest.mark.parametrize("name", ALL)
def test_no_referral_to_the_ordering_users_own_specialty(name):
    """No referral suggestion to a specialty the user's PractitionerRole already has."""
    request = load_vignette(name)
    own = user_specialties(request)
    for c in evaluate(request)["cards"]:
        for system, code in suggested_codings(c):
            for category in own:
                assert not terminology()[f"referral-{category}"].contains(system, code), (
                    category,
                    code,
                )


@pytest.mark.parametrize("name", ALL)
def test_cards_keep_the_promised_shape(name):
    """Every card: uuid, short summary, detail, indicator, labelled source with a known topic,
    https links, override reasons with display; suggestions with uuid and label and a
    selectionBehavior; at most one card per topic; no null or empty optional field; its rule
    ids in extension tpi-rules, sorted."""
    response = evaluate_vignette(name)
    assert set(response) == {"cards"} or "systemActions" in response
    seen_topics: list[str] = []
    uuids: list[str] = []
    for c in response["cards"]:
        assert_well_formed(c)
        assert not empty_values(c), empty_values(c)
        assert rules(c) == sorted(rules(c))
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
