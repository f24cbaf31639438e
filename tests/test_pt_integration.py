"""Clinical vignettes for the pt-integration topic (rules P1 at order time, P2 on patient-view).

Rules page v2, section 3 "Topic pt-integration": a TPI is an adjunct to active therapy. P1 is
info for a first TPI and a warning for a repeat (a TPI session in the last 365 days); P2 is info
on patient-view after a TPI in the last 90 days. "Active therapy in place" is a PT/OT session in
the last 90 days, a PT/OT referral active (any date) or completed in the last 90 days, a PT order
among the drafts, a rehabilitation care plan, or a musculoskeletal care plan with an exercise
activity — not exercise in a diabetes or hyperlipidemia plan.

Each vignette in tests/vignettes/pt-*.json is one whole CDS Hooks request; small variations (one
status, one date, one code) are made here in Python.
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import (
    VIGNETTES,
    add_resource,
    assert_well_formed,
    card,
    evaluate,
    evaluate_vignette,
    load_vignette,
    resource,
    rules,
    topic_card,
    topics,
)

TOPIC = "pt-integration"
SNOMED = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
CPT = "http://www.ama-assn.org/go/cpt"
PT_REFERRAL = "308447003"
PHYSIOTHERAPIST = "36682004"
NECK = {"coding": [{"system": SNOMED, "code": "45048000", "display": "Neck structure"}]}
TRAPEZIUS = {
    "coding": [{"system": SNOMED, "code": "31764008", "display": "Structure of trapezius muscle"}]
}


# --------------------------------------------------------------------------- helpers


def pt_card(request: dict[str, Any], **kwargs: Any) -> dict[str, Any] | None:
    return topic_card(request, TOPIC, **kwargs)


def referral_resource(c: dict[str, Any]) -> dict[str, Any]:
    """The one suggestion's ServiceRequest to create."""
    (s,) = c["suggestions"]
    (action,) = s["actions"]
    assert action["type"] == "create"
    return action["resource"]


def assert_pt_suggestion(c: dict[str, Any], patient_id: str) -> None:
    """One suggestion, recommended: create a draft PT referral ServiceRequest for the patient."""
    assert c["selectionBehavior"] == "at-most-one"
    (s,) = c["suggestions"]
    assert s["uuid"] and s["label"]
    assert s["isRecommended"] is True
    sr = referral_resource(c)
    assert sr["resourceType"] == "ServiceRequest"
    assert sr["status"] == "draft"
    assert sr["intent"] == "order"
    assert sr["subject"]["reference"] == f"Patient/{patient_id}"
    assert {"system": SNOMED, "code": PT_REFERRAL} in [
        {"system": coding["system"], "code": coding["code"]} for coding in sr["code"]["coding"]
    ]


def to_order_sign(request: dict[str, Any]) -> dict[str, Any]:
    request["hook"] = "order-sign"
    del request["context"]["selections"]
    return request


def condition(cid: str, system: str, code: str, display: str, onset: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {"coding": [{"system": system, "code": code, "display": display}]},
        "onsetDateTime": onset,
    }


def resolve(cond: dict[str, Any], on: str = "2026-10-01") -> None:
    cond["clinicalStatus"]["coding"][0]["code"] = "resolved"
    cond["abatementDateTime"] = on


def activity(code: str, display: str, system: str = SNOMED) -> dict[str, Any]:
    return {
        "detail": {
            "code": {"coding": [{"system": system, "code": code, "display": display}]},
            "status": "in-progress",
        }
    }


def tpi_order(request: dict[str, Any]) -> dict[str, Any]:
    return next(
        e["resource"]
        for e in request["context"]["draftOrders"]["entry"]
        if e["resource"]["id"] == "tpi-1"
    )


# ---------------------------------------------------------------- P1: first TPI, repeat TPI


def test_p1_first_tpi_without_any_therapy_is_info_with_a_pt_referral():
    """First TPI for neck myalgia, no PT anywhere: an info card (a first TPI with no therapy is
    common and not yet stand-alone use), one recommended PT referral; the detail says a TPI is an
    adjunct, with stretching / PT within 1-2 weeks."""
    c = pt_card(load_vignette("pt-p1-first-tpi-no-therapy"))
    assert c is not None
    assert c["indicator"] == "info"
    assert rules(c) == ["P1"]
    assert_pt_suggestion(c, "pt-first")
    assert "adjunct" in c["detail"]
    assert "1-2 weeks" in c["detail"]


def test_p1_repeat_tpi_without_therapy_is_a_warning():
    """A TPI on 2026-06-15 (good relief) and now a repeat, still no PT or home exercise: the
    stand-alone use payers reject, a warning naming the earlier session."""
    c = pt_card(load_vignette("pt-p1-repeat-tpi-no-therapy"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert rules(c) == ["P1"]
    assert_pt_suggestion(c, "pt-repeat")
    assert "2026-06-15" in c["detail"]


@pytest.mark.parametrize(
    ("performed", "indicator"),
    [
        ("2025-11-23T10:00:00-05:00", "warning"),  # today - 365: in the last 365 days
        ("2025-11-22T10:00:00-05:00", "info"),  # today - 366: a first TPI for this year
    ],
)
def test_p1_repeat_means_a_session_in_the_last_365_days(performed, indicator):
    """The earlier session counts as making this a repeat only within 365 days (today
    included)."""
    request = load_vignette("pt-p1-repeat-tpi-no-therapy")
    resource(request, "procedures", "tpi-2026-06-15")["performedDateTime"] = performed
    c = pt_card(request)
    assert c is not None
    assert c["indicator"] == indicator
    assert rules(c) == ["P1"]


@pytest.mark.parametrize("status", ["entered-in-error", "not-done"])
def test_p1_a_procedure_entered_in_error_or_not_done_is_no_earlier_session(status):
    """The June TPI entered in error (or not done) is no session: this is a first TPI, info."""
    request = load_vignette("pt-p1-repeat-tpi-no-therapy")
    resource(request, "procedures", "tpi-2026-06-15")["status"] = status
    c = pt_card(request)
    assert c is not None
    assert c["indicator"] == "info"


# ---------------------------------------------------------------- the PT referral resource


def test_pt_referral_is_filled_so_it_can_be_signed_as_is():
    """The suggested PT referral for the repeat TPI: draft order for the patient, SNOMED
    308447003, requested by the user, for the first active qualifying Condition (not the order's
    reasonCode, which is only the fallback), at the TPI order's two sites, to happen within
    2 weeks (2026-11-23 to 2026-12-07), by a physiotherapist (SNOMED 36682004); recommended."""
    request = load_vignette("pt-p1-repeat-tpi-no-therapy")
    c = pt_card(request)
    assert c is not None
    (s,) = c["suggestions"]
    assert s["isRecommended"] is True
    sr = referral_resource(c)
    assert sr["resourceType"] == "ServiceRequest"
    assert sr["status"] == "draft"
    assert sr["intent"] == "order"
    assert sr["subject"] == {"reference": "Patient/pt-repeat"}
    assert [(x["system"], x["code"]) for x in sr["code"]["coding"]] == [(SNOMED, PT_REFERRAL)]
    assert sr["requester"] == {"reference": "Practitioner/dr-okafor"}
    assert sr["reasonReference"] == [{"reference": "Condition/cond-pt-repeat-mps-neck"}]
    assert "reasonCode" not in sr
    assert sr["bodySite"] == tpi_order(request)["bodySite"] == [TRAPEZIUS, NECK]
    assert sr["occurrencePeriod"] == {"start": "2026-11-23", "end": "2026-12-07"}
    assert [(x["system"], x["code"]) for x in sr["performerType"]["coding"]] == [
        (SNOMED, PHYSIOTHERAPIST)
    ]


def test_pt_referral_requester_is_the_user_as_the_ehr_names_it():
    """context.userId given as a PractitionerRole: the referral's requester is that reference."""
    request = load_vignette("pt-p1-first-tpi-no-therapy")
    request["context"]["userId"] = "PractitionerRole/role-np-7"
    c = pt_card(request)
    assert c is not None
    assert referral_resource(c)["requester"] == {"reference": "PractitionerRole/role-np-7"}


def test_pt_referral_reason_is_the_first_active_qualifying_condition_in_record_order():
    """Problem list: cervicalgia (regional pain, not qualifying), a resolved 2024 myalgia, then
    the active neck myalgia: the referral's reason is the active myalgia."""
    request = load_vignette("pt-p1-first-tpi-no-therapy")
    entries = request["prefetch"]["conditions"]["entry"]
    old = condition("cond-pt-first-m7912-2024", ICD, "M79.12", "Myalgia, neck", "2024-02-01")
    resolve(old, "2024-05-01")
    cervicalgia = condition("cond-pt-first-m542", ICD, "M54.2", "Cervicalgia", "2026-09-01")
    entries[:0] = [{"resource": cervicalgia}, {"resource": old}]
    c = pt_card(request)
    assert c is not None
    sr = referral_resource(c)
    assert sr["reasonReference"] == [{"reference": "Condition/cond-pt-first-m7912"}]


def test_pt_referral_falls_back_to_the_order_reason_code():
    """The myalgia on the problem list resolved, but the TPI order carries M79.12 as its
    reasonCode: the referral takes the order's reasonCode, and no reasonReference."""
    request = load_vignette("pt-p1-first-tpi-no-therapy")
    resolve(resource(request, "conditions", "cond-pt-first-m7912"))
    reason = {
        "coding": [
            {
                "system": ICD,
                "code": "M79.12",
                "display": "Myalgia of auxiliary muscles, head and neck",
            }
        ]
    }
    tpi_order(request)["reasonCode"] = [reason]
    c = pt_card(request)
    assert c is not None
    sr = referral_resource(c)
    assert sr["reasonCode"] == [reason]
    assert "reasonReference" not in sr


def test_pt_referral_without_any_reason_on_record_has_none():
    """No active qualifying Condition and no order reasonCode: neither reason field."""
    request = load_vignette("pt-p1-first-tpi-no-therapy")
    resolve(resource(request, "conditions", "cond-pt-first-m7912"))
    c = pt_card(request)
    assert c is not None
    sr = referral_resource(c)
    assert "reasonCode" not in sr
    assert "reasonReference" not in sr


# ---------------------------------------------------------------- PT and OT procedures


def test_p1_not_when_therapeutic_exercise_visit_49_days_ago():
    """A PT exercise visit (CPT 97110) on 2026-10-05: therapy in place, no card."""
    assert pt_card(load_vignette("pt-recent-therapeutic-exercise")) is None


@pytest.mark.parametrize(
    ("system", "code", "display"),
    [
        (CPT, "97161", "Physical therapy evaluation, low complexity"),
        (CPT, "97165", "Occupational therapy evaluation, low complexity"),
        (SNOMED, "84478008", "Occupational therapy (regime/therapy)"),
        (SNOMED, "91251008", "Physical therapy procedure (regime/therapy)"),
    ],
)
def test_p1_not_when_a_pt_or_ot_session_was_49_days_ago(system, code, display):
    """A PT evaluation, an OT evaluation or an OT / PT session coded in SNOMED counts like the
    exercise visit."""
    request = load_vignette("pt-recent-therapeutic-exercise")
    resource(request, "procedures", "pt-visit-2026-10-05")["code"] = {
        "coding": [{"system": system, "code": code, "display": display}],
        "text": display,
    }
    assert pt_card(request) is None


def test_p1_not_when_pt_visit_exactly_90_days_ago():
    """'In the last 90 days' includes 2026-08-25 (today - 90)."""
    request = load_vignette("pt-recent-therapeutic-exercise")
    resource(request, "procedures", "pt-visit-2026-10-05")["performedDateTime"] = (
        "2026-08-25T14:00:00-05:00"
    )
    assert pt_card(request) is None


def test_p1_fires_when_the_only_pt_visit_is_91_days_old():
    """PT last seen 2026-08-24 (today - 91): no longer in place; a first TPI, so info."""
    request = load_vignette("pt-recent-therapeutic-exercise")
    resource(request, "procedures", "pt-visit-2026-10-05")["performedDateTime"] = (
        "2026-08-24T14:00:00-05:00"
    )
    c = pt_card(request)
    assert c is not None
    assert c["indicator"] == "info"
    assert_pt_suggestion(c, "pt-exercise")


# ---------------------------------------------------------------- PT referrals


def test_p1_not_with_an_active_pt_referral_of_any_date():
    """A PT referral authored 2025-05-14 and still active: therapy in place."""
    assert pt_card(load_vignette("pt-active-pt-referral-old")) is None


def test_p1_fires_when_the_old_pt_referral_was_revoked():
    """The same referral revoked is no therapy: P1 fires."""
    request = load_vignette("pt-active-pt-referral-old")
    resource(request, "serviceRequests", "sr-pt-2025")["status"] = "revoked"
    c = pt_card(request)
    assert c is not None
    assert c["indicator"] == "info"
    assert_pt_suggestion(c, "pt-active-ref")


@pytest.mark.parametrize(
    ("system", "code", "display"),
    [
        (SNOMED, "306170007", "Referral to physiotherapy service (procedure)"),
        (SNOMED, "306166004", "Referral to occupational therapy service (procedure)"),
        (CPT, "97110", "Therapeutic exercise"),
    ],
)
def test_p1_not_with_an_active_referral_coded_otherwise(system, code, display):
    """Any code of the physical-therapy set on a ServiceRequest counts: another PT referral
    code, an OT referral, or a therapeutic-exercise order (exercise codes included)."""
    request = load_vignette("pt-active-pt-referral-old")
    resource(request, "serviceRequests", "sr-pt-2025")["code"] = {
        "coding": [{"system": system, "code": code, "display": display}],
        "text": display,
    }
    assert pt_card(request) is None


def test_p1_not_with_a_pt_referral_completed_30_days_ago():
    """A PT course completed, authored 2026-10-24: recent therapy, no card."""
    assert pt_card(load_vignette("pt-completed-pt-referral-last-month")) is None


@pytest.mark.parametrize(
    ("authored", "fires"),
    [("2026-08-25", False), ("2026-08-24", True)],  # today - 90, today - 91
)
def test_completed_pt_referral_counts_for_90_days(authored, fires):
    """A completed PT referral counts while authored in the last 90 days."""
    request = load_vignette("pt-completed-pt-referral-last-month")
    resource(request, "serviceRequests", "sr-pt-2026-10")["authoredOn"] = authored
    c = pt_card(request)
    assert (c is not None) is fires


def test_p1_not_with_a_completed_pt_referral_dated_by_occurrence():
    """A completed PT referral with no authoredOn but performed (occurrence) 2026-10-24."""
    request = load_vignette("pt-completed-pt-referral-last-month")
    sr = resource(request, "serviceRequests", "sr-pt-2026-10")
    del sr["authoredOn"]
    sr["occurrenceDateTime"] = "2026-10-24"
    assert pt_card(request) is None


def test_p1_not_when_a_referral_written_in_june_was_carried_out_in_october():
    """PT referral authored 2026-06-20 (156 days ago), completed, performed 2026-10-15 (39 days
    ago): its occurrence is in the last 90 days, so the patient has just had PT: no card.
    (Page: 'completed with authoredOn / occurrence in the last 90 days'.)"""
    request = load_vignette("pt-completed-pt-referral-last-month")
    sr = resource(request, "serviceRequests", "sr-pt-2026-10")
    sr["authoredOn"] = "2026-06-20"
    sr["occurrenceDateTime"] = "2026-10-15"
    assert pt_card(request) is None


@pytest.mark.parametrize("status", ["on-hold", "draft", "entered-in-error"])
def test_p1_fires_when_the_pt_referral_in_the_record_is_not_active(status):
    """Only an active (or recently completed) PT referral in the record is therapy in place."""
    request = load_vignette("pt-active-pt-referral-old")
    resource(request, "serviceRequests", "sr-pt-2025")["status"] = status
    c = pt_card(request)
    assert c is not None
    assert rules(c) == ["P1"]


# ---------------------------------------------------------------- rehabilitation care plans


def test_p1_not_with_an_active_pt_care_plan():
    """An active CarePlan for physical therapy (SNOMED 91251008): therapy in place."""
    assert pt_card(load_vignette("pt-active-pt-care-plan")) is None


@pytest.mark.parametrize("keep", ["category", "activity"])
def test_p1_not_when_care_plan_is_pt_by_category_or_by_activity_alone(keep):
    """Either the CarePlan category or an activity.detail.code in physical-therapy suffices."""
    request = load_vignette("pt-active-pt-care-plan")
    plan = resource(request, "carePlans", "careplan-pt")
    if keep == "category":
        del plan["activity"]
    else:
        plan["category"] = [
            {
                "coding": [
                    {
                        "system": "http://hl7.org/fhir/us/core/CodeSystem/careplan-category",
                        "code": "assess-plan",
                        "display": "Assessment and Plan of Treatment",
                    }
                ]
            }
        ]
    assert pt_card(request) is None


def test_p1_fires_when_the_pt_care_plan_is_completed():
    """A completed PT care plan is not therapy in place."""
    request = load_vignette("pt-active-pt-care-plan")
    resource(request, "carePlans", "careplan-pt")["status"] = "completed"
    c = pt_card(request)
    assert c is not None
    assert c["indicator"] == "info"
    assert_pt_suggestion(c, "pt-careplan")


# ---------------------------------------------------------------- exercise in other plans


def test_p1_fires_despite_exercise_therapy_in_a_diabetes_plan():
    """Synthea's diabetes self-management plan (prediabetes) lists 'Exercise therapy' beside
    the diabetic diet: general fitness, not therapy for the neck pain. P1 fires (info)."""
    c = pt_card(load_vignette("pt-p1-diabetes-plan-exercise-therapy"))
    assert c is not None
    assert c["indicator"] == "info"
    assert rules(c) == ["P1"]
    assert_pt_suggestion(c, "pt-dm-plan")
    sr = referral_resource(c)
    assert sr["reasonReference"] == [{"reference": "Condition/cond-pt-dm-plan-mps-neck"}]


def test_p1_fires_despite_physical_exercise_in_a_hyperlipidemia_plan():
    """Synthea's hyperlipidemia plan with 'physical exercise' (183301007) is no therapy either."""
    request = load_vignette("pt-p1-diabetes-plan-exercise-therapy")
    plan = resource(request, "carePlans", "careplan-diabetes")
    plan["category"] = [
        {
            "coding": [
                {
                    "system": SNOMED,
                    "code": "736285004",
                    "display": "Hyperlipidemia clinical management plan",
                }
            ]
        }
    ]
    plan["activity"] = [
        activity("183063000", "low salt diet education"),
        activity("183301007", "physical exercise"),
    ]
    c = pt_card(request)
    assert c is not None
    assert rules(c) == ["P1"]


# ---------------------------------------------------------------- musculoskeletal care plans


def test_p1_not_with_a_musculoskeletal_care_plan_with_joint_mobility_exercises():
    """After a whiplash injury: a Synthea-style 'Musculoskeletal care' plan (SNOMED
    872781000000100) with 'Joint mobility exercises' and heat: an exercise program for the neck
    is in place, no PT card."""
    assert pt_card(load_vignette("pt-msk-care-plan-joint-mobility")) is None


@pytest.mark.parametrize(
    ("code", "display"),
    [
        ("386294003", "Joint mobility exercises"),
        ("229070002", "Stretching exercises"),
        ("229065009", "Exercise therapy"),
        ("183301007", "Physical exercises"),
    ],
)
def test_p1_not_with_a_musculoskeletal_care_plan_with_other_exercise_codes(code, display):
    """Any exercise activity (role exercise) in the musculoskeletal plan counts."""
    request = load_vignette("pt-msk-care-plan-joint-mobility")
    resource(request, "carePlans", "careplan-msk")["activity"][0] = activity(code, display)
    assert pt_card(request) is None


def test_p1_fires_with_a_musculoskeletal_care_plan_of_heat_and_rest_only():
    """Synthea's commonest musculoskeletal plan — heat therapy and rest, no exercise — is not an
    exercise program: P1 fires."""
    request = load_vignette("pt-msk-care-plan-joint-mobility")
    resource(request, "carePlans", "careplan-msk")["activity"] = [
        activity("266694003", "Heat therapy"),
        activity("183051005", "Recommendation to rest"),
    ]
    c = pt_card(request)
    assert c is not None
    assert c["indicator"] == "info"
    assert rules(c) == ["P1"]


def test_p1_fires_when_the_musculoskeletal_care_plan_is_completed():
    """The whiplash plan completed: no therapy in place any more."""
    request = load_vignette("pt-msk-care-plan-joint-mobility")
    resource(request, "carePlans", "careplan-msk")["status"] = "completed"
    c = pt_card(request)
    assert c is not None
    assert rules(c) == ["P1"]


def test_p1_not_with_an_exercise_plan_that_addresses_the_myalgia():
    """A general 'assessment and plan' CarePlan (no musculoskeletal category) that addresses the
    neck myalgia (M79.12) with 'Exercise therapy' (a home exercise program): therapy in place."""
    assert pt_card(load_vignette("pt-exercise-plan-for-myalgia")) is None


@pytest.mark.parametrize(
    ("system", "code", "display"),
    [
        (ICD, "M54.2", "Cervicalgia"),  # regional pain
        (ICD, "M79.7", "Fibromyalgia"),
        (ICD, "M54.12", "Radiculopathy, cervical region"),
        (SNOMED, "279030006", "Myofascial pain syndrome of neck (disorder)"),
    ],
)
def test_p1_not_when_the_exercise_plan_addresses_another_pain_condition(system, code, display):
    """A plan addressing a regional pain, fibromyalgia, radiculopathy or SNOMED myofascial pain
    condition is a musculoskeletal plan too."""
    request = load_vignette("pt-exercise-plan-for-myalgia")
    resource(request, "conditions", "cond-pt-hep-m7912")["code"] = {
        "coding": [{"system": system, "code": code, "display": display}]
    }
    assert pt_card(request) is None


def test_p1_fires_when_the_exercise_plan_addresses_prediabetes():
    """The same exercise plan, addressing prediabetes instead: general fitness, P1 fires."""
    request = load_vignette("pt-exercise-plan-for-myalgia")
    add_resource(
        request,
        "conditions",
        condition("cond-pt-hep-prediabetes", SNOMED, "15777000", "Prediabetes", "2025-04-02"),
    )
    plan = resource(request, "carePlans", "careplan-hep")
    plan["addresses"] = [{"reference": "Condition/cond-pt-hep-prediabetes"}]
    c = pt_card(request)
    assert c is not None
    assert rules(c) == ["P1"]


# ---------------------------------------------------------------- draft orders


def test_p1_not_when_a_pt_order_is_among_the_drafts_even_unselected():
    """The clinician is ordering PT in the same session (draft, not selected): no card, and
    therefore no duplicate PT suggestion."""
    assert pt_card(load_vignette("pt-draft-pt-order-not-selected")) is None


def test_p1_not_when_a_pt_order_is_signed_with_the_tpi():
    """On order-sign the PT draft counts the same way."""
    request = to_order_sign(load_vignette("pt-draft-pt-order-not-selected"))
    assert pt_card(request) is None


def test_order_sign_counts_a_tpi_among_other_orders():
    """order-sign with a lipid panel and a TPI (no selections): every draft order counts, so the
    TPI triggers P1 (a first TPI: info)."""
    c = pt_card(load_vignette("pt-order-sign-tpi-among-orders"))
    assert c is not None
    assert c["indicator"] == "info"
    assert rules(c) == ["P1"]
    assert_pt_suggestion(c, "pt-sign")


def test_order_select_of_the_lab_in_the_same_orders_gives_nothing():
    """Counterpart: on order-select with only the lipid panel selected, the TPI is not the
    order being selected: no cards at all."""
    request = load_vignette("pt-order-sign-tpi-among-orders")
    request["hook"] = "order-select"
    request["context"]["selections"] = ["ServiceRequest/lipid-1"]
    assert evaluate(request) == {"cards": []}


def test_order_sign_counts_a_re_signed_tpi_that_is_not_draft():
    """On order-sign, orders may be re-signed with status active: the TPI still triggers P1."""
    request = load_vignette("pt-order-sign-tpi-among-orders")
    for entry in request["context"]["draftOrders"]["entry"]:
        entry["resource"]["status"] = "active"
    c = pt_card(request)
    assert c is not None
    assert_pt_suggestion(c, "pt-sign")


# ---------------------------------------------------------------- P2 (patient-view)


def test_p2_tpi_last_month_without_pt_on_patient_view():
    """Patient-view, TPI on 2026-10-24, no PT: info card with the same PT suggestion; the
    order-time topics (safety, eligibility) do not appear on patient-view."""
    response = evaluate_vignette("pt-p2-tpi-last-month-no-therapy")
    c = card(response, TOPIC)
    assert c is not None
    assert_well_formed(c)
    assert c["indicator"] == "info"
    assert rules(c) == ["P2"]
    assert_pt_suggestion(c, "pt-pv")
    assert "2026-10-24" in c["detail"]
    assert not topics(response) & {"tpi-safety", "tpi-eligibility"}


def test_p2_referral_takes_its_sites_from_the_latest_session():
    """Two TPIs: the neck on 2026-10-24 and the trapezius on 2026-11-09. The P2 referral is
    filled like P1's, with the latest session's site, the myalgia as its reason and the user as
    requester."""
    request = load_vignette("pt-p2-tpi-last-month-no-therapy")
    later = dict(resource(request, "procedures", "tpi-2026-10-24"))
    later.update(id="tpi-2026-11-09", performedDateTime="2026-11-09T10:00:00-05:00")
    later["bodySite"] = [TRAPEZIUS]
    add_resource(request, "procedures", later)
    c = pt_card(request)
    assert c is not None
    assert rules(c) == ["P2"]
    sr = referral_resource(c)
    assert sr["bodySite"] == [TRAPEZIUS]
    assert sr["reasonReference"] == [{"reference": "Condition/cond-pt-pv-m7912"}]
    assert sr["requester"] == {"reference": "Practitioner/dr-okafor"}
    assert sr["occurrencePeriod"] == {"start": "2026-11-23", "end": "2026-12-07"}
    assert [(x["system"], x["code"]) for x in sr["performerType"]["coding"]] == [
        (SNOMED, PHYSIOTHERAPIST)
    ]


def test_p2_tpi_exactly_90_days_ago_still_counts():
    """A TPI on 2026-08-25 (today - 90) is in the last 90 days."""
    request = load_vignette("pt-p2-tpi-last-month-no-therapy")
    resource(request, "procedures", "tpi-2026-10-24")["performedDateTime"] = (
        "2026-08-25T10:00:00-05:00"
    )
    c = pt_card(request)
    assert c is not None
    assert c["indicator"] == "info"


def test_p2_not_when_the_tpi_was_91_days_ago():
    """A TPI on 2026-08-24 (today - 91) is not recent: no PT card on patient-view."""
    request = load_vignette("pt-p2-tpi-last-month-no-therapy")
    resource(request, "procedures", "tpi-2026-10-24")["performedDateTime"] = (
        "2026-08-24T10:00:00-05:00"
    )
    assert pt_card(request) is None


def test_p2_not_when_pt_is_underway():
    """TPI on 2026-10-24 followed by PT evaluation and exercise visits: no PT card."""
    assert pt_card(load_vignette("pt-p2-tpi-last-month-therapy-underway")) is None


def test_p2_not_with_a_musculoskeletal_exercise_plan():
    """Patient-view: the TPI of 2026-10-24 and an active musculoskeletal plan with joint
    mobility exercises: therapy in place, no card."""
    request = load_vignette("pt-p2-tpi-last-month-no-therapy")
    request["prefetch"]["carePlans"] = load_vignette("pt-msk-care-plan-joint-mobility")["prefetch"][
        "carePlans"
    ]
    assert pt_card(request) is None


# ---------------------------------------------------------------- card content, precedence


def test_pt_card_offers_the_pt_override_reasons_and_snoozes():
    """pt-integration override reasons: patient declined, addressed elsewhere, clinical
    judgment, and the two snoozes — not the payer or safety reasons."""
    c = pt_card(load_vignette("pt-p1-first-tpi-no-therapy"))
    assert c is not None
    assert {r["code"] for r in c["overrideReasons"]} == {
        "patient-declined",
        "addressed-elsewhere",
        "clinical-judgment",
        "snooze-30",
        "snooze-90",
    }


def test_a_critical_infection_card_stands_alone():
    """Sepsis diagnosed 3 days ago (A41.9): do not inject; the response holds the safety card
    alone, no PT card."""
    request = load_vignette("pt-p1-first-tpi-no-therapy")
    add_resource(
        request,
        "conditions",
        condition("cond-pt-first-a419", ICD, "A41.9", "Sepsis, unspecified organism", "2026-11-20"),
    )
    response = evaluate(request)
    assert topics(response) == {"tpi-safety"}
    assert card(response, "tpi-safety")["indicator"] == "critical"


def test_a_critical_anesthetic_allergy_hides_nothing():
    """Anaphylaxis to lidocaine: critical S2 (another injectate), and the PT card still shows."""
    request = load_vignette("pt-p1-first-tpi-no-therapy")
    add_resource(
        request,
        "allergies",
        {
            "resourceType": "AllergyIntolerance",
            "id": "allergy-lidocaine",
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                        "code": "active",
                    }
                ]
            },
            "criticality": "high",
            "code": {
                "coding": [
                    {
                        "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                        "code": "6387",
                        "display": "Lidocaine",
                    }
                ]
            },
            "patient": {"reference": "Patient/pt-first"},
        },
    )
    response = evaluate(request)
    assert card(response, "tpi-safety")["indicator"] == "critical"
    c = card(response, TOPIC)
    assert c is not None
    assert rules(c) == ["P1"]


@pytest.mark.parametrize("name", sorted(p.stem for p in VIGNETTES.glob("pt-*.json")))
def test_every_pt_vignette_card_is_well_formed(name):
    """Every card of every pt- vignette keeps the engine's promises (conftest)."""
    for c in evaluate_vignette(name)["cards"]:
        assert_well_formed(c)
        assert c["extension"]["tpi-rules"] == sorted(c["extension"]["tpi-rules"])
