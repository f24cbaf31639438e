"""Clinical vignettes for the response to a TPI session (rules page section 2).

The response is observed through the cards that use it: R1 on the specialist-referral card
(two clinical non-responders in the year) and E5 on the eligibility card (the payer response of
the most recent session). Every vignette has two sessions (under the cap of 3, one body site),
so a referral card appears only when both sessions are clinical non-responders.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from conftest import card, evaluate, evaluate_vignette, load_vignette, resource

REFERRAL = "specialist-referral"
ELIGIBILITY = "tpi-eligibility"


def set_score(request: dict[str, Any], rid: str, value: float) -> None:
    resource(request, "observations", rid)["valueQuantity"]["value"] = value


def move(request: dict[str, Any], key: str, rid: str, day: str) -> None:
    r = resource(request, key, rid)
    field = "performedDateTime" if key == "procedures" else "effectiveDateTime"
    r[field] = day + r[field][10:]


def referral(request: dict[str, Any]) -> dict[str, Any] | None:
    return card(evaluate(request), REFERRAL)


# ---------------------------------------------------------------- baseline of 0


def test_baseline_of_zero_is_never_a_non_response():
    """Pain 0 at both sessions and 3 afterwards: no relief can be computed, so not a
    non-response, no referral; the last session's payer response is unknown (info)."""
    response = evaluate_vignette("response-baseline-zero-two-sessions")
    assert card(response, REFERRAL) is None
    eligibility = card(response, ELIGIBILITY)
    assert eligibility is not None
    assert eligibility["indicator"] == "info"


def test_baseline_of_three_unchanged_is_a_non_response():
    """Counterpart: baselines of 3 with follow-ups of 3 are two clinical non-responders."""
    request = load_vignette("response-baseline-zero-two-sessions")
    set_score(request, "pain-2026-05-11", 3)
    set_score(request, "pain-2026-08-17", 3)
    c = referral(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert "0 %" in c["detail"]


# ---------------------------------------------------------------- missing follow-up


def test_missing_follow_up_is_unknown_and_reported_missing():
    """Second TPI (2026-08-17) has no score 7 days-12 weeks after it (the next is 91 days
    later): unknown, not a non-response; no referral; the eligibility card says it is missing
    (info), not that the injection failed."""
    response = evaluate_vignette("response-missing-followup-last-session")
    assert card(response, REFERRAL) is None
    eligibility = card(response, ELIGIBILITY)
    assert eligibility is not None
    assert eligibility["indicator"] == "info"
    assert "missing" in eligibility["detail"].lower()
    assert "2026-08-17" in eligibility["detail"]


def test_follow_up_present_makes_the_second_session_a_non_response():
    """Counterpart: the same 7/10 score recorded on 2026-10-05 (day 49) is a follow-up;
    7 -> 7 completes two non-responders."""
    request = load_vignette("response-missing-followup-last-session")
    move(request, "observations", "pain-2026-11-16", "2026-10-05")
    c = referral(request)
    assert c is not None
    assert c["indicator"] == "warning"
    assert "2026-08-17" in c["detail"]


# ---------------------------------------------------------------- next session in window


def test_follow_up_must_come_before_the_next_session():
    """TPIs 2026-06-01 and 2026-07-06 (35 days apart). The 3/10 of 2026-07-20 follows the
    second TPI, not the first: the first session's follow-up is 7 (2026-06-29, 8 -> 7, 12 %),
    the second's 6 (2026-08-24, 7 -> 6, 14 %): two non-responders."""
    c = referral(load_vignette("response-next-session-inside-followup-window"))
    assert c is not None
    assert c["indicator"] == "warning"
    for evidence in ("2026-06-01", "2026-07-06", "12 %", "14 %"):
        assert evidence in c["detail"]


# ---------------------------------------------------------------- baseline window


def test_score_on_the_session_day_is_its_baseline():
    """Pain 8 recorded at check-in on the day of each TPI is the baseline; 8 -> 7 twice."""
    c = referral(load_vignette("response-baseline-on-session-day"))
    assert c is not None
    assert c["indicator"] == "warning"
    for evidence in ("2026-06-01", "2026-09-14", "12 %"):
        assert evidence in c["detail"]


def test_score_31_days_before_the_session_is_no_baseline():
    """The first TPI's only earlier score moved to 2026-05-01 (31 days before): no baseline,
    unknown response, one non-responder only: no referral."""
    request = load_vignette("response-baseline-on-session-day")
    move(request, "observations", "pain-2026-06-01", "2026-05-01")
    assert referral(request) is None


def test_score_30_days_before_the_session_is_still_a_baseline():
    """Counterpart at the limit: 2026-05-02 (30 days before) is a baseline."""
    request = load_vignette("response-baseline-on-session-day")
    move(request, "observations", "pain-2026-06-01", "2026-05-02")
    c = referral(request)
    assert c is not None
    assert c["indicator"] == "warning"


# ---------------------------------------------------------------- follow-up window


def test_scores_6_days_and_13_weeks_after_are_not_follow_ups():
    """First TPI 2026-05-04: scores on day 6 and day 91 only. Neither is a follow-up, the
    response is unknown, so only the second session is a non-responder: no referral."""
    assert referral(load_vignette("response-followup-outside-window")) is None


def test_score_on_day_7_is_a_follow_up():
    """Counterpart: the early score moved to day 7 (2026-05-11) counts: 8 -> 7, two
    non-responders."""
    request = load_vignette("response-followup-outside-window")
    move(request, "observations", "pain-2026-05-10", "2026-05-11")
    c = referral(request)
    assert c is not None
    assert "2026-05-04" in c["detail"]


def test_score_at_12_weeks_is_a_follow_up():
    """Counterpart: the late score moved to day 84 (2026-07-27) counts: 8 -> 7."""
    request = load_vignette("response-followup-outside-window")
    move(request, "observations", "pain-2026-08-03", "2026-07-27")
    c = referral(request)
    assert c is not None
    assert "2026-05-04" in c["detail"]


# ---------------------------------------------------------------- decimal scores


def test_decimal_scores_are_shown_as_recorded_and_relief_computed_on_them():
    """Synthea-style decimals: 7.63 -> 5.64 (drop 1.99, 26 %) and 8.0 -> 6.1 (drop 1.9, 24 %)
    are both non-responders (rounding the scores first would make them 2-point drops). The
    detail shows the values as recorded, 8.0 as 8."""
    response = evaluate_vignette("response-synthea-decimal-scores")
    c = card(response, REFERRAL)
    assert c is not None
    assert c["indicator"] == "warning"
    for evidence in ("7.63", "5.64", "6.1", "26 %", "24 %"):
        assert evidence in c["detail"]
    assert not re.search(r"(?<![\d.])8\.0(?!\d)", c["detail"])
    eligibility = card(response, ELIGIBILITY)
    assert eligibility is not None
    assert eligibility["indicator"] == "warning"
    assert "6.1" in eligibility["detail"]
    assert "24 %" in eligibility["detail"]


def test_relief_is_rounded_half_to_even():
    """8 -> 7 is 12.5 % relief: shown as 12 %, not 13 %."""
    c = card(evaluate_vignette("referral-r1-two-failed-neck-tpis"), REFERRAL)
    assert c is not None
    assert "12 %" in c["detail"]
    assert "13 %" not in c["detail"]


# ---------------------------------------------------------------- one session per day


def test_two_procedures_on_one_day_are_one_session():
    """Neck and shoulder injected on 2026-06-15 (two Procedures) and neck on 2026-09-14: two
    sessions, not three (no cap reached), and the 2026-06-15 non-response counts once; the
    second session helped (8 -> 4): no referral."""
    assert referral(load_vignette("response-two-procedures-same-day")) is None


def test_two_procedures_on_one_day_with_a_later_failure_refer():
    """Counterpart: the 2026-09-14 session also fails (8 -> 7): two non-responders."""
    request = load_vignette("response-two-procedures-same-day")
    set_score(request, "pain-2026-10-26", 7)
    c = referral(request)
    assert c is not None
    assert "2026-06-15" in c["detail"]


# ---------------------------------------------------------------- tie between pain codes


def test_numeric_rating_72514_3_wins_a_timestamp_tie():
    """Two pain scores share each follow-up timestamp (72514-3 says 7 and 6, 38208-5 says 3 and
    2, in either order): the 0-10 numeric rating wins, both sessions are non-responders."""
    c = referral(load_vignette("response-same-timestamp-two-pain-codes"))
    assert c is not None
    assert c["indicator"] == "warning"
    assert "12 %" in c["detail"]
    assert "14 %" in c["detail"]


def test_a_later_38208_5_score_is_the_follow_up():
    """Counterpart: the 38208-5 score of 3 recorded a day later (2026-06-30) is the latest
    follow-up of the first TPI (8 -> 3, responder): no referral. All pain codes count alike."""
    request = load_vignette("response-same-timestamp-two-pain-codes")
    move(request, "observations", "pain-2026-06-29-38208-5", "2026-06-30")
    assert referral(request) is None


# ---------------------------------------------------------------- MCID


def test_two_point_drop_is_a_clinical_response_despite_22_percent():
    """Second TPI: 9 -> 7 is 22 % relief but a 2-point drop, a clinically important response:
    no referral. For the payer it is still under 50 % at day 49: eligibility warning showing
    22 %."""
    response = evaluate_vignette("response-two-point-drop-responder")
    assert card(response, REFERRAL) is None
    eligibility = card(response, ELIGIBILITY)
    assert eligibility is not None
    assert eligibility["indicator"] == "warning"
    assert "22 %" in eligibility["detail"]


def test_one_and_a_half_point_drop_under_30_percent_is_a_non_response():
    """Counterpart: 9 -> 7.5 (drop 1.5, 17 %) is a non-response: two non-responders, refer."""
    request = load_vignette("response-two-point-drop-responder")
    set_score(request, "pain-2026-10-05", 7.5)
    c = referral(request)
    assert c is not None
    assert "17 %" in c["detail"]


def test_relief_of_exactly_30_percent_is_a_clinical_response():
    """5 -> 3.5 is a drop of only 1.5 points but 30 % relief: a clinical response, no referral."""
    request = load_vignette("response-two-point-drop-responder")
    set_score(request, "pain-2026-08-17", 5)
    set_score(request, "pain-2026-10-05", 3.5)
    assert referral(request) is None


# ---------------------------------------------------------------- what counts as a pain score


@pytest.mark.parametrize("status", ["amended", "corrected"])
def test_amended_or_corrected_follow_up_counts(status):
    """A follow-up score that was amended or corrected is still a pain score: R1 as before."""
    request = load_vignette("referral-r1-two-failed-neck-tpis")
    resource(request, "observations", "pain-2026-10-05")["status"] = status
    assert referral(request) is not None


@pytest.mark.parametrize("status", ["preliminary", "entered-in-error", "cancelled"])
def test_follow_up_that_is_not_final_is_ignored(status):
    """Counterpart: a preliminary / erroneous / cancelled follow-up is no score: the second
    session's response is unknown, no referral."""
    request = load_vignette("referral-r1-two-failed-neck-tpis")
    resource(request, "observations", "pain-2026-10-05")["status"] = status
    assert referral(request) is None


def test_value_outside_0_to_10_is_not_a_pain_score():
    """A 60 filed under the 0-10 code (a 0-100 scale entered by mistake) is ignored."""
    request = load_vignette("referral-r1-two-failed-neck-tpis")
    set_score(request, "pain-2026-10-05", 60)
    assert referral(request) is None


def test_value_integer_scores_count_like_quantities():
    """A follow-up sent as valueInteger is read like valueQuantity."""
    request = load_vignette("referral-r1-two-failed-neck-tpis")
    obs = resource(request, "observations", "pain-2026-10-05")
    del obs["valueQuantity"]
    obs["valueInteger"] = 6
    c = referral(request)
    assert c is not None
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
    c = referral(request)
    assert c is not None
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
    c = referral(request)
    assert c is not None
    assert "2026-08-17" in c["detail"]
    assert "14 %" in c["detail"]


def test_a_late_evening_procedure_counts_on_its_own_calendar_date():
    """The shoulder injection logged at 23:30 (-05:00) on 2026-06-15 is 2026-06-16 in UTC but
    belongs to the 2026-06-15 session: still two sessions, still no referral."""
    request = load_vignette("response-two-procedures-same-day")
    resource(request, "procedures", "tpi-2026-06-15-shoulder")["performedDateTime"] = (
        "2026-06-15T23:30:00-05:00"
    )
    assert referral(request) is None
