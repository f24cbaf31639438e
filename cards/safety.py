"""Topic ``tpi-safety`` (rules S1-S6): contraindications at order time."""

from __future__ import annotations

from cards.card import Finding, Indicator, Sources, Suggestion, TopicAdvice, join_evidence
from cards.facts import Evidence, Facts
from cards.reading import format_number


def safety_advice(facts: Facts) -> TopicAdvice:
    advice = TopicAdvice("tpi-safety")
    for rule in (
        active_infection,
        anesthetic_allergy,
        anticoagulation,
        bleeding_disorder,
        steroid_with_uncontrolled_diabetes,
        steroid_in_pregnancy,
    ):
        advice.add(rule(facts))
    if any(f.indicator is Indicator.CRITICAL for f in advice.findings):
        withdraw = withdraw_tpi_order(facts)
        if withdraw is not None:
            advice.suggestions.append(withdraw)
    return advice


def active_infection(facts: Facts) -> Finding | None:
    """S1: cellulitis / skin infection or sepsis: do not inject."""
    infections = facts.conditions_in("active-infection")
    if not infections:
        return None
    return Finding(
        "S1",
        Indicator.CRITICAL,
        "Active infection",
        f"{infections[0].text} is active: do not perform the trigger point injection",
        f"Active: {join_evidence(infections)}. Do not inject through infected skin or while the "
        "patient is systemically infected; treat the infection first and reorder afterwards.",
        (Sources.AFP_2023, Sources.AFP_2002),
    )


def anesthetic_allergy(facts: Facts) -> Finding | None:
    """S2: allergy to an amide local anesthetic: avoid that agent."""
    allergies = facts.anesthetic_allergies()
    if not allergies:
        return None
    return Finding(
        "S2",
        Indicator.CRITICAL,
        "Local anesthetic allergy",
        f"Recorded {allergies[0].text}: do not inject it; use saline or another agent",
        f"Recorded: {join_evidence(allergies)}. Avoid that agent: use preservative-free saline "
        "or dry needling, or another agent after allergy review. No injectate has been shown "
        "better than another for trigger points.",
        (Sources.AFP_2023, Sources.SCOTT),
    )


def anticoagulation(facts: Facts) -> Finding | None:
    """S3: an anticoagulant or P2Y12 antiplatelet (aspirin alone does not count)."""
    drugs = facts.medications_in("anticoagulants")
    drugs += facts.conditions_in("long-term-anticoagulant-use")
    if not drugs:
        return None
    return Finding(
        "S3",
        Indicator.WARNING,
        "Bleeding risk",
        f"On {drugs[0].text}: bleeding risk with trigger point injection",
        f"Active: {join_evidence(drugs)}. Weigh the bleeding risk, apply firm pressure after "
        "each injection and avoid deep sites. Holding the drug is the prescriber's call.",
        (Sources.AFP_2023,),
    )


def bleeding_disorder(facts: Facts) -> Finding | None:
    """S4: a bleeding disorder (D65-D69, thrombophilias excluded)."""
    disorders = facts.conditions_in("bleeding-disorders")
    if not disorders:
        return None
    return Finding(
        "S4",
        Indicator.WARNING,
        "Bleeding disorder",
        f"{disorders[0].text} on record: defer the injection pending hematology input",
        f"Active: {join_evidence(disorders)}. Defer the trigger point injection until "
        "hematology has advised on bleeding risk.",
        (Sources.AFP_2023,),
    )


def steroid_with_uncontrolled_diabetes(facts: Facts) -> Finding | None:
    """S5: a corticosteroid in the order and uncontrolled diabetes."""
    steroids = facts.draft_medications_in("corticosteroids")
    if not steroids:
        return None
    evidence: list[Evidence] = facts.conditions_in("uncontrolled-diabetes")
    hba1c = facts.latest_hba1c
    if hba1c is not None and hba1c.value >= facts.policy.hba1c_threshold:
        evidence.append(Evidence(f"latest HbA1c {hba1c.text}", hba1c.day))
    if not evidence:
        return None
    threshold = format_number(facts.policy.hba1c_threshold)
    return Finding(
        "S5",
        Indicator.WARNING,
        "Steroid with uncontrolled diabetes",
        f"Uncontrolled diabetes ({evidence[0]}): leave the steroid out of the injection",
        f"Ordered: {join_evidence(steroids)}. Diabetes is not controlled: "
        f"{join_evidence(evidence)} (threshold HbA1c {threshold} % within "
        f"{facts.policy.hba1c_window_days} days). A corticosteroid raises blood glucose; "
        "local anesthetic alone works as well for trigger points.",
        (Sources.SCOTT, Sources.AFP_2023),
    )


def steroid_in_pregnancy(facts: Facts) -> Finding | None:
    """S6: a corticosteroid in the order and the patient is pregnant."""
    steroids = facts.draft_medications_in("corticosteroids")
    if not steroids or not facts.pregnancy:
        return None
    return Finding(
        "S6",
        Indicator.WARNING,
        "Steroid in pregnancy",
        "Patient is pregnant: avoid the corticosteroid and reconsider timing",
        f"Ordered: {join_evidence(steroids)}. Pregnancy: {join_evidence(facts.pregnancy)}. "
        "Avoid the steroid (local anesthetic alone works as well) and reconsider the timing "
        "of the injection.",
        (Sources.SCOTT,),
    )


def withdraw_tpi_order(facts: Facts) -> Suggestion | None:
    """Remove the contraindicated draft TPI order(s), by reference."""
    references = [o.reference for o in facts.orders.tpi_orders if o.reference]
    if not references:
        return None
    actions = tuple(
        {
            "type": "delete",
            "description": f"Remove the draft trigger point injection order {reference}",
            "resourceId": reference,
        }
        for reference in references
    )
    return Suggestion("Remove the trigger point injection order", actions, recommended=True)
