"""Clinical vignettes for the tpi-eligibility topic (rules E0-E7, clinical-rules.md v2 section 3)
and the payer profile it is judged under (section 2b).

Profiles: medicare (cap 3 sessions in 12 months, 42 days between sessions in one region) and
commercial (cap 4, 60 days). The profile comes from the patient's Coverage (prefetch key
`coverage`, Source of Payment Typology); without usable coverage, the site default (the
`profile` argument of `evaluate`). E0 ("criteria met") is off by default.

Each vignette in tests/vignettes/eligibility-*.json is one whole CDS Hooks request; small
variations (one date, one status, one code, the profile, an override) are made here in Python.
Dates are relative to TODAY = 2026-11-23. Rule ids are read from the card's
`extension["tpi-rules"]`.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from conftest import (
    VIGNETTES,
    add_resource,
    assert_well_formed,
    card,
    day,
    drafts,
    evaluate,
    load_vignette,
    mentions,
    remove_resource,
    resources,
    rules,
)

ELIGIBILITY = "tpi-eligibility"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
CPT = "http://www.ama-assn.org/go/cpt"
SOPT = "https://nahdo.org/sopt"
NECK = {"system": SCT, "code": "45048000", "display": "Neck structure"}
LOW_BACK = {"system": SCT, "code": "37822005", "display": "Lower back structure"}
SHOULDER = {"system": SCT, "code": "16982005", "display": "Shoulder region structure"}
LEFT_SHOULDER = {"system": SCT, "code": "91775009", "display": "Structure of left shoulder region"}
RIGHT_SHOULDER = {
    "system": SCT,
    "code": "91774008",
    "display": "Structure of right shoulder region",
}
RIGHT_BUTTOCK = {"system": SCT, "code": "723980000", "display": "Structure of right buttock"}
MYALGIA_HEAD_NECK = {
    "system": ICD,
    "code": "M79.12",
    "display": "Myalgia of auxiliary muscles, head and neck",
}
PROFILE_NAMES = {"medicare": "Medicare", "commercial": "Commercial"}
FROM_COVERAGE = "from the patient's coverage"
SITE_DEFAULT = "site default"
E0_ON = {"show_criteria_met": True}
MISSING = re.compile(r"missing|not recorded|not documented|no follow-up|unknown", re.I)


# --------------------------------------------------------------------------- helpers


def at(days_ago: int, time: str = "10:00:00-05:00") -> str:
    return f"{day(days_ago)}T{time}"


def by_id(request: dict[str, Any], key: str, rid: str) -> dict[str, Any]:
    found = [r for r in resources(request, key) if r["id"] == rid]
    assert len(found) == 1, f"no {key}/{rid}"
    return found[0]


def condition(request: dict[str, Any], code: str) -> dict[str, Any]:
    found = [
        r
        for r in resources(request, "conditions")
        if any(c["code"] == code for c in r["code"]["coding"])
    ]
    assert len(found) == 1, f"expected one condition {code}"
    return found[0]


def coded(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def resolve(cond: dict[str, Any], days_ago: int = 30) -> None:
    cond["clinicalStatus"]["coding"][0]["code"] = "resolved"
    cond["abatementDateTime"] = day(days_ago)


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
    return next(d for d in drafts(request) if d["id"] == "tpi-1")


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


def add_pain(request: dict[str, Any], when: str, value: float) -> None:
    pid = request["context"]["patientId"]
    rid = f"pain-extra-{len(resources(request, 'observations')) + 1}"
    add_resource(request, "observations", pain_score(pid, rid, when, value))


def coverage(
    request: dict[str, Any],
    code: str,
    display: str,
    *,
    system: str = SOPT,
    order: int | None = None,
    start: str | None = "2022-01-01",
    end: str | None = None,
) -> dict[str, Any]:
    pid = request["context"]["patientId"]
    r: dict[str, Any] = {
        "resourceType": "Coverage",
        "id": f"cov-{code}-{order}",
        "status": "active",
        "type": coded(system, code, display),
        "beneficiary": {"reference": f"Patient/{pid}"},
        "payor": [{"display": display}],
    }
    period = {k: v for k, v in (("start", start), ("end", end)) if v}
    if period:
        r["period"] = period
    if order is not None:
        r["order"] = order
    return r


def set_coverages(request: dict[str, Any], *coverages: dict[str, Any]) -> None:
    """Replace the prefetch key `coverage` (Coverage?patient=...&status=active)."""
    request["prefetch"]["coverage"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": c, "search": {"mode": "match"}} for c in coverages],
    }


def imaging_guidance(pid: str, code: str = "76942") -> dict[str, Any]:
    display = {
        "76942": "Ultrasound guidance for needle placement",
        "77002": "Fluoroscopic guidance for needle placement",
    }[code]
    return {
        "resourceType": "ServiceRequest",
        "id": f"guidance-{code}",
        "status": "draft",
        "intent": "order",
        "code": coded(CPT, code, display),
        "subject": {"reference": f"Patient/{pid}"},
    }


def eligibility(
    request: dict[str, Any], profile: str = "medicare", **kwargs: Any
) -> dict[str, Any] | None:
    """The eligibility card (every card checked for shape), or None.

    Without a coverage on record the card must name the site default profile as such."""
    response = evaluate(request, profile=profile, **kwargs)
    for c in response["cards"]:
        assert_well_formed(c)
    c = card(response, ELIGIBILITY)
    if c is not None:
        assert c["indicator"] in {"info", "warning"}, "eligibility is never critical"
        if not resources_or_none(request, "coverage"):
            assert PROFILE_NAMES[profile] in c["detail"], f"{profile} not named"
            assert SITE_DEFAULT in c["detail"], "the profile's origin is not stated"
    return c


def resources_or_none(request: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return resources(request, key) if key in request["prefetch"] else []


def expect(c: dict[str, Any] | None, indicator: str, rule_ids: list[str]) -> dict[str, Any]:
    """The card exists, with this indicator and exactly these rule ids."""
    assert c is not None, "no eligibility card"
    assert rules(c) == sorted(rule_ids), c["detail"]
    assert c["indicator"] == indicator, c["detail"]
    return c


def delete_suggestion(c: dict[str, Any]) -> dict[str, Any]:
    """The card's one suggestion: remove the TPI draft order."""
    assert len(c.get("suggestions", [])) == 1, c.get("suggestions")
    assert c["selectionBehavior"] == "at-most-one"
    suggestion = c["suggestions"][0]
    assert [(a["type"], a.get("resourceId")) for a in suggestion["actions"]] == [
        ("delete", "ServiceRequest/tpi-1")
    ]
    assert suggestion["label"].startswith("Remove the TPI order")
    return suggestion


def assert_no_suggestion(c: dict[str, Any]) -> None:
    assert "suggestions" not in c, c.get("suggestions")


# ---------------------------------------------------------------- E0 criteria met


@pytest.mark.parametrize("profile", ["medicare", "commercial"])
def test_e0_is_off_by_default(profile):
    """M79.12 on the list, pain 8 ten days ago, first TPI: nothing to act on, so no
    eligibility card at all ("criteria met" on most orders is noise)."""
    assert eligibility(load_vignette("eligibility-e0-first-tpi-criteria-met"), profile) is None


@pytest.mark.parametrize("profile", ["medicare", "commercial"])
def test_e0_on_says_criteria_met_with_the_diagnosis_and_session_number(profile):
    """The site turns show_criteria_met on: an info card naming the diagnosis, the session
    number in 12 months (1: no earlier TPI) and that there is no previous response."""
    request = load_vignette("eligibility-e0-first-tpi-criteria-met")
    c = expect(eligibility(request, profile, overrides=E0_ON), "info", ["E0"])
    assert mentions(c["detail"], "Myalgia of auxiliary muscles")
    assert re.search(r"session 1\b", c["detail"])
    assert mentions(c["detail"], "no previous")
    assert_no_suggestion(c)


def test_e0_after_a_good_response_names_the_last_response():
    """Last TPI 2026-09-24, pain 8 -> 3 at day 50 (62.5 %, shown 62 %): criteria met for
    session 2, showing that response."""
    request = load_vignette("eligibility-e5-payer-responder")
    c = expect(eligibility(request, overrides=E0_ON), "info", ["E0"])
    assert mentions(c["detail"], "Myalgia of auxiliary muscles")
    assert re.search(r"session 2\b", c["detail"])
    assert day(60) in c["detail"]
    assert "day 50: 3 (62 %)" in c["detail"]


def test_e0_is_not_shown_when_a_warning_fires():
    """Cervicalgia only (E1) with E0 on: the card is the E1 warning, no 'criteria met'."""
    request = load_vignette("eligibility-e1-cervicalgia-only")
    expect(eligibility(request, overrides=E0_ON), "warning", ["E1"])


def test_e0_is_not_shown_when_the_last_response_is_unknown():
    """Follow-up of the last TPI missing (E5 info) with E0 on: not 'criteria met'."""
    request = load_vignette("eligibility-e5-follow-up-missing")
    expect(eligibility(request, overrides=E0_ON), "info", ["E5"])


def test_e0_goes_with_the_pain_score_note():
    """No pain score for 45 days (E6) does not stop 'criteria met' (E0 needs only E1-E5 quiet)."""
    request = load_vignette("eligibility-e6-no-recent-pain-score")
    expect(eligibility(request, overrides=E0_ON), "info", ["E0", "E6"])


# ------------------------------------------------------------ E1 qualifying diagnosis


@pytest.mark.parametrize("profile", ["medicare", "commercial"])
def test_e1_cervicalgia_alone_does_not_support_a_tpi(profile):
    """Only M54.2 cervicalgia on the list: warning naming the regional pain code as not enough
    and asking for a coded myofascial diagnosis (M79.1x); no suggestion (E1 removes nothing)."""
    c = expect(
        eligibility(load_vignette("eligibility-e1-cervicalgia-only"), profile), "warning", ["E1"]
    )
    assert "Cervicalgia" in c["detail"]
    assert "M79.1" in c["detail"]
    assert mentions(c["detail"], "taut band", "trigger point exam")
    assert_no_suggestion(c)


@pytest.mark.parametrize(
    ("system", "code", "display"),
    [
        (ICD, "G44.209", "Tension-type headache, unspecified, not intractable"),
        (SCT, "398057008", "Tension-type headache"),
        (SCT, "230471006", "Chronic tension-type headache"),
    ],
)
def test_e1_tension_type_headache_qualifies(system, code, display):
    """Tension-type headache instead of cervicalgia (ICD-10-CM or SNOMED CT): a covered
    diagnosis, no card; with E0 on, 'criteria met'."""
    request = load_vignette("eligibility-e1-cervicalgia-only")
    condition(request, "M54.2")["code"] = coded(system, code, display)
    assert eligibility(request) is None
    expect(eligibility(request, overrides=E0_ON), "info", ["E0"])


def test_e1_adding_documented_myofascial_pain_qualifies():
    """Cervicalgia plus M79.12 after a documented trigger point exam: no card."""
    request = load_vignette("eligibility-e1-cervicalgia-only")
    myalgia = copy.deepcopy(condition(request, "M54.2"))
    myalgia["id"] = "cond-myalgia"
    myalgia["code"] = {"coding": [MYALGIA_HEAD_NECK]}
    add_resource(request, "conditions", myalgia)
    assert eligibility(request) is None


def test_e1_refuted_myalgia_does_not_qualify():
    """M79.1 recorded but refuted (no taut band on exam), M54.2 remains: warning."""
    c = expect(eligibility(load_vignette("eligibility-e1-myalgia-refuted")), "warning", ["E1"])
    assert "Cervicalgia" in c["detail"]


def test_e1_confirmed_myalgia_header_code_qualifies():
    """The same M79.1 (legacy header code) when confirmed: qualifies, no card."""
    request = load_vignette("eligibility-e1-myalgia-refuted")
    condition(request, "M79.1")["verificationStatus"]["coding"][0]["code"] = "confirmed"
    assert eligibility(request) is None


def test_e1_resolved_myalgia_does_not_qualify():
    """M79.12 marked resolved: no active qualifying diagnosis, warning."""
    request = load_vignette("eligibility-e0-first-tpi-criteria-met")
    resolve(condition(request, "M79.12"))
    expect(eligibility(request), "warning", ["E1"])


@pytest.mark.parametrize(
    ("code", "display"),
    [
        ("279030006", "Myofascial pain syndrome of neck (disorder)"),
        ("726531007", "Myofascial pain syndrome (disorder)"),
        ("68962001", "Muscle pain (finding)"),
    ],
)
def test_e1_snomed_myofascial_or_myalgia_problem_qualifies(code, display):
    """A SNOMED-coded problem list (as Synthea and many EHRs send it): chronic neck pain and a
    myofascial pain syndrome / myalgia concept. The SNOMED concept qualifies: no card."""
    request = load_vignette("eligibility-e1-snomed-myofascial-neck")
    condition(request, "279030006")["code"] = coded(SCT, code, display)
    assert eligibility(request) is None


def test_e1_snomed_myofascial_diagnosis_is_named_when_criteria_met():
    """With E0 on, the SNOMED myofascial pain syndrome of the neck is the diagnosis named."""
    request = load_vignette("eligibility-e1-snomed-myofascial-neck")
    c = expect(eligibility(request, overrides=E0_ON), "info", ["E0"])
    assert "Myofascial pain syndrome of neck" in c["detail"]


def test_e1_snomed_chronic_neck_pain_alone_does_not_qualify():
    """The same SNOMED problem list without the myofascial diagnosis: chronic neck pain is a
    regional pain finding, not a TPI indication: warning naming it."""
    request = load_vignette("eligibility-e1-snomed-myofascial-neck")
    remove_resource(request, "conditions", condition(request, "279030006"))
    c = expect(eligibility(request), "warning", ["E1"])
    assert "Chronic neck pain" in c["detail"]


def test_e1_order_reason_code_m79_12_qualifies():
    """Cervicalgia on the problem list, but the TPI order carries the billing diagnosis M79.12
    as its reasonCode: the order's diagnosis is the indication, no card."""
    assert eligibility(load_vignette("eligibility-e1-order-reason-code-m79-12")) is None


def test_e1_order_reason_code_is_named_when_criteria_met():
    """With E0 on, the diagnosis named is the order's own M79.12."""
    request = load_vignette("eligibility-e1-order-reason-code-m79-12")
    c = expect(eligibility(request, overrides=E0_ON), "info", ["E0"])
    assert mentions(c["detail"], "Myalgia of auxiliary muscles")


def test_e1_order_without_its_reason_code_falls_back_to_the_problem_list():
    """The same order without reasonCode: only cervicalgia remains, warning."""
    request = load_vignette("eligibility-e1-order-reason-code-m79-12")
    del tpi_order(request)["reasonCode"]
    c = expect(eligibility(request), "warning", ["E1"])
    assert "Cervicalgia" in c["detail"]


def test_e1_order_reason_code_cervicalgia_does_not_qualify():
    """The order's reasonCode is M54.2 (cervicalgia): a regional pain code, warning."""
    request = load_vignette("eligibility-e1-order-reason-code-m79-12")
    tpi_order(request)["reasonCode"] = [coded(ICD, "M54.2", "Cervicalgia")]
    expect(eligibility(request), "warning", ["E1"])


def test_e1_order_reason_code_snomed_myofascial_qualifies():
    """The order's reasonCode in SNOMED CT (myofascial pain syndrome of neck) counts too."""
    request = load_vignette("eligibility-e1-order-reason-code-m79-12")
    tpi_order(request)["reasonCode"] = [
        coded(SCT, "279030006", "Myofascial pain syndrome of neck (disorder)")
    ]
    assert eligibility(request) is None


def test_e1_order_reason_reference_to_an_active_diagnosis_qualifies():
    """Neck pain (SNOMED) on the problem list; the order points (reasonReference) to today's
    active encounter diagnosis M79.12: qualifies, no card."""
    assert eligibility(load_vignette("eligibility-e1-order-reason-reference")) is None


def test_e1_order_reason_reference_to_a_resolved_diagnosis_does_not_qualify():
    """The Condition the order points to is resolved: it is no indication, warning (neck pain
    alone)."""
    request = load_vignette("eligibility-e1-order-reason-reference")
    resolve(by_id(request, "conditions", "cond-elig-e1-ref-visit"), days_ago=10)
    c = expect(eligibility(request), "warning", ["E1"])
    assert "Neck pain" in c["detail"]


def test_e1_order_reason_reference_entered_in_error_does_not_qualify():
    """The referenced Condition was entered in error: warning."""
    request = load_vignette("eligibility-e1-order-reason-reference")
    visit = by_id(request, "conditions", "cond-elig-e1-ref-visit")
    visit["verificationStatus"]["coding"][0]["code"] = "entered-in-error"
    expect(eligibility(request), "warning", ["E1"])


def test_e1_order_reason_reference_to_a_missing_condition_does_not_qualify():
    """The order points to a Condition that is not in the record: nothing to read, warning."""
    request = load_vignette("eligibility-e1-order-reason-reference")
    remove_resource(request, "conditions", by_id(request, "conditions", "cond-elig-e1-ref-visit"))
    expect(eligibility(request), "warning", ["E1"])


# ------------------------------------------------------------------ E2 fibromyalgia


def test_e2_fibromyalgia_alone_is_not_a_tpi_indication():
    """Fibromyalgia M79.7 only: warning that says fibromyalgia (tender points are not
    trigger points), together with the missing qualifying diagnosis; no suggestion."""
    c = expect(
        eligibility(load_vignette("eligibility-e2-fibromyalgia-only")), "warning", ["E1", "E2"]
    )
    assert "Fibromyalgia" in c["detail"]
    assert_no_suggestion(c)


def test_e2_says_tender_points_are_not_trigger_points():
    """The E2 finding says what the page says: tender points are not trigger points, TPIs for
    fibromyalgia alone are not supported, see the referral card (here: rheumatology, R3). The
    summary is E1's, so the detail must carry it."""
    c = eligibility(load_vignette("eligibility-e2-fibromyalgia-only"))
    assert c is not None
    assert mentions(c["detail"], "tender points are not trigger points")
    assert mentions(c["detail"], "referral")


def test_e2_fibromyalgia_coded_in_snomed():
    """Fibromyalgia coded SNOMED 203082005 (no ICD code): same warning."""
    request = load_vignette("eligibility-e2-fibromyalgia-only")
    condition(request, "M79.7")["code"] = coded(SCT, "203082005", "Fibromyalgia (disorder)")
    c = expect(eligibility(request), "warning", ["E1", "E2"])
    assert "Fibromyalgia" in c["detail"]


def test_e2_resolved_fibromyalgia_leaves_only_e1():
    """Fibromyalgia resolved: E2 does not fire; no qualifying diagnosis either (E1)."""
    request = load_vignette("eligibility-e2-fibromyalgia-only")
    resolve(condition(request, "M79.7"))
    expect(eligibility(request), "warning", ["E1"])


def test_e2_fibromyalgia_with_myofascial_pain_qualifies():
    """Fibromyalgia plus a documented myofascial trigger point (M79.18): no E1, no E2."""
    request = load_vignette("eligibility-e2-fibromyalgia-with-myofascial-pain")
    assert eligibility(request) is None
    expect(eligibility(request, overrides=E0_ON), "info", ["E0"])


def test_e2_fibromyalgia_with_a_myofascial_order_diagnosis_qualifies():
    """Fibromyalgia only on the list, but the order's reasonCode is M79.18 (myalgia, other
    site): a qualifying diagnosis, so neither E1 nor E2."""
    request = load_vignette("eligibility-e2-fibromyalgia-only")
    tpi_order(request)["reasonCode"] = [coded(ICD, "M79.18", "Myalgia, other site")]
    assert eligibility(request) is None


# ------------------------------------------------------------- E3 sessions per year

# eligibility-e3-three-sessions-in-12-months: TPIs 290, 180 and 70 days ago (shoulder,
# low back, neck), the last one a good response (8 -> 3 at day 50); the order is for the neck.
E3_DATES = [day(290), day(180), day(70)]


def test_e3_three_sessions_reach_the_medicare_cap():
    """Three TPIs in 12 months under medicare (cap 3): warning listing the sessions and the
    first date a session is within the cap again: the oldest (2026-02-06) + 366 days."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    assert [s["performedDateTime"][:10] for s in sessions(request)] == E3_DATES
    c = expect(eligibility(request, "medicare"), "warning", ["E3"])
    for d in E3_DATES:
        assert d in c["detail"]
    assert "2027-02-07" in c["detail"]
    assert "2027-02-07" in c["summary"]


def test_e3_offers_to_remove_the_tpi_order_until_the_named_date():
    """The E3 card's one suggestion removes the TPI draft order, labelled with the date."""
    c = eligibility(load_vignette("eligibility-e3-three-sessions-in-12-months"))
    suggestion = delete_suggestion(expect(c, "warning", ["E3"]))
    assert "2027-02-07" in suggestion["label"]


def test_e3_three_sessions_are_within_the_commercial_cap():
    """Same patient under commercial (cap 4): no limit reached, no card."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    assert eligibility(request, "commercial") is None


def test_e3_four_sessions_reach_the_commercial_cap():
    """A fourth TPI 120 days ago: the commercial cap of 4 is reached; with n = c = 4 the date
    is the oldest session (2026-02-06) + 366 days."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    add_session(request, 120, body=LOW_BACK)
    c = expect(eligibility(request, "commercial"), "warning", ["E3"])
    assert day(120) in c["detail"]
    assert "2027-02-07" in c["detail"]


def test_e3_four_sessions_over_the_medicare_cap_name_the_second_oldest():
    """Four TPIs under medicare (n 4, cap 3): two must leave the window, so the date is the
    (4 - 3 + 1) = 2nd oldest session (2026-05-27) + 366 days = 2027-05-28."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    add_session(request, 120, body=LOW_BACK)
    c = expect(eligibility(request, "medicare"), "warning", ["E3"])
    assert "2027-05-28" in c["detail"]
    assert "2027-02-07" not in c["detail"]
    assert "2027-05-28" in delete_suggestion(c)["label"]


def test_e3_session_400_days_ago_is_not_counted():
    """A fourth TPI 400 days ago is outside the 12 months: commercial stays within the cap."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    add_session(request, 400, body=LOW_BACK)
    assert eligibility(request, "commercial") is None


@pytest.mark.parametrize(("days_ago", "counted"), [(365, True), (366, False)])
def test_e3_twelve_month_window_includes_today_minus_365(days_ago, counted):
    """A session exactly 365 days ago is in the window (and is then the oldest: it leaves the
    window tomorrow, 2026-11-24); 366 days ago is not."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    add_session(request, days_ago, body=LOW_BACK)
    c = eligibility(request, "commercial")
    if counted:
        assert "2026-11-24" in expect(c, "warning", ["E3"])["detail"]
    else:
        assert c is None


@pytest.mark.parametrize("status", ["entered-in-error", "not-done"])
def test_e3_invalid_procedures_are_not_sessions(status):
    """A fourth TPI Procedure that is entered-in-error or not-done is not a session."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    add_session(request, 120, body=LOW_BACK, status=status)
    assert eligibility(request, "commercial") is None


def test_e3_oldest_session_entered_in_error_drops_below_medicare_cap():
    """The oldest of the three TPIs was entered in error: two sessions, under the cap."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    sessions(request)[0]["status"] = "entered-in-error"
    assert eligibility(request, "medicare") is None


def test_e3_two_procedures_on_one_day_are_one_session():
    """A 20553 (other muscles) documented on the same day as the 180-day TPI: still three
    sessions, within the commercial cap."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    add_session(request, 180, body=LOW_BACK, cpt="20553")
    assert eligibility(request, "commercial") is None


def test_e3_session_dated_by_performed_period_counts():
    """A fourth TPI dated by performedPeriod.start (no performedDateTime) counts."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    extra = add_session(request, 120, body=LOW_BACK)
    extra["performedPeriod"] = {"start": extra.pop("performedDateTime"), "end": at(120)}
    expect(eligibility(request, "commercial"), "warning", ["E3"])


def test_e3_session_cap_override_lowers_the_threshold():
    """Two sessions are under the medicare cap, but a site cap of 2 makes them reach it:
    the date is the older one (2026-05-27) + 366 days."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    remove_resource(request, "procedures", sessions(request)[0])
    assert eligibility(request, "medicare") is None
    c = expect(eligibility(request, "medicare", overrides={"session_cap": 2}), "warning", ["E3"])
    assert day(180) in c["detail"]
    assert "2027-05-28" in c["detail"]


def test_e3_session_cap_override_raises_the_threshold():
    """Three sessions under medicare with a site cap of 4: within the cap."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    assert eligibility(request, "medicare", overrides={"session_cap": 4}) is None


# ----------------------------------------------------------- E4 interval between TPIs

# eligibility-e4-same-site-20-days-ago: neck TPI 2026-11-03 (pain 8 -> 4 at day 14, so the
# payer response is not yet known: an info finding); neck TPI ordered today.
E4_LAST = day(20)


def test_e4_same_region_20_days_ago_medicare_defers_to_day_42():
    """Neck TPI 20 days ago, neck ordered: warning, defer until 2026-12-15 (last + 42); the
    suggestion removes the TPI order 'not due until 2026-12-15'."""
    c = eligibility(load_vignette("eligibility-e4-same-site-20-days-ago"), "medicare")
    expect(c, "warning", ["E4", "E5"])
    assert "2026-12-15" in c["detail"]
    assert "2026-12-15" in c["summary"]
    assert E4_LAST in c["detail"]
    assert "2026-12-15" in delete_suggestion(c)["label"]


def test_e4_same_region_20_days_ago_commercial_defers_to_day_60():
    """Same under commercial: defer until 2027-01-02 (last + 60)."""
    c = eligibility(load_vignette("eligibility-e4-same-site-20-days-ago"), "commercial")
    expect(c, "warning", ["E4", "E5"])
    assert "2027-01-02" in c["detail"]
    assert "2026-12-15" not in c["detail"]
    assert "2027-01-02" in delete_suggestion(c)["label"]


def test_e4_a_different_known_region_is_not_deferred():
    """Last TPI 20 days ago in the lower back, order for the neck: another region, so no
    interval finding and no response finding either (that session is not relevant): no card."""
    request = load_vignette("eligibility-e4-same-site-20-days-ago")
    sessions(request)[0]["bodySite"] = [{"coding": [LOW_BACK]}]
    assert eligibility(request, "medicare") is None


def test_e4_last_session_without_site_counts():
    """Last TPI 20 days ago with no site recorded may have been the neck: warning."""
    request = load_vignette("eligibility-e4-same-site-20-days-ago")
    del sessions(request)[0]["bodySite"]
    c = expect(eligibility(request, "medicare"), "warning", ["E4", "E5"])
    assert "2026-12-15" in c["detail"]


def test_e4_last_session_site_given_only_as_text_counts():
    """The last site is free text ("R upper trapezius"): unknown region, it may be the same
    place: warning."""
    request = load_vignette("eligibility-e4-same-site-20-days-ago")
    sessions(request)[0]["bodySite"] = [{"text": "R upper trapezius"}]
    c = expect(eligibility(request, "medicare"), "warning", ["E4", "E5"])
    assert "2026-12-15" in c["detail"]


def test_e4_last_session_site_with_a_local_code_counts():
    """The last site carries only a local code the region value set does not know: unknown
    region, warning."""
    request = load_vignette("eligibility-e4-same-site-20-days-ago")
    sessions(request)[0]["bodySite"] = [
        coded("https://ehr.example.org/fhir/CodeSystem/injection-site", "TRAP-R", "R trapezius")
    ]
    c = expect(eligibility(request, "medicare"), "warning", ["E4", "E5"])
    assert "2026-12-15" in c["detail"]


def test_e4_order_without_site_counts_any_site():
    """The order names no site (region unknown): the low-back TPI 20 days ago counts."""
    request = load_vignette("eligibility-e4-same-site-20-days-ago")
    sessions(request)[0]["bodySite"] = [{"coding": [LOW_BACK]}]
    del tpi_order(request)["bodySite"]
    c = expect(eligibility(request, "medicare"), "warning", ["E4", "E5"])
    assert "2026-12-15" in c["detail"]


def test_e4_order_with_two_regions_matches_either():
    """The order is for the neck and the lower back; the low-back TPI 20 days ago matches one
    of them: warning."""
    request = load_vignette("eligibility-e4-same-site-20-days-ago")
    sessions(request)[0]["bodySite"] = [{"coding": [LOW_BACK]}]
    tpi_order(request)["bodySite"].append({"coding": [LOW_BACK]})
    c = expect(eligibility(request, "medicare"), "warning", ["E4", "E5"])
    assert "2026-12-15" in c["detail"]


def test_e4_order_with_a_text_only_site_counts_any_site():
    """The order names the neck and a site given only as text: the order's region is known only
    when every site's is, so the low-back TPI 20 days ago counts: warning."""
    request = load_vignette("eligibility-e4-same-site-20-days-ago")
    sessions(request)[0]["bodySite"] = [{"coding": [LOW_BACK]}]
    tpi_order(request)["bodySite"].append({"text": "R levator scapulae"})
    c = expect(eligibility(request, "medicare"), "warning", ["E4", "E5"])
    assert "2026-12-15" in c["detail"]


def test_e4_other_side_of_the_same_region_is_not_deferred():
    """Right shoulder ordered, left shoulder injected 20 days ago: a known, different place."""
    request = load_vignette("eligibility-e4-same-site-20-days-ago")
    sessions(request)[0]["bodySite"] = [{"coding": [LEFT_SHOULDER]}]
    tpi_order(request)["bodySite"] = [{"coding": [RIGHT_SHOULDER]}]
    assert eligibility(request, "medicare") is None


@pytest.mark.parametrize("last_site", [SHOULDER, RIGHT_SHOULDER], ids=["unsided", "right"])
def test_e4_unsided_or_same_side_shoulder_is_deferred(last_site):
    """Right shoulder ordered; the shoulder injected 20 days ago was unsided (it may be the
    right one) or the right one: warning."""
    request = load_vignette("eligibility-e4-same-site-20-days-ago")
    sessions(request)[0]["bodySite"] = [{"coding": [last_site]}]
    tpi_order(request)["bodySite"] = [{"coding": [RIGHT_SHOULDER]}]
    c = expect(eligibility(request, "medicare"), "warning", ["E4", "E5"])
    assert "2026-12-15" in c["detail"]


def test_e4_uses_the_last_session_in_the_ordered_region():
    """Neck TPI 30 days ago, low-back TPI 10 days ago, neck ordered: defer until
    2026-12-05 (neck + 42), not 2026-12-25 (low back + 42)."""
    request = load_vignette("eligibility-e4-same-site-20-days-ago")
    neck = sessions(request)[0]
    neck["performedDateTime"] = at(30)
    pain_on(request, 20)["effectiveDateTime"] = at(30, "09:00:00-05:00")
    add_session(request, 10, body=LOW_BACK)
    c = eligibility(request, "medicare")
    assert c is not None
    assert "E4" in rules(c)
    assert "2026-12-05" in c["detail"]
    assert "2026-12-25" not in c["detail"]


def test_e4_same_region_50_days_ago_is_fine_under_medicare():
    """Neck TPI 50 days ago with a good response (8 -> 3 at day 45): past the 42-day medicare
    interval, nothing to act on."""
    assert eligibility(load_vignette("eligibility-e4-same-site-50-days-ago"), "medicare") is None


def test_e4_same_region_50_days_ago_is_too_soon_under_commercial():
    """Same patient under commercial (60 days): warning, defer until 2026-12-03."""
    c = eligibility(load_vignette("eligibility-e4-same-site-50-days-ago"), "commercial")
    expect(c, "warning", ["E4"])
    assert "2026-12-03" in c["detail"]
    assert "2026-12-03" in delete_suggestion(c)["label"]


@pytest.mark.parametrize(
    ("profile", "days_ago", "deferred"),
    [("medicare", 41, True), ("medicare", 42, False), ("commercial", 59, True)],
)
def test_e4_interval_boundary(profile, days_ago, deferred):
    """41 days after the last neck TPI is too soon under medicare (defer to tomorrow,
    2026-11-24); 42 days is allowed; under commercial 59 days is too soon (tomorrow too)."""
    request = load_vignette("eligibility-e4-same-site-50-days-ago")
    sessions(request)[0]["performedDateTime"] = at(days_ago)
    c = eligibility(request, profile)
    if deferred:
        assert c is not None
        assert "E4" in rules(c)
        assert c["indicator"] == "warning"
        assert "2026-11-24" in c["detail"]
    else:
        assert c is None or "E4" not in rules(c)


def test_e4_commercial_interval_ends_at_day_60():
    """60 days after the last neck TPI (with its good response at day 45) is allowed under
    commercial: no card."""
    request = load_vignette("eligibility-e4-same-site-50-days-ago")
    sessions(request)[0]["performedDateTime"] = at(60)
    pain_on(request, 51)["effectiveDateTime"] = at(60, "09:40:00-05:00")
    assert eligibility(request, "commercial") is None


# ------------------------------------------------------- E5 response to the last TPI

# eligibility-e5-payer-non-responder: neck TPI 2026-09-24, pain 8 the day before, 6 on
# 2026-11-08 (day 45): 25 % relief, under the 50 % that payers require for a repeat.
E5_TPI = day(60)


@pytest.mark.parametrize("profile", ["medicare", "commercial"])
def test_e5_payer_non_responder_shows_the_numbers(profile):
    """8 -> 6 six weeks after the last TPI (25 %): warning with the session date, the
    baseline and its date, and the follow-up with its day and relief."""
    c = eligibility(load_vignette("eligibility-e5-payer-non-responder"), profile)
    expect(c, "warning", ["E5"])
    assert E5_TPI in c["detail"]
    assert f"baseline 8 ({day(61)})" in c["detail"]
    assert "day 45: 6 (25 %)" in c["detail"]
    assert mentions(c["detail"], "50 %")


def test_e5_warning_offers_to_remove_the_tpi_order():
    """A warning-level E5 offers one suggestion: remove the TPI order, labelled for the missing
    lasting relief."""
    c = eligibility(load_vignette("eligibility-e5-payer-non-responder"))
    label = delete_suggestion(expect(c, "warning", ["E5"]))["label"]
    assert mentions(label, "relief")
    assert "50 %" in label


def test_e5_shows_the_whole_course_when_relief_faded_before_six_weeks():
    """TPI 2026-09-14 (baseline 8): day 14: 3 (62 %), day 28: 5 (38 %), day 49: 6 (25 %).
    Good early relief did not last: a payer non-responder (warning), every score shown."""
    c = eligibility(load_vignette("eligibility-e5-relief-faded-by-week-4"))
    expect(c, "warning", ["E5"])
    assert "2026-09-14" in c["detail"]
    for score in ("day 14: 3 (62 %)", "day 28: 5 (38 %)", "day 49: 6 (25 %)"):
        assert score in c["detail"]
    delete_suggestion(c)


def test_e5_unknown_shows_the_course_so_far():
    """Same story but the day-28 score is 3 (62 %) and nothing after it: relief held to day 28,
    nothing from week 6 on: unknown, an info finding that shows the scores and says lasting
    relief is not documented; no suggestion (the last score, 42 days ago, is stale too: E6)."""
    request = load_vignette("eligibility-e5-relief-faded-by-week-4")
    by_id(request, "observations", "pain-elig-e5-fade-d28")["valueQuantity"]["value"] = 3
    remove_resource(
        request, "observations", by_id(request, "observations", "pain-elig-e5-fade-d49")
    )
    c = expect(eligibility(request), "info", ["E5", "E6"])
    assert "day 14: 3 (62 %)" in c["detail"]
    assert "day 28: 3 (62 %)" in c["detail"]
    assert MISSING.search(c["detail"])
    assert_no_suggestion(c)


def test_e5_relief_is_rounded_half_to_even():
    """8 -> 7 is 12.5 % relief: shown as 12 % (half to even), not 13 %."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    pain_on(request, 15)["valueQuantity"]["value"] = 7
    c = expect(eligibility(request), "warning", ["E5"])
    assert "12 %" in c["detail"]
    assert "13 %" not in c["detail"]


def test_e5_decimal_scores_are_shown_as_recorded():
    """Baseline 7.5, follow-up 5 (33.3 %): the detail shows 7.5 and 33 %."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    pain_on(request, 61)["valueQuantity"]["value"] = 7.5
    pain_on(request, 15)["valueQuantity"]["value"] = 5
    c = expect(eligibility(request), "warning", ["E5"])
    assert "7.5" in c["detail"]
    assert "33 %" in c["detail"]


def test_e5_trailing_zeros_are_dropped():
    """A baseline sent as 8.0 is shown as 8."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    pain_on(request, 61)["valueQuantity"]["value"] = 8.0
    pain_on(request, 15)["valueQuantity"]["value"] = 6.0
    c = expect(eligibility(request), "warning", ["E5"])
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
    c = expect(eligibility(request), "warning", ["E5"])
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
    c = expect(eligibility(request), "warning", ["E5"])
    assert "25 %" in c["detail"]
    assert "75 %" not in c["detail"]


def test_e5_every_score_up_to_week_6_must_show_half_relief():
    """Pain 3 at day 40 (62 %), then 6 at day 45 (25 %): relief did not hold to the first score
    from day 42, warning; both scores are shown."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    add_resource(request, "observations", pain_score("elig-e5-nr", "pain-day-40", at(20), 3))
    c = expect(eligibility(request), "warning", ["E5"])
    assert "day 40: 3 (62 %)" in c["detail"]
    assert "day 45: 6 (25 %)" in c["detail"]


def test_e5_relief_under_half_at_day_20_is_a_payer_non_response():
    """The only follow-up is on day 20 with 25 % relief: the relief did not last 6 weeks
    (a follow-up in days 7-56 under 50 %): warning (and no pain score for 40 days: E6)."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    pain_on(request, 15)["effectiveDateTime"] = at(40)
    c = expect(eligibility(request), "warning", ["E5", "E6"])
    assert "day 20: 6 (25 %)" in c["detail"]


def test_e5_good_relief_at_day_20_only_is_unknown():
    """The only follow-up is on day 20 with 62 % relief: nothing shows whether it lasted to
    week 6: unknown, info, no suggestion (no pain score for 40 days either: E6)."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    pain_on(request, 15)["effectiveDateTime"] = at(40)
    pain_on(request, 40)["valueQuantity"]["value"] = 3
    c = expect(eligibility(request), "info", ["E5", "E6"])
    assert "day 20: 3 (62 %)" in c["detail"]
    assert_no_suggestion(c)


def test_e5_baseline_older_than_30_days_is_unknown():
    """The only pre-TPI score is 35 days before the TPI: no baseline, response unknown (info),
    said to be missing."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    pain_on(request, 61)["effectiveDateTime"] = at(95)
    c = expect(eligibility(request), "info", ["E5"])
    assert MISSING.search(c["detail"]) or mentions(c["detail"], "no pain score before")


def test_e5_baseline_of_zero_is_never_a_non_response():
    """Baseline 0 (pain-free that day): relief cannot be judged, info not warning."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    pain_on(request, 61)["valueQuantity"]["value"] = 0
    c = expect(eligibility(request), "info", ["E5"])
    assert_no_suggestion(c)


def test_e5_no_session_in_the_last_12_months_is_not_a_repeat():
    """The same 8 -> 6 story, but the TPI was 400 days ago: not a repeat, no response
    finding; only the stale-pain-score note remains (last score 355 days ago)."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    sessions(request)[0]["performedDateTime"] = at(400)
    pain_on(request, 61)["effectiveDateTime"] = at(401)
    pain_on(request, 15)["effectiveDateTime"] = at(355)
    c = expect(eligibility(request), "info", ["E6"])
    assert "25 %" not in c["detail"]
    assert day(400) not in c["detail"]


@pytest.mark.parametrize("profile", ["medicare", "commercial"])
def test_e5_payer_responder_needs_no_card(profile):
    """8 -> 3 at day 50 (62 %): a repeat is supported; nothing else to say: no card."""
    assert eligibility(load_vignette("eligibility-e5-payer-responder"), profile) is None


def test_e5_follow_up_missing_is_said_to_be_missing():
    """TPI 2026-08-15, scores only on day 3 and day 100: no follow-up in the window, an info
    card that says the response is missing (never presented as a non-response)."""
    c = eligibility(load_vignette("eligibility-e5-follow-up-missing"))
    expect(c, "info", ["E5"])
    assert day(100) in c["detail"]
    assert MISSING.search(c["detail"])
    assert_no_suggestion(c)


def test_e5_preliminary_follow_up_is_not_used():
    """A preliminary follow-up score is not a result: the response is unknown, info (and no
    usable score in 30 days: E6)."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    pain_on(request, 15)["status"] = "preliminary"
    c = expect(eligibility(request), "info", ["E5", "E6"])
    assert MISSING.search(c["detail"])


def test_e5_only_the_most_recent_session_is_judged():
    """An older TPI with no relief, then a recent one with 62 % relief: no E5, no card."""
    request = load_vignette("eligibility-e5-payer-responder")
    pid = request["context"]["patientId"]
    add_session(request, 200)
    add_resource(
        request, "observations", pain_score(pid, "pain-old-1", at(200, "09:00:00-05:00"), 8)
    )
    add_resource(request, "observations", pain_score(pid, "pain-old-2", at(150), 8))
    assert eligibility(request) is None


def add_failed_low_back_session(request: dict[str, Any]) -> None:
    """A low-back TPI 100 days ago (2026-08-15): pain 8 before it, 7 on day 14 (12 %)."""
    add_session(request, 100, body=LOW_BACK)
    add_pain(request, at(100, "09:00:00-05:00"), 8)
    add_pain(request, at(86), 7)


def test_e5_judges_the_last_session_in_the_ordered_region():
    """Low back injected 100 days ago without relief, neck 60 days ago with 62 %: a neck TPI
    rests on the neck session, a good response: no card."""
    request = load_vignette("eligibility-e5-payer-responder")
    add_failed_low_back_session(request)
    assert eligibility(request) is None


def test_e5_order_in_the_other_region_judges_that_region():
    """The same record, a low-back TPI ordered: the last low-back session (12 % at day 14) is
    the one judged: warning naming 2026-08-15, not the later neck session."""
    request = load_vignette("eligibility-e5-payer-responder")
    add_failed_low_back_session(request)
    tpi_order(request)["bodySite"] = [{"coding": [LOW_BACK]}]
    c = expect(eligibility(request), "warning", ["E5"])
    assert day(100) in c["detail"]
    assert "day 14: 7 (12 %)" in c["detail"]
    assert day(60) not in c["detail"]


def test_e5_order_without_region_judges_the_last_session_anywhere():
    """No site on the order: the last session at any site (the neck, 62 %) is judged."""
    request = load_vignette("eligibility-e5-payer-responder")
    add_failed_low_back_session(request)
    del tpi_order(request)["bodySite"]
    assert eligibility(request) is None


def test_e5_no_relevant_session_means_no_finding():
    """A right-buttock TPI ordered; the earlier sessions were neck and lower back (known, other
    regions): no session is relevant, E5 does not fire."""
    request = load_vignette("eligibility-e5-payer-non-responder")
    add_failed_low_back_session(request)
    tpi_order(request)["bodySite"] = [{"coding": [RIGHT_BUTTOCK]}]
    assert eligibility(request) is None


# ---------------------------------------------------------------- E6 recent pain score


def test_e6_no_pain_score_in_30_days_asks_for_one():
    """Last pain score 45 days ago: info asking for a 0-10 score today (LOINC 72514-3)."""
    c = eligibility(load_vignette("eligibility-e6-no-recent-pain-score"))
    expect(c, "info", ["E6"])
    assert "72514-3" in c["detail"]
    assert_no_suggestion(c)


@pytest.mark.parametrize(("days_ago", "fires"), [(0, False), (30, False), (31, True)])
def test_e6_thirty_day_window(days_ago, fires):
    """A score today or 30 days ago is recent enough; 31 days ago is not."""
    request = load_vignette("eligibility-e6-no-recent-pain-score")
    pain_on(request, 45)["effectiveDateTime"] = at(days_ago, "08:30:00-05:00")
    c = eligibility(request)
    if fires:
        expect(c, "info", ["E6"])
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
    c = eligibility(request)
    if fires:
        expect(c, "info", ["E6"])
    else:
        assert c is None


def test_e6_preliminary_score_does_not_count():
    """The only recent score is preliminary: still no usable pain score."""
    request = load_vignette("eligibility-e0-first-tpi-criteria-met")
    resources(request, "observations")[0]["status"] = "preliminary"
    expect(eligibility(request), "info", ["E6"])


# ------------------------------------------------------------- E7 imaging guidance


def test_e7_ultrasound_guidance_among_the_drafts():
    """Order-sign: a gluteus medius TPI with CPT 76942 ultrasound guidance in the same order
    set: info, imaging guidance is likely not covered; nothing removed."""
    c = eligibility(load_vignette("eligibility-e7-ultrasound-guidance-ordered"))
    expect(c, "info", ["E7"])
    assert mentions(c["detail"], "imaging guidance")
    assert mentions(c["summary"], "guidance")
    assert_no_suggestion(c)


def test_e7_fluoroscopic_guidance_counts_too():
    """CPT 77002 fluoroscopic guidance instead: the same info."""
    request = load_vignette("eligibility-e7-ultrasound-guidance-ordered")
    guidance = next(d for d in drafts(request) if d["id"] == "us-guidance-1")
    guidance["code"] = coded(CPT, "77002", "Fluoroscopic guidance for needle placement")
    expect(eligibility(request), "info", ["E7"])


def test_e7_without_imaging_guidance_no_card():
    """The same order set without the guidance order: nothing to say."""
    request = load_vignette("eligibility-e7-ultrasound-guidance-ordered")
    entries = request["context"]["draftOrders"]["entry"]
    request["context"]["draftOrders"]["entry"] = [
        e for e in entries if e["resource"]["id"] != "us-guidance-1"
    ]
    assert eligibility(request) is None


def test_e7_guidance_draft_counts_when_not_selected():
    """Order-select with only the TPI selected: the guidance draft is in the same ordering
    session and still counts."""
    request = load_vignette("eligibility-e7-ultrasound-guidance-ordered")
    request["hook"] = "order-select"
    request["context"]["selections"] = ["ServiceRequest/tpi-1"]
    expect(eligibility(request), "info", ["E7"])


def test_e7_with_the_session_cap_the_delete_targets_the_tpi_only():
    """Three TPIs in 12 months (medicare) and ultrasound guidance drafted: warning with E3 and
    E7; the one suggestion removes the TPI order, not the guidance order."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    pid = request["context"]["patientId"]
    request["context"]["draftOrders"]["entry"].append({"resource": imaging_guidance(pid)})
    c = expect(eligibility(request), "warning", ["E3", "E7"])
    delete_suggestion(c)


# ----------------------------------------------------------- payer profile (section 2b)

# eligibility-payer-e3-medicare-coverage: 69-year-old with Medicare (SOPT 1) in the prefetch
# key `coverage`; neck TPIs 2026-01-12, 2026-04-20, 2026-08-03, each 8 -> 3 at day 49.


@pytest.mark.parametrize("site_default", ["medicare", "commercial"])
def test_payer_medicare_coverage_applies_the_medicare_cap(site_default):
    """Medicare coverage: the Medicare cap of 3 applies whatever the site default; the card
    says the profile came from the patient's coverage and names 2027-01-13 (2026-01-12 + 366)."""
    request = load_vignette("eligibility-payer-e3-medicare-coverage")
    c = expect(eligibility(request, site_default), "warning", ["E3"])
    assert "Medicare" in c["detail"]
    assert FROM_COVERAGE in c["detail"]
    assert SITE_DEFAULT not in c["detail"]
    assert "2027-01-13" in c["detail"]


@pytest.mark.parametrize(
    ("code", "display", "profile"),
    [
        ("1", "MEDICARE", "medicare"),
        ("121", "Medicare FFS", "medicare"),
        ("11", "Medicare Managed Care (Includes Medicare Advantage Plans)", "medicare"),
        ("5", "PRIVATE HEALTH INSURANCE", "commercial"),
        ("512", "Commercial Managed Care - PPO", "commercial"),
        ("6", "BLUE CROSS/BLUE SHIELD", "commercial"),
        ("612", "BC Managed Care - PPO", "commercial"),
    ],
)
def test_payer_sopt_code_picks_the_profile(code, display, profile):
    """The coverage's SOPT type picks the profile by its first digit: 1 Medicare (Medicare
    Advantage included), 5 private insurance and 6 Blue Cross/Blue Shield commercial. Site
    default medicare: three sessions are over the Medicare cap only."""
    request = load_vignette("eligibility-payer-e3-medicare-coverage")
    set_coverages(request, coverage(request, code, display))
    c = eligibility(request, "medicare")
    if profile == "medicare":
        c = expect(c, "warning", ["E3"])
        assert FROM_COVERAGE in c["detail"]
    else:
        assert c is None


def test_payer_commercial_coverage_is_named_when_criteria_met():
    """Private insurance (SOPT 5) with E0 on: 'criteria met', session 4 of 4, and the card says
    Commercial, from the patient's coverage."""
    request = load_vignette("eligibility-payer-e3-medicare-coverage")
    set_coverages(request, coverage(request, "5", "PRIVATE HEALTH INSURANCE"))
    c = expect(eligibility(request, "medicare", overrides=E0_ON), "info", ["E0"])
    assert "Commercial" in c["detail"]
    assert FROM_COVERAGE in c["detail"]
    assert re.search(r"session 4 of 4", c["summary"])


@pytest.mark.parametrize(
    ("code", "display"),
    [
        ("2", "MEDICAID"),
        ("21", "Medicaid (Managed Care)"),
        ("3", "OTHER GOVERNMENT (Federal/State/Local) (excluding Department of Corrections)"),
    ],
)
@pytest.mark.parametrize("site_default", ["medicare", "commercial"])
def test_payer_medicaid_or_other_government_uses_the_site_default(code, display, site_default):
    """Medicaid or other government coverage maps to no profile: the site default applies and
    the card says so (site default medicare: E3; commercial: within the cap)."""
    request = load_vignette("eligibility-payer-e3-medicare-coverage")
    set_coverages(request, coverage(request, code, display))
    c = eligibility(request, site_default)
    if site_default == "medicare":
        c = expect(c, "warning", ["E3"])
        assert SITE_DEFAULT in c["detail"]
        assert FROM_COVERAGE not in c["detail"]
    else:
        assert c is None


def test_payer_unknown_code_system_uses_the_site_default():
    """A payer type '1' in a local code system is not SOPT: site default (commercial: no card)."""
    request = load_vignette("eligibility-payer-e3-medicare-coverage")
    set_coverages(
        request,
        coverage(request, "1", "Medicare", system="https://ehr.example.org/fhir/payer-type"),
    )
    assert eligibility(request, "commercial") is None


@pytest.mark.parametrize(
    ("start", "end"),
    [("2020-01-01", "2026-06-30"), ("2026-11-24", None)],
    ids=["ended", "starts-tomorrow"],
)
def test_payer_coverage_not_in_force_today_is_ignored(start, end):
    """Medicare coverage whose period does not cover today (ended in June, or starts
    tomorrow): the site default (commercial) applies: within the cap, no card."""
    request = load_vignette("eligibility-payer-e3-medicare-coverage")
    set_coverages(request, coverage(request, "1", "MEDICARE", start=start, end=end))
    assert eligibility(request, "commercial") is None


def test_payer_cancelled_coverage_is_not_in_force():
    """A Medicare Coverage sent with status cancelled: not active, the site default applies."""
    request = load_vignette("eligibility-payer-e3-medicare-coverage")
    cancelled = coverage(request, "1", "MEDICARE")
    cancelled["status"] = "cancelled"
    set_coverages(request, cancelled)
    assert eligibility(request, "commercial") is None


def test_payer_coverage_ending_today_is_in_force():
    """A Medicare period that ends today still covers today: Medicare cap, warning."""
    request = load_vignette("eligibility-payer-e3-medicare-coverage")
    set_coverages(request, coverage(request, "1", "MEDICARE", end=day(0)))
    c = expect(eligibility(request, "commercial"), "warning", ["E3"])
    assert FROM_COVERAGE in c["detail"]


def test_payer_coverage_without_period_is_in_force():
    """A Medicare coverage with no period at all is open: in force."""
    request = load_vignette("eligibility-payer-e3-medicare-coverage")
    set_coverages(request, coverage(request, "1", "MEDICARE", start=None))
    expect(eligibility(request, "commercial"), "warning", ["E3"])


@pytest.mark.parametrize(
    ("medicare_order", "commercial_order", "profile"),
    [(2, 1, "commercial"), (1, 2, "medicare"), (None, 1, "commercial"), (None, None, "medicare")],
)
def test_payer_lowest_order_wins(medicare_order, commercial_order, profile):
    """Medicare listed first and private insurance second: the lowest `order` is the coverage
    in force; absent order sorts last; on a tie the first listed wins. Site default commercial."""
    request = load_vignette("eligibility-payer-e3-medicare-coverage")
    set_coverages(
        request,
        coverage(request, "1", "MEDICARE", order=medicare_order),
        coverage(request, "5", "PRIVATE HEALTH INSURANCE", order=commercial_order),
    )
    c = eligibility(request, "commercial")
    if profile == "medicare":
        assert FROM_COVERAGE in expect(c, "warning", ["E3"])["detail"]
    else:
        assert c is None


def test_payer_coverage_in_force_is_read_even_when_a_lower_order_has_ended():
    """Private insurance with order 1 ended in June; Medicare with order 2 is in force today:
    Medicare applies."""
    request = load_vignette("eligibility-payer-e3-medicare-coverage")
    set_coverages(
        request,
        coverage(request, "5", "PRIVATE HEALTH INSURANCE", order=1, end="2026-06-30"),
        coverage(request, "1", "MEDICARE", order=2),
    )
    expect(eligibility(request, "commercial"), "warning", ["E3"])


def test_payer_commercial_coverage_applies_the_60_day_interval():
    """Neck TPI 50 days ago, site default medicare, but the patient's coverage is a commercial
    PPO: the 60-day interval applies: defer until 2026-12-03, 'Commercial, from the patient's
    coverage'."""
    request = load_vignette("eligibility-e4-same-site-50-days-ago")
    set_coverages(request, coverage(request, "512", "Commercial Managed Care - PPO"))
    c = expect(eligibility(request, "medicare"), "warning", ["E4"])
    assert "2026-12-03" in c["detail"]
    assert "Commercial" in c["detail"]
    assert FROM_COVERAGE in c["detail"]


def test_payer_empty_coverage_bundle_uses_the_site_default():
    """The EHR sent the `coverage` key with no entry: no coverage, the site default applies and
    is said to be the site default."""
    request = load_vignette("eligibility-e4-same-site-50-days-ago")
    set_coverages(request)
    c = expect(eligibility(request, "commercial"), "warning", ["E4"])
    assert "Commercial" in c["detail"]
    assert SITE_DEFAULT in c["detail"]


# ------------------------------------------------------------------- the whole card


def test_card_gathers_interval_and_missing_response_findings():
    """E4 (warning) and E5 unknown response (info) in one card: indicator warning, both
    findings in the detail; the one suggestion is E4's."""
    c = eligibility(load_vignette("eligibility-e4-same-site-20-days-ago"))
    expect(c, "warning", ["E4", "E5"])
    assert "2026-12-15" in c["detail"]
    # the follow-up (day 14, 50 %) is too early to judge lasting relief: shown, with the gap
    assert "day 14: 4 (50 %)" in c["detail"]
    assert "not due until 2026-12-15" in delete_suggestion(c)["label"]


def test_card_with_cap_and_interval_offers_one_suggestion():
    """Three TPIs in 12 months plus a neck TPI 20 days ago (medicare): E3, E4 and an unknown
    response in one card, with a single 'remove the TPI order' suggestion."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    add_session(request, 20)
    c = expect(eligibility(request), "warning", ["E3", "E4", "E5"])
    assert "2026-12-15" in c["detail"]
    delete_suggestion(c)


def test_eligibility_override_reasons_are_the_topic_s_own():
    """An eligibility card offers payer exception, documented elsewhere and clinical judgment
    as override reasons, and nothing else."""
    c = eligibility(load_vignette("eligibility-e1-cervicalgia-only"))
    assert c is not None
    assert [r["code"] for r in c["overrideReasons"]] == [
        "payer-exception",
        "documented-elsewhere",
        "clinical-judgment",
    ]
    assert mentions(c["overrideReasons"][0]["display"], "payer exception")


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


# What each eligibility vignette yields as it stands, per site default profile (E0 off).
EXPECTED_RULES: dict[str, dict[str, list[str]]] = {
    "eligibility-e0-first-tpi-criteria-met": {"medicare": [], "commercial": []},
    "eligibility-e1-cervicalgia-only": {"medicare": ["E1"], "commercial": ["E1"]},
    "eligibility-e1-myalgia-refuted": {"medicare": ["E1"], "commercial": ["E1"]},
    "eligibility-e1-order-reason-code-m79-12": {"medicare": [], "commercial": []},
    "eligibility-e1-order-reason-reference": {"medicare": [], "commercial": []},
    "eligibility-e1-snomed-myofascial-neck": {"medicare": [], "commercial": []},
    "eligibility-e2-fibromyalgia-only": {"medicare": ["E1", "E2"], "commercial": ["E1", "E2"]},
    "eligibility-e2-fibromyalgia-with-myofascial-pain": {"medicare": [], "commercial": []},
    "eligibility-e3-three-sessions-in-12-months": {"medicare": ["E3"], "commercial": []},
    "eligibility-e4-same-site-20-days-ago": {"medicare": ["E4", "E5"], "commercial": ["E4", "E5"]},
    "eligibility-e4-same-site-50-days-ago": {"medicare": [], "commercial": ["E4"]},
    "eligibility-e5-follow-up-missing": {"medicare": ["E5"], "commercial": ["E5"]},
    "eligibility-e5-payer-non-responder": {"medicare": ["E5"], "commercial": ["E5"]},
    "eligibility-e5-payer-responder": {"medicare": [], "commercial": []},
    "eligibility-e5-relief-faded-by-week-4": {"medicare": ["E5"], "commercial": ["E5"]},
    "eligibility-e6-no-recent-pain-score": {"medicare": ["E6"], "commercial": ["E6"]},
    "eligibility-e7-ultrasound-guidance-ordered": {"medicare": ["E7"], "commercial": ["E7"]},
    "eligibility-payer-e3-medicare-coverage": {"medicare": ["E3"], "commercial": ["E3"]},
}
ELIGIBILITY_VIGNETTES = sorted(p.stem for p in VIGNETTES.glob("eligibility-*.json"))


def test_every_eligibility_vignette_has_an_expected_outcome():
    """A new eligibility vignette must say here what it yields."""
    assert sorted(EXPECTED_RULES) == ELIGIBILITY_VIGNETTES


@pytest.mark.parametrize("name", ELIGIBILITY_VIGNETTES)
@pytest.mark.parametrize("profile", ["medicare", "commercial"])
def test_every_eligibility_vignette_yields_its_rules(name, profile):
    """Each story, as it stands, yields exactly its eligibility rules (or no eligibility card),
    never critical; every card in the response is well formed and one per topic."""
    response = evaluate(load_vignette(name), profile=profile)
    codes = [c["source"]["topic"]["code"] for c in response["cards"]]
    assert len(codes) == len(set(codes))
    for c in response["cards"]:
        assert_well_formed(c)
    expected = EXPECTED_RULES[name][profile]
    c = card(response, ELIGIBILITY)
    if not expected:
        assert c is None, c and c["detail"]
    else:
        assert c is not None
        assert rules(c) == expected
        assert c["indicator"] in {"info", "warning"}
