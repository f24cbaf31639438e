"""Clinical vignettes for the pt-integration topic (rules P1 at order time, P2 on patient-view)."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import card, evaluate, evaluate_vignette, load_vignette, resource, topics

TOPIC = "pt-integration"
SNOMED = "http://snomed.info/sct"
PT_REFERRAL = "308447003"


def assert_pt_suggestion(c: dict[str, Any], patient_id: str) -> None:
    """One suggestion, recommended: create a draft PT referral ServiceRequest for the patient."""
    assert "selectionBehavior" in c
    (s,) = c["suggestions"]
    assert s["uuid"] and s["label"]
    assert s["isRecommended"] is True
    (action,) = s["actions"]
    assert action["type"] == "create"
    sr = action["resource"]
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


# ---------------------------------------------------------------- P1 fires


def test_p1_tpi_without_any_physical_therapy_suggests_pt_referral():
    """First TPI for neck myalgia, no PT anywhere: warning, PT referral suggested and
    recommended (a TPI is an adjunct to active therapy)."""
    c = card(evaluate_vignette("pt-p1-first-tpi-no-therapy"), TOPIC)
    assert c is not None
    assert c["indicator"] == "warning"
    assert_pt_suggestion(c, "pt-first")


# ---------------------------------------------------------------- PT procedures


def test_p1_not_when_therapeutic_exercise_visit_49_days_ago():
    """A PT exercise visit (CPT 97110) on 2026-10-05: therapy in place, no card."""
    assert card(evaluate_vignette("pt-recent-therapeutic-exercise"), TOPIC) is None


def test_p1_not_when_pt_evaluation_49_days_ago():
    """A PT evaluation (CPT 97161) counts like an exercise visit."""
    request = load_vignette("pt-recent-therapeutic-exercise")
    resource(request, "procedures", "pt-visit-2026-10-05")["code"] = {
        "coding": [
            {
                "system": "http://www.ama-assn.org/go/cpt",
                "code": "97161",
                "display": "Physical therapy evaluation, low complexity",
            }
        ],
        "text": "PT evaluation: neck",
    }
    assert card(evaluate(request), TOPIC) is None


def test_p1_not_when_pt_visit_exactly_90_days_ago():
    """'In the last 90 days' includes 2026-08-25 (today - 90)."""
    request = load_vignette("pt-recent-therapeutic-exercise")
    resource(request, "procedures", "pt-visit-2026-10-05")["performedDateTime"] = (
        "2026-08-25T14:00:00-05:00"
    )
    assert card(evaluate(request), TOPIC) is None


def test_p1_fires_when_the_only_pt_visit_is_120_days_old():
    """PT last seen 2026-07-26: no longer in place, P1 fires."""
    request = load_vignette("pt-recent-therapeutic-exercise")
    resource(request, "procedures", "pt-visit-2026-10-05")["performedDateTime"] = (
        "2026-07-26T14:00:00-05:00"
    )
    c = card(evaluate(request), TOPIC)
    assert c is not None
    assert c["indicator"] == "warning"
    assert_pt_suggestion(c, "pt-exercise")


# ---------------------------------------------------------------- PT referrals


def test_p1_not_with_an_active_pt_referral_of_any_date():
    """A PT referral authored 2025-05-14 and still active: therapy in place."""
    assert card(evaluate_vignette("pt-active-pt-referral-old"), TOPIC) is None


def test_p1_fires_when_the_old_pt_referral_was_revoked():
    """The same referral revoked is no therapy: P1 fires."""
    request = load_vignette("pt-active-pt-referral-old")
    resource(request, "serviceRequests", "sr-pt-2025")["status"] = "revoked"
    c = card(evaluate(request), TOPIC)
    assert c is not None
    assert_pt_suggestion(c, "pt-active-ref")


def test_p1_not_with_a_pt_referral_completed_30_days_ago():
    """A PT course completed, authored 2026-10-24: recent therapy, no card."""
    assert card(evaluate_vignette("pt-completed-pt-referral-last-month"), TOPIC) is None


def test_p1_fires_when_the_completed_pt_referral_is_120_days_old():
    """A completed PT referral authored 2026-07-26 is outside 90 days: P1 fires."""
    request = load_vignette("pt-completed-pt-referral-last-month")
    resource(request, "serviceRequests", "sr-pt-2026-10")["authoredOn"] = "2026-07-26"
    c = card(evaluate(request), TOPIC)
    assert c is not None
    assert_pt_suggestion(c, "pt-done-ref")


# ---------------------------------------------------------------- care plans


def test_p1_not_with_an_active_pt_care_plan():
    """An active CarePlan for physical therapy (SNOMED 91251008): therapy in place."""
    assert card(evaluate_vignette("pt-active-pt-care-plan"), TOPIC) is None


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
    assert card(evaluate(request), TOPIC) is None


def test_p1_fires_when_the_pt_care_plan_is_completed():
    """A completed PT care plan is not therapy in place."""
    request = load_vignette("pt-active-pt-care-plan")
    resource(request, "carePlans", "careplan-pt")["status"] = "completed"
    c = card(evaluate(request), TOPIC)
    assert c is not None
    assert c["indicator"] == "warning"
    assert_pt_suggestion(c, "pt-careplan")


# ---------------------------------------------------------------- draft orders


def test_p1_not_when_a_pt_order_is_among_the_drafts_even_unselected():
    """The clinician is ordering PT in the same session (draft, not selected): no card, and
    therefore no duplicate PT suggestion."""
    assert card(evaluate_vignette("pt-draft-pt-order-not-selected"), TOPIC) is None


def test_p1_not_when_a_pt_order_is_signed_with_the_tpi():
    """On order-sign the PT draft counts the same way."""
    request = to_order_sign(load_vignette("pt-draft-pt-order-not-selected"))
    assert card(evaluate(request), TOPIC) is None


def test_order_sign_counts_a_tpi_among_other_orders():
    """order-sign with a lipid panel and a TPI (no selections): every draft order counts, so the
    TPI triggers P1."""
    c = card(evaluate_vignette("pt-order-sign-tpi-among-orders"), TOPIC)
    assert c is not None
    assert c["indicator"] == "warning"
    assert_pt_suggestion(c, "pt-sign")


def test_order_select_of_the_lab_in_the_same_orders_gives_nothing():
    """Counterpart: on order-select with only the lipid panel selected, the TPI is not the
    order being selected: no cards at all."""
    request = load_vignette("pt-order-sign-tpi-among-orders")
    request["hook"] = "order-select"
    request["context"]["selections"] = ["ServiceRequest/lipid-1"]
    assert evaluate(request) == {"cards": []}


# ---------------------------------------------------------------- P2 (patient-view)


def test_p2_tpi_last_month_without_pt_on_patient_view():
    """Patient-view, TPI on 2026-10-24, no PT: info card with the same PT suggestion; the
    order-time topics (safety, eligibility) do not appear on patient-view."""
    response = evaluate_vignette("pt-p2-tpi-last-month-no-therapy")
    c = card(response, TOPIC)
    assert c is not None
    assert c["indicator"] == "info"
    assert_pt_suggestion(c, "pt-pv")
    assert not topics(response) & {"tpi-safety", "tpi-eligibility"}


def test_p2_tpi_exactly_90_days_ago_still_counts():
    """A TPI on 2026-08-25 (today - 90) is in the last 90 days."""
    request = load_vignette("pt-p2-tpi-last-month-no-therapy")
    resource(request, "procedures", "tpi-2026-10-24")["performedDateTime"] = (
        "2026-08-25T10:00:00-05:00"
    )
    c = card(evaluate(request), TOPIC)
    assert c is not None
    assert c["indicator"] == "info"


def test_p2_not_when_the_tpi_was_200_days_ago():
    """A TPI on 2026-05-07 is not recent: no PT card on patient-view."""
    request = load_vignette("pt-p2-tpi-last-month-no-therapy")
    resource(request, "procedures", "tpi-2026-10-24")["performedDateTime"] = (
        "2026-05-07T10:00:00-05:00"
    )
    assert card(evaluate(request), TOPIC) is None


def test_p2_not_when_pt_is_underway():
    """TPI on 2026-10-24 followed by PT evaluation and exercise visits: no PT card."""
    assert card(evaluate_vignette("pt-p2-tpi-last-month-therapy-underway"), TOPIC) is None


# ---------------------------------------------------------------- more ways PT is in place


def test_p1_not_with_an_active_referral_to_a_physiotherapy_service():
    """Another PT referral code of the value set (SNOMED 306170007) counts the same."""
    request = load_vignette("pt-active-pt-referral-old")
    resource(request, "serviceRequests", "sr-pt-2025")["code"] = {
        "coding": [
            {
                "system": SNOMED,
                "code": "306170007",
                "display": "Referral to physiotherapy service (procedure)",
            }
        ],
        "text": "Physiotherapy service",
    }
    assert card(evaluate(request), TOPIC) is None


def test_p1_not_with_a_completed_pt_referral_dated_by_occurrence():
    """A completed PT referral with no authoredOn but performed (occurrence) 2026-10-24."""
    request = load_vignette("pt-completed-pt-referral-last-month")
    sr = resource(request, "serviceRequests", "sr-pt-2026-10")
    del sr["authoredOn"]
    sr["occurrenceDateTime"] = "2026-10-24"
    assert card(evaluate(request), TOPIC) is None


def test_order_sign_counts_a_re_signed_tpi_that_is_not_draft():
    """On order-sign, orders may be re-signed with status active: the TPI still triggers P1."""
    request = load_vignette("pt-order-sign-tpi-among-orders")
    for entry in request["context"]["draftOrders"]["entry"]:
        entry["resource"]["status"] = "active"
    c = card(evaluate(request), TOPIC)
    assert c is not None
    assert_pt_suggestion(c, "pt-sign")
