"""Topic ``specialist-referral`` (rules R1-R5): stop repeating what does not work; refer.

Candidates: pain medicine and PM&R for R1 and R2, rheumatology for R3, neurology for R4,
PM&R for R5. Never to a specialty the patient already has a referral to, nor to the
ordering user's own specialty; an info-level finding left with no specialty to offer needs
no action and gets no card.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cards.card import (
    SUMMARY_LIMIT,
    Finding,
    Indicator,
    Sources,
    Suggestion,
    TopicAdvice,
    is_snoozed,
    join_evidence,
)
from cards.facts import REFERRAL_VALUE_SETS, ConditionFact, Facts, lower_first
from cards.physical_therapy import referral_request
from cards.reading import sentence
from cards.regions import HEAD_AND_NECK, acr_regions
from cards.response import Response, Session, describe_course

SPECIALTY_NAMES = {
    "neurology": "neurology",
    "rheumatology": "rheumatology",
    "pain": "pain medicine",
    "rehabilitation": "PM&R (physiatry)",
}
PREFERENCE = ("neurology", "rheumatology", "pain", "rehabilitation")
REGION_WORDS = {"head": "head", "jaw": "jaw", "neck": "neck", "shoulder-girdle": "shoulder"}
CANDIDATES = {
    "R1": ("pain", "rehabilitation"),
    "R2": ("pain", "rehabilitation"),
    "R3": ("rheumatology",),
    "R4": ("neurology",),
    "R5": ("rehabilitation",),
}
# Which finding makes the recommended specialty, in order of preference.
MAKES = {
    "neurology": ("R4",),
    "rheumatology": ("R3",),
    "pain": ("R1", "R2"),
    "rehabilitation": ("R1", "R2", "R5"),
}


@dataclass(frozen=True)
class Candidate:
    finding: Finding
    reason: ConditionFact | None = None


def referral_advice(facts: Facts) -> TopicAdvice:
    advice = TopicAdvice("specialist-referral")
    if not has_tpi_context(facts):
        return advice
    found = {
        rule: item
        for rule, item in referral_findings(facts).items()
        if not is_snoozed(rule, facts.snoozed)
    }
    if not found:
        return advice
    suppressed: dict[str, str] = {}
    for rule in found:
        for category in CANDIDATES[rule]:
            reason = suppression_reason(facts, category, rule)
            if reason:
                suppressed.setdefault(f"{rule}:{category}", reason)
    offered_by = {
        rule: [c for c in CANDIDATES[rule] if f"{rule}:{c}" not in suppressed] for rule in found
    }
    # A card exists when a finding is a warning or still has a specialty to offer; it then
    # gathers every finding of the topic. Info findings with nothing to offer alone: no card.
    if not any(
        item.finding.indicator is Indicator.WARNING or offered_by[rule]
        for rule, item in found.items()
    ):
        return advice
    kept = found
    for item in kept.values():
        advice.add(item.finding)
    offered = [c for c in PREFERENCE if any(c in offered_by[r] for r in kept)]
    recommended = offered[0] if offered else None
    reasons = {
        category: next(
            (kept[r].reason for r in MAKES[category] if r in kept and kept[r].reason), None
        )
        for category in offered
    }
    for category in offered:
        advice.suggestions.append(
            referral_suggestion(facts, category, category == recommended, reasons.get(category))
        )
    if recommended is not None:
        lead = next(kept[r].finding for r in MAKES[recommended] if r in kept)
        advice.summary = fit(lead.summary, f": refer to {SPECIALTY_NAMES[recommended]}")
    else:
        lead = advice.ordered()[0]
        advice.summary = fit(lead.summary, ": specialist care already in place")
    notes = sorted(
        {f"{SPECIALTY_NAMES[key.split(':')[1]]} ({reason})" for key, reason in suppressed.items()}
    )
    notes = [n for n in notes if not any(n.startswith(SPECIALTY_NAMES[c] + " (") for c in offered)]
    if notes:
        advice.footer = "Not suggested: " + "; ".join(notes) + "."
    return advice


def fit(lead: str, action: str) -> str:
    """The finding, cut if need be, so the action at the end always shows."""
    room = SUMMARY_LIMIT - len(action)
    if len(lead) > room:
        lead = lead[: room - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return lead + action


def has_tpi_context(facts: Facts) -> bool:
    """On order hooks a TPI order; on patient-view a TPI session in the last year."""
    if facts.orders.is_order_hook:
        return bool(facts.orders.tpi_orders)
    return bool(facts.sessions_last_year)


def referral_findings(facts: Facts) -> dict[str, Candidate]:
    policy = facts.policy
    sessions = facts.sessions_last_year
    found: dict[str, Candidate] = {}
    nonresponders = [r for r in facts.responses if r.clinical is Response.NON_RESPONDER]
    if len(nonresponders) >= policy.nonresponder_referral_count:
        courses = "; ".join(describe_course(r, policy) for r in nonresponders)
        found["R1"] = Candidate(
            Finding(
                "R1",
                Indicator.WARNING,
                "No response to repeated injections",
                _nonresponse_summary(len(nonresponders), len(sessions), policy.clinical_relief),
                "Sessions without a clinically important response (under "
                f"{round(policy.clinical_relief * 100)} % and under {policy.clinical_drop:g} "
                f"points at every follow-up): {courses}. Stop repeating injections that do not "
                "help.",
                (Sources.FARRAR, Sources.LCD),
            )
        )
    escalate = "R1" in found
    level = Indicator.WARNING if escalate else Indicator.INFO
    if len(sessions) >= policy.session_cap:
        days = ", ".join(s.day.isoformat() for s in sessions)
        found["R2"] = Candidate(
            Finding(
                "R2",
                level,
                "Recurrent pain",
                f"Recurrent pain after {len(sessions)} injections in 12 months",
                f"{len(sessions)} sessions in the last 12 months ({days}), at or over the "
                f"limit of {policy.session_cap}: recurrent pain needs a specialist "
                "reassessment, whatever the response to each injection.",
                (Sources.LCD,),
            )
        )
    widespread = _widespread(facts, level)
    if widespread is not None:
        found["R3"] = widespread
    if "R1" in found or "R2" in found:
        rests_on = [r.session for r in nonresponders] if "R1" in found else list(sessions)
        headache = _headache(facts, rests_on, level, "R1" if "R1" in found else "R2")
        if headache is not None:
            found["R4"] = headache
    radicular = facts.conditions_in("radiculopathy")
    if radicular:
        found["R5"] = Candidate(
            Finding(
                "R5",
                Indicator.INFO,
                "Radicular pain",
                f"{sentence(radicular[0].short_name)} on record: the pain may not be myofascial",
                f"Active: {join_evidence([c.evidence for c in radicular])}. Radicular pain is "
                "possibly not myofascial: a PM&R evaluation can sort out the pain generator.",
                (Sources.AFP_2023,),
            ),
            radicular[0],
        )
    return found


def _nonresponse_summary(failed: int, sessions: int, relief: float) -> str:
    share = f"under {round(relief * 100)} % relief"
    if failed == sessions == 2:
        return f"Both of the last 2 injections gave {share}"
    if failed == sessions:
        return f"All {sessions} injections in 12 months gave {share}"
    return f"{failed} of the last {sessions} injections gave {share}"


def _widespread(facts: Facts, level: Indicator) -> Candidate | None:
    """R3: fibromyalgia, or sessions in ≥ 4 of the 5 ACR regions in the last year."""
    fibromyalgia = facts.conditions_in("fibromyalgia")
    places = [
        place
        for session in facts.sessions_last_year
        for place in facts.session_places(session)
        if place is not None
    ]
    regions = acr_regions(places)
    enough = len(regions) >= facts.policy.widespread_region_count
    if not fibromyalgia and not enough:
        return None
    evidence = []
    if fibromyalgia:
        evidence.append(f"active {join_evidence([c.evidence for c in fibromyalgia])}")
    if enough:
        evidence.append(
            f"injections in {len(regions)} of 5 body regions in 12 months "
            f"({', '.join(sorted(regions))})"
        )
    summary = (
        f"Widespread pain with {lower_first(fibromyalgia[0].short_name)}"
        if fibromyalgia
        else f"Injections in {len(regions)} body regions in 12 months (widespread pain)"
    )
    return Candidate(
        Finding(
            "R3",
            level,
            "Widespread pain",
            summary,
            f"{sentence('; '.join(evidence))}. "
            + (
                f"Pain in {facts.policy.widespread_region_count} or more of the 5 ACR 2016 "
                "regions is widespread pain"
                if enough
                else "Fibromyalgia is widespread pain"
            )
            + ", better assessed by rheumatology than treated with repeated local injections.",
            (Sources.WOLFE, Sources.BCBSA),
        ),
        fibromyalgia[0] if fibromyalgia else None,
    )


def _headache(
    facts: Facts, sessions: list[Session], level: Indicator, rests_on_rule: str = "R2"
) -> Candidate | None:
    """R4: a current headache phenotype and an injection at a head, jaw, neck or shoulder
    girdle site among the sessions the finding rests on."""
    tension = facts.conditions_in("tension-type-headache")
    window = facts.policy.migraine_recent_days
    migraine = [
        c
        for c in facts.conditions_in("migraine")
        if c.onset is not None and (facts.today - c.onset.day).days <= window
    ]
    headaches = tension + migraine
    if not headaches:
        return None
    head_sessions = [
        s
        for s in sessions
        if any(p is not None and p.region in HEAD_AND_NECK for p in facts.session_places(s))
    ]
    if not head_sessions:
        return None
    return Candidate(
        Finding(
            "R4",
            level,
            "Headache phenotype",
            _headache_summary(headaches[0], head_sessions, facts, "R1" in rests_on_rule),
            f"Active: {join_evidence([c.evidence for c in headaches])}. Injections at head, "
            f"neck or shoulder sites ({', '.join(s.day.isoformat() for s in head_sessions)}) "
            "refer pain to the head: a neurology opinion on the headache is the next step.",
            (Sources.AFP_2023,),
        ),
        headaches[0],
    )


def _headache_summary(
    headache: ConditionFact, sessions: list[Session], facts: Facts, nonresponse: bool
) -> str:
    """Names the headache, where the injections were, and whether they failed or recur."""
    regions = {
        p.region
        for s in sessions
        for p in facts.session_places(s)
        if p is not None and p.region in HEAD_AND_NECK
    }
    where = " and ".join(name for region, name in REGION_WORDS.items() if region in regions)
    if nonresponse:
        return f"{_headache_kind(headache)} not settling with {where} injections"
    return f"{_headache_kind(headache)} with repeated {where} injections"


def _headache_kind(headache: ConditionFact) -> str:
    """Short words for the summary: long ICD displays would crowd out the specialty."""
    name = headache.name.lower()
    if "migraine" in name:
        return "Chronic migraine" if "chronic" in name else "Migraine"
    return "Tension-type headache"


def suppression_reason(facts: Facts, category: str, rule: str) -> str | None:
    """Why a specialty is not suggested: the user's own, or a referral already in place."""
    if category in facts.user_specialties:
        return "the ordering clinician's own specialty"
    if rule == "R5" and category == "rehabilitation" and "pain" in facts.user_specialties:
        return "a pain physician evaluates radicular pain"
    existing = facts.referral_in_place(category)
    if existing is not None:
        return f"already referred: {existing}"
    return None


def referral_suggestion(
    facts: Facts, category: str, recommended: bool, reason: ConditionFact | None
) -> Suggestion:
    concept = facts.terminology[REFERRAL_VALUE_SETS[category]].suggested
    name = SPECIALTY_NAMES[category]
    condition: Any = reason.condition if reason is not None else None
    resource = referral_request(facts, concept, condition)
    action = {"type": "create", "description": f"Refer to {name}", "resource": resource}
    return Suggestion(f"Refer to {name}", (action,), recommended=recommended)
