"""Topic ``pt-integration`` (rules P1-P2): a TPI is an adjunct to active therapy."""

from __future__ import annotations

from typing import Any

from cards.card import Finding, Indicator, Sources, Suggestion, TopicAdvice
from cards.facts import Facts
from cards.response import within
from cards.terminology import Concept

ADJUNCT = (
    "A TPI is an adjunct to active therapy, not a stand-alone treatment: start stretching / "
    "physical therapy within 1-2 weeks after the injection. Payers require an active rehab or "
    "home exercise program."
)
NOT_IN_PLACE = (
    "No physical therapy in place: no PT procedure in the last {days} days, no active PT "
    "referral (or one completed in the last {days} days), no active PT care plan, no PT "
    "order among the draft orders."
)


def pt_advice(facts: Facts) -> TopicAdvice:
    advice = TopicAdvice("pt-integration")
    finding = (
        order_without_pt(facts) if facts.orders.is_order_hook else recent_tpi_without_pt(facts)
    )
    advice.add(finding)
    if finding is not None:
        advice.suggestions.append(pt_referral_suggestion(facts))
    return advice


def order_without_pt(facts: Facts) -> Finding | None:
    """P1: a TPI is being ordered and no physical therapy is in place."""
    if facts.physical_therapy:
        return None
    return Finding(
        "P1",
        Indicator.WARNING,
        "No active rehabilitation",
        "No physical therapy in place: a TPI is an adjunct, pair it with PT",
        NOT_IN_PLACE.format(days=facts.policy.pt_lookback_days) + " " + ADJUNCT,
        (Sources.LCD, Sources.AFP_2023),
    )


def recent_tpi_without_pt(facts: Facts) -> Finding | None:
    """P2 (patient-view): a TPI in the last 90 days and no physical therapy."""
    days = facts.policy.pt_after_tpi_days
    recent = [s for s in facts.sessions if within(s.day, facts.today, days)]
    if not recent or facts.physical_therapy:
        return None
    last = recent[-1].day.isoformat()
    return Finding(
        "P2",
        Indicator.INFO,
        "TPI without rehabilitation",
        f"TPI on {last} and no physical therapy in place: refer to PT",
        f"Last TPI {last}. "
        + NOT_IN_PLACE.format(days=facts.policy.pt_lookback_days)
        + " "
        + ADJUNCT,
        (Sources.LCD, Sources.AFP_2023),
    )


def pt_referral_suggestion(facts: Facts) -> Suggestion:
    concept = facts.terminology["pt-referral"].suggested
    resource = referral_request(facts, concept, "Trigger point injection: adjunct physical therapy")
    action = {"type": "create", "description": "Refer to physical therapy", "resource": resource}
    return Suggestion("Refer to physical therapy", (action,), recommended=True)


def referral_request(facts: Facts, concept: Concept, reason: str) -> dict[str, Any]:
    """A whole FHIR R4 ServiceRequest the EHR can create with one click."""
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "code": {"coding": [concept.as_coding()], "text": concept.display},
        "subject": {"reference": f"Patient/{facts.orders.patient_id}"},
        "authoredOn": facts.today.isoformat(),
        "reasonCode": [{"text": reason}],
    }
    if facts.orders.encounter_id:
        resource["encounter"] = {"reference": f"Encounter/{facts.orders.encounter_id}"}
    return resource
