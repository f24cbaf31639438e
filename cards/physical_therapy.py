"""Topic ``pt-integration`` (rules P1-P2): a TPI is an adjunct to active therapy."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cards.card import Finding, Indicator, Sources, Suggestion, TopicAdvice, is_snoozed
from cards.facts import Facts
from cards.response import within
from cards.terminology import Concept

ADJUNCT = (
    "A trigger point injection is an adjunct to active therapy, not a stand-alone treatment: "
    "stretching / physical therapy within 1-2 weeks after it. Payers require an active "
    "rehabilitation or home exercise program."
)
NOT_IN_PLACE = (
    "No active therapy in place: no PT or OT session in the last {days} days, no active PT "
    "referral (or one completed in the last {days} days), no rehabilitation care plan or "
    "musculoskeletal exercise plan, no PT order among the draft orders."
)


def pt_advice(facts: Facts) -> TopicAdvice:
    advice = TopicAdvice("pt-integration")
    finding = (
        order_without_therapy(facts)
        if facts.orders.is_order_hook
        else recent_tpi_without_therapy(facts)
    )
    if finding is not None and is_snoozed(finding.rule, facts.snoozed):
        finding = None
    advice.add(finding)
    if finding is not None:
        advice.suggestions.append(pt_referral_suggestion(facts))
    return advice


def order_without_therapy(facts: Facts) -> Finding | None:
    """P1: a TPI is being ordered with no active therapy in place; a warning for a repeat
    (a TPI session in the last year): stand-alone repeats are what payers reject."""
    if facts.active_therapy:
        return None
    not_in_place = NOT_IN_PLACE.format(days=facts.policy.pt_lookback_days)
    sessions = facts.sessions_last_year
    if sessions:
        last = sessions[-1].day.isoformat()
        return Finding(
            "P1",
            Indicator.WARNING,
            "Repeat injection without therapy",
            "Repeat trigger point injection with no physical therapy in place: refer to PT",
            f"{len(sessions)} earlier session{'' if len(sessions) == 1 else 's'} in 12 months, "
            f"the last on {last}. "
            f"{not_in_place} {ADJUNCT}",
            (Sources.LCD, Sources.AFP_2023),
        )
    return Finding(
        "P1",
        Indicator.INFO,
        "No active therapy",
        "No physical therapy in place: a trigger point injection is an adjunct, pair it with PT",
        f"{not_in_place} {ADJUNCT}",
        (Sources.LCD, Sources.AFP_2023),
    )


def recent_tpi_without_therapy(facts: Facts) -> Finding | None:
    """P2 (patient-view): a TPI in the last 90 days and no active therapy."""
    days = facts.policy.pt_after_tpi_days
    recent = [s for s in facts.sessions if within(s.day, facts.today, days)]
    if not recent or facts.active_therapy:
        return None
    last = recent[-1].day.isoformat()
    return Finding(
        "P2",
        Indicator.INFO,
        "Injection without therapy",
        f"Trigger point injection on {last} and no physical therapy in place: refer to PT",
        f"Last injection {last}. "
        + NOT_IN_PLACE.format(days=facts.policy.pt_lookback_days)
        + " "
        + ADJUNCT,
        (Sources.LCD, Sources.AFP_2023),
    )


def pt_referral_suggestion(facts: Facts) -> Suggestion:
    concept = facts.terminology.role("physical-therapy", "pt_referral").suggested
    resource = referral_request(facts, concept)
    performer = facts.terminology["pt-performer"].suggested
    resource["performerType"] = {"coding": [performer.as_coding()], "text": performer.display}
    resource["occurrencePeriod"] = {
        "start": facts.today.isoformat(),
        "end": (facts.today + timedelta(days=facts.policy.pt_referral_window_days)).isoformat(),
    }
    sites = pt_body_sites(facts)
    if sites:
        resource["bodySite"] = sites
    action = {"type": "create", "description": "Refer to physical therapy", "resource": resource}
    return Suggestion("Refer to physical therapy", (action,), recommended=True)


def pt_body_sites(facts: Facts) -> list[dict[str, Any]]:
    """P1: the TPI order's bodySites; P2: those of the latest session."""
    if facts.orders.is_order_hook:
        return [dict(c) for o in facts.orders.tpi_orders for c in o.body_site_concepts if c]
    recent = facts.sessions[-1] if facts.sessions else None
    if recent is None:
        return []
    return [
        {"coding": [{"system": s.system, "code": s.code, "display": s.display}]}
        if s.system
        else {"text": s.display}
        for concept in recent.site_concepts
        for s in concept[:1]
    ]


def referral_request(
    facts: Facts, concept: Concept, reason_condition: Any | None = None
) -> dict[str, Any]:
    """A whole FHIR R4 ServiceRequest the EHR can create and sign as is.

    Its reason: the given Condition, else the first active qualifying Condition of the
    record, else the TPI order's own reasonCode, else none.
    """
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "code": {"coding": [concept.as_coding()], "text": concept.display},
        "subject": {"reference": f"Patient/{facts.orders.patient_id}"},
        "authoredOn": facts.today.isoformat(),
    }
    if facts.orders.user_reference:
        resource["requester"] = {"reference": facts.orders.user_reference}
    if facts.orders.encounter_id:
        resource["encounter"] = {"reference": f"Encounter/{facts.orders.encounter_id}"}
    condition = reason_condition or facts.first_qualifying_condition()
    if condition is not None and condition.id:
        resource["reasonReference"] = [{"reference": f"Condition/{condition.id}"}]
    else:
        reasons = [dict(c) for o in facts.orders.tpi_orders for c in o.reason_concepts if c]
        if reasons:
            resource["reasonCode"] = reasons
    return resource
