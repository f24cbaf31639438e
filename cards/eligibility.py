"""Topic ``tpi-eligibility`` (rules E0-E6): does this TPI meet the criteria?"""

from __future__ import annotations

from datetime import timedelta

from cards.card import Finding, Indicator, Sources, TopicAdvice, join_evidence
from cards.facts import Facts
from cards.reading import format_percent
from cards.response import Response, Session, SessionResponse, describe_response, within
from cards.terminology import normalize_system


def eligibility_advice(facts: Facts) -> TopicAdvice:
    policy = facts.policy
    advice = TopicAdvice("tpi-eligibility")
    for rule in (fibromyalgia_alone, no_qualifying_diagnosis, session_cap, too_soon, last_response):
        advice.add(rule(facts))
    fired = bool(advice.findings)
    advice.add(no_recent_pain_score(facts))
    if not fired and policy.show_criteria_met:
        advice.add(criteria_met(facts))
        if len(advice.findings) > 1:
            advice.summary = f"{advice.findings[-1].summary}; record today's pain score"
    advice.footer = (
        f"Profile **{policy.name}**: at most {policy.session_cap} sessions in 12 months; at "
        f"least {policy.min_interval_days} days between sessions at one site; a repeat needs "
        f"≥ {format_percent(policy.payer_relief)} relief lasting ≥ "
        f"{policy.payer_follow_up_min_days // 7} weeks."
    )
    return advice


def no_qualifying_diagnosis(facts: Facts) -> Finding | None:
    """E1: no active myalgia / myofascial pain (M79.1x) or tension-type headache (G44.2x)."""
    if facts.conditions_in("qualifying-diagnoses"):
        return None
    regional = facts.conditions_in("regional-pain-diagnoses")
    recorded = (
        f"Recorded regional pain codes ({join_evidence(regional)}) do not support a TPI on "
        "their own. "
        if regional
        else "No myalgia / myofascial pain (M79.1x) or tension-type headache (G44.2x) is "
        "active on the problem list. "
    )
    return Finding(
        "E1",
        Indicator.WARNING,
        "No supporting diagnosis",
        "No active myofascial pain diagnosis: document the trigger point exam and code M79.1x",
        recorded + "Document the trigger point exam (taut band, exquisitely tender spot, "
        "referred pain, local twitch response) and code myalgia / myofascial pain (M79.1x); "
        "coverage is limited to M79.1x and G44.2x.",
        (Sources.LCD,),
    )


def fibromyalgia_alone(facts: Facts) -> Finding | None:
    """E2: fibromyalgia without a qualifying diagnosis: tender points are not trigger points."""
    fibromyalgia = facts.conditions_in("fibromyalgia")
    if not fibromyalgia or facts.conditions_in("qualifying-diagnoses"):
        return None
    return Finding(
        "E2",
        Indicator.WARNING,
        "Fibromyalgia without trigger points",
        "Fibromyalgia alone does not support a TPI: tender points are not trigger points",
        f"Active: {join_evidence(fibromyalgia)}, with no myofascial pain diagnosis. Tender "
        "points are not trigger points; injections for fibromyalgia alone are not supported "
        "(investigational). See the specialist referral card.",
        (Sources.BCBSA, Sources.LCD),
    )


def session_cap(facts: Facts) -> Finding | None:
    """E3: the sessions of the last 12 months already reach the profile's cap."""
    sessions = facts.sessions_last_year
    cap = facts.policy.session_cap
    if len(sessions) < cap:
        return None
    days = ", ".join(s.day.isoformat() for s in sessions)
    return Finding(
        "E3",
        Indicator.WARNING,
        "12-month session limit",
        f"{len(sessions)} TPI sessions in the last 12 months (limit {cap}): this one exceeds it",
        f"{len(sessions)} sessions in the last 12 months ({days}); the "
        f"{facts.policy.name} limit is {cap}, so a new session exceeds it.",
        (Sources.LCD, Sources.BCBSA),
    )


def _relevant_sessions(facts: Facts) -> list[Session]:
    """E4: with a body site on the order, sessions at that site or with no recorded site."""
    order_sites = {
        (normalize_system(system), code)
        for order in facts.orders.tpi_orders
        for system, code, _ in order.body_sites
    }
    if not order_sites:
        return facts.sessions
    return [s for s in facts.sessions if not s.sites or s.site_codes & order_sites]


def too_soon(facts: Facts) -> Finding | None:
    """E4: the last relevant session was fewer than the profile's interval days ago."""
    sessions = _relevant_sessions(facts)
    if not sessions:
        return None
    last = sessions[-1]
    interval = facts.policy.min_interval_days
    elapsed = (facts.today - last.day).days
    if elapsed >= interval:
        return None
    until = last.day + timedelta(days=interval)
    where = ", ".join(s.display for s in last.sites) or "site not recorded"
    return Finding(
        "E4",
        Indicator.WARNING,
        "Too soon after the last session",
        f"Last TPI {elapsed} days ago ({last.day.isoformat()}): defer until {until.isoformat()}",
        f"Last session {last.day.isoformat()} ({where}), {elapsed} days ago; the "
        f"{facts.policy.name} interval is {interval} days between sessions at one site. Defer "
        f"until {until.isoformat()}.",
        (Sources.LCD,),
    )


def last_response(facts: Facts) -> Finding | None:
    """E5: a repeat needs >= 50 % relief lasting >= 6 weeks after the last session."""
    if not facts.responses:
        return None
    response = facts.responses[-1]
    policy = facts.policy
    needed = (
        f"A repeat needs ≥ {format_percent(policy.payer_relief)} relief lasting ≥ "
        f"{policy.payer_follow_up_min_days // 7} weeks ({policy.name} profile)."
    )
    evidence = describe_response(response, policy)
    day = response.session.day.isoformat()
    if response.payer is Response.NON_RESPONDER:
        relief = format_percent(response.relief or 0.0)
        return Finding(
            "E5",
            Indicator.WARNING,
            "Response to the last TPI",
            f"Last TPI ({day}) gave {relief} relief at 6+ weeks: a repeat is not supported",
            f"{evidence}. {needed}",
            (Sources.LCD, Sources.BCBSA),
        )
    if response.payer is Response.RESPONDER:
        return None
    return Finding(
        "E5",
        Indicator.INFO,
        "Response to the last TPI not documented",
        f"Relief after the last TPI ({day}) is not documented: record it before repeating",
        f"{evidence}. {_why_unknown(response)} {needed}",
        (Sources.LCD,),
    )


def _why_unknown(response: SessionResponse) -> str:
    if response.baseline is None or response.follow_up is None:
        return "Whether it helped is unknown: a score is missing."
    if response.baseline.value == 0:
        return "Whether it helped is unknown: the baseline score was 0."
    return (
        f"Whether relief lasted is unknown: the only follow-up is on day "
        f"{response.follow_up_day}, before 6 weeks."
    )


def no_recent_pain_score(facts: Facts) -> Finding | None:
    """E6: no 0-10 pain score in the last 30 days: the response could not be judged."""
    days = facts.policy.recent_pain_score_days
    if any(within(s.day, facts.today, days) for s in facts.pain_scores):
        return None
    return Finding(
        "E6",
        Indicator.INFO,
        "No recent pain score",
        "No pain score in the last 30 days: record a 0-10 score today (LOINC 72514-3)",
        f"No 0-10 pain score in the {days} days up to today. Record a baseline score today "
        "(LOINC 72514-3) so the response to this injection can be judged.",
        (Sources.FARRAR,),
    )


def criteria_met(facts: Facts) -> Finding:
    """E0: nothing stands against the TPI; say what it rests on."""
    diagnosis = facts.conditions_in("qualifying-diagnoses")[0]
    number = len(facts.sessions_last_year) + 1
    if facts.responses:
        last = describe_response(facts.responses[-1], facts.policy)
    else:
        last = "no previous TPI in the last 12 months"
    return Finding(
        "E0",
        Indicator.INFO,
        "TPI criteria met",
        f"TPI criteria met: {diagnosis.text}, session {number} of {facts.policy.session_cap} "
        "in 12 months",
        f"Diagnosis: {diagnosis}. This is session {number} in 12 months. Last response: {last}.",
        (Sources.LCD,),
    )
