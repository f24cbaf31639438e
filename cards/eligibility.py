"""Topic ``tpi-eligibility`` (rules E0-E7): does this TPI meet the payer's criteria?

Eligibility is judged under the profile of the patient's payer (section 2b), and the card
says which profile and where it came from.
"""

from __future__ import annotations

from datetime import date, timedelta

from cards.card import Finding, Indicator, Sources, Suggestion, TopicAdvice, join_evidence
from cards.facts import Facts
from cards.reading import format_percent
from cards.regions import any_match
from cards.response import Response, Session, SessionResponse, describe_course, within


def eligibility_advice(facts: Facts) -> TopicAdvice:
    policy = facts.policy
    advice = TopicAdvice("tpi-eligibility")
    cap = session_cap(facts)
    soon = too_soon(facts)
    response = last_response(facts)
    # E2 before E1: with fibromyalgia, "tender points are not trigger points" is the point.
    for finding in (fibromyalgia_alone(facts), no_qualifying_diagnosis(facts), cap, soon, response):
        advice.add(finding)
    fired = bool(advice.findings)
    advice.add(no_recent_pain_score(facts))
    advice.add(imaging_guidance(facts))
    if not fired and policy.show_criteria_met:
        advice.add(criteria_met(facts))
    if not advice.findings:
        return advice
    advice.footer = (
        f"Profile: {facts.payer.label}: at most {policy.session_cap} sessions in 12 months; "
        f"at least {policy.min_interval_days} days between sessions in one region; a repeat "
        f"needs ≥ {format_percent(policy.payer_relief)} relief lasting ≥ "
        f"{policy.payer_follow_up_min_days // 7} weeks."
    )
    label = None
    if cap is not None:
        label = (
            f"Remove the TPI order — over the 12-month limit until {cap_ends(facts).isoformat()}"
        )
    elif soon is not None:
        label = f"Remove the TPI order — not due until {interval_ends(facts).isoformat()}"
    elif response is not None and response.indicator is Indicator.WARNING:
        label = (
            f"Remove the TPI order — no documented relief of "
            f"{format_percent(policy.payer_relief)} lasting {policy.payer_follow_up_min_days // 7} weeks"
        )
    if label is not None:
        references = [o.reference for o in facts.orders.tpi_orders if o.reference]
        if references:
            actions = tuple(
                {"type": "delete", "description": label, "resourceId": r} for r in references
            )
            advice.suggestions.append(Suggestion(label, actions, recommended=True))
    return advice


def qualifying(facts: Facts) -> list[str]:
    """Active qualifying diagnoses and the order's own qualifying reasons."""
    found = [str(c.evidence) for c in facts.conditions_in("qualifying-diagnoses")]
    return found + [str(e) for e in facts.order_diagnoses("qualifying-diagnoses")]


def no_qualifying_diagnosis(facts: Facts) -> Finding | None:
    """E1: neither the problem list nor the order carries myalgia / myofascial pain or
    tension-type headache."""
    if qualifying(facts):
        return None
    regional = [c.evidence for c in facts.conditions_in("regional-pain-diagnoses")]
    recorded = (
        f"Regional pain on record ({join_evidence(regional)}) does not support a TPI on its own. "
        if regional
        else "Neither the problem list nor the order carries myalgia / myofascial pain or "
        "tension-type headache. "
    )
    return Finding(
        "E1",
        Indicator.WARNING,
        "No supporting diagnosis",
        "No myofascial pain diagnosis coded for this TPI: document the trigger point exam",
        recorded + "Document the trigger point exam (taut band, exquisitely tender spot, "
        "referred pain, local twitch response) and code myalgia / myofascial pain (M79.1x); "
        "coverage is limited to M79.1x and G44.2x.",
        (Sources.LCD,),
    )


def fibromyalgia_alone(facts: Facts) -> Finding | None:
    """E2: fibromyalgia without a qualifying diagnosis: tender points are not trigger points."""
    fibromyalgia = facts.conditions_in("fibromyalgia")
    if not fibromyalgia or qualifying(facts):
        return None
    return Finding(
        "E2",
        Indicator.WARNING,
        "Fibromyalgia without trigger points",
        "Fibromyalgia alone does not support a TPI: tender points are not trigger points",
        f"Active: {join_evidence([c.evidence for c in fibromyalgia])}, with no myofascial pain "
        "diagnosis. Tender points are not trigger points: injections for fibromyalgia alone "
        "are not supported (investigational). See the specialist referral card.",
        (Sources.BCBSA, Sources.LCD),
    )


def cap_ends(facts: Facts) -> date:
    """The first day a new session is within the cap again: the (n - c + 1)-th oldest
    counted session + 366 days (the day enough sessions have left the window)."""
    sessions = facts.sessions_last_year
    cap = facts.policy.session_cap
    return sessions[len(sessions) - cap].day + timedelta(days=facts.policy.lookback_days + 1)


def session_cap(facts: Facts) -> Finding | None:
    """E3: the sessions of the last 12 months already reach the profile's cap."""
    sessions = facts.sessions_last_year
    cap = facts.policy.session_cap
    if len(sessions) < cap:
        return None
    days = ", ".join(s.day.isoformat() for s in sessions)
    until = cap_ends(facts).isoformat()
    return Finding(
        "E3",
        Indicator.WARNING,
        "12-month session limit",
        f"{len(sessions)} TPI sessions in 12 months (limit {cap}): not within the limit until {until}",
        f"{len(sessions)} sessions in the last 12 months ({days}); the limit is {cap}, so a new "
        f"session exceeds it. The first date within the limit again: {until}.",
        (Sources.LCD, Sources.BCBSA),
    )


def relevant_sessions(facts: Facts, sessions: list[Session]) -> list[Session]:
    """E4 / E5: with the order's region known, the sessions in that region or of unknown
    region (it may be the same place); otherwise every session."""
    order_places = facts.order_places
    if order_places is None:
        return sessions
    chosen = []
    for session in sessions:
        places = facts.session_places(session)
        if (
            not places
            or any(p is None for p in places)
            or any_match([p for p in places if p is not None], order_places)
        ):
            chosen.append(session)
    return chosen


def interval_ends(facts: Facts) -> date:
    last = relevant_sessions(facts, facts.sessions)[-1]
    return last.day + timedelta(days=facts.policy.min_interval_days)


def too_soon(facts: Facts) -> Finding | None:
    """E4: the last relevant session was fewer than the profile's interval days ago."""
    sessions = relevant_sessions(facts, facts.sessions)
    if not sessions:
        return None
    last = sessions[-1]
    interval = facts.policy.min_interval_days
    elapsed = (facts.today - last.day).days
    if elapsed >= interval:
        return None
    until = interval_ends(facts)
    where = ", ".join(s.display for s in last.sites) or "site not recorded"
    return Finding(
        "E4",
        Indicator.WARNING,
        "Too soon after the last session",
        f"Last TPI{_here(facts, last)} {elapsed} days ago: defer until {until.isoformat()}",
        f"Last session {last.day.isoformat()} ({where}), {elapsed} days ago; the interval is "
        f"{interval} days between sessions in one region. Defer until {until.isoformat()}.",
        (Sources.LCD,),
    )


def last_response(facts: Facts) -> Finding | None:
    """E5: a repeat needs ≥ 50 % relief lasting ≥ 6 weeks after the last relevant session."""
    if not facts.sessions_last_year:
        return None
    sessions = relevant_sessions(facts, facts.sessions_last_year)
    if not sessions:
        return None
    response = facts.response_to(sessions[-1])
    if response is None or response.payer is Response.RESPONDER:
        return None
    policy = facts.policy
    weeks = policy.payer_follow_up_min_days // 7
    needed = (
        f"A repeat needs ≥ {format_percent(policy.payer_relief)} relief lasting ≥ {weeks} weeks "
        "under this profile."
    )
    course = describe_course(response, policy)
    if response.payer is Response.NON_RESPONDER:
        short = next(
            f
            for f in response.follow_ups
            if f.day <= policy.clinical_nonresponse_by_day
            and (f.relief or 0.0) < policy.payer_relief
        )
        return Finding(
            "E5",
            Indicator.WARNING,
            "Response to the last injection",
            f"Last injection{_here(facts, response.session)} gave "
            f"{format_percent(short.relief or 0.0)} relief by "
            f"day {short.day}: a repeat needs {format_percent(policy.payer_relief)} for {weeks} weeks",
            f"{course}. Relief under {format_percent(policy.payer_relief)} on day {short.day}. "
            f"{needed}",
            (Sources.LCD, Sources.BCBSA),
        )
    return Finding(
        "E5",
        Indicator.INFO,
        "Lasting relief not documented",
        "Lasting relief after the last injection is not documented: record it before repeating",
        " ".join(part for part in (f"{course}.", why_unknown(response, policy), needed) if part),
        (Sources.LCD,),
    )


def _here(facts: Facts, session: Session) -> str:
    """Where the last session was, said as known: "in this region" only when both the
    order's and the session's regions are known; otherwise that the site is unknown."""
    places = facts.session_places(session)
    if not places or any(p is None for p in places):
        return " (site not recorded)" if not session.sites else " (site region unknown)"
    return " in this region" if facts.order_places is not None else ""


def why_unknown(response: SessionResponse, policy: object) -> str:
    if not response.session.precise:
        return "The session has no exact date."
    if response.baseline is None:
        return "There is no pain score before it to compare with."
    if response.baseline.value == 0:
        return "The baseline score was 0: there is no relief to measure."
    if not response.follow_ups:
        return ""  # the course already says "no follow-up score from day … to day …"
    return "No score shows whether relief lasted 6 weeks."


def no_recent_pain_score(facts: Facts) -> Finding | None:
    """E6: no 0-10 pain score in the last 30 days: the response could not be judged."""
    days = facts.policy.recent_pain_score_days
    if any(within(s.day, facts.today, days) for s in facts.pain_scores):
        return None
    return Finding(
        "E6",
        Indicator.INFO,
        "No recent pain score",
        "No pain score in the last 30 days: record a 0-10 score today",
        f"No 0-10 pain score in the {days} days up to today. Record a baseline score today "
        "(LOINC 72514-3) so the response to this injection can be judged.",
        (Sources.FARRAR,),
    )


def imaging_guidance(facts: Facts) -> Finding | None:
    """E7: imaging guidance ordered with the TPI: not covered for trigger point injections."""
    guidance = facts.terminology["imaging-guidance"]
    ordered = [
        r
        for r in facts.orders.drafts.service_requests
        if any(guidance.contains(c.system, c.code) for c in (r.code.coding if r.code else []) or [])
    ]
    if not ordered:
        return None
    return Finding(
        "E7",
        Indicator.INFO,
        "Imaging guidance",
        "Imaging guidance for a trigger point injection is likely not covered",
        f"Imaging guidance is among the orders. The payer profile, {facts.payer.label}, does "
        "not consider it reasonable and necessary for trigger point injections.",
        (Sources.LCD,),
    )


def criteria_met(facts: Facts) -> Finding | None:
    """E0 (off by default): nothing stands against the TPI; say what it rests on."""
    found = qualifying(facts)
    if not found:
        return None
    number = len(facts.sessions_last_year) + 1
    last = (
        describe_course(facts.responses[-1], facts.policy)
        if facts.responses
        else "no previous TPI in the last 12 months"
    )
    return Finding(
        "E0",
        Indicator.INFO,
        "TPI criteria met",
        f"TPI criteria met: session {number} of {facts.policy.session_cap} in 12 months",
        f"Diagnosis: {found[0]}. This is session {number} in 12 months. Last response: {last}.",
        (Sources.LCD,),
    )
