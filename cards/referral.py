"""Topic ``specialist-referral`` (rules R1-R5): stop repeating what does not work; refer.

Candidates: pain medicine and PM&R always (PM&R only for R5 alone), rheumatology for R3,
neurology for R4. Never to a specialty the patient already has a referral to, nor to the
ordering user's own specialty.
"""

from __future__ import annotations

from dataclasses import dataclass

from cards.card import Finding, Indicator, Sources, Suggestion, TopicAdvice, join_evidence
from cards.facts import REFERRAL_VALUE_SETS, Facts
from cards.physical_therapy import referral_request
from cards.response import Response, describe_response

SPECIALTY_NAMES = {
    "neurology": "neurology",
    "rheumatology": "rheumatology",
    "pain": "pain medicine",
    "rehabilitation": "PM&R (physiatry)",
}
PREFERENCE = ("neurology", "rheumatology", "pain", "rehabilitation")


@dataclass(frozen=True)
class ReferralFindings:
    nonresponse: Finding | None
    session_cap: Finding | None
    widespread: Finding | None
    headache: Finding | None
    radiculopathy: Finding | None

    def all(self) -> list[Finding]:
        found = (
            self.nonresponse,
            self.session_cap,
            self.widespread,
            self.headache,
            self.radiculopathy,
        )
        return [f for f in found if f is not None]


def referral_advice(facts: Facts) -> TopicAdvice:
    advice = TopicAdvice("specialist-referral")
    if not has_tpi_context(facts):
        return advice
    findings = referral_findings(facts)
    for finding in findings.all():
        advice.add(finding)
    if not advice.findings:
        return advice
    candidates = candidate_specialties(findings)
    offered, suppressed = [], []
    for category in candidates:
        reason = suppression_reason(facts, category)
        (suppressed if reason else offered).append((category, reason))
    recommended = next((c for c in PREFERENCE if c in {o for o, _ in offered}), None)
    for category, _ in offered:
        advice.suggestions.append(referral_suggestion(facts, category, category == recommended))
    lead = advice.ordered()[0]
    target = f"refer to {SPECIALTY_NAMES[recommended]}" if recommended else "referral in place"
    joiner = "; " if ":" in lead.summary else ": "
    advice.summary = f"{lead.summary}{joiner}{target}"
    notes = [f"not suggested: {SPECIALTY_NAMES[c]} ({reason})" for c, reason in suppressed]
    if notes:
        advice.footer = "Referral " + "; ".join(notes) + "."
    return advice


def has_tpi_context(facts: Facts) -> bool:
    """On order hooks a TPI order; on patient-view a TPI session in the last year."""
    if facts.orders.is_order_hook:
        return bool(facts.orders.tpi_orders)
    return bool(facts.sessions_last_year)


def referral_findings(facts: Facts) -> ReferralFindings:
    policy = facts.policy
    sessions = facts.sessions_last_year
    nonresponders = [r for r in facts.responses if r.clinical is Response.NON_RESPONDER]
    nonresponse = None
    if len(nonresponders) >= policy.nonresponder_referral_count:
        evidence = "; ".join(describe_response(r, policy) for r in nonresponders)
        nonresponse = Finding(
            "R1",
            Indicator.WARNING,
            "No response to repeated TPIs",
            f"{len(nonresponders)} of the last {len(sessions)} TPIs gave no meaningful relief",
            "Sessions without a clinically important response (under "
            f"{round(policy.clinical_relief * 100)} % and under "
            f"{policy.clinical_drop:g} points of relief): {evidence}. Stop repeating "
            "injections that do not help.",
            (Sources.FARRAR, Sources.LCD),
        )
    cap = None
    if len(sessions) >= policy.session_cap:
        days = ", ".join(s.day.isoformat() for s in sessions)
        cap = Finding(
            "R2",
            Indicator.WARNING,
            "Recurrent pain",
            f"{len(sessions)} TPIs in 12 months (limit {policy.session_cap})",
            f"{len(sessions)} sessions in the last 12 months ({days}), at or over the "
            f"{policy.name} limit of {policy.session_cap}: recurrent pain needs a specialist "
            "reassessment, whatever the response to each injection.",
            (Sources.LCD,),
        )
    widespread = _widespread(facts, escalate=bool(nonresponse or cap))
    headache = None
    if nonresponse or cap:
        headaches = facts.conditions_in("headache-diagnoses")
        if headaches:
            headache = Finding(
                "R4",
                Indicator.WARNING,
                "Headache phenotype",
                f"Headache disorder ({headaches[0].text}) not settling with TPIs",
                f"Active: {join_evidence(headaches)}. With repeated or unhelpful injections, "
                "a neurology opinion on the headache is the next step.",
                (Sources.AFP_2023,),
            )
    radiculopathy = None
    radicular = facts.conditions_in("radiculopathy")
    if radicular:
        radiculopathy = Finding(
            "R5",
            Indicator.INFO,
            "Radicular pain",
            f"{radicular[0].text} on record: pain may not be myofascial",
            f"Active: {join_evidence(radicular)}. Radicular pain is possibly not myofascial: "
            "a PM&R evaluation can sort out the pain generator.",
            (Sources.AFP_2023,),
        )
    return ReferralFindings(nonresponse, cap, widespread, headache, radiculopathy)


def _widespread(facts: Facts, *, escalate: bool) -> Finding | None:
    """R3: fibromyalgia, or sessions at 3+ distinct body sites in the last year."""
    fibromyalgia = facts.conditions_in("fibromyalgia")
    sites = {}
    for session in facts.sessions_last_year:
        for site in session.sites:
            sites.setdefault((site.system, site.code), site.display)
    enough_sites = len(sites) >= facts.policy.widespread_site_count
    if not fibromyalgia and not enough_sites:
        return None
    evidence = []
    if fibromyalgia:
        evidence.append(f"active {join_evidence(fibromyalgia)}")
    if enough_sites:
        evidence.append(
            f"TPIs at {len(sites)} different sites in 12 months ({', '.join(sites.values())})"
        )
    summary = (
        f"Widespread pain with {fibromyalgia[0].text}"
        if fibromyalgia
        else f"TPIs at {len(sites)} different sites in 12 months (widespread pain)"
    )
    return Finding(
        "R3",
        Indicator.WARNING if escalate else Indicator.INFO,
        "Widespread pain",
        summary,
        f"{'; '.join(evidence).capitalize()}. Widespread pain is better assessed by "
        "rheumatology than treated with repeated local injections.",
        (Sources.BCBSA,),
    )


def candidate_specialties(findings: ReferralFindings) -> list[str]:
    if findings.radiculopathy and not (
        findings.nonresponse or findings.session_cap or findings.widespread
    ):
        return ["rehabilitation"]
    candidates = ["pain", "rehabilitation"]
    if findings.widespread:
        candidates.append("rheumatology")
    if findings.headache:
        candidates.append("neurology")
    return candidates


def suppression_reason(facts: Facts, category: str) -> str | None:
    """Why a specialty is not suggested: a referral in place, or the user's own specialty."""
    if category in facts.user_specialties:
        return "the ordering clinician's own specialty"
    existing = facts.referral_in_place(category)
    if existing is not None:
        return f"already referred: {existing}"
    return None


def referral_suggestion(facts: Facts, category: str, recommended: bool) -> Suggestion:
    concept = facts.terminology[REFERRAL_VALUE_SETS[category]].suggested
    name = SPECIALTY_NAMES[category]
    resource = referral_request(facts, concept, "Trigger point injections: specialist reassessment")
    action = {"type": "create", "description": f"Refer to {name}", "resource": resource}
    return Suggestion(f"Refer to {name}", (action,), recommended=recommended)
