"""Clinical vignettes for the tpi-safety topic (rules S1-S7, clinical-rules.md v2, section 3).

Each vignette in tests/vignettes/safety-*.json is one whole CDS Hooks request; small
variations (one status, one date, one code) are made here in Python. "Today" is 2026-11-23.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from conftest import (
    VIGNETTES,
    add_resource,
    assert_well_formed,
    card,
    day,
    drafts,
    evaluate,
    load_vignette,
    mentions,
    remove_resource,
    resources,
    rules,
    topic_card,
    topics,
)

SAFETY = "tpi-safety"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOCAL_DRUG_CODES = "urn:oid:1.2.840.114350.1.13.999.2.7.2.698288"
ANAPHYLAXIS = "39579001"
ANGIOEDEMA = "41291007"


# --------------------------------------------------------------------------- helpers


def one(request: dict[str, Any], key: str, code: str) -> dict[str, Any]:
    """The single prefetched resource carrying `code` in its code / medication coding."""
    found = []
    for r in resources(request, key):
        concept = r.get("code") or r.get("medicationCodeableConcept") or {}
        if any(c.get("code") == code for c in concept.get("coding", [])):
            found.append(r)
    assert len(found) == 1, f"expected one {code} in {key}"
    return found[0]


def draft(request: dict[str, Any], resource_id: str) -> dict[str, Any]:
    return next(r for r in drafts(request) if r["id"] == resource_id)


def add_draft(request: dict[str, Any], resource: dict[str, Any]) -> None:
    request["context"]["draftOrders"]["entry"].append({"resource": resource})


def remove_draft(request: dict[str, Any], resource_id: str) -> None:
    entries = request["context"]["draftOrders"]["entry"]
    kept = [e for e in entries if e["resource"]["id"] != resource_id]
    assert len(kept) == len(entries) - 1, f"no draft {resource_id}"
    request["context"]["draftOrders"]["entry"] = kept


def concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}]}


def clinical_status(code: str) -> dict[str, Any]:
    return {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": code}
        ]
    }


def condition(
    rid: str,
    system: str,
    code: str,
    display: str,
    *,
    onset: str | None = None,
    recorded: str | None = None,
    body_site: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An active, confirmed Condition as an EHR problem list sends it."""
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": rid,
        "clinicalStatus": clinical_status("active"),
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "confirmed",
                }
            ]
        },
        "code": concept(system, code, display),
    }
    if body_site is not None:
        resource["bodySite"] = body_site
    if onset is not None:
        resource["onsetDateTime"] = onset
    if recorded is not None:
        resource["recordedDate"] = recorded
    return resource


def add_condition(request: dict[str, Any], system: str, code: str, display: str, **kw: Any) -> None:
    rid = f"cond-added-{len(resources(request, 'conditions')) + 1}"
    add_resource(request, "conditions", condition(rid, system, code, display, **kw))


def set_code(resource: dict[str, Any], system: str, code: str, display: str) -> None:
    resource["code"] = concept(system, code, display)


def set_onset(resource: dict[str, Any], onset: str | None, recorded: str | None) -> None:
    """Replace a Condition's dates (None removes the element)."""
    for key in ("onsetDateTime", "onsetPeriod", "onsetString", "recordedDate"):
        resource.pop(key, None)
    if onset is not None:
        resource["onsetDateTime"] = onset
    if recorded is not None:
        resource["recordedDate"] = recorded


def lab(
    rid: str, code: str, display: str, days_ago: int, quantity: dict[str, Any]
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "category": [
            concept(
                "http://terminology.hl7.org/CodeSystem/observation-category",
                "laboratory",
                "Laboratory",
            )
        ],
        "code": concept(LOINC, code, display),
        "effectiveDateTime": f"{day(days_ago)}T08:05:00-05:00",
        "valueQuantity": quantity,
    }


def platelets(value: float, unit: str | None, days_ago: int, *, code: str = "777-3") -> dict:
    """A platelet count; `unit` goes in valueQuantity.code and .unit (None: no unit at all)."""
    displays = {
        "777-3": "Platelets [#/volume] in Blood by Automated count",
        "26515-7": "Platelets [#/volume] in Blood",
        "778-1": "Platelets [#/volume] in Blood by Manual count",
    }
    quantity: dict[str, Any] = {"value": value}
    if unit is not None:
        quantity.update(unit=unit, system="http://unitsofmeasure.org", code=unit)
    return lab(f"plt-{days_ago}-{value}", code, displays[code], days_ago, quantity)


def inr(value: float, days_ago: int, *, code: str = "6301-6") -> dict[str, Any]:
    displays = {
        "6301-6": "INR in Platelet poor plasma by Coagulation assay",
        "34714-6": "INR in Blood by Coagulation assay",
        "46418-0": "INR in Capillary blood by Coagulation assay",
    }
    quantity = {"value": value, "unit": "{INR}", "system": "http://unitsofmeasure.org"}
    return lab(f"inr-{days_ago}-{value}", code, displays[code], days_ago, quantity)


def active_med(rid: str, code: str, display: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": dict(concept(RXNORM, code, display), text=text),
        "authoredOn": day(120),
    }


def set_order_sites(request: dict[str, Any], *sites: dict[str, Any]) -> None:
    """The TPI order's bodySite list (no argument: the order names no site)."""
    order = draft(request, "tpi-1")
    if sites:
        order["bodySite"] = list(sites)
    else:
        order.pop("bodySite", None)


def safety(request: dict[str, Any], **kwargs: Any) -> dict[str, Any] | None:
    return topic_card(request, SAFETY, **kwargs)


def well_formed_response(request: dict[str, Any]) -> dict[str, Any]:
    response = evaluate(request)
    for c in response["cards"]:
        assert_well_formed(c)
    return response


def delete_targets(c: dict[str, Any]) -> list[str]:
    return [
        a.get("resourceId")
        for s in c.get("suggestions", [])
        for a in s["actions"]
        if a["type"] == "delete"
    ]


def assert_removes_tpi_order(c: dict[str, Any], order_id: str = "tpi-1") -> None:
    assert delete_targets(c) == [f"ServiceRequest/{order_id}"]


def assert_never_removes_the_tpi(c: dict[str, Any]) -> None:
    assert "ServiceRequest/tpi-1" not in delete_targets(c)


# Body sites (value set body-regions).
NECK = concept(SCT, "45048000", "Neck structure")
LOWER_BACK = concept(SCT, "37822005", "Lower back structure")
RIGHT_FOOT = concept(SCT, "7769000", "Right foot")
LEFT_FOOT = concept(SCT, "22335008", "Left foot")
FOOT = concept(SCT, "56459004", "Foot structure")
RIGHT_THIGH = concept(SCT, "11207009", "Structure of right thigh")
TRAPEZIUS = concept(SCT, "31764008", "Structure of trapezius muscle")


# --------------------------------------------------------------- S1 active infection
#
# Vignettes: safety-s1-abscess-lower-back-same-region (lumbar abscess 4 days old, lower-back
# TPI), safety-s1-toe-cellulitis-neck-tpi (right great-toe cellulitis 6 days old, bodySite
# right foot, sternocleidomastoid TPI), safety-s1-cellulitis-forearm (L03.113 3 days old, neck
# TPI), safety-s1-sepsis-order-sign (A41.9 2 days old, lower-back TPI at order-sign).


def abscess(request: dict[str, Any]) -> dict[str, Any]:
    return one(request, "conditions", "L02.212")


def toe_cellulitis(request: dict[str, Any]) -> dict[str, Any]:
    return one(request, "conditions", "1297310008")


def test_s1_abscess_at_the_injection_region_is_critical():
    """Lumbar abscess drained 4 days ago, TPI ordered for the lower back: do not inject,
    offer to remove the TPI order."""
    c = safety(load_vignette("safety-s1-abscess-lower-back-same-region"))
    assert c is not None
    assert c["indicator"] == "critical"
    assert rules(c) == ["S1"]
    assert mentions(c["detail"], "abscess")
    assert day(4) in c["detail"]
    assert_removes_tpi_order(c)
    assert c["selectionBehavior"] == "at-most-one"


def test_s1_critical_infection_card_is_the_only_card():
    """Precedence: with a critical S1 the response holds the safety card alone (no PT,
    eligibility or referral advice for an injection that should not happen)."""
    response = well_formed_response(load_vignette("safety-s1-abscess-lower-back-same-region"))
    assert topics(response) == {SAFETY}
    assert len(response["cards"]) == 1


def test_s1_without_the_infection_the_other_topics_come_back():
    """Control for the precedence test: the same patient once the abscess has resolved gets
    no safety card and the other topics' cards (here: no PT in place) are sent."""
    request = load_vignette("safety-s1-abscess-lower-back-same-region")
    abscess(request)["clinicalStatus"] = clinical_status("resolved")
    response = well_formed_response(request)
    assert SAFETY not in topics(response)
    assert "pt-integration" in topics(response)


@pytest.mark.parametrize(
    ("code", "display"),
    [("20552", "Trigger point injection, 1-2 muscles"), ("20553", "Trigger point injection, 3+")],
)
def test_s1_either_tpi_code_is_a_tpi_order(code, display):
    """A 20552 (1-2 muscles) or 20553 (3+ muscles) order at the abscess: critical either way."""
    request = load_vignette("safety-s1-abscess-lower-back-same-region")
    draft(request, "tpi-1")["code"]["coding"][0].update(code=code, display=display)
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"
    assert_removes_tpi_order(c)


def test_s1_cellulitis_of_the_forearm_is_a_warning_for_a_neck_tpi():
    """Cellulitis of the right upper limb (L03.113: the ICD-10-CM axis gives the region) and a
    neck TPI: a known, different region - a warning to consider deferring, no suggestion."""
    c = safety(load_vignette("safety-s1-cellulitis-forearm"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["S1"]
    assert mentions(c["summary"], "right upper limb")
    assert mentions(c["summary"], "defer")
    assert day(3) in c["detail"]
    assert "suggestions" not in c


def test_s1_toe_cellulitis_is_a_warning_for_a_neck_tpi():
    """Right great-toe cellulitis (bodySite right foot) and a sternocleidomastoid TPI: infection
    elsewhere (right lower limb), a warning with no suggestion."""
    c = safety(load_vignette("safety-s1-toe-cellulitis-neck-tpi"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["S1"]
    assert mentions(c["summary"], "right lower limb")
    assert mentions(c["detail"], "cellulitis")
    assert day(6) in c["detail"]
    assert "suggestions" not in c


def test_s1_infection_elsewhere_does_not_hide_the_other_topics():
    """A warning-level S1 is not "do not inject": the other topics still get their cards."""
    response = well_formed_response(load_vignette("safety-s1-toe-cellulitis-neck-tpi"))
    assert SAFETY in topics(response)
    assert "pt-integration" in topics(response)


def test_s1_infection_site_in_the_tpi_region_is_critical():
    """The same cellulitis recorded at the neck (bodySite) with a neck TPI: critical."""
    request = load_vignette("safety-s1-toe-cellulitis-neck-tpi")
    toe_cellulitis(request)["bodySite"] = [NECK]
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"
    assert_removes_tpi_order(c)


def test_s1_same_region_other_side_is_elsewhere():
    """Cellulitis of the left foot, TPI in the right thigh: the same region but known different
    sides - elsewhere (left lower limb), a warning."""
    request = load_vignette("safety-s1-toe-cellulitis-neck-tpi")
    toe_cellulitis(request)["bodySite"] = [LEFT_FOOT]
    set_order_sites(request, RIGHT_THIGH)
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert mentions(c["summary"], "left lower limb")
    assert "suggestions" not in c


def test_s1_unsided_site_in_the_tpi_region_is_critical():
    """Cellulitis of a foot with no side recorded, TPI in the right thigh: an unsided site
    matches either side of its region (it may be the same limb) - critical."""
    request = load_vignette("safety-s1-toe-cellulitis-neck-tpi")
    toe_cellulitis(request)["bodySite"] = [FOOT]
    set_order_sites(request, RIGHT_THIGH)
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"
    assert_removes_tpi_order(c)


def test_s1_infection_of_unknown_region_is_critical():
    """SNOMED "Cellulitis" with no bodySite (the code names no site): its region is unknown,
    so it may be at the injection site - critical."""
    request = load_vignette("safety-s1-toe-cellulitis-neck-tpi")
    cellulitis = toe_cellulitis(request)
    del cellulitis["bodySite"]
    set_code(cellulitis, SCT, "128045006", "Cellulitis (disorder)")
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"
    assert_removes_tpi_order(c)


def test_s1_infection_site_given_only_as_text_is_unknown_and_critical():
    """An infection bodySite sent as text only ("R great toe") has an unknown region."""
    request = load_vignette("safety-s1-toe-cellulitis-neck-tpi")
    toe_cellulitis(request)["bodySite"] = [{"text": "R great toe"}]
    set_code(toe_cellulitis(request), SCT, "128045006", "Cellulitis (disorder)")
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"


def test_s1_infection_with_one_unknown_site_is_unknown_and_critical():
    """Two infection sites, one not in body-regions: the region is known only when every
    site's is - critical."""
    request = load_vignette("safety-s1-toe-cellulitis-neck-tpi")
    cellulitis = toe_cellulitis(request)
    set_code(cellulitis, SCT, "128045006", "Cellulitis (disorder)")
    cellulitis["bodySite"] = [RIGHT_FOOT, {"text": "left side of neck"}]
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"


def test_s1_tpi_order_without_a_site_is_critical():
    """The toe cellulitis again, but the TPI order names no bodySite: the injection's region
    is unknown, so it may be at the infection - critical."""
    request = load_vignette("safety-s1-toe-cellulitis-neck-tpi")
    set_order_sites(request)
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"
    assert_removes_tpi_order(c)


@pytest.mark.parametrize(
    ("code", "display", "indicator"),
    [
        ("L03.221", "Cellulitis of neck", "critical"),
        ("L02.11", "Cutaneous abscess of neck", "critical"),
        ("L03.116", "Cellulitis of left lower limb", "warning"),
        ("L03.211", "Cellulitis of face", "warning"),
        ("L03.313", "Cellulitis of chest wall", "warning"),
    ],
)
def test_s1_icd_site_axis_gives_the_region(code, display, indicator):
    """An ICD-10-CM infection code without bodySite is placed by its site axis: at the neck
    (same region as the neck TPI) critical; limb, face or chest wall elsewhere, a warning."""
    request = load_vignette("safety-s1-cellulitis-forearm")
    set_code(one(request, "conditions", "L03.113"), ICD, code, display)
    c = safety(request)
    assert c is not None
    assert c["indicator"] == indicator


@pytest.mark.parametrize(
    ("code", "display"),
    [
        ("128045006", "Cellulitis (disorder)"),
        ("44653001", "Erysipelas (disorder)"),
        ("200658003", "Cellulitis and abscess of back (disorder)"),
        ("70759006", "Pyoderma (disorder)"),
    ],
)
def test_s1_snomed_coded_skin_infections_fire(code, display):
    """SNOMED-coded problem lists (as Synthea's): cellulitis, erysipelas, abscess, pyoderma."""
    request = load_vignette("safety-s1-abscess-lower-back-same-region")
    set_code(abscess(request), SCT, code, display)
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"
    assert rules(c) == ["S1"]


@pytest.mark.parametrize(
    ("code", "display"),
    [
        ("L02.91", "Cutaneous abscess, unspecified"),
        ("L01.00", "Impetigo, unspecified"),
        ("L08.9", "Local infection of the skin and subcutaneous tissue, unspecified"),
    ],
)
def test_s1_abscess_impetigo_and_other_local_infections_fire(code, display):
    """L02 abscess, L01 impetigo and L08 local skin infection count like L03 cellulitis."""
    request = load_vignette("safety-s1-abscess-lower-back-same-region")
    set_code(abscess(request), ICD, code, display)
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"


@pytest.mark.parametrize(("days_ago", "fires"), [(0, True), (30, True), (31, False)])
def test_s1_infection_counts_when_its_onset_is_within_30_days(days_ago, fires):
    """Onset 30 days ago is still recent (today - 30 included); 31 days ago it is not."""
    request = load_vignette("safety-s1-abscess-lower-back-same-region")
    set_onset(abscess(request), day(days_ago), day(days_ago))
    c = safety(request)
    assert (c is not None) is fires


def test_s1_old_cellulitis_still_active_on_the_problem_list_is_ignored():
    """A 2019 cellulitis never closed on the problem list is not a permanent stop."""
    request = load_vignette("safety-s1-abscess-lower-back-same-region")
    set_onset(abscess(request), "2019-06-14", "2019-06-14")
    response = well_formed_response(request)
    assert SAFETY not in topics(response)
    assert "pt-integration" in topics(response)


def test_s1_onset_decides_over_a_recent_recorded_date():
    """Onset 200 days ago, entered on the problem list 2 days ago: the onset decides - old."""
    request = load_vignette("safety-s1-abscess-lower-back-same-region")
    set_onset(abscess(request), day(200), day(2))
    assert safety(request) is None


@pytest.mark.parametrize(("days_ago", "fires"), [(10, True), (45, False)])
def test_s1_recorded_date_is_used_without_an_onset(days_ago, fires):
    """No onset: the recordedDate decides (10 days ago recent, 45 days ago not)."""
    request = load_vignette("safety-s1-abscess-lower-back-same-region")
    set_onset(abscess(request), None, day(days_ago))
    assert (safety(request) is not None) is fires


def test_s1_infection_with_neither_date_counts_as_recent():
    """No onset and no recordedDate: safety first, the infection counts as recent."""
    request = load_vignette("safety-s1-abscess-lower-back-same-region")
    set_onset(abscess(request), None, None)
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"


def test_s1_onset_as_text_counts_as_no_onset():
    """onsetString ("about a week ago") is no onset date: the recordedDate (3 days) decides."""
    request = load_vignette("safety-s1-abscess-lower-back-same-region")
    set_onset(abscess(request), None, day(3))
    abscess(request)["onsetString"] = "about a week ago"
    assert safety(request) is not None


def test_s1_onset_period_start_is_the_onset():
    """onsetPeriod.start 20 days ago (recorded 90 days ago): recent."""
    request = load_vignette("safety-s1-abscess-lower-back-same-region")
    set_onset(abscess(request), None, day(90))
    abscess(request)["onsetPeriod"] = {"start": day(20)}
    assert safety(request) is not None


def test_s1_resolved_cellulitis_is_not_a_contraindication():
    """Cellulitis treated months ago (clinicalStatus resolved, abatement recorded): no card."""
    assert safety(load_vignette("safety-s1-cellulitis-resolved")) is None


def test_s1_abatement_without_clinical_status_means_resolved():
    """An EHR that sends only abatementDateTime: the infection is over, no card."""
    request = load_vignette("safety-s1-cellulitis-resolved")
    del one(request, "conditions", "L03.113")["clinicalStatus"]
    assert safety(request) is None


def test_s1_cellulitis_without_clinical_status_counts_as_active():
    """No clinicalStatus and no abatement: the forearm cellulitis is taken as active."""
    request = load_vignette("safety-s1-cellulitis-forearm")
    del one(request, "conditions", "L03.113")["clinicalStatus"]
    c = safety(request)
    assert c is not None
    assert rules(c) == ["S1"]


@pytest.mark.parametrize(("verification", "fires"), [("provisional", True), ("refuted", False)])
def test_s1_provisional_infection_counts_refuted_does_not(verification, fires):
    """A provisional (suspected) abscess counts - safety first; a refuted one does not."""
    request = load_vignette("safety-s1-abscess-lower-back-same-region")
    abscess(request)["verificationStatus"]["coding"][0]["code"] = verification
    assert (safety(request) is not None) is fires


def test_s1_cellulitis_entered_in_error_is_ignored():
    """A cellulitis diagnosis entered in error is not an infection."""
    request = load_vignette("safety-s1-cellulitis-forearm")
    cond = one(request, "conditions", "L03.113")
    cond["verificationStatus"]["coding"][0]["code"] = "entered-in-error"
    del cond["clinicalStatus"]
    assert safety(request) is None


def test_s1_sepsis_at_order_sign_is_critical_and_alone():
    """Sepsis (A41.9) two days ago, TPI being signed: critical, remove the order, no other
    card."""
    request = load_vignette("safety-s1-sepsis-order-sign")
    assert request["hook"] == "order-sign"
    response = well_formed_response(request)
    assert topics(response) == {SAFETY}
    c = card(response, SAFETY)
    assert c["indicator"] == "critical"
    assert rules(c) == ["S1"]
    assert mentions(c["detail"], "sepsis")
    assert day(2) in c["detail"]
    assert_removes_tpi_order(c)


@pytest.mark.parametrize(
    ("system", "code", "display"),
    [
        (ICD, "A40.0", "Sepsis due to streptococcus, group A"),
        (ICD, "R65.20", "Severe sepsis without septic shock"),
        (SCT, "91302008", "Sepsis (disorder)"),
        (SCT, "770349000", "Sepsis caused by virus (disorder)"),
        (SCT, "76571007", "Septic shock (disorder)"),
    ],
)
def test_s1_other_sepsis_codes_are_critical(system, code, display):
    """Streptococcal sepsis, severe sepsis (R65.2x) and SNOMED-coded sepsis count like A41."""
    request = load_vignette("safety-s1-sepsis-order-sign")
    set_code(one(request, "conditions", "A41.9"), system, code, display)
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"
    assert_removes_tpi_order(c)


def test_s1_systemic_infection_is_critical_whatever_the_region():
    """Sepsis recorded with a bodySite far from the injection: systemic means critical."""
    request = load_vignette("safety-s1-sepsis-order-sign")
    one(request, "conditions", "A41.9")["bodySite"] = [RIGHT_FOOT]
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"


def test_s1_sepsis_six_weeks_ago_is_not_recent():
    """Sepsis with onset 42 days ago, still "active" on the list: not recent, no card."""
    request = load_vignette("safety-s1-sepsis-order-sign")
    set_onset(one(request, "conditions", "A41.9"), day(42), day(42))
    assert safety(request) is None


def test_no_cards_at_order_sign_without_a_tpi():
    """Order-sign with only a lidocaine order (no TPI) for the septic patient: no advice."""
    request = load_vignette("safety-s1-sepsis-order-sign")
    remove_draft(request, "tpi-1")
    assert evaluate(request) == {"cards": []}


def test_no_cards_when_the_selection_is_not_a_tpi():
    """Same infected patient, but the clinician selected only the lidocaine: no advice."""
    request = load_vignette("safety-s1-abscess-lower-back-same-region")
    request["context"]["selections"] = ["MedicationRequest/lido-1"]
    assert evaluate(request) == {"cards": []}


# ------------------------------------------------------ S2 local anaesthetic allergy
#
# Vignettes: safety-s2-lidocaine-allergy (RxNorm lidocaine, type allergy, anaphylaxis severe),
# safety-s2-xylocaine-anaphylaxis-free-text (text "Xylocaine (anaphylaxis)", no code, no type,
# no criticality), safety-s2-bupivacaine-text-allergy (text "Bupivacaine", hives),
# safety-s2-anesthetic-allergy-status (Z88.4 only). All have a lidocaine draft lido-1.


def xylocaine_allergy(request: dict[str, Any]) -> dict[str, Any]:
    return resources(request, "allergies")[0]


def make_mild(allergy: dict[str, Any], **fields: Any) -> None:
    """The allergy as a plain "Xylocaine" entry with a mild reaction, plus `fields`."""
    allergy["code"] = {"text": "Xylocaine"}
    allergy["reaction"] = [{"manifestation": [{"text": "nausea and light-headedness"}]}]
    allergy.update(fields)


def test_s2_coded_lidocaine_allergy_is_critical_and_removes_the_lidocaine_draft():
    """Anaphylaxis to lidocaine (RxNorm 6387), lidocaine drafted: critical; the suggestion
    removes the lidocaine draft, never the TPI order."""
    c = safety(load_vignette("safety-s2-lidocaine-allergy"))
    assert c is not None
    assert c["indicator"] == "critical"
    assert rules(c) == ["S2"]
    assert mentions(c["summary"], "lidocaine")
    assert delete_targets(c) == ["MedicationRequest/lido-1"]
    assert c["selectionBehavior"] == "at-most-one"


def test_s2_xylocaine_brand_in_free_text_is_critical():
    """ "Xylocaine (anaphylaxis)" typed as free text, no type and no criticality: the brand is
    lidocaine and the allergy counts as severe - critical, remove the lidocaine draft."""
    c = safety(load_vignette("safety-s2-xylocaine-anaphylaxis-free-text"))
    assert c is not None
    assert c["indicator"] == "critical"
    assert rules(c) == ["S2"]
    assert mentions(c["detail"], "lidocaine", "xylocaine")
    assert mentions(c["detail"], "saline", "dry needling")
    assert delete_targets(c) == ["MedicationRequest/lido-1"]


def test_s2_critical_allergy_hides_nothing():
    """A critical S2 is not "do not inject" (another injectate will do): the other topics'
    cards are still sent."""
    response = well_formed_response(load_vignette("safety-s2-xylocaine-anaphylaxis-free-text"))
    assert card(response, SAFETY)["indicator"] == "critical"
    assert "pt-integration" in topics(response)


def test_s2_allergy_without_type_or_criticality_is_severe():
    """No type, no criticality and a plain "Xylocaine" with a mild reaction: still severe."""
    request = load_vignette("safety-s2-xylocaine-anaphylaxis-free-text")
    make_mild(xylocaine_allergy(request))
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"


def test_s2_intolerance_is_a_warning_that_still_removes_the_lidocaine_draft():
    """Recorded as an intolerance (nausea): a warning; the lidocaine draft is still offered for
    removal, never the TPI."""
    request = load_vignette("safety-s2-xylocaine-anaphylaxis-free-text")
    make_mild(xylocaine_allergy(request), type="intolerance")
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["S2"]
    assert delete_targets(c) == ["MedicationRequest/lido-1"]


def test_s2_low_criticality_allergy_is_a_warning():
    """An allergy of criticality low: a warning."""
    request = load_vignette("safety-s2-xylocaine-anaphylaxis-free-text")
    make_mild(xylocaine_allergy(request), type="allergy", criticality="low")
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"


@pytest.mark.parametrize(
    "reaction",
    [
        {"manifestation": [concept(SCT, ANAPHYLAXIS, "Anaphylaxis (disorder)")]},
        {"manifestation": [concept(SCT, ANGIOEDEMA, "Angioedema (disorder)")]},
        {"manifestation": [{"text": "throat swelling"}], "severity": "severe"},
    ],
    ids=["anaphylaxis", "angioedema", "severe-reaction"],
)
def test_s2_severe_reaction_makes_a_low_criticality_intolerance_critical(reaction):
    """Intolerance of low criticality, but the reaction was anaphylaxis, angioedema or marked
    severe: severe allergy, critical."""
    request = load_vignette("safety-s2-xylocaine-anaphylaxis-free-text")
    make_mild(xylocaine_allergy(request), type="intolerance", criticality="low")
    xylocaine_allergy(request)["reaction"] = [reaction]
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"
    assert delete_targets(c) == ["MedicationRequest/lido-1"]


@pytest.mark.parametrize("text", ["Amide local anesthetics", "AMIDE LOCAL ANAESTHETIC"])
def test_s2_class_allergy_is_critical_and_removes_any_amide_draft(text):
    """Allergy to the class "amide local anesthetics" (text only): critical, and the lidocaine
    draft (an amide) is offered for removal."""
    request = load_vignette("safety-s2-xylocaine-anaphylaxis-free-text")
    xylocaine_allergy(request)["code"] = {"text": text}
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"
    assert mentions(c["detail"], "amide")
    assert delete_targets(c) == ["MedicationRequest/lido-1"]


@pytest.mark.parametrize(
    ("display", "removed"),
    [("AMIDE LOCAL ANESTHETICS", True), ("MARCAINE", False), ("Sensorcaine-MPF", False)],
)
def test_s2_class_or_brand_in_a_local_coding_display(display, removed):
    """An allergy sent with a local code whose display is the class or a bupivacaine brand
    (no text): matched; the lidocaine draft is removed only for the class."""
    request = load_vignette("safety-s2-xylocaine-anaphylaxis-free-text")
    xylocaine_allergy(request)["code"] = {
        "coding": [
            {"system": "urn:oid:1.2.840.114350.1.13.999.2.4.2", "code": "6071", "display": display}
        ]
    }
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"
    assert delete_targets(c) == (["MedicationRequest/lido-1"] if removed else [])


def test_s2_brand_named_draft_is_the_one_removed():
    """Lidocaine allergy; the anesthetic draft is "Xylocaine 1 %" with a local code: that draft
    is recognised as lidocaine and offered for removal."""
    request = load_vignette("safety-s2-lidocaine-allergy")
    draft(request, "lido-1")["medicationCodeableConcept"] = {
        "coding": [
            {"system": LOCAL_DRUG_CODES, "code": "20871", "display": "XYLOCAINE 1 % INJ SOLN"}
        ],
        "text": "Xylocaine 1 % injection",
    }
    c = safety(request)
    assert c is not None
    assert delete_targets(c) == ["MedicationRequest/lido-1"]


def test_s2_allergy_named_only_in_text_is_critical():
    """An allergy entered as free text "Bupivacaine" (no code, no criticality) counts; the
    lidocaine draft is another agent and is not removed, nor is the TPI."""
    c = safety(load_vignette("safety-s2-bupivacaine-text-allergy"))
    assert c is not None
    assert c["indicator"] == "critical"
    assert mentions(c["detail"], "bupivacaine")
    assert delete_targets(c) == []


def test_s2_only_the_draft_of_the_allergenic_agent_is_removed():
    """Bupivacaine allergy, bupivacaine and lidocaine both drafted: remove the bupivacaine
    draft only."""
    request = load_vignette("safety-s2-bupivacaine-text-allergy")
    bupi = copy.deepcopy(draft(request, "lido-1"))
    bupi["id"] = "bupi-1"
    bupi["medicationCodeableConcept"] = {
        "coding": [{"system": LOCAL_DRUG_CODES, "code": "20877", "display": "BUPIVACAINE 0.25%"}],
        "text": "bupivacaine 0.25 % injection",
    }
    add_draft(request, bupi)
    c = safety(request)
    assert c is not None
    assert delete_targets(c) == ["MedicationRequest/bupi-1"]


def test_s2_allergy_status_z88_4_alone_is_a_warning_without_suggestion():
    """Problem-list Z88.4 (agent not named), lidocaine drafted: a warning to review which agent;
    no draft is removed (the agent is unknown) and never the TPI."""
    c = safety(load_vignette("safety-s2-anesthetic-allergy-status"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["S2"]
    assert mentions(c["detail"], "Z88.4", "anesthetic", "anaesthetic")
    assert "suggestions" not in c


def test_s2_z88_4_with_a_named_severe_allergy_is_critical():
    """Z88.4 and an anaphylaxis to lidocaine on record: critical; the lidocaine draft goes."""
    request = load_vignette("safety-s2-lidocaine-allergy")
    add_condition(
        request, ICD, "Z88.4", "Allergy status to anesthetic agent", recorded="2021-06-02"
    )
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"
    assert delete_targets(c) == ["MedicationRequest/lido-1"]


@pytest.mark.parametrize(
    ("system", "code", "display"),
    [
        (RXNORM, "35780", "ropivacaine"),
        (SCT, "387150008", "Bupivacaine"),
        (SCT, "387480006", "Lidocaine"),
    ],
)
def test_s2_other_coded_amide_allergies_are_critical(system, code, display):
    """Anaphylaxis coded as ropivacaine (RxNorm) or as a SNOMED substance: critical."""
    request = load_vignette("safety-s2-lidocaine-allergy")
    resources(request, "allergies")[0]["code"] = concept(system, code, display)
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"
    assert mentions(c["detail"], display)
    assert_never_removes_the_tpi(c)


def test_s2_refuted_allergy_gives_nothing():
    """Allergy clinic refuted the lidocaine allergy: no safety card."""
    assert safety(load_vignette("safety-s2-lidocaine-allergy-refuted")) is None


@pytest.mark.parametrize("status", ["inactive", "resolved"])
def test_s2_allergy_no_longer_active_gives_nothing(status):
    """An allergy whose clinicalStatus is no longer active does not fire."""
    request = load_vignette("safety-s2-lidocaine-allergy")
    allergy = resources(request, "allergies")[0]
    allergy["clinicalStatus"]["coding"][0]["code"] = status
    assert safety(request) is None


def test_s2_allergy_entered_in_error_gives_nothing():
    """An allergy entered in error (no clinicalStatus, as FHIR requires) does not fire."""
    request = load_vignette("safety-s2-lidocaine-allergy")
    allergy = resources(request, "allergies")[0]
    del allergy["clinicalStatus"]
    allergy["verificationStatus"]["coding"][0]["code"] = "entered-in-error"
    assert safety(request) is None


def test_s2_allergy_without_clinical_status_counts_as_active():
    """A confirmed allergy sent without clinicalStatus is active."""
    request = load_vignette("safety-s2-lidocaine-allergy")
    del resources(request, "allergies")[0]["clinicalStatus"]
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"


# --------------------------------------------------------------- S3 anticoagulation


def apixaban_request() -> dict[str, Any]:
    return load_vignette("safety-s3-apixaban")


def test_s3_apixaban_alone_is_info_and_says_what_is_not_on_record():
    """Apixaban 5 mg (RxNorm 1364445) alone: info (a TPI is low-risk for bleeding); the card
    says there is no recent INR and no recent platelet count, and suggests nothing."""
    c = safety(apixaban_request())
    assert c is not None
    assert c["indicator"] == "info"
    assert rules(c) == ["S3"]
    assert mentions(c["summary"], "apixaban")
    assert mentions(c["detail"], "no INR")
    assert mentions(c["detail"], "no platelet count")
    assert "suggestions" not in c


@pytest.mark.parametrize("status", ["stopped", "completed", "entered-in-error", "cancelled"])
def test_s3_apixaban_no_longer_taken_gives_nothing(status):
    """A stopped or finished apixaban prescription is not an active anticoagulant."""
    request = apixaban_request()
    one(request, "medications", "1364445")["status"] = status
    assert safety(request) is None


def test_s3_apixaban_on_hold_still_counts():
    """An on-hold prescription is still an active medication (rule page, section 1)."""
    request = apixaban_request()
    one(request, "medications", "1364445")["status"] = "on-hold"
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "info"
    assert mentions(c["detail"], "on-hold")


def test_s3_warfarin_with_local_code_matched_by_text():
    """Warfarin sent with a local code and readable text only: S3 at info."""
    c = safety(load_vignette("safety-s3-warfarin-local-code"))
    assert c is not None
    assert c["indicator"] == "info"
    assert mentions(c["detail"], "warfarin")


def test_s3_clopidogrel_among_the_draft_orders_counts():
    """Clopidogrel being ordered in the same session (not selected, not yet active) counts."""
    request = load_vignette("safety-s3-clopidogrel-in-draft-orders")
    assert resources(request, "medications") == []
    assert request["context"]["selections"] == ["ServiceRequest/tpi-1"]
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "info"
    assert mentions(c["detail"], "clopidogrel")


def test_s3_clopidogrel_active_prescription_product_code():
    """Clopidogrel 75 mg (RxNorm 309362) as an active prescription: info."""
    request = load_vignette("safety-s3-clopidogrel-in-draft-orders")
    clop = draft(request, "clop-1")
    remove_draft(request, "clop-1")
    active = copy.deepcopy(clop)
    active["status"] = "active"
    active["id"] = "mr-clop-active"
    add_resource(request, "medications", active)
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "info"
    assert mentions(c["detail"], "clopidogrel")


def test_s3_long_term_anticoagulant_use_z79_01():
    """Z79.01 on the problem list (drug prescribed elsewhere): S3 at info."""
    c = safety(load_vignette("safety-s3-long-term-anticoagulant"))
    assert c is not None
    assert c["indicator"] == "info"
    assert rules(c) == ["S3"]
    assert mentions(c["detail"], "Z79.01", "anticoagula")


def test_s3_name_in_coding_display_only_counts():
    """A local code whose display names the drug (no text): matched by the display."""
    request = apixaban_request()
    med = one(request, "medications", "1364445")
    med["medicationCodeableConcept"] = {
        "coding": [
            {
                "system": LOCAL_DRUG_CODES,
                "code": "88120",
                "display": "APIXABAN 5 MG TABLET (ELIQUIS)",
            }
        ]
    }
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "info"


def test_s3_brand_name_only_counts():
    """A local code with only the brand in the text ("Xarelto 20 mg"): rivaroxaban."""
    request = apixaban_request()
    one(request, "medications", "1364445")["medicationCodeableConcept"] = {
        "coding": [{"system": LOCAL_DRUG_CODES, "code": "77311", "display": "XARELTO 20 MG TAB"}],
        "text": "Xarelto 20 mg tablet",
    }
    c = safety(request)
    assert c is not None
    assert mentions(c["detail"], "rivaroxaban")


def test_s3_long_term_antiplatelet_use_z79_02_alone_gives_nothing():
    """Z79.02 (long-term antithrombotics/antiplatelets) alone does not fire: it includes
    aspirin-only patients."""
    request = load_vignette("safety-s3-long-term-anticoagulant")
    set_code(
        one(request, "conditions", "Z79.01"),
        ICD,
        "Z79.02",
        "Long term (current) use of antithrombotics/antiplatelets",
    )
    assert safety(request) is None


def test_s3_z79_01_with_aspirin_is_info():
    """Z79.01 and aspirin: S3 fires from Z79.01, but a code is not an agent - aspirin is the
    only agent read from medications, so no combination: info."""
    request = load_vignette("safety-s3-long-term-anticoagulant")
    add_resource(
        request,
        "medications",
        active_med("mr-asa", "243670", "aspirin 81 MG Oral Tablet", "aspirin 81 mg tablet"),
    )
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "info"


def test_s3_aspirin_dipyridamole_gives_nothing():
    """Aspirin/dipyridamole (RxNorm 259081): neither ingredient is on the S3 list."""
    request = load_vignette("safety-s3-aspirin-only")
    med = one(request, "medications", "243670")
    med["medicationCodeableConcept"] = {
        "coding": [
            {
                "system": RXNORM,
                "code": "259081",
                "display": "12 HR aspirin 25 MG / dipyridamole 200 MG Extended Release Oral "
                "Capsule",
            }
        ],
        "text": "aspirin-dipyridamole ER 25-200 mg capsule",
    }
    assert safety(request) is None


def test_s3_aspirin_alone_gives_nothing():
    """Low-dose aspirin (and Z79.82) only: no bleeding card."""
    assert safety(load_vignette("safety-s3-aspirin-only")) is None


# S3 warnings: INR


def test_s3_warfarin_with_inr_above_3_is_a_warning():
    """Warfarin, INR 3.4 three days ago: warning, with the INR and its date."""
    c = safety(load_vignette("safety-s3-warfarin-inr-above-3"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["S3"]
    assert mentions(c["summary"], "INR 3.4")
    assert "3.4" in c["detail"]
    assert day(3) in c["detail"]


@pytest.mark.parametrize(("value", "level"), [(3.0, "info"), (3.01, "warning"), (2.4, "info")])
def test_s3_inr_threshold_is_above_3(value, level):
    """INR exactly 3.0 is not above 3.0 (info); 3.01 is (warning)."""
    request = load_vignette("safety-s3-warfarin-inr-above-3")
    one(request, "observations", "6301-6")["valueQuantity"]["value"] = value
    c = safety(request)
    assert c is not None
    assert c["indicator"] == level


@pytest.mark.parametrize(("days_ago", "level"), [(7, "warning"), (8, "info")])
def test_s3_inr_counts_within_7_days(days_ago, level):
    """An INR of 3.4 counts 7 days ago (today - 7 included), not 8 days ago."""
    request = load_vignette("safety-s3-warfarin-inr-above-3")
    one(request, "observations", "6301-6")["effectiveDateTime"] = f"{day(days_ago)}T08:20:00Z"
    c = safety(request)
    assert c is not None
    assert c["indicator"] == level


def test_s3_inr_older_than_7_days_is_reported_as_not_on_record():
    """INR 3.4 eight days ago: info, and the card says there is no INR in the last 7 days."""
    request = load_vignette("safety-s3-warfarin-inr-above-3")
    one(request, "observations", "6301-6")["effectiveDateTime"] = f"{day(8)}T08:20:00Z"
    c = safety(request)
    assert c is not None
    assert mentions(c["detail"], "no INR")


def test_s3_latest_inr_decides():
    """INR 3.4 three days ago, 2.6 yesterday: the latest (2.6) decides - info."""
    request = load_vignette("safety-s3-warfarin-inr-above-3")
    add_resource(request, "observations", inr(2.6, 1))
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "info"
    assert "2.6" in c["detail"]


@pytest.mark.parametrize("code", ["34714-6", "46418-0"])
def test_s3_other_inr_codes_count(code):
    """A whole-blood or point-of-care (capillary) INR of 3.6 counts like 6301-6."""
    request = load_vignette("safety-s3-warfarin-local-code")
    add_resource(request, "observations", inr(3.6, 2, code=code))
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"


def test_s3_preliminary_inr_is_ignored():
    """A preliminary INR result is not used."""
    request = load_vignette("safety-s3-warfarin-inr-above-3")
    one(request, "observations", "6301-6")["status"] = "preliminary"
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "info"


# S3 warnings: platelet count


@pytest.mark.parametrize(
    ("value", "unit"),
    [(42, "10*3/uL"), (42000, "/uL"), (42, "10*9/L"), (42, "K/uL"), (42, "10^3/uL")],
)
def test_s3_platelets_under_50_is_a_warning(value, unit):
    """Apixaban and a platelet count of 42 x 10^9/L 10 days ago, in any of the accepted units
    (/uL divided by 1000): S3 warning, and S4 fires for the low count too."""
    request = apixaban_request()
    add_resource(request, "observations", platelets(value, unit, 10))
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["S3", "S4"]
    assert "42" in c["detail"]
    assert day(10) in c["detail"]


@pytest.mark.parametrize(("value", "unit"), [(50, "10*3/uL"), (50000, "/uL")])
def test_s3_platelets_of_50_is_not_low(value, unit):
    """A count of exactly 50 x 10^9/L is not under 50: apixaban stays info, no S4."""
    request = apixaban_request()
    add_resource(request, "observations", platelets(value, unit, 10))
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "info"
    assert rules(c) == ["S3"]
    assert "50" in c["detail"]


@pytest.mark.parametrize("unit", ["%", "fL", None])
def test_s3_platelet_count_in_an_unknown_unit_is_not_used(unit):
    """A "platelet count" of 42 in % or fL or with no unit is not used: info, no count."""
    request = apixaban_request()
    add_resource(request, "observations", platelets(42, unit, 10))
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "info"
    assert mentions(c["detail"], "no platelet count")


def test_s3_platelet_unit_text_is_read_when_there_is_no_code():
    """valueQuantity with only `unit` "K/uL" (no UCUM code): read from the unit text."""
    request = apixaban_request()
    count = platelets(42, None, 10)
    count["valueQuantity"]["unit"] = "K/uL"
    add_resource(request, "observations", count)
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"


@pytest.mark.parametrize(("days_ago", "level"), [(30, "warning"), (31, "info")])
def test_s3_platelet_count_counts_within_30_days(days_ago, level):
    """A count of 42 counts 30 days ago (today - 30 included), not 31 days ago."""
    request = apixaban_request()
    add_resource(request, "observations", platelets(42, "10*3/uL", days_ago))
    c = safety(request)
    assert c is not None
    assert c["indicator"] == level


@pytest.mark.parametrize("code", ["26515-7", "778-1"])
def test_s3_other_platelet_codes_count(code):
    """Platelet counts coded 26515-7 or 778-1 (manual) count like 777-3."""
    request = apixaban_request()
    add_resource(request, "observations", platelets(42, "10*3/uL", 5, code=code))
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"


def test_s3_latest_usable_platelet_count_is_read():
    """42 x 10^9/L twenty days ago, then a "count" of 160 % two days ago: the unusable one is
    skipped and the latest usable count (42) is read - warning."""
    request = apixaban_request()
    add_resource(request, "observations", platelets(42, "10*3/uL", 20))
    add_resource(request, "observations", platelets(160, "%", 2))
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert day(20) in c["detail"]


def test_s3_latest_platelet_count_decides():
    """42 twenty days ago, 160 two days ago: the latest count decides - info."""
    request = apixaban_request()
    add_resource(request, "observations", platelets(42, "10*3/uL", 20))
    add_resource(request, "observations", platelets(160, "10*3/uL", 2))
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "info"
    assert rules(c) == ["S3"]


# S3 warnings: two antithrombotic agents


def test_s3_aspirin_and_clopidogrel_is_a_warning():
    """Dual antiplatelet therapy after a stent (aspirin 81 mg + clopidogrel 75 mg): aspirin
    counts as the second agent - warning naming both."""
    c = safety(load_vignette("safety-s3-aspirin-clopidogrel-after-stent"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["S3"]
    assert mentions(c["detail"], "clopidogrel")
    assert mentions(c["detail"], "aspirin")


def test_s3_aspirin_in_a_combination_product_counts_as_an_agent():
    """Clopidogrel and aspirin/dipyridamole (RxNorm 259081): aspirin is the second agent."""
    request = load_vignette("safety-s3-aspirin-clopidogrel-after-stent")
    one(request, "medications", "243670")["medicationCodeableConcept"] = {
        "coding": [
            {
                "system": RXNORM,
                "code": "259081",
                "display": "12 HR aspirin 25 MG / dipyridamole 200 MG Extended Release Oral "
                "Capsule",
            }
        ],
        "text": "aspirin-dipyridamole ER 25-200 mg capsule",
    }
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"


def test_s3_clopidogrel_alone_after_stopping_aspirin_is_info():
    """The same patient after aspirin was stopped: one agent, info."""
    request = load_vignette("safety-s3-aspirin-clopidogrel-after-stent")
    one(request, "medications", "243670")["status"] = "stopped"
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "info"


def test_s3_drafted_clopidogrel_with_active_aspirin_is_a_warning():
    """Aspirin active, clopidogrel being ordered in the same session: two agents at once."""
    request = load_vignette("safety-s3-clopidogrel-in-draft-orders")
    add_resource(
        request,
        "medications",
        active_med("mr-asa", "243670", "aspirin 81 MG Oral Tablet", "aspirin 81 mg tablet"),
    )
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"


def test_s3_brand_and_ingredient_are_one_agent():
    """Apixaban 5 mg and an Eliquis prescription (duplicate entries, one drug): one agent, info."""
    request = apixaban_request()
    add_resource(
        request,
        "medications",
        active_med(
            "mr-eliquis",
            "1364447",
            "apixaban 5 MG Oral Tablet [Eliquis]",
            "Eliquis 5 mg tablet",
        ),
    )
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "info"


def test_s3_two_anticoagulants_at_once_is_a_warning():
    """Warfarin still active while apixaban was started (a switch in progress): warning."""
    request = apixaban_request()
    add_resource(
        request,
        "medications",
        active_med("mr-warf", "855332", "warfarin sodium 5 MG Oral Tablet", "warfarin 5 mg"),
    )
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"


# S3 warnings: severe liver or kidney disease, non-compressible site


@pytest.mark.parametrize(
    ("system", "code", "display"),
    [
        (ICD, "K74.60", "Unspecified cirrhosis of liver"),
        (ICD, "K70.30", "Alcoholic cirrhosis of liver without ascites"),
        (ICD, "N18.5", "Chronic kidney disease, stage 5"),
        (ICD, "N18.6", "End stage renal disease"),
        (ICD, "Z99.2", "Dependence on renal dialysis"),
        (SCT, "19943007", "Cirrhosis of liver (disorder)"),
        (SCT, "433146000", "Chronic kidney disease stage 5 (disorder)"),
    ],
)
def test_s3_severe_liver_or_kidney_disease_is_a_warning(system, code, display):
    """Apixaban with cirrhosis or CKD 4-5 / dialysis (ICD-10-CM or SNOMED CT): warning, naming
    the disease."""
    request = apixaban_request()
    add_condition(request, system, code, display, onset="2023-02-01")
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["S3"]
    assert mentions(c["detail"], display.split(" (")[0])


def test_s3_resolved_kidney_failure_does_not_raise_the_risk():
    """CKD stage 5 marked inactive (after a kidney transplant): apixaban stays info."""
    request = apixaban_request()
    add_condition(request, ICD, "N18.5", "Chronic kidney disease, stage 5", onset="2019-02-01")
    one(request, "conditions", "N18.5")["clinicalStatus"] = clinical_status("inactive")
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "info"


def test_s3_quadratus_lumborum_site_is_a_warning():
    """Apixaban and a TPI into quadratus lumborum (cannot be compressed): warning naming it."""
    c = safety(load_vignette("safety-s3-apixaban-quadratus-lumborum"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["S3"]
    assert mentions(c["detail"], "quadratus lumborum")


def test_s3_iliopsoas_site_is_a_warning():
    """Apixaban and an iliopsoas TPI: warning."""
    request = load_vignette("safety-s3-apixaban-quadratus-lumborum")
    set_order_sites(request, concept(SCT, "68455001", "Structure of iliopsoas muscle"))
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"


def test_s3_compressible_lower_back_site_is_info():
    """The same patient with the TPI at the lower back (compressible): info."""
    request = load_vignette("safety-s3-apixaban-quadratus-lumborum")
    set_order_sites(request, LOWER_BACK)
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "info"


def test_s3_deep_site_without_an_antithrombotic_gives_nothing():
    """Quadratus lumborum TPI for a patient on no anticoagulant: no safety card."""
    request = load_vignette("safety-s3-apixaban-quadratus-lumborum")
    one(request, "medications", "1364445")["status"] = "stopped"
    assert safety(request) is None


# ------------------------------------------------------------- S4 bleeding disorders


def test_s4_hemophilia_a_is_a_warning():
    """Haemophilia A (D66): defer pending haematology; warning, not critical."""
    c = safety(load_vignette("safety-s4-hemophilia-a"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["S4"]
    assert mentions(c["detail"], "D66", "factor VIII", "hemophilia", "haemophilia")


@pytest.mark.parametrize(
    ("system", "code", "display"),
    [
        (ICD, "D68.0", "Von Willebrand disease"),
        (ICD, "D69.1", "Qualitative platelet defects"),
        (ICD, "D69.9", "Hemorrhagic condition, unspecified"),
        (SCT, "90935002", "Hemophilia (disorder)"),
        (SCT, "128105004", "von Willebrand disorder (disorder)"),
    ],
)
def test_s4_other_bleeding_disorders_are_warnings(system, code, display):
    """Von Willebrand disease, platelet function defects, other hemorrhagic conditions, and the
    SNOMED-coded hemophilia / von Willebrand disorder: warning."""
    request = load_vignette("safety-s4-hemophilia-a")
    set_code(one(request, "conditions", "D66"), system, code, display)
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["S4"]


@pytest.mark.parametrize(
    ("code", "display", "fires"),
    [
        ("D68", "Other coagulation defects", True),
        ("D65", "Disseminated intravascular coagulation [defibrination syndrome]", True),
        ("D69", "Purpura and other hemorrhagic conditions", False),
    ],
)
def test_s4_category_headers_d65_to_d68_count_d69_does_not(code, display, fires):
    """A bare header code: D65-D68 are bleeding disorders; D69 (mostly purpura) is not."""
    request = load_vignette("safety-s4-hemophilia-a")
    set_code(one(request, "conditions", "D66"), ICD, code, display)
    c = safety(request)
    assert (c is not None) is fires


def test_s4_thrombocytopenia_with_a_stable_count_is_info():
    """Chronic ITP (D69.3) with a platelet count of 120 two weeks ago: info, showing the count
    and its date."""
    c = safety(load_vignette("safety-s4-itp-stable-platelets"))
    assert c is not None
    assert c["indicator"] == "info"
    assert rules(c) == ["S4"]
    assert "120" in c["detail"]
    assert day(14) in c["detail"]


def test_s4_thrombocytopenia_without_a_recent_count_is_a_warning():
    """The same ITP with no platelet count on record: warning, "check a platelet count"."""
    request = load_vignette("safety-s4-itp-stable-platelets")
    remove_resource(request, "observations", one(request, "observations", "777-3"))
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert mentions(c["detail"], "check a platelet count")


@pytest.mark.parametrize(("days_ago", "level"), [(30, "info"), (31, "warning")])
def test_s4_stable_count_must_be_within_30_days(days_ago, level):
    """A count of 120 taken 30 days ago still makes it info; 31 days ago it does not."""
    request = load_vignette("safety-s4-itp-stable-platelets")
    count = one(request, "observations", "777-3")
    count["effectiveDateTime"] = f"{day(days_ago)}T08:05:00-05:00"
    c = safety(request)
    assert c is not None
    assert c["indicator"] == level


@pytest.mark.parametrize(("value", "level"), [(50, "info"), (49, "warning")])
def test_s4_thrombocytopenia_count_threshold_is_50(value, level):
    """ITP with a count of 50 is info; 49 is a warning."""
    request = load_vignette("safety-s4-itp-stable-platelets")
    one(request, "observations", "777-3")["valueQuantity"]["value"] = value
    c = safety(request)
    assert c is not None
    assert c["indicator"] == level


def test_s4_snomed_thrombocytopenia_with_a_stable_count_is_info():
    """A SNOMED-coded thrombocytopenic disorder with a count of 120: info."""
    request = load_vignette("safety-s4-itp-stable-platelets")
    set_code(one(request, "conditions", "D69.3"), SCT, "302215000", "Thrombocytopenic disorder")
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "info"


def test_s4_thrombocytopenia_with_another_bleeding_disorder_is_a_warning():
    """ITP with a stable count but also von Willebrand disease: warning."""
    request = load_vignette("safety-s4-itp-stable-platelets")
    add_condition(request, ICD, "D68.0", "Von Willebrand disease", onset="2001-03-02")
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"


def test_s4_low_platelet_count_without_a_diagnosis_is_a_warning():
    """No bleeding diagnosis, no anticoagulant, platelets 38 eight days ago: warning."""
    request = load_vignette("safety-s4-itp-stable-platelets")
    remove_resource(request, "conditions", one(request, "conditions", "D69.3"))
    count = one(request, "observations", "777-3")
    count["valueQuantity"]["value"] = 38
    count["effectiveDateTime"] = f"{day(8)}T08:05:00-05:00"
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["S4"]
    assert "38" in c["detail"]
    assert day(8) in c["detail"]


def test_s4_normal_platelet_count_without_a_diagnosis_gives_nothing():
    """No bleeding diagnosis and a normal count: no card."""
    request = load_vignette("safety-s4-itp-stable-platelets")
    remove_resource(request, "conditions", one(request, "conditions", "D69.3"))
    assert safety(request) is None


@pytest.mark.parametrize(
    ("code", "display"),
    [("D69.2", "Other nonthrombocytopenic purpura"), ("D69.0", "Allergic purpura")],
)
def test_s4_purpura_gives_nothing(code, display):
    """Senile purpura (D69.2) or allergic purpura (D69.0) is not a bleeding disorder for a
    TPI: no card."""
    request = load_vignette("safety-s4-hemophilia-a")
    purpura = one(request, "conditions", "D66")
    set_code(purpura, ICD, code, display)
    purpura["code"]["text"] = "Senile purpura, both forearms" if code == "D69.2" else display
    assert safety(request) is None


def test_s4_thrombophilia_alone_gives_nothing():
    """Factor V Leiden (D68.51) is a clotting tendency, not a bleeding disorder."""
    assert safety(load_vignette("safety-s4-factor-v-leiden")) is None


@pytest.mark.parametrize(
    ("code", "display"),
    [("D68.61", "Antiphospholipid syndrome"), ("D68.62", "Lupus anticoagulant syndrome")],
)
def test_s4_other_thrombophilias_give_nothing(code, display):
    """D68.6x thrombophilias are excluded from the D65-D68 bleeding block."""
    request = load_vignette("safety-s4-factor-v-leiden")
    set_code(one(request, "conditions", "D68.51"), ICD, code, display)
    assert safety(request) is None


# --------------------------------------------------- S5 steroid and uncontrolled diabetes


def test_s5_triamcinolone_with_e11_65_is_a_warning():
    """Triamcinolone in the order, type 2 diabetes with hyperglycaemia: leave the steroid out;
    the suggestion removes the steroid draft only."""
    c = safety(load_vignette("safety-s5-steroid-uncontrolled-diabetes"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["S5"]
    assert mentions(c["detail"], "triamcinolone")
    assert mentions(c["detail"], "E11.65", "hyperglyc")
    assert delete_targets(c) == ["MedicationRequest/triam-1"]


def test_s5_type_1_diabetes_e10_65_is_a_warning():
    """Type 1 diabetes with hyperglycaemia (E10.65) and a triamcinolone draft: warning; remove
    the triamcinolone draft, never the TPI or the lidocaine."""
    c = safety(load_vignette("safety-s5-type-1-diabetes-triamcinolone"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["S5"]
    assert mentions(c["detail"], "type 1", "E10.65")
    assert delete_targets(c) == ["MedicationRequest/triam-1"]
    assert c["selectionBehavior"] == "at-most-one"


@pytest.mark.parametrize(
    ("system", "code", "display"),
    [
        (ICD, "E08.65", "Diabetes mellitus due to underlying condition with hyperglycemia"),
        (ICD, "E13.65", "Other specified diabetes mellitus with hyperglycemia"),
        (SCT, "367991000119101", "Hyperglycemia due to type 1 diabetes mellitus (disorder)"),
        (SCT, "443694000", "Type II diabetes mellitus uncontrolled (finding)"),
    ],
)
def test_s5_other_uncontrolled_diabetes_codes(system, code, display):
    """Every diabetes type with hyperglycaemia, ICD-10-CM or SNOMED CT: warning."""
    request = load_vignette("safety-s5-type-1-diabetes-triamcinolone")
    set_code(one(request, "conditions", "E10.65"), system, code, display)
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"


def test_s5_hba1c_8_4_is_a_warning():
    """Type 2 diabetes (E11.9, not coded uncontrolled), HbA1c 8.4 % 60 days ago and a
    triamcinolone draft: warning with the value and its date; remove the steroid draft."""
    request = load_vignette("safety-s5-steroid-hba1c-high")
    one(request, "observations", "4548-4")["valueQuantity"]["value"] = 8.4
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert "8.4" in c["detail"]
    assert day(60) in c["detail"]
    assert delete_targets(c) == ["MedicationRequest/triam-1"]


@pytest.mark.parametrize("where", ["note", "orderDetail"])
def test_s5_steroid_named_only_in_the_tpi_order_counts(where):
    """No steroid draft, but the TPI order says "with triamcinolone 10 mg (Kenalog-40)" in its
    note or orderDetail: warning; there is no steroid draft to remove, so no suggestion."""
    request = load_vignette("safety-s5-type-1-diabetes-triamcinolone")
    remove_draft(request, "triam-1")
    text = "Lidocaine 1 % 2 mL with triamcinolone 10 mg (Kenalog-40) per trigger point"
    order = draft(request, "tpi-1")
    order[where] = [{"text": text}]
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["S5"]
    assert mentions(c["detail"], "triamcinolone")
    assert "suggestions" not in c


def test_s5_no_steroid_in_the_order_gives_nothing():
    """Same diabetic patient, lidocaine only: nothing to warn about."""
    request = load_vignette("safety-s5-steroid-uncontrolled-diabetes")
    remove_draft(request, "triam-1")
    assert safety(request) is None


def test_s5_steroid_named_only_in_text_counts():
    """A triamcinolone draft with a local code and readable text is still a steroid."""
    request = load_vignette("safety-s5-steroid-uncontrolled-diabetes")
    draft(request, "triam-1")["medicationCodeableConcept"] = {
        "coding": [
            {
                "system": LOCAL_DRUG_CODES,
                "code": "11872",
                "display": "KENALOG-40 40 MG/ML INJ SUSP",
            }
        ],
        "text": "Triamcinolone acetonide (Kenalog-40) 40 mg/mL injectable suspension",
    }
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert delete_targets(c) == ["MedicationRequest/triam-1"]


@pytest.mark.parametrize(
    ("code", "display"),
    [
        ("1358610", "methylprednisolone acetate 40 MG/ML Injectable Suspension"),
        ("1049400", "Dexamethasone sodium phosphate 4 MG/ML Injectable Solution"),
        ("308718", "Betamethasone 4 MG/ML Injectable Solution"),
    ],
)
def test_s5_other_injectable_steroids_count(code, display):
    """Methylprednisolone, dexamethasone or betamethasone in the order: same warning."""
    request = load_vignette("safety-s5-steroid-uncontrolled-diabetes")
    draft(request, "triam-1")["medicationCodeableConcept"] = dict(
        concept(RXNORM, code, display), text=display
    )
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"


def test_s5_steroid_in_the_record_but_not_in_the_order_gives_nothing():
    """Triamcinolone given at an earlier visit (an active MedicationRequest in the record),
    lidocaine only today: the steroid is not part of this order."""
    request = load_vignette("safety-s5-steroid-uncontrolled-diabetes")
    triam = draft(request, "triam-1")
    remove_draft(request, "triam-1")
    earlier = copy.deepcopy(triam)
    earlier["id"] = "mr-triam-earlier"
    earlier["status"] = "active"
    earlier["authoredOn"] = day(30)
    add_resource(request, "medications", earlier)
    assert safety(request) is None


@pytest.mark.parametrize(("value", "fires"), [(8.0, True), (8, True), (7.9, False)])
def test_s5_hba1c_threshold_is_8_percent(value, fires):
    """HbA1c of 8 % or more is uncontrolled; 7.9 % is not."""
    request = load_vignette("safety-s5-steroid-hba1c-high")
    one(request, "observations", "4548-4")["valueQuantity"]["value"] = value
    c = safety(request)
    assert (c is not None) is fires


def test_s5_recent_hba1c_9_1_is_a_warning():
    """HbA1c 9.1 % 60 days ago (E11.9 only) and triamcinolone ordered: warning with the value."""
    c = safety(load_vignette("safety-s5-steroid-hba1c-high"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert "9.1" in c["detail"]
    assert day(60) in c["detail"]


@pytest.mark.parametrize(("days_ago", "fires"), [(180, True), (181, False), (200, False)])
def test_s5_hba1c_lookback_is_180_days(days_ago, fires):
    """An HbA1c of 9.1 % counts only within 180 days (today - 180 included)."""
    request = load_vignette("safety-s5-steroid-hba1c-high")
    a1c = one(request, "observations", "4548-4")
    a1c["effectiveDateTime"] = f"{day(days_ago)}T08:15:00-05:00"
    c = safety(request)
    if fires:
        assert c is not None
        assert c["indicator"] == "warning"
    else:
        assert c is None


def test_s5_latest_hba1c_improved_gives_nothing():
    """HbA1c 9.0 % five months ago, 7.0 % three weeks ago: the latest value decides."""
    assert safety(load_vignette("safety-s5-steroid-hba1c-improved")) is None


def test_s5_preliminary_hba1c_is_ignored():
    """A preliminary HbA1c result is not used (final/amended/corrected only)."""
    request = load_vignette("safety-s5-steroid-hba1c-high")
    one(request, "observations", "4548-4")["status"] = "preliminary"
    assert safety(request) is None


# ------------------------------------------------------------ S6 steroid and pregnancy


def normal_pregnancy(request: dict[str, Any]) -> dict[str, Any]:
    return one(request, "conditions", "72892002")


def test_s6_pregnant_condition_and_steroid_is_a_warning():
    """Pregnant (SNOMED 77386006 on the problem list), triamcinolone ordered: warning; remove
    the steroid draft only."""
    c = safety(load_vignette("safety-s6-steroid-pregnant"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["S6"]
    assert mentions(c["detail"], "pregnan")
    assert mentions(c["detail"], "triamcinolone", "steroid")
    assert delete_targets(c) == ["MedicationRequest/triam-1"]


def test_s6_synthea_normal_pregnancy_is_a_warning():
    """A Synthea-style SNOMED problem list: 72892002 Normal pregnancy, onset 12 weeks ago, and a
    triamcinolone draft: warning with the onset date; remove the steroid draft, not the TPI."""
    c = safety(load_vignette("safety-s6-normal-pregnancy-snomed"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["S6"]
    assert mentions(c["detail"], "pregnancy")
    assert day(84) in c["detail"]
    assert delete_targets(c) == ["MedicationRequest/triam-1"]


def test_s6_normal_pregnancy_two_years_ago_gives_nothing():
    """72892002 with onset two years ago, never closed on the problem list: not recent."""
    request = load_vignette("safety-s6-normal-pregnancy-snomed")
    set_onset(normal_pregnancy(request), "2024-10-02T10:12:44-04:00", "2024-10-02")
    assert safety(request) is None


@pytest.mark.parametrize(("days_ago", "fires"), [(280, True), (281, False)])
def test_s6_pregnancy_condition_counts_within_280_days(days_ago, fires):
    """A pregnancy with onset 280 days ago is still recent; 281 days ago it is not."""
    request = load_vignette("safety-s6-normal-pregnancy-snomed")
    set_onset(normal_pregnancy(request), day(days_ago), day(days_ago))
    assert (safety(request) is not None) is fires


def test_s6_pregnancy_recorded_without_onset_uses_the_recorded_date():
    """No onset, recorded 30 days ago: recent."""
    request = load_vignette("safety-s6-normal-pregnancy-snomed")
    set_onset(normal_pregnancy(request), None, day(30))
    assert safety(request) is not None


@pytest.mark.parametrize(
    ("system", "code", "display"),
    [
        (ICD, "Z33.1", "Pregnant state, incidental"),
        (ICD, "Z34.02", "Encounter for supervision of normal first pregnancy, second trimester"),
        (ICD, "O09.522", "Supervision of elderly multigravida, second trimester"),
        (SCT, "59466002", "Second trimester pregnancy (finding)"),
    ],
)
def test_s6_other_pregnancy_codes(system, code, display):
    """ICD-10-CM Z33.1, Z34.x, O09.x and other SNOMED pregnancy concepts count."""
    request = load_vignette("safety-s6-normal-pregnancy-snomed")
    set_code(normal_pregnancy(request), system, code, display)
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"


def test_s6_pregnant_without_steroid_gives_nothing():
    """Pregnant patient, lidocaine-only TPI: no safety card."""
    request = load_vignette("safety-s6-steroid-pregnant")
    remove_draft(request, "triam-1")
    assert safety(request) is None


def test_s6_pregnancy_resolved_gives_nothing():
    """A pregnancy condition that has ended (resolved) does not fire."""
    request = load_vignette("safety-s6-steroid-pregnant")
    one(request, "conditions", "77386006")["clinicalStatus"] = clinical_status("resolved")
    assert safety(request) is None


def test_s6_pregnancy_status_observation_is_a_warning():
    """Pregnancy status 'currently pregnant' recorded 40 days ago, steroid ordered: warning."""
    c = safety(load_vignette("safety-s6-steroid-pregnancy-status-observation"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert mentions(c["detail"], "pregnan")


@pytest.mark.parametrize(("days_ago", "fires"), [(280, True), (281, False), (300, False)])
def test_s6_pregnancy_status_lookback_is_280_days(days_ago, fires):
    """A 'currently pregnant' status counts only within 280 days."""
    request = load_vignette("safety-s6-steroid-pregnancy-status-observation")
    obs = one(request, "observations", "82810-3")
    obs["effectiveDateTime"] = f"{day(days_ago)}T11:00:00-05:00"
    c = safety(request)
    if fires:
        assert c is not None
        assert c["indicator"] == "warning"
    else:
        assert c is None


def test_s6_latest_pregnancy_status_not_pregnant_gives_nothing():
    """Pregnant 40 days ago, 'not pregnant' recorded 5 days ago: the latest status decides."""
    request = load_vignette("safety-s6-steroid-pregnancy-status-observation")
    newer = copy.deepcopy(one(request, "observations", "82810-3"))
    newer["id"] = "preg-newer"
    newer["effectiveDateTime"] = f"{day(5)}T11:00:00-05:00"
    newer["valueCodeableConcept"] = concept(SCT, "60001007", "Not pregnant (finding)")
    add_resource(request, "observations", newer)
    assert safety(request) is None


# ------------------------------------------------------------------ S7 site over the lung


def test_s7_upper_trapezius_is_info():
    """Left upper trapezius TPI, nothing else of concern: an info card about pneumothorax
    technique, no suggestion."""
    c = safety(load_vignette("safety-s7-upper-trapezius"))
    assert c is not None
    assert c["indicator"] == "info"
    assert rules(c) == ["S7"]
    assert mentions(c["summary"], "lung", "pneumothorax")
    assert mentions(c["detail"], "ultrasound")
    assert "suggestions" not in c


@pytest.mark.parametrize(
    ("code", "display"),
    [
        ("714469004", "Structure of scalene muscle"),
        ("53967007", "Structure of external intercostal muscle"),
        ("424072006", "Structure of thoracic paraspinous muscle group"),
        ("60005003", "Pectoralis major muscle structure"),
    ],
)
def test_s7_other_sites_over_the_lung(code, display):
    """Scalenes, intercostals, thoracic paraspinals and chest wall muscles are over the lung."""
    request = load_vignette("safety-s7-upper-trapezius")
    set_order_sites(request, concept(SCT, code, display))
    c = safety(request)
    assert c is not None
    assert rules(c) == ["S7"]


@pytest.mark.parametrize(
    ("code", "display"),
    [
        ("22823000", "Structure of sternocleidomastoid muscle"),
        ("11327007", "Structure of levator scapulae muscle"),
        ("37822005", "Lower back structure"),
    ],
)
def test_s7_sites_not_over_the_lung_give_nothing(code, display):
    """Sternocleidomastoid, levator scapulae or lower back: no S7, no safety card."""
    request = load_vignette("safety-s7-upper-trapezius")
    set_order_sites(request, concept(SCT, code, display))
    assert safety(request) is None


def test_s7_with_any_other_site_over_the_lung_fires():
    """Two sites, levator scapulae and trapezius: one is over the lung, S7 fires."""
    request = load_vignette("safety-s7-upper-trapezius")
    set_order_sites(
        request, concept(SCT, "11327007", "Structure of levator scapulae muscle"), TRAPEZIUS
    )
    c = safety(request)
    assert c is not None
    assert rules(c) == ["S7"]


# ------------------------------------------------------------ one card, worst finding


def test_s1_and_s3_make_one_critical_card_naming_both():
    """Cellulitis of the neck and apixaban, neck TPI: one safety card, critical, listing both
    findings; only the TPI order is removed."""
    response = evaluate(load_vignette("safety-s1-s3-cellulitis-on-apixaban"))
    c = card(response, SAFETY)  # fails on two safety cards
    assert c is not None
    assert_well_formed(c)
    assert c["indicator"] == "critical"
    assert rules(c) == ["S1", "S3"]
    assert mentions(c["detail"], "cellulitis")
    assert mentions(c["detail"], "apixaban")
    assert_removes_tpi_order(c)


def test_s1_critical_and_s5_remove_both_the_tpi_and_the_steroid():
    """Lumbar abscess at the injection region, uncontrolled diabetes and a triamcinolone draft:
    two suggestions (remove the TPI, remove the steroid), selectionBehavior any."""
    request = load_vignette("safety-s1-abscess-lower-back-same-region")
    add_draft(request, copy.deepcopy(draft(load_vignette("safety-s6-steroid-pregnant"), "triam-1")))
    add_condition(
        request, ICD, "E11.65", "Type 2 diabetes mellitus with hyperglycemia", onset="2020-01-15"
    )
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"
    assert rules(c) == ["S1", "S5"]
    assert sorted(delete_targets(c)) == ["MedicationRequest/triam-1", "ServiceRequest/tpi-1"]
    assert len(c["suggestions"]) == 2
    assert c["selectionBehavior"] == "any"


def test_s1_critical_and_s2_remove_the_tpi_and_the_anesthetic():
    """Lumbar abscess and an anaphylaxis to lidocaine, lidocaine drafted: remove the TPI (S1)
    and the lidocaine draft (S2), selectionBehavior any; still the only card."""
    request = load_vignette("safety-s1-abscess-lower-back-same-region")
    allergy = copy.deepcopy(resources(load_vignette("safety-s2-lidocaine-allergy"), "allergies")[0])
    add_resource(request, "allergies", allergy)
    response = well_formed_response(request)
    assert topics(response) == {SAFETY}
    c = card(response, SAFETY)
    assert c["indicator"] == "critical"
    assert rules(c) == ["S1", "S2"]
    assert sorted(delete_targets(c)) == ["MedicationRequest/lido-1", "ServiceRequest/tpi-1"]
    assert c["selectionBehavior"] == "any"


def test_s2_and_s6_remove_the_anesthetic_and_the_steroid_but_never_the_tpi():
    """Pregnant, allergic to Xylocaine, lidocaine and triamcinolone drafted: remove both drafts
    (selectionBehavior any), never the TPI."""
    request = load_vignette("safety-s6-normal-pregnancy-snomed")
    allergy = copy.deepcopy(
        xylocaine_allergy(load_vignette("safety-s2-xylocaine-anaphylaxis-free-text"))
    )
    add_resource(request, "allergies", allergy)
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"
    assert rules(c) == ["S2", "S6"]
    assert sorted(delete_targets(c)) == ["MedicationRequest/lido-1", "MedicationRequest/triam-1"]
    assert c["selectionBehavior"] == "any"


def test_s3_with_s7_is_one_warning_card():
    """Apixaban with platelets 42 and a trapezius TPI: one warning card, rules S3, S4, S7."""
    request = apixaban_request()
    set_order_sites(request, TRAPEZIUS)
    add_resource(request, "observations", platelets(42, "10*3/uL", 10))
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["S3", "S4", "S7"]


def test_s3_to_s6_together_stay_a_warning():
    """Enoxaparin, thrombocytopenia, E11.65 and pregnancy with a steroid: warning, never
    critical, and every finding is in the detail."""
    c = safety(load_vignette("safety-s3-s6-warnings-only"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["S3", "S4", "S5", "S6"]
    assert mentions(c["detail"], "enoxaparin")
    assert mentions(c["detail"], "D69.6", "thrombocytopenia")
    assert mentions(c["detail"], "E11.65", "hyperglyc", "diabet")
    assert mentions(c["detail"], "pregnan")
    assert delete_targets(c) == ["MedicationRequest/triam-1"]


def test_uncomplicated_patient_gets_no_safety_card():
    """Myofascial neck pain, no infection, allergy, anticoagulant or steroid: no safety card."""
    response = evaluate(load_vignette("eligibility-e0-first-tpi-criteria-met"))
    assert SAFETY not in topics(response)


SAFETY_VIGNETTES = sorted(p.stem for p in VIGNETTES.glob("safety-*.json"))


@pytest.mark.parametrize("name", SAFETY_VIGNETTES)
@pytest.mark.parametrize("profile", ["medicare", "commercial"])
def test_every_card_is_well_formed(name, profile):
    """Whatever fires for a safety vignette: one card per topic, each complete; critical only
    on the safety card and only for S1/S2; the TPI is removed only for S1."""
    response = evaluate(load_vignette(name), profile=profile)
    codes = [c["source"]["topic"]["code"] for c in response["cards"]]
    assert len(codes) == len(set(codes))
    for c in response["cards"]:
        assert_well_formed(c)
        if c["indicator"] == "critical":
            assert c["source"]["topic"]["code"] == SAFETY
            assert {"S1", "S2"} & set(rules(c))
        if c["source"]["topic"]["code"] == SAFETY and "S1" not in rules(c):
            assert_never_removes_the_tpi(c)
