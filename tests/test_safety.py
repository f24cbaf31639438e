"""Clinical vignettes for the tpi-safety topic (rules S1-S6, clinical-rules.md section 3).

Each vignette in tests/vignettes/safety-*.json is one whole CDS Hooks request; small
variations (one status, one date, one code) are made here in Python.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest

from conftest import TODAY, VIGNETTES, assert_well_formed, card, evaluate, load_vignette, topics

SAFETY = "tpi-safety"
TOPIC_SYSTEM = "urn:tpi-cds:topic"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
TOPICS = {"tpi-safety", "tpi-eligibility", "pt-integration", "specialist-referral"}


# --------------------------------------------------------------------------- helpers


def day(days_ago: int) -> str:
    return (TODAY - timedelta(days=days_ago)).isoformat()


def resources(request: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The resources of one prefetch searchset (live objects: edit them in place)."""
    return [e["resource"] for e in request["prefetch"][key].get("entry", [])]


def add_resource(request: dict[str, Any], key: str, resource: dict[str, Any]) -> None:
    request["prefetch"][key].setdefault("entry", []).append(
        {"resource": resource, "search": {"mode": "match"}}
    )


def one(request: dict[str, Any], key: str, code: str) -> dict[str, Any]:
    """The single prefetched resource carrying `code` in its code / medication coding."""
    found = []
    for r in resources(request, key):
        concept = r.get("code") or r.get("medicationCodeableConcept") or {}
        if any(c.get("code") == code for c in concept.get("coding", [])):
            found.append(r)
    assert len(found) == 1, f"expected one {code} in {key}"
    return found[0]


def drafts(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in request["context"]["draftOrders"]["entry"]]


def remove_draft(request: dict[str, Any], resource_id: str) -> None:
    entries = request["context"]["draftOrders"]["entry"]
    kept = [e for e in entries if e["resource"]["id"] != resource_id]
    assert len(kept) == len(entries) - 1, f"no draft {resource_id}"
    request["context"]["draftOrders"]["entry"] = kept


def clinical_status(code: str) -> dict[str, Any]:
    return {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": code,
            }
        ]
    }


def mentions(text: str, *alternatives: str) -> bool:
    low = text.lower()
    return any(a.lower() in low for a in alternatives)


def safety(request: dict[str, Any], **kwargs: Any) -> dict[str, Any] | None:
    """The safety card of a request (checked for shape), or None."""
    response = evaluate(request, **kwargs)
    c = card(response, SAFETY)
    if c is not None:
        assert_well_formed(c)
    return c


def delete_targets(c: dict[str, Any]) -> list[str]:
    return [
        a.get("resourceId")
        for s in c.get("suggestions", [])
        for a in s["actions"]
        if a["type"] == "delete"
    ]


def assert_removes_tpi_order(c: dict[str, Any], order_id: str = "tpi-1") -> None:
    assert delete_targets(c) == [f"ServiceRequest/{order_id}"]


# --------------------------------------------------------------- S1 active infection


def test_s1_active_cellulitis_blocks_the_injection():
    """Cellulitis of the arm 3 days ago: do not inject; offer to remove the TPI order."""
    c = safety(load_vignette("safety-s1-cellulitis-forearm"))
    assert c is not None
    assert c["indicator"] == "critical"
    assert mentions(c["detail"], "L03.113", "cellulitis")
    assert_removes_tpi_order(c)


def test_s1_resolved_cellulitis_is_not_a_contraindication():
    """Cellulitis treated months ago (clinicalStatus resolved, abatement recorded): no card."""
    assert safety(load_vignette("safety-s1-cellulitis-resolved")) is None


def test_s1_abatement_without_clinical_status_means_resolved():
    """An EHR that sends only abatementDateTime: the infection is over, no card."""
    request = load_vignette("safety-s1-cellulitis-resolved")
    del one(request, "conditions", "L03.113")["clinicalStatus"]
    assert safety(request) is None


def test_s1_cellulitis_without_clinical_status_counts_as_active():
    """No clinicalStatus and no abatement: the cellulitis is taken as active."""
    request = load_vignette("safety-s1-cellulitis-forearm")
    del one(request, "conditions", "L03.113")["clinicalStatus"]
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"


def test_s1_cellulitis_entered_in_error_is_ignored():
    """A cellulitis diagnosis entered in error is not an infection."""
    request = load_vignette("safety-s1-cellulitis-forearm")
    cond = one(request, "conditions", "L03.113")
    cond["verificationStatus"]["coding"][0]["code"] = "entered-in-error"
    del cond["clinicalStatus"]
    assert safety(request) is None


def test_s1_sepsis_at_order_sign_is_critical():
    """Sepsis (A41.9) on admission, TPI being signed: critical, remove the order."""
    request = load_vignette("safety-s1-sepsis-order-sign")
    assert request["hook"] == "order-sign"
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"
    assert mentions(c["detail"], "A41.9", "sepsis")
    assert_removes_tpi_order(c)


def test_s1_sepsis_a40_is_critical():
    """Streptococcal sepsis (A40.x) counts like A41.x."""
    request = load_vignette("safety-s1-sepsis-order-sign")
    cond = one(request, "conditions", "A41.9")
    cond["code"] = {
        "coding": [
            {"system": ICD, "code": "A40.0", "display": "Sepsis due to streptococcus, group A"}
        ]
    }
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"


def test_s1_tpi_of_three_or_more_muscles_is_a_tpi_order_too():
    """The same infected patient with a 20553 order (3+ muscles): still critical."""
    request = load_vignette("safety-s1-cellulitis-forearm")
    order = next(r for r in drafts(request) if r["id"] == "tpi-1")
    order["code"]["coding"][0]["code"] = "20553"
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"
    assert_removes_tpi_order(c)


def test_no_cards_at_order_sign_without_a_tpi():
    """Order-sign with only a lidocaine order (no TPI) for the septic patient: no advice."""
    request = load_vignette("safety-s1-sepsis-order-sign")
    remove_draft(request, "tpi-1")
    assert evaluate(request) == {"cards": []}


def test_no_cards_when_the_selection_is_not_a_tpi():
    """Same infected patient, but the clinician selected only the lidocaine: no advice."""
    request = load_vignette("safety-s1-cellulitis-forearm")
    request["context"]["selections"] = ["MedicationRequest/lido-1"]
    assert evaluate(request) == {"cards": []}


# ------------------------------------------------------ S2 local anaesthetic allergy


def test_s2_coded_lidocaine_allergy_is_critical():
    """Anaphylaxis to lidocaine (RxNorm 6387) and lidocaine in the order: critical."""
    c = safety(load_vignette("safety-s2-lidocaine-allergy"))
    assert c is not None
    assert c["indicator"] == "critical"
    assert mentions(c["detail"], "lidocaine")
    assert_removes_tpi_order(c)


def test_s2_allergy_named_only_in_text_is_critical():
    """An allergy entered as free text "Bupivacaine" (no code) still counts."""
    c = safety(load_vignette("safety-s2-bupivacaine-text-allergy"))
    assert c is not None
    assert c["indicator"] == "critical"
    assert mentions(c["detail"], "bupivacaine")
    assert_removes_tpi_order(c)


def test_s2_allergy_status_to_anesthetic_z88_4_is_critical():
    """Problem-list Z88.4 (agent not recorded): treat as an anaesthetic allergy."""
    c = safety(load_vignette("safety-s2-anesthetic-allergy-status"))
    assert c is not None
    assert c["indicator"] == "critical"
    assert mentions(c["detail"], "Z88.4", "anesthetic", "anaesthetic")
    assert_removes_tpi_order(c)


@pytest.mark.parametrize(
    ("system", "code", "display"),
    [
        ("http://www.nlm.nih.gov/research/umls/rxnorm", "35780", "ropivacaine"),
        (SCT, "387150008", "Bupivacaine"),
        (SCT, "387480006", "Lidocaine"),
    ],
)
def test_s2_other_coded_amide_allergies_are_critical(system, code, display):
    """Allergy coded as ropivacaine (RxNorm) or as a SNOMED substance: critical."""
    request = load_vignette("safety-s2-lidocaine-allergy")
    resources(request, "allergies")[0]["code"] = {
        "coding": [{"system": system, "code": code, "display": display}]
    }
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "critical"
    assert mentions(c["detail"], display)


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


def test_s3_apixaban_product_code_is_a_warning():
    """Apixaban 5 mg tablet (RxNorm product 1364445): bleeding-risk warning, not critical."""
    c = safety(load_vignette("safety-s3-apixaban"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert mentions(c["detail"], "apixaban")
    assert not delete_targets(c)


@pytest.mark.parametrize("status", ["stopped", "completed", "entered-in-error", "cancelled"])
def test_s3_apixaban_no_longer_taken_gives_nothing(status):
    """A stopped or finished apixaban prescription is not an active anticoagulant."""
    request = load_vignette("safety-s3-apixaban")
    one(request, "medications", "1364445")["status"] = status
    assert safety(request) is None


def test_s3_apixaban_on_hold_still_counts():
    """An on-hold prescription is still an active medication (rule page, section 1)."""
    request = load_vignette("safety-s3-apixaban")
    one(request, "medications", "1364445")["status"] = "on-hold"
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"


def test_s3_warfarin_with_local_code_matched_by_text():
    """Warfarin sent with a local code and readable text only: still a warning."""
    c = safety(load_vignette("safety-s3-warfarin-local-code"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert mentions(c["detail"], "warfarin")


def test_s3_clopidogrel_among_the_draft_orders_counts():
    """Clopidogrel being ordered in the same session (not selected, not yet active) counts."""
    request = load_vignette("safety-s3-clopidogrel-in-draft-orders")
    assert resources(request, "medications") == []
    assert request["context"]["selections"] == ["ServiceRequest/tpi-1"]
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert mentions(c["detail"], "clopidogrel")


def test_s3_clopidogrel_active_prescription_product_code():
    """Clopidogrel 75 mg (RxNorm 309362) as an active prescription: warning."""
    request = load_vignette("safety-s3-clopidogrel-in-draft-orders")
    clop = next(r for r in drafts(request) if r["id"] == "clop-1")
    remove_draft(request, "clop-1")
    active = copy.deepcopy(clop)
    active["status"] = "active"
    active["id"] = "mr-clop-active"
    add_resource(request, "medications", active)
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert mentions(c["detail"], "clopidogrel")


def test_s3_long_term_anticoagulant_use_z79_01():
    """Z79.01 on the problem list (drug prescribed elsewhere): warning."""
    c = safety(load_vignette("safety-s3-long-term-anticoagulant"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert mentions(c["detail"], "Z79.01", "anticoagula")


def test_s3_name_in_coding_display_only_counts():
    """A local code whose display names the drug (no text): matched by the display."""
    request = load_vignette("safety-s3-apixaban")
    med = one(request, "medications", "1364445")
    med["medicationCodeableConcept"] = {
        "coding": [
            {
                "system": "urn:oid:1.2.840.114350.1.13.999.2.7.2.698288",
                "code": "88120",
                "display": "APIXABAN 5 MG TABLET (ELIQUIS)",
            }
        ]
    }
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"


def test_s3_long_term_antiplatelet_use_z79_02():
    """Z79.02 (long-term antithrombotics/antiplatelets) is a bleeding-risk warning too."""
    request = load_vignette("safety-s3-long-term-anticoagulant")
    one(request, "conditions", "Z79.01")["code"] = {
        "coding": [
            {
                "system": ICD,
                "code": "Z79.02",
                "display": "Long term (current) use of antithrombotics/antiplatelets",
            }
        ]
    }
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"


def test_s3_aspirin_dipyridamole_gives_nothing():
    """Aspirin/dipyridamole (RxNorm 259081): neither ingredient is on the S3 list."""
    request = load_vignette("safety-s3-aspirin-only")
    med = one(request, "medications", "243670")
    med["medicationCodeableConcept"] = {
        "coding": [
            {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "259081",
                "display": "12 HR aspirin 25 MG / dipyridamole 200 MG Extended Release Oral "
                "Capsule",
            }
        ],
        "text": "aspirin-dipyridamole ER 25-200 mg capsule",
    }
    assert safety(request) is None


def test_s3_aspirin_alone_gives_nothing():
    """Low-dose aspirin (and Z79.82) only: no bleeding card (the evidence is disputed)."""
    assert safety(load_vignette("safety-s3-aspirin-only")) is None


# ------------------------------------------------------------- S4 bleeding disorders


def test_s4_hemophilia_a_is_a_warning():
    """Haemophilia A (D66): defer pending haematology; warning, not critical."""
    c = safety(load_vignette("safety-s4-hemophilia-a"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert mentions(c["detail"], "D66", "factor VIII", "hemophilia", "haemophilia")


def test_s4_von_willebrand_is_a_warning():
    """Von Willebrand disease (D68.0) is a bleeding disorder."""
    request = load_vignette("safety-s4-hemophilia-a")
    one(request, "conditions", "D66")["code"] = {
        "coding": [{"system": ICD, "code": "D68.0", "display": "Von Willebrand disease"}]
    }
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert mentions(c["detail"], "D68.0", "willebrand")


def test_s4_thrombophilia_alone_gives_nothing():
    """Factor V Leiden (D68.51) is a clotting tendency, not a bleeding disorder."""
    assert safety(load_vignette("safety-s4-factor-v-leiden")) is None


@pytest.mark.parametrize(
    ("code", "display"),
    [("D68.61", "Antiphospholipid syndrome"), ("D68.62", "Lupus anticoagulant syndrome")],
)
def test_s4_other_thrombophilias_give_nothing(code, display):
    """D68.6x thrombophilias are excluded from the D65-D69 bleeding block."""
    request = load_vignette("safety-s4-factor-v-leiden")
    one(request, "conditions", "D68.51")["code"] = {
        "coding": [{"system": ICD, "code": code, "display": display}]
    }
    assert safety(request) is None


# --------------------------------------------------- S5 steroid and uncontrolled diabetes


def test_s5_triamcinolone_with_e11_65_is_a_warning():
    """Triamcinolone in the order, type 2 diabetes with hyperglycaemia: leave the steroid out."""
    c = safety(load_vignette("safety-s5-steroid-uncontrolled-diabetes"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert mentions(c["detail"], "triamcinolone")
    assert mentions(c["detail"], "E11.65", "hyperglyc")


def test_s5_no_steroid_in_the_order_gives_nothing():
    """Same diabetic patient, lidocaine only: nothing to warn about."""
    request = load_vignette("safety-s5-steroid-uncontrolled-diabetes")
    remove_draft(request, "triam-1")
    assert safety(request) is None


def test_s5_steroid_named_only_in_text_counts():
    """A triamcinolone draft with a local code and readable text is still a steroid."""
    request = load_vignette("safety-s5-steroid-uncontrolled-diabetes")
    triam = next(r for r in drafts(request) if r["id"] == "triam-1")
    triam["medicationCodeableConcept"] = {
        "coding": [
            {
                "system": "urn:oid:1.2.840.114350.1.13.999.2.7.2.698288",
                "code": "11872",
                "display": "KENALOG-40 40 MG/ML INJ SUSP",
            }
        ],
        "text": "Triamcinolone acetonide (Kenalog-40) 40 mg/mL injectable suspension",
    }
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"


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
    triam = next(r for r in drafts(request) if r["id"] == "triam-1")
    triam["medicationCodeableConcept"] = {
        "coding": [
            {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": code,
                "display": display,
            }
        ],
        "text": display,
    }
    c = safety(request)
    assert c is not None
    assert c["indicator"] == "warning"


def test_s5_steroid_in_the_record_but_not_in_the_order_gives_nothing():
    """Triamcinolone given at an earlier visit (an active MedicationRequest in the record),
    lidocaine only today: the steroid is not part of this order."""
    request = load_vignette("safety-s5-steroid-uncontrolled-diabetes")
    triam = next(r for r in drafts(request) if r["id"] == "triam-1")
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


def test_s6_pregnant_condition_and_steroid_is_a_warning():
    """Pregnant (SNOMED 77386006 on the problem list), triamcinolone ordered: warning."""
    c = safety(load_vignette("safety-s6-steroid-pregnant"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert mentions(c["detail"], "pregnan")
    assert mentions(c["detail"], "triamcinolone", "steroid")


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
    newer["valueCodeableConcept"] = {
        "coding": [{"system": SCT, "code": "60001007", "display": "Not pregnant (finding)"}]
    }
    add_resource(request, "observations", newer)
    assert safety(request) is None


# ------------------------------------------------------------ one card, worst finding


def test_s1_and_s3_make_one_critical_card_naming_both():
    """Cellulitis and apixaban: one safety card, critical, listing both findings."""
    response = evaluate(load_vignette("safety-s1-s3-cellulitis-on-apixaban"))
    c = card(response, SAFETY)  # fails on two safety cards
    assert c is not None
    assert_well_formed(c)
    assert c["indicator"] == "critical"
    assert mentions(c["detail"], "L03.114", "cellulitis")
    assert mentions(c["detail"], "apixaban")
    assert_removes_tpi_order(c)


def test_s3_to_s6_together_stay_a_warning():
    """Enoxaparin, thrombocytopenia, E11.65 and pregnancy with a steroid: warning, never
    critical, and every finding is in the detail."""
    c = safety(load_vignette("safety-s3-s6-warnings-only"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert mentions(c["detail"], "enoxaparin")
    assert mentions(c["detail"], "D69.6", "thrombocytopenia")
    assert mentions(c["detail"], "E11.65", "hyperglyc", "diabet")
    assert mentions(c["detail"], "pregnan")


def test_uncomplicated_patient_gets_no_safety_card():
    """Myofascial neck pain, no infection, allergy, anticoagulant or steroid: no safety card."""
    response = evaluate(load_vignette("eligibility-e0-first-tpi-criteria-met"))
    assert SAFETY not in topics(response)


SAFETY_VIGNETTES = sorted(p.stem for p in VIGNETTES.glob("safety-*.json"))


@pytest.mark.parametrize("name", SAFETY_VIGNETTES)
@pytest.mark.parametrize("profile", ["medicare", "commercial"])
def test_every_card_is_well_formed(name, profile):
    """Whatever fires for a safety vignette: one card per topic, each complete."""
    response = evaluate(load_vignette(name), profile=profile)
    codes = [c["source"]["topic"]["code"] for c in response["cards"]]
    assert len(codes) == len(set(codes))
    for c in response["cards"]:
        assert_well_formed(c)
        if c["indicator"] == "critical":
            assert c["source"]["topic"]["code"] == SAFETY
