"""Clinical vignettes for the tpi-eligibility topic (rules E0-E6, clinical-rules.md section 3),
under both policy profiles (medicare: cap 3 sessions / 42 days; commercial: cap 4 / 60 days).

Each vignette in tests/vignettes/eligibility-*.json is one whole CDS Hooks request; small
variations (one date, one status, the profile, an override) are made here in Python.
Dates are relative to TODAY = 2026-11-23.
"""

from __future__ import annotations

import copy
import re
from datetime import timedelta
from typing import Any

import pytest

from conftest import TODAY, VIGNETTES, assert_well_formed, card, evaluate, load_vignette

ELIGIBILITY = "tpi-eligibility"
TOPIC_SYSTEM = "urn:tpi-cds:topic"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
CPT = "http://www.ama-assn.org/go/cpt"
TOPICS = {"tpi-safety", "tpi-eligibility", "pt-integration", "specialist-referral"}
NECK = {"system": SCT, "code": "45048000", "display": "Neck structure"}
LOW_BACK = {"system": SCT, "code": "37822005", "display": "Lower back structure"}
MISSING = re.compile(r"missing|not recorded|not documented|no follow-up|unknown", re.I)
NO_E0 = {"show_criteria_met": False}


# --------------------------------------------------------------------------- helpers


def day(days_ago: int) -> str:
    return (TODAY - timedelta(days=days_ago)).isoformat()


def at(days_ago: int, time: str = "10:00:00-05:00") -> str:
    return f"{day(days_ago)}T{time}"


def resources(request: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The resources of one prefetch searchset (live objects: edit them in place)."""
    return [e["resource"] for e in request["prefetch"][key].get("entry", [])]


def add_resource(request: dict[str, Any], key: str, resource: dict[str, Any]) -> None:
    request["prefetch"][key].setdefault("entry", []).append(
        {"resource": resource, "search": {"mode": "match"}}
    )


def remove_resource(request: dict[str, Any], key: str, resource: dict[str, Any]) -> None:
    request["prefetch"][key]["entry"] = [
        e for e in request["prefetch"][key]["entry"] if e["resource"] is not resource
    ]


def condition(request: dict[str, Any], code: str) -> dict[str, Any]:
    found = [
        r
        for r in resources(request, "conditions")
        if any(c["code"] == code for c in r["code"]["coding"])
    ]
    assert len(found) == 1, f"expected one condition {code}"
    return found[0]


def sessions(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The TPI Procedures of a vignette, oldest first."""
    return sorted(resources(request, "procedures"), key=lambda r: r["performedDateTime"])


def pain_on(request: dict[str, Any], days_ago: int) -> dict[str, Any]:
    found = [
        r
        for r in resources(request, "observations")
        if r["effectiveDateTime"].startswith(day(days_ago))
    ]
    assert len(found) == 1, f"expected one pain score on {day(days_ago)}"
    return found[0]


def tpi_order(request: dict[str, Any]) -> dict[str, Any]:
    return request["context"]["draftOrders"]["entry"][0]["resource"]


def procedure(
    pid: str,
    rid: str,
    days_ago: int,
    body: dict[str, Any] | None = NECK,
    status: str = "completed",
    cpt: str = "20552",
) -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": rid,
        "status": status,
        "code": {"coding": [{"system": CPT, "code": cpt}], "text": "Trigger point injection"},
        "subject": {"reference": f"Patient/{pid}"},
        "performedDateTime": at(days_ago),
    }
    if body:
        r["bodySite"] = [{"coding": [body]}]
    return r


def add_session(request: dict[str, Any], days_ago: int, **kwargs: Any) -> dict[str, Any]:
    pid = request["context"]["patientId"]
    rid = f"proc-extra-{len(resources(request, 'procedures')) + 1}"
    r = procedure(pid, rid, days_ago, **kwargs)
    add_resource(request, "procedures", r)
    return r


def pain_score(
    pid: str, rid: str, when: str, value: float, code: str = "72514-3", integer: bool = False
) -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
    }
    if integer:
        r["valueInteger"] = int(value)
    else:
        r["valueQuantity"] = {"value": value, "unit": "{score}"}
    return r


def mentions(text: str, *alternatives: str) -> bool:
    low = text.lower()
    return any(a.lower() in low for a in alternatives)


def eligibility(
    request: dict[str, Any], profile: str = "medicare", **kwargs: Any
) -> dict[str, Any] | None:
    """The eligibility card (checked for shape and for naming its profile), or None."""
    response = evaluate(request, profile=profile, **kwargs)
    c = card(response, ELIGIBILITY)
    if c is not None:
        assert_well_formed(c)
        assert c["indicator"] in {"info", "warning"}, "eligibility is never critical"
        assert profile in c["detail"], f"profile {profile} not named in the detail"
    return c


def assert_indicator(c: dict[str, Any] | None, indicator: str) -> dict[str, Any]:
    assert c is not None, "no eligibility card"
    assert c["indicator"] == indicator, c["detail"]
    return c


# ---------------------------------------------------------------- E0 criteria met


@pytest.mark.parametrize("profile", ["medicare", "commercial"])
def test_e0_first_tpi_with_everything_documented(profile):
    """M79.12, pain 8 ten days ago, no earlier TPI: 'criteria met' info naming the diagnosis."""
    c = eligibility(load_vignette("eligibility-e0-first-tpi-criteria-met"), profile)
    assert_indicator(c, "info")
    assert mentions(c["detail"], "M79.12", "Myalgia of auxiliary muscles")


@pytest.mark.parametrize("profile", ["medicare", "commercial"])
def test_e0_switched_off_leaves_no_eligibility_card(profile):
    """With show_criteria_met off, a clean first TPI gets no eligibility card at all: no
    missing-response note (E5 needs an earlier session) and no pain-score note (E6)."""
    request = load_vignette("eligibility-e0-first-tpi-criteria-met")
    assert eligibility(request, profile, overrides=NO_E0) is None


def test_e0_after_a_good_response_names_the_last_response():
    """Last TPI 2026-09-24, pain 8 -> 3 at day 50 (62.5 %, shown as 62 %): criteria met."""
    c = eligibility(load_vignette("eligibility-e5-payer-responder"))
    assert_indicator(c, "info")
    assert mentions(c["detail"], "M79.12", "Myalgia of auxiliary muscles")
    assert day(60) in c["detail"]
    assert "62 %" in c["detail"]


# ------------------------------------------------------------ E1 qualifying diagnosis


def test_e1_cervicalgia_alone_does_not_support_a_tpi():
    """Only M54.2 cervicalgia on the list: warning that names the code."""
    c = eligibility(load_vignette("eligibility-e1-cervicalgia-only"))
    assert_indicator(c, "warning")
    assert "M54.2" in c["detail"]


def test_e1_cervicalgia_alone_under_commercial_too():
    """The qualifying-diagnosis rule applies under the commercial profile as well."""
    c = eligibility(load_vignette("eligibility-e1-cervicalgia-only"), "commercial")
    assert_indicator(c, "warning")
    assert "M54.2" in c["detail"]


def test_e1_tension_type_headache_qualifies():
    """G44.209 tension-type headache instead of cervicalgia: a covered diagnosis, no warning."""
    request = load_vignette("eligibility-e1-cervicalgia-only")
    condition(request, "M54.2")["code"] = {
        "coding": [
            {
                "system": ICD,
                "code": "G44.209",
                "display": "Tension-type headache, unspecified, not intractable",
            }
        ]
    }
    assert eligibility(request, overrides=NO_E0) is None
    assert_indicator(eligibility(request), "info")


def test_e1_adding_documented_myofascial_pain_qualifies():
    """Cervicalgia plus M79.12 after a documented trigger point exam: no warning."""
    request = load_vignette("eligibility-e1-cervicalgia-only")
    myalgia = copy.deepcopy(condition(request, "M54.2"))
    myalgia["id"] = "cond-myalgia"
    myalgia["code"] = {
        "coding": [
            {
                "system": ICD,
                "code": "M79.12",
                "display": "Myalgia of auxiliary muscles, head and neck",
            }
        ]
    }
    add_resource(request, "conditions", myalgia)
    assert eligibility(request, overrides=NO_E0) is None


def test_e1_refuted_myalgia_does_not_qualify():
    """M79.1 recorded but refuted (no taut band on exam), M54.2 remains: warning."""
    c = eligibility(load_vignette("eligibility-e1-myalgia-refuted"))
    assert_indicator(c, "warning")
    assert "M54.2" in c["detail"]


def test_e1_confirmed_myalgia_header_code_qualifies():
    """The same M79.1 (legacy header code) when confirmed: qualifies, no warning."""
    request = load_vignette("eligibility-e1-myalgia-refuted")
    condition(request, "M79.1")["verificationStatus"]["coding"][0]["code"] = "confirmed"
    assert eligibility(request, overrides=NO_E0) is None


def test_e1_resolved_myalgia_does_not_qualify():
    """M79.12 marked resolved: no active qualifying diagnosis, warning."""
    request = load_vignette("eligibility-e0-first-tpi-criteria-met")
    cond = condition(request, "M79.12")
    cond["clinicalStatus"]["coding"][0]["code"] = "resolved"
    cond["abatementDateTime"] = day(30)
    assert_indicator(eligibility(request), "warning")


# ------------------------------------------------------------------ E2 fibromyalgia


def test_e2_fibromyalgia_alone_is_not_a_tpi_indication():
    """Fibromyalgia M79.7 only: warning that says fibromyalgia (tender points are not
    trigger points)."""
    c = eligibility(load_vignette("eligibility-e2-fibromyalgia-only"))
    assert_indicator(c, "warning")
    assert mentions(c["detail"], "fibromyalgia", "M79.7")


def test_e2_fibromyalgia_coded_in_snomed():
    """Fibromyalgia coded SNOMED 203082005 (no ICD code): same warning."""
    request = load_vignette("eligibility-e2-fibromyalgia-only")
    condition(request, "M79.7")["code"] = {
        "coding": [{"system": SCT, "code": "203082005", "display": "Fibromyalgia (disorder)"}],
        "text": "Fibromyalgia",
    }
    c = eligibility(request)
    assert_indicator(c, "warning")
    assert mentions(c["detail"], "fibromyalgia", "203082005")


def test_e2_fibromyalgia_with_myofascial_pain_qualifies():
    """Fibromyalgia plus a documented myofascial trigger point (M79.18): no E1, no E2."""
    request = load_vignette("eligibility-e2-fibromyalgia-with-myofascial-pain")
    assert_indicator(eligibility(request), "info")
    assert eligibility(request, overrides=NO_E0) is None


# ------------------------------------------------------------- E3 sessions per year

# eligibility-e3-three-sessions-in-12-months: TPIs 290, 180 and 70 days ago (shoulder,
# low back, neck), the last one a good response (8 -> 3 at day 50); the order is for the neck.
E3_DATES = [day(290), day(180), day(70)]


def test_e3_three_sessions_reach_the_medicare_cap():
    """Three TPIs in 12 months under medicare (cap 3): warning listing the sessions."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    assert [s["performedDateTime"][:10] for s in sessions(request)] == E3_DATES
    c = eligibility(request, "medicare")
    assert_indicator(c, "warning")
    for d in E3_DATES:
        assert d in c["detail"]


def test_e3_three_sessions_are_within_the_commercial_cap():
    """Same patient under commercial (cap 4): no limit reached, criteria met."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    assert_indicator(eligibility(request, "commercial"), "info")


def test_e3_four_sessions_reach_the_commercial_cap():
    """A fourth TPI 120 days ago: the commercial cap of 4 is reached too."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    add_session(request, 120, body=LOW_BACK)
    c = eligibility(request, "commercial")
    assert_indicator(c, "warning")
    assert day(120) in c["detail"]


def test_e3_session_400_days_ago_is_not_counted():
    """A fourth TPI 400 days ago is outside the 12 months: commercial stays within the cap."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    add_session(request, 400, body=LOW_BACK)
    assert_indicator(eligibility(request, "commercial"), "info")


@pytest.mark.parametrize(("days_ago", "counted"), [(365, True), (366, False)])
def test_e3_twelve_month_window_includes_today_minus_365(days_ago, counted):
    """A session exactly 365 days ago is in the window; 366 days ago is not."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    add_session(request, days_ago, body=LOW_BACK)
    c = eligibility(request, "commercial")
    assert_indicator(c, "warning" if counted else "info")


@pytest.mark.parametrize("status", ["entered-in-error", "not-done"])
def test_e3_invalid_procedures_are_not_sessions(status):
    """A fourth TPI Procedure that is entered-in-error or not-done is not a session."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    add_session(request, 120, body=LOW_BACK, status=status)
    assert_indicator(eligibility(request, "commercial"), "info")


def test_e3_oldest_session_entered_in_error_drops_below_medicare_cap():
    """The oldest of the three TPIs was entered in error: two sessions, under the cap."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    sessions(request)[0]["status"] = "entered-in-error"
    assert_indicator(eligibility(request, "medicare"), "info")


def test_e3_two_procedures_on_one_day_are_one_session():
    """A 20553 (other muscles) documented on the same day as the 180-day TPI: still three
    sessions, within the commercial cap."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    add_session(request, 180, body=LOW_BACK, cpt="20553")
    assert_indicator(eligibility(request, "commercial"), "info")


def test_e3_session_dated_by_performed_period_counts():
    """A fourth TPI dated by performedPeriod.start (no performedDateTime) counts."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    extra = add_session(request, 120, body=LOW_BACK)
    extra["performedPeriod"] = {"start": extra.pop("performedDateTime"), "end": at(120)}
    assert_indicator(eligibility(request, "commercial"), "warning")


def test_e3_session_cap_override_lowers_the_threshold():
    """Two sessions are under the medicare cap, but a site cap of 2 makes them reach it."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    remove_resource(request, "procedures", sessions(request)[0])
    assert_indicator(eligibility(request, "medicare"), "info")
    c = eligibility(request, "medicare", overrides={"session_cap": 2})
    assert_indicator(c, "warning")
    assert day(180) in c["detail"]


def test_e3_session_cap_override_raises_the_threshold():
    """Three sessions under medicare with a site cap of 4: within the cap."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    assert_indicator(eligibility(request, "medicare", overrides={"session_cap": 4}), "info")


# ----------------------------------------------------------- E4 interval between TPIs

# eligibility-e4-same-site-20-days-ago: neck TPI 2026-11-03 (pain 8 -> 4 at day 14, so the
# payer response is not yet known: an info finding); neck TPI ordered today.
E4_LAST = day(20)


def test_e4_same_site_20_days_ago_medicare_defers_to_day_42():
    """Neck TPI 20 days ago, neck ordered: warning, defer until 2026-12-15 (last + 42)."""
    c = eligibility(load_vignette("eligibility-e4-same-site-20-days-ago"), "medicare")
    assert_indicator(c, "warning")
    assert "2026-12-15" in c["detail"]
    assert E4_LAST in c["detail"]


def test_e4_same_site_20_days_ago_commercial_defers_to_day_60():
    """Same under commercial: defer until 2027-01-02 (last + 60)."""
    c = eligibility(load_vignette("eligibility-e4-same-site-20-days-ago"), "commercial")
    assert_indicator(c, "warning")
    assert "2027-01-02" in c["detail"]
    assert "2026-12-15" not in c["detail"]


def test_e4_different_site_is_not_deferred():
    """Last TPI 20 days ago in the low back, order for the neck: no interval warning."""
    request = load_vignette("eligibility-e4-same-site-20-days-ago")
    sessions(request)[0]["bodySite"] = [{"coding": [LOW_BACK]}]
    c = eligibility(request, "medicare")
    assert_indicator(c, "info")
    assert "2026-12-15" not in c["detail"]


def test_e4_last_session_without_site_counts():
    """Last TPI 20 days ago with no site recorded may have been the neck: warning."""
    request = load_vignette("eligibility-e4-same-site-20-days-ago")
    del sessions(request)[0]["bodySite"]
    c = eligibility(request, "medicare")
    assert_indicator(c, "warning")
    assert "2026-12-15" in c["detail"]


def test_e4_order_without_site_counts_any_site():
    """The order names no site: the low-back TPI 20 days ago counts."""
    request = load_vignette("eligibility-e4-same-site-20-days-ago")
    sessions(request)[0]["bodySite"] = [{"coding": [LOW_BACK]}]
    del tpi_order(request)["bodySite"]
    c = eligibility(request, "medicare")
    assert_indicator(c, "warning")
    assert "2026-12-15" in c["detail"]


def test_e4_uses_the_last_session_at_the_ordered_site():
    """Neck TPI 30 days ago, low-back TPI 10 days ago, neck ordered: defer until
    2026-12-05 (neck + 42), not 2026-12-25 (low back + 42)."""
    request = load_vignette("eligibility-e4-same-site-20-days-ago")
    neck = sessions(request)[0]
    neck["performedDateTime"] = at(30)
    pain_on(request, 20)["effectiveDateTime"] = at(30, "09:00:00-05:00")
    add_session(request, 10, body=LOW_BACK)
    c = eligibility(request, "medicare")
    assert_indicator(c, "warning")
    assert "2026-12-05" in c["detail"]
    assert "2026-12-25" not in c["detail"]


def test_e4_same_site_50_days_ago_is_fine_under_medicare():
    """Neck TPI 50 days ago with a good response: past the 42-day medicare interval."""
    c = eligibility(load_vignette("eligibility-e4-same-site-50-days-ago"), "medicare")
    assert_indicator(c, "info")
    assert "2026-12-03" not in c["detail"]


def test_e4_same_site_50_days_ago_is_too_soon_under_commercial():
    """Same patient under commercial (60 days): warning, defer until 2026-12-03."""
    c = eligibility(load_vignette("eligibility-e4-same-site-50-days-ago"), "commercial")
    assert_indicator(c, "warning")
    assert "2026-12-03" in c["detail"]


@pytest.mark.parametrize(("days_ago", "deferred"), [(41, True), (42, False)])
def test_e4_interval_boundary_medicare(days_ago, deferred):
    """41 days after the last neck TPI is too soon (defer to tomorrow); 42 days is allowed."""
    request = load_vignette("eligibility-e4-same-site-50-days-ago")
    sessions(request)[0]["performedDateTime"] = at(days_ago)
    c = eligibility(request, "medicare")
    if deferred:
        assert_indicator(c, "warning")
        assert "2026-11-24" in c["detail"]
    else:
        assert c is not None
        assert c["indicator"] == "info"


# ------------------------------------------------------- E5 response to the last TPI

# eligibility-e5-payer-non-responder: neck TPI 2026-09-24, pain 8 the day before, 6 on
# 2026-11-08 (day 45): 25 % relief, under the 50 % that payers require for a repeat.
E5_TPI = day(60)


@pytest.mark.parametrize("profile", ["medicare", "commercial"])
def test_e5_payer_non_responder_shows_the_numbers(profile):
    """8 -> 6 six weeks after the last TPI (25 %): warning with dates, scores and relief."""
    c = eligibility(load_vignette("eligibility-e5-payer-non-responder"), profile)
    assert_indicator(c, "warning")
    detail = c["detail"]
    assert E5_TPI in detail
    assert day(61) in detail  # baseline date
    assert day(15) in detail  # follow-up date
    assert "25 %" in detail
    assert re.search(r"\b8\b", detail)
    assert re.search(r"\b6\b", detail)


def test_e5_relief_is_rounded_half_to_even():
    """8 -> 7 is 12.5 % relief: shown as 12 % (half to even), not 13 %."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    pain_on(request, 15)["valueQuantity"]["value"] = 7
    c = eligibility(request)
    assert_indicator(c, "warning")
    assert "12 %" in c["detail"]
    assert "13 %" not in c["detail"]


def test_e5_decimal_scores_are_shown_as_recorded():
    """Baseline 7.5, follow-up 5 (33.3 %): the detail shows 7.5 and 33 %."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    pain_on(request, 61)["valueQuantity"]["value"] = 7.5
    pain_on(request, 15)["valueQuantity"]["value"] = 5
    c = eligibility(request)
    assert_indicator(c, "warning")
    assert "7.5" in c["detail"]
    assert "33 %" in c["detail"]


def test_e5_trailing_zeros_are_dropped():
    """A baseline sent as 8.0 is shown as 8."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    pain_on(request, 61)["valueQuantity"]["value"] = 8.0
    pain_on(request, 15)["valueQuantity"]["value"] = 6.0
    c = eligibility(request)
    assert_indicator(c, "warning")
    assert "8.0" not in c["detail"]
    assert "6.0" not in c["detail"]
    assert "25 %" in c["detail"]


def test_e5_other_pain_codes_and_value_integer_count_alike():
    """Follow-up recorded as PEG pain item 75893-8 with valueInteger 6: same finding."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    follow_up = pain_on(request, 15)
    follow_up["code"]["coding"][0].update(
        {
            "code": "75893-8",
            "display": "Pain severity in the past week - 0-10 numeric rating [Reported]",
        }
    )
    del follow_up["valueQuantity"]
    follow_up["valueInteger"] = 6
    c = eligibility(request)
    assert_indicator(c, "warning")
    assert "25 %" in c["detail"]


def test_e5_numeric_rating_wins_a_timestamp_tie():
    """A 38208-5 score of 2 at the same moment as the 72514-3 score of 6: 72514-3 wins."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    follow_up = pain_on(request, 15)
    add_resource(
        request,
        "observations",
        pain_score("elig-e5-nr", "pain-generic", follow_up["effectiveDateTime"], 2, "38208-5"),
    )
    c = eligibility(request)
    assert_indicator(c, "warning")
    assert "25 %" in c["detail"]


def test_e5_latest_follow_up_in_the_window_is_used():
    """Pain 3 at day 40, then 6 at day 45: the latest follow-up (6, 25 %) decides."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    add_resource(request, "observations", pain_score("elig-e5-nr", "pain-day-40", at(20), 3))
    c = eligibility(request)
    assert_indicator(c, "warning")
    assert "25 %" in c["detail"]


def test_e5_baseline_older_than_30_days_is_unknown():
    """The only pre-TPI score is 35 days before the TPI: no baseline, response unknown."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    pain_on(request, 61)["effectiveDateTime"] = at(95)
    c = eligibility(request, overrides=NO_E0)
    assert_indicator(c, "info")
    assert MISSING.search(c["detail"])


def test_e5_baseline_of_zero_is_never_a_non_response():
    """Baseline 0 (pain-free that day): relief cannot be judged, info not warning."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    pain_on(request, 61)["valueQuantity"]["value"] = 0
    c = eligibility(request, overrides=NO_E0)
    assert_indicator(c, "info")


def test_e5_no_session_in_the_last_12_months_is_not_a_repeat():
    """The same 8 -> 6 story, but the TPI was 400 days ago: not a repeat, no response
    finding (only the stale-pain-score note remains)."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    sessions(request)[0]["performedDateTime"] = at(400)
    pain_on(request, 61)["effectiveDateTime"] = at(401)
    pain_on(request, 15)["effectiveDateTime"] = at(355)
    c = eligibility(request, overrides=NO_E0)
    assert_indicator(c, "info")
    assert "25 %" not in c["detail"]
    assert day(400) not in c["detail"]


def test_e5_payer_responder_needs_no_note():
    """8 -> 3 at day 50 (62 %): a repeat is supported; with E0 off there is no card."""
    request = load_vignette("eligibility-e5-payer-responder")
    assert_indicator(eligibility(request), "info")
    assert eligibility(request, overrides=NO_E0) is None
    assert eligibility(request, "commercial", overrides=NO_E0) is None


def test_e5_follow_up_missing_is_said_to_be_missing():
    """TPI 2026-08-15, scores only on day 3 and day 100: no follow-up in the window, an info
    card that says the response is missing (never presented as a non-response)."""
    request = load_vignette("eligibility-e5-follow-up-missing")
    c = eligibility(request)
    assert_indicator(c, "info")
    assert day(100) in c["detail"]
    assert MISSING.search(c["detail"])
    c_off = eligibility(request, overrides=NO_E0)
    assert_indicator(c_off, "info")
    assert MISSING.search(c_off["detail"])


def test_e5_follow_up_before_six_weeks_is_unknown_not_failure():
    """The only follow-up is 20 days after the TPI: payer response unknown, info only."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    pain_on(request, 15)["effectiveDateTime"] = at(40)
    c = eligibility(request, overrides=NO_E0)
    assert_indicator(c, "info")


def test_e5_preliminary_follow_up_is_not_used():
    """A preliminary follow-up score is not a result: the response is unknown, info."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    pain_on(request, 15)["status"] = "preliminary"
    c = eligibility(request, overrides=NO_E0)
    assert_indicator(c, "info")
    assert MISSING.search(c["detail"])


def test_e5_only_the_most_recent_session_is_judged():
    """An older TPI with no relief, then a recent one with 62 % relief: no E5 warning."""
    request = load_vignette("eligibility-e5-payer-responder")
    pid = request["context"]["patientId"]
    add_session(request, 200)
    add_resource(
        request, "observations", pain_score(pid, "pain-old-1", at(200, "09:00:00-05:00"), 8)
    )
    add_resource(request, "observations", pain_score(pid, "pain-old-2", at(150), 8))
    assert eligibility(request, overrides=NO_E0) is None


# ---------------------------------------------------------------- E6 recent pain score


def test_e6_no_pain_score_in_30_days_asks_for_one():
    """Last pain score 45 days ago: info asking for a 0-10 score today (LOINC 72514-3); it
    stays when E0 is switched off."""
    request = load_vignette("eligibility-e6-no-recent-pain-score")
    assert_indicator(eligibility(request), "info")
    c = eligibility(request, overrides=NO_E0)
    assert_indicator(c, "info")
    assert "72514-3" in c["detail"]


@pytest.mark.parametrize(("days_ago", "fires"), [(10, False), (30, False), (31, True)])
def test_e6_thirty_day_window(days_ago, fires):
    """A score 30 days ago is recent enough; 31 days ago is not."""
    request = load_vignette("eligibility-e6-no-recent-pain-score")
    pain_on(request, 45)["effectiveDateTime"] = at(days_ago)
    c = eligibility(request, overrides=NO_E0)
    if fires:
        assert_indicator(c, "info")
    else:
        assert c is None


@pytest.mark.parametrize(
    ("when", "fires"),
    [
        ("2026-10-23T23:30:00-05:00", True),  # its own date is 31 days ago (UTC: 30)
        ("2026-10-24T00:30:00+09:00", False),  # its own date is 30 days ago (UTC: 31)
    ],
)
def test_e6_a_datetime_counts_on_its_own_calendar_date(when, fires):
    """The window uses the date written in the dateTime, not the UTC date."""
    request = load_vignette("eligibility-e6-no-recent-pain-score")
    pain_on(request, 45)["effectiveDateTime"] = when
    c = eligibility(request, overrides=NO_E0)
    if fires:
        assert_indicator(c, "info")
    else:
        assert c is None


def test_e6_preliminary_score_does_not_count():
    """The only recent score is preliminary: still no usable pain score."""
    request = load_vignette("eligibility-e0-first-tpi-criteria-met")
    resources(request, "observations")[0]["status"] = "preliminary"
    assert_indicator(eligibility(request, overrides=NO_E0), "info")


# ------------------------------------------------------------------- the whole card


def test_card_gathers_interval_and_missing_response_findings():
    """E4 (warning) and E5 unknown response (info) in one card: indicator warning, both
    findings in the detail."""
    c = eligibility(load_vignette("eligibility-e4-same-site-20-days-ago"))
    assert_indicator(c, "warning")
    assert "2026-12-15" in c["detail"]
    # the follow-up (day 14) is too early to judge: its numbers are shown, or said missing
    assert day(6) in c["detail"] or MISSING.search(c["detail"])


def test_no_eligibility_card_when_the_selection_is_not_a_tpi():
    """The cervicalgia patient, but only a non-TPI draft order is selected: no cards."""
    request = load_vignette("eligibility-e1-cervicalgia-only")
    other = {
        "resourceType": "ServiceRequest",
        "id": "xr-1",
        "status": "draft",
        "intent": "order",
        "code": {"text": "X-ray cervical spine, 2 views"},
        "subject": {"reference": "Patient/elig-e1"},
    }
    request["context"]["draftOrders"]["entry"].append({"resource": other})
    request["context"]["selections"] = ["ServiceRequest/xr-1"]
    assert evaluate(request) == {"cards": []}


ELIGIBILITY_VIGNETTES = sorted(p.stem for p in VIGNETTES.glob("eligibility-*.json"))


@pytest.mark.parametrize("name", ELIGIBILITY_VIGNETTES)
@pytest.mark.parametrize("profile", ["medicare", "commercial"])
def test_every_eligibility_vignette_gets_one_well_formed_card(name, profile):
    """Every eligibility story yields exactly one eligibility card (E0 is on by default),
    never critical, naming its profile; every other card is complete too."""
    response = evaluate(load_vignette(name), profile=profile)
    codes = [c["source"]["topic"]["code"] for c in response["cards"]]
    assert len(codes) == len(set(codes))
    assert ELIGIBILITY in codes
    for c in response["cards"]:
        assert_well_formed(c)
        assert c["indicator"] != "critical"
    assert profile in card(response, ELIGIBILITY)["detail"]
