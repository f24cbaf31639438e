"""Clinical vignettes for the response to a TPI session (rules page v2, section 2).

The response is observed through the cards that use it: R1 on the specialist-referral card
(two clinical non-responders in the year) and E5 on the eligibility card (the payer response of
the most recent session). Most vignettes have two neck sessions (under the cap of 3), so a
referral card appears only when both are clinical non-responders;
response-payer-relief-course has one session, to follow its payer response score by score.

Version 2: the baseline is the pre-procedure score (a score timed after the procedure on the
same day is neither baseline nor follow-up); a clinical responder has *any* follow-up score
(days 7-84) with relief >= 30 % or a drop >= 2 points; a non-responder needs a follow-up by day
56; a payer responder has relief >= 50 % at every score up to the first one from day 42.
Rule ids are read from the card's extension["tpi-rules"].
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from conftest import assert_well_formed, card, evaluate, load_vignette, resource

REFERRAL = "specialist-referral"
ELIGIBILITY = "tpi-eligibility"
E0_ON = {"show_criteria_met": True}
MISSING = re.compile(r"missing|not recorded|not documented|no follow-up|unknown", re.I)


def set_score(request: dict[str, Any], rid: str, value: float) -> None:
    resource(request, "observations", rid)["valueQuantity"]["value"] = value


def move(request: dict[str, Any], key: str, rid: str, day: str) -> None:
    r = resource(request, key, rid)
    field = "performedDateTime" if key == "procedures" else "effectiveDateTime"
    r[field] = day + r[field][10:]


def drop(request: dict[str, Any], key: str, rid: str) -> None:
    entries = request["prefetch"][key]["entry"]
    kept = [e for e in entries if e["resource"]["id"] != rid]
    assert len(kept) == len(entries) - 1, f"no {key}/{rid}"
    request["prefetch"][key]["entry"] = kept


def cards_of(request: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    response = evaluate(request, **kwargs)
    for c in response["cards"]:
        assert_well_formed(c)
    return response


def rules(c: dict[str, Any] | None) -> list[str]:
    return c["extension"]["tpi-rules"] if c else []


def referral(request: dict[str, Any]) -> dict[str, Any] | None:
    return card(cards_of(request), REFERRAL)


def non_response_referral(request: dict[str, Any]) -> dict[str, Any]:
    """The referral card, which must rest on R1 (two clinical non-responders): a warning."""
    c = referral(request)
    assert c is not None, "no referral card"
    assert "R1" in rules(c), c["detail"]
    assert c["indicator"] == "warning"
    return c


def no_non_response(request: dict[str, Any]) -> None:
    """No R1: no referral card at all in these two-session stories."""
    c = referral(request)
    assert c is None, c and c["detail"]


def eligibility(request: dict[str, Any], **kwargs: Any) -> dict[str, Any] | None:
    return card(cards_of(request, **kwargs), ELIGIBILITY)


# ---------------------------------------------------------------- baseline of 0


def test_baseline_of_zero_is_never_a_non_response():
    """Pain 0 at both sessions and 3 afterwards: no relief can be computed, so not a
    non-response, no referral; the last session's payer response is unknown (info)."""
    request = load_vignette("response-baseline-zero-two-sessions")
    no_non_response(request)
    c = eligibility(request)
    assert c is not None
    assert c["indicator"] == "info"
    assert "E5" in rules(c)


def test_baseline_of_three_unchanged_is_a_non_response():
    """Counterpart: baselines of 3 with follow-ups of 3 are two clinical non-responders."""
    request = load_vignette("response-baseline-zero-two-sessions")
    set_score(request, "pain-2026-05-11", 3)
    set_score(request, "pain-2026-08-17", 3)
    c = non_response_referral(request)
    assert "0 %" in c["detail"]


# ---------------------------------------------------------------- missing follow-up


def test_missing_follow_up_is_unknown_and_reported_missing():
    """Second TPI (2026-08-17) has no score 7 days-12 weeks after it (the next is 91 days
    later): unknown, not a non-response; no referral; the eligibility card says the follow-up
    is missing (info, E5), naming the baseline that exists, not that the injection failed."""
    request = load_vignette("response-missing-followup-last-session")
    no_non_response(request)
    c = eligibility(request)
    assert c is not None
    assert c["indicator"] == "info"
    assert rules(c) == ["E5"]
    assert MISSING.search(c["detail"])
    assert "2026-08-17" in c["detail"]
    assert "baseline 7 (2026-08-10)" in c["detail"]


def test_follow_up_present_makes_the_second_session_a_non_response():
    """Counterpart: the same 7/10 score recorded on 2026-10-05 (day 49) is a follow-up;
    7 -> 7 completes two non-responders."""
    request = load_vignette("response-missing-followup-last-session")
    move(request, "observations", "pain-2026-11-16", "2026-10-05")
    c = non_response_referral(request)
    assert "2026-08-17" in c["detail"]


# ---------------------------------------------------------------- next session in window


def test_relief_after_the_second_session_is_not_the_first_session_s():
    """TPIs 2026-06-01 and 2026-07-06 (35 days apart). The 3/10 of 2026-07-20 follows the
    second TPI (7 -> 3 at day 14, 57 %), not the first, whose only follow-up is 7 (2026-06-29,
    8 -> 7, 12 %). One non-responder and one responder (its 6 at day 49 is pain returning,
    not non-response): no referral."""
    no_non_response(load_vignette("response-next-session-inside-followup-window"))


def test_follow_up_must_come_before_the_next_session():
    """Same TPIs, but 2026-07-20 is a 6: for the first session (baseline 8) it would be a
    2-point drop, a response, had it counted; it does not (it follows the second TPI). The
    second session, baseline 7 (2026-06-29), 6 at days 14 and 49 (14 %): two non-responders."""
    request = load_vignette("response-next-session-inside-followup-window")
    set_score(request, "pain-2026-07-20", 6)
    c = non_response_referral(request)
    for evidence in ("2026-06-01", "2026-07-06", "day 28: 7 (12 %)", "day 14: 6 (14 %)"):
        assert evidence in c["detail"]


# ---------------------------------------------------------------- baseline


def test_score_on_the_session_day_is_its_baseline():
    """Pain 8 recorded at check-in before each TPI is the baseline; 8 -> 7 twice."""
    c = non_response_referral(load_vignette("response-baseline-on-session-day"))
    for evidence in ("baseline 8 (2026-06-01)", "baseline 8 (2026-09-14)", "12 %"):
        assert evidence in c["detail"]


def test_score_31_days_before_the_session_is_no_baseline():
    """The first TPI's only earlier score moved to 2026-05-01 (31 days before): no baseline,
    unknown response, one non-responder only: no referral."""
    request = load_vignette("response-baseline-on-session-day")
    move(request, "observations", "pain-2026-06-01", "2026-05-01")
    no_non_response(request)


def test_score_30_days_before_the_session_is_still_a_baseline():
    """Counterpart at the limit: 2026-05-02 (30 days before) is a baseline."""
    request = load_vignette("response-baseline-on-session-day")
    move(request, "observations", "pain-2026-06-01", "2026-05-02")
    c = non_response_referral(request)
    assert "baseline 8 (2026-05-02)" in c["detail"]


# response-post-procedure-score-same-day: neck TPIs 2026-06-01 and 2026-08-31 at 10:00; each
# day pain 8 at 09:20 (before) and 2 at 10:40 (right after the local anesthetic), a 7 at the
# planning visit 5 days before, and 7 at day 42 (12 %): two clinical non-responders.


def test_pre_procedure_score_is_the_baseline_not_the_post_procedure_one():
    """The baseline is the 8 timed before the procedure, not the 2 timed after it (version 1
    read 2 -> 7 as -250 %): two non-responders at 12 %, refer."""
    c = non_response_referral(load_vignette("response-post-procedure-score-same-day"))
    assert "baseline 8 (2026-06-01)" in c["detail"]
    assert "baseline 8 (2026-08-31)" in c["detail"]
    assert "day 42: 7 (12 %)" in c["detail"]
    assert "baseline 2" not in c["detail"]
    assert "250" not in c["detail"]


def test_post_procedure_score_alone_is_no_baseline():
    """Without the pre-procedure 8s, the session day holds only the post-procedure 2, which is
    no baseline: the last score in the 30 days before (7, five days earlier) is: 7 -> 7, 0 %."""
    request = load_vignette("response-post-procedure-score-same-day")
    drop(request, "observations", "pain-2026-06-01-pre")
    drop(request, "observations", "pain-2026-08-31-pre")
    c = non_response_referral(request)
    assert "baseline 7 (2026-05-27)" in c["detail"]
    assert "baseline 7 (2026-08-26)" in c["detail"]
    assert "day 42: 7 (0 %)" in c["detail"]
    assert "baseline 2" not in c["detail"]


def test_post_procedure_score_alone_without_earlier_score_leaves_no_baseline():
    """No pre-procedure score and nothing in the 30 days before: the first session has no
    baseline (unknown), so only one non-responder: no referral."""
    request = load_vignette("response-post-procedure-score-same-day")
    drop(request, "observations", "pain-2026-06-01-pre")
    drop(request, "observations", "pain-2026-05-27")
    no_non_response(request)


def test_procedure_without_time_takes_the_earliest_score_of_the_day():
    """The procedures are recorded with a date only: the earliest score of the day (8 at
    09:20, clinics score pain before the procedure) is the baseline."""
    request = load_vignette("response-post-procedure-score-same-day")
    for rid in ("tpi-2026-06-01", "tpi-2026-08-31"):
        proc = resource(request, "procedures", rid)
        proc["performedDateTime"] = proc["performedDateTime"][:10]
    c = non_response_referral(request)
    assert "baseline 8 (2026-06-01)" in c["detail"]
    assert "baseline 8 (2026-08-31)" in c["detail"]


def test_untimed_score_on_the_session_day_is_the_baseline():
    """The pre-procedure scores are recorded with a date only (no time), the post-procedure
    ones are timed after the procedure: the untimed score is the baseline (8)."""
    request = load_vignette("response-post-procedure-score-same-day")
    for rid in ("pain-2026-06-01-pre", "pain-2026-08-31-pre"):
        obs = resource(request, "observations", rid)
        obs["effectiveDateTime"] = obs["effectiveDateTime"][:10]
    c = non_response_referral(request)
    assert "baseline 8 (2026-06-01)" in c["detail"]
    assert "baseline 2" not in c["detail"]


def test_timed_pre_procedure_score_wins_over_an_untimed_one():
    """The first session day also holds an untimed 6: the 8 timed before the procedure wins
    (8 -> 7 at day 42 stays 12 %, not 6 -> 7)."""
    request = load_vignette("response-post-procedure-score-same-day")
    untimed = dict(resource(request, "observations", "pain-2026-06-01-pre"))
    untimed.update(
        id="pain-2026-06-01-untimed",
        effectiveDateTime="2026-06-01",
        valueQuantity={"value": 6, "unit": "{score}"},
    )
    request["prefetch"]["observations"]["entry"].append({"resource": untimed})
    c = non_response_referral(request)
    assert "baseline 8 (2026-06-01)" in c["detail"]
    assert "baseline 6" not in c["detail"]


# ---------------------------------------------------------------- follow-up window


def test_scores_6_days_and_13_weeks_after_are_not_follow_ups():
    """First TPI 2026-05-04: scores on day 6 and day 91 only. Neither is a follow-up, the
    response is unknown, so only the second session is a non-responder: no referral."""
    no_non_response(load_vignette("response-followup-outside-window"))


def test_score_on_day_7_is_a_follow_up():
    """Counterpart: the early score moved to day 7 (2026-05-11) counts: 8 -> 7, two
    non-responders."""
    request = load_vignette("response-followup-outside-window")
    move(request, "observations", "pain-2026-05-10", "2026-05-11")
    c = non_response_referral(request)
    assert "2026-05-04" in c["detail"]
    assert "day 7: 7 (12 %)" in c["detail"]


def test_a_session_whose_only_follow_up_is_at_12_weeks_is_unknown():
    """The late score moved to day 84 (2026-07-27): a follow-up, but after day 56 alone it
    cannot tell non-response from relief that wore off: unknown, no referral."""
    request = load_vignette("response-followup-outside-window")
    move(request, "observations", "pain-2026-08-03", "2026-07-27")
    no_non_response(request)


@pytest.mark.parametrize(("day", "refer"), [("2026-06-29", True), ("2026-06-30", False)])
def test_non_response_needs_a_follow_up_by_day_56(day, refer):
    """The first session's only follow-up (7, 12 %) on day 56 makes it a non-responder (two:
    refer); on day 57 the session is unknown (no referral)."""
    request = load_vignette("response-followup-outside-window")
    move(request, "observations", "pain-2026-08-03", day)
    if refer:
        assert "day 56: 7 (12 %)" in non_response_referral(request)["detail"]
    else:
        no_non_response(request)


@pytest.mark.parametrize(("day", "refer"), [("2026-07-27", False), ("2026-07-28", True)])
def test_relief_at_12_weeks_still_counts_as_a_response(day, refer):
    """First session: 8 -> 7 at day 14 (no response yet), then 8 -> 5 (37 %) at day 84: any
    follow-up meeting the MCID makes a responder: no referral. At day 85 the 5 is no longer a
    follow-up: the day-14 score stands, two non-responders, refer."""
    request = load_vignette("response-followup-outside-window")
    move(request, "observations", "pain-2026-05-10", "2026-05-18")
    move(request, "observations", "pain-2026-08-03", day)
    set_score(request, "pain-2026-08-03", 5)
    if refer:
        non_response_referral(request)
    else:
        no_non_response(request)


# ---------------------------------------------------------------- decimal scores


def test_decimal_scores_are_shown_as_recorded_and_relief_computed_on_them():
    """Synthea-style decimals: 7.63 -> 5.64 (drop 1.99, 26 %) and 8.0 -> 6.1 (drop 1.9, 24 %)
    are both non-responders (rounding the scores first would make them 2-point drops). The
    detail shows the values as recorded, 8.0 as 8."""
    response = cards_of(load_vignette("response-synthea-decimal-scores"))
    c = card(response, REFERRAL)
    assert c is not None
    assert "R1" in rules(c)
    assert c["indicator"] == "warning"
    for evidence in ("7.63", "5.64", "6.1", "26 %", "24 %"):
        assert evidence in c["detail"]
    assert not re.search(r"(?<![\d.])8\.0(?!\d)", c["detail"])
    c = card(response, ELIGIBILITY)
    assert c is not None
    assert c["indicator"] == "warning"
    assert "E5" in rules(c)
    assert "6.1" in c["detail"]
    assert "24 %" in c["detail"]


def test_relief_is_rounded_half_to_even():
    """8 -> 7 is 12.5 % relief: shown as 12 %, not 13 %."""
    c = card(cards_of(load_vignette("referral-r1-two-failed-neck-tpis")), REFERRAL)
    assert c is not None
    assert "12 %" in c["detail"]
    assert "13 %" not in c["detail"]


# ---------------------------------------------------------------- one session per day


def test_two_procedures_on_one_day_are_one_session():
    """Neck and shoulder injected on 2026-06-15 (two Procedures) and neck on 2026-09-14: two
    sessions, not three (no cap reached), and the 2026-06-15 non-response counts once; the
    second session helped (8 -> 4): no referral."""
    no_non_response(load_vignette("response-two-procedures-same-day"))


def test_two_procedures_on_one_day_with_a_later_failure_refer():
    """Counterpart: the 2026-09-14 session also fails (8 -> 7): two non-responders."""
    request = load_vignette("response-two-procedures-same-day")
    set_score(request, "pain-2026-10-26", 7)
    c = non_response_referral(request)
    assert "2026-06-15" in c["detail"]


# ---------------------------------------------------------------- tie between pain codes


def test_numeric_rating_72514_3_wins_a_timestamp_tie():
    """Two pain scores share each follow-up timestamp (72514-3 says 7 and 6, 38208-5 says 3 and
    2, in either order): the 0-10 numeric rating wins, both sessions are non-responders."""
    c = non_response_referral(load_vignette("response-same-timestamp-two-pain-codes"))
    assert "12 %" in c["detail"]
    assert "14 %" in c["detail"]


def test_a_later_38208_5_score_is_the_follow_up():
    """Counterpart: the 38208-5 score of 3 recorded a day later (2026-06-30) is a follow-up of
    the first TPI of its own (8 -> 3, responder): no referral. All pain codes count alike."""
    request = load_vignette("response-same-timestamp-two-pain-codes")
    move(request, "observations", "pain-2026-06-29-38208-5", "2026-06-30")
    no_non_response(request)


# ---------------------------------------------------------------- MCID


def test_two_point_drop_is_a_clinical_response_despite_22_percent():
    """Second TPI: 9 -> 7 is 22 % relief but a 2-point drop, a clinically important response:
    no referral. For the payer it is still under 50 % at day 49: eligibility warning showing
    22 %."""
    response = cards_of(load_vignette("response-two-point-drop-responder"))
    assert card(response, REFERRAL) is None
    c = card(response, ELIGIBILITY)
    assert c is not None
    assert c["indicator"] == "warning"
    assert "E5" in rules(c)
    assert "day 49: 7 (22 %)" in c["detail"]


def test_one_and_a_half_point_drop_under_30_percent_is_a_non_response():
    """Counterpart: 9 -> 7.5 (drop 1.5, 17 %) is a non-response: two non-responders, refer."""
    request = load_vignette("response-two-point-drop-responder")
    set_score(request, "pain-2026-10-05", 7.5)
    c = non_response_referral(request)
    assert "17 %" in c["detail"]


def test_relief_of_exactly_30_percent_is_a_clinical_response():
    """5 -> 3.5 is a drop of only 1.5 points but 30 % relief: a clinical response, no referral."""
    request = load_vignette("response-two-point-drop-responder")
    set_score(request, "pain-2026-08-17", 5)
    set_score(request, "pain-2026-10-05", 3.5)
    no_non_response(request)


# ---------------------------------------------------------------- what counts as a pain score


@pytest.mark.parametrize("status", ["amended", "corrected"])
def test_amended_or_corrected_follow_up_counts(status):
    """A follow-up score that was amended or corrected is still a pain score: R1 as before."""
    request = load_vignette("referral-r1-two-failed-neck-tpis")
    resource(request, "observations", "pain-2026-10-05")["status"] = status
    non_response_referral(request)


@pytest.mark.parametrize("status", ["preliminary", "entered-in-error", "cancelled"])
def test_follow_up_that_is_not_final_is_ignored(status):
    """Counterpart: a preliminary / erroneous / cancelled follow-up is no score: the second
    session's response is unknown, no referral."""
    request = load_vignette("referral-r1-two-failed-neck-tpis")
    resource(request, "observations", "pain-2026-10-05")["status"] = status
    no_non_response(request)


def test_value_outside_0_to_10_is_not_a_pain_score():
    """A 60 filed under the 0-10 code (a 0-100 scale entered by mistake) is ignored."""
    request = load_vignette("referral-r1-two-failed-neck-tpis")
    set_score(request, "pain-2026-10-05", 60)
    no_non_response(request)


def test_value_integer_scores_count_like_quantities():
    """A follow-up sent as valueInteger is read like valueQuantity."""
    request = load_vignette("referral-r1-two-failed-neck-tpis")
    obs = resource(request, "observations", "pain-2026-10-05")
    del obs["valueQuantity"]
    obs["valueInteger"] = 6
    c = non_response_referral(request)
    assert "14 %" in c["detail"]


def test_weekly_pain_item_75893_8_counts_like_the_numeric_rating():
    """A PEG pain item (75893-8) is a pain score too."""
    request = load_vignette("referral-r1-two-failed-neck-tpis")
    resource(request, "observations", "pain-2026-10-05")["code"] = {
        "coding": [
            {
                "system": "http://loinc.org",
                "code": "75893-8",
                "display": "Pain severity in the past week - 0-10 numeric rating [Reported]",
            }
        ]
    }
    c = non_response_referral(request)
    assert "14 %" in c["detail"]


def test_scores_and_sessions_dated_by_period_start():
    """A score with effectivePeriod and a session with performedPeriod are dated by their
    start."""
    request = load_vignette("referral-r1-two-failed-neck-tpis")
    obs = resource(request, "observations", "pain-2026-10-05")
    del obs["effectiveDateTime"]
    obs["effectivePeriod"] = {
        "start": "2026-10-05T09:30:00-05:00",
        "end": "2026-10-05T09:45:00-05:00",
    }
    proc = resource(request, "procedures", "tpi-2026-08-17")
    del proc["performedDateTime"]
    proc["performedPeriod"] = {
        "start": "2026-08-17T10:00:00-05:00",
        "end": "2026-08-17T10:25:00-05:00",
    }
    c = non_response_referral(request)
    assert "2026-08-17" in c["detail"]
    assert "14 %" in c["detail"]


def test_a_late_evening_procedure_counts_on_its_own_calendar_date():
    """The shoulder injection logged at 23:30 (-05:00) on 2026-06-15 is 2026-06-16 in UTC but
    belongs to the 2026-06-15 session: still two sessions, still no referral."""
    request = load_vignette("response-two-procedures-same-day")
    resource(request, "procedures", "tpi-2026-06-15-shoulder")["performedDateTime"] = (
        "2026-06-15T23:30:00-05:00"
    )
    no_non_response(request)


# ---------------------------------------------------------------- recurrence is not non-response

# response-pain-returns-week-10: neck TPI 2026-05-04 without relief (8 -> 7 at day 42), then
# neck TPI 2026-08-31: 8 before it, 3 at day 42 (62 %), 7 at day 70 (12 %): the pain came back.


def test_pain_returning_at_week_10_after_relief_is_not_non_response():
    """62 % relief at week 6, pain back to 7 at week 10: a clinical (and payer) response that
    wore off, i.e. recurrence, not non-response. Only one non-responder in the year: no
    referral card (version 1 read the week-10 score and fired R1)."""
    no_non_response(load_vignette("response-pain-returns-week-10"))


def test_pain_returning_after_relief_needs_no_eligibility_card():
    """The same patient: relief >= 50 % held to the first score from day 42, so a repeat is
    supported; nothing else stands against it: no eligibility card."""
    assert eligibility(load_vignette("response-pain-returns-week-10")) is None


def test_pain_returning_shows_the_whole_course_when_criteria_met():
    """With 'criteria met' on, the last response is shown whole: day 42: 3 (62 %), day 70:
    7 (12 %), so the clinician sees the pain coming back."""
    c = eligibility(load_vignette("response-pain-returns-week-10"), overrides=E0_ON)
    assert c is not None
    assert rules(c) == ["E0"]
    assert "day 42: 3 (62 %), day 70: 7 (12 %)" in c["detail"]


def test_no_relief_at_week_6_either_is_non_response():
    """Counterpart: the week-6 score is 7 too (12 %): the second session never responded, two
    non-responders, refer; both sessions are shown."""
    request = load_vignette("response-pain-returns-week-10")
    set_score(request, "pain-2026-10-12", 7)
    c = non_response_referral(request)
    assert "2026-05-04" in c["detail"]
    assert "2026-08-31" in c["detail"]
    assert "day 70: 7 (12 %)" in c["detail"]


def test_only_the_week_10_score_is_unknown_not_non_response():
    """Counterpart: without the week-6 score, the second session's only follow-up is on day 70
    (after day 56): unknown, not non-response: no referral."""
    request = load_vignette("response-pain-returns-week-10")
    drop(request, "observations", "pain-2026-10-12")
    no_non_response(request)


# ---------------------------------------------------------------- payer response, score by score

# response-payer-relief-course: one neck TPI 2026-09-07 at 10:00, pain 8 at 09:30; then
# day 14: 2 (75 %), day 28: 3 (62 %), day 45: 3 (62 %), day 63: 6 (25 %).
PAYER = "response-payer-relief-course"


def payer_card(request: dict[str, Any]) -> dict[str, Any] | None:
    """The eligibility card of the one-session story (E5 or nothing)."""
    c = eligibility(request)
    assert c is None or rules(c) == ["E5"], c and c["detail"]
    return c


def test_payer_relief_held_to_week_6_is_a_responder():
    """>= 50 % at every score up to the first from day 42 (day 45): a payer responder; pain
    creeping back at day 63 does not undo it: no eligibility card."""
    assert payer_card(load_vignette(PAYER)) is None


def test_payer_relief_dipping_under_half_before_week_6_is_a_non_responder():
    """Day 28 is 5 (38 %): relief did not hold for 6 weeks even though day 45 is 62 % again:
    warning, with every follow-up score shown."""
    request = load_vignette(PAYER)
    set_score(request, "pain-2026-10-05", 5)
    c = payer_card(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert "baseline 8 (2026-09-07)" in c["detail"]
    for score in ("day 14: 2 (75 %)", "day 28: 5 (38 %)", "day 45: 3 (62 %)", "day 63: 6 (25 %)"):
        assert score in c["detail"]


def test_payer_exactly_half_relief_at_week_6_is_enough():
    """Day 45 is 4: exactly 50 % relief: still a payer responder, no card."""
    request = load_vignette(PAYER)
    set_score(request, "pain-2026-10-22", 4)
    assert payer_card(request) is None


def test_payer_scores_after_the_deciding_one_do_not_matter():
    """Day 63 is 8 (0 %): after the first score from day 42, so the response stands."""
    request = load_vignette(PAYER)
    set_score(request, "pain-2026-11-09", 8)
    assert payer_card(request) is None


@pytest.mark.parametrize(("day", "responder"), [("2026-10-19", True), ("2026-10-18", False)])
def test_payer_the_deciding_score_is_the_first_from_day_42(day, responder):
    """The 62 % score moved to day 42: it decides, responder. Moved to day 41: the first score
    from day 42 is day 63 (25 %), so not a responder; yet no score by day 56 is under 50 %, so
    not a non-responder either: unknown, info."""
    request = load_vignette(PAYER)
    move(request, "observations", "pain-2026-10-22", day)
    c = payer_card(request)
    if responder:
        assert c is None
    else:
        assert c is not None
        assert c["indicator"] == "info"
        assert "day 41: 3 (62 %)" in c["detail"]
        assert "day 63: 6 (25 %)" in c["detail"]


def test_payer_no_score_from_day_42_is_unknown():
    """Only days 14 and 28 (75 %, 62 %): nothing shows whether relief lasted 6 weeks: unknown,
    info, saying it is not documented and showing both scores (pain score 49 days old: E6)."""
    request = load_vignette(PAYER)
    drop(request, "observations", "pain-2026-10-22")
    drop(request, "observations", "pain-2026-11-09")
    c = eligibility(request)
    assert c is not None
    assert rules(c) == ["E5", "E6"]
    assert c["indicator"] == "info"
    assert "day 14: 2 (75 %), day 28: 3 (62 %)" in c["detail"]
    assert MISSING.search(c["detail"])
    assert "suggestions" not in c


@pytest.mark.parametrize(("day", "indicator"), [("2026-11-02", "warning"), ("2026-11-03", "info")])
def test_payer_non_response_needs_a_score_under_half_by_day_56(day, indicator):
    """Without the day-45 score, the 6 (25 %) moved to day 56 shows relief did not last:
    warning. On day 57 it is after the window that can show non-response: unknown, info."""
    request = load_vignette(PAYER)
    drop(request, "observations", "pain-2026-10-22")
    move(request, "observations", "pain-2026-11-09", day)
    c = payer_card(request)
    assert c is not None
    assert c["indicator"] == indicator
