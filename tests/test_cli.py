"""The offline command answers a captured request exactly as the service will."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cds_service.evaluation import response_json
from conftest import (
    SHARED,
    TODAY,
    VIGNETTES,
    assert_well_formed,
    evaluate,
    load_vignette,
    without_uuids,
)

EXAMPLE = SHARED / "examples" / "order-select-request.json"


def run(
    *args: str, stdin: str | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cds_service.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def a_tpi_vignette() -> Path:
    path = VIGNETTES / "eligibility-e5-payer-non-responder.json"
    assert path.is_file()
    return path


def test_discovery_prints_the_three_services():
    result = run("discovery")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert [s["id"] for s in services] == ["tpi-order-select", "tpi-order-sign", "tpi-patient-view"]


def test_evaluate_prints_what_the_service_sends_apart_from_uuids():
    path = a_tpi_vignette()
    result = run("evaluate", str(path), "--today", TODAY.isoformat())
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    printed = result.stdout.rstrip("\n")
    in_process = response_json(evaluate(load_vignette(path.stem)))
    assert json.loads(printed)["cards"], "expected cards for this vignette"
    assert without_uuids(json.loads(printed)) == without_uuids(json.loads(in_process))
    # Byte for byte once the uuids are blanked out.
    blank = lambda text: json.dumps(without_uuids(json.loads(text)))  # noqa: E731
    assert blank(printed) == blank(in_process)


def cards_by_topic(stdout: str) -> dict[str, dict]:
    """The printed cards by topic, each checked for the promised shape."""
    cards = json.loads(stdout)["cards"]
    for c in cards:
        assert_well_formed(c)
    return {c["source"]["topic"]["code"]: c for c in cards}


def test_evaluate_reads_stdin_and_takes_the_profile():
    """Three sessions in 12 months: over the Medicare cap of 3 (E3, and R2 recurrent pain),
    within the commercial cap of 4 (neither). Version 2 has no "criteria met" card by default,
    so under the commercial profile the eligibility topic says nothing at all."""
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    text = json.dumps(request)
    medicare = run("evaluate", "-", "--today", TODAY.isoformat(), stdin=text)
    commercial = run(
        "evaluate", "-", "--today", TODAY.isoformat(), "--profile", "commercial", stdin=text
    )
    assert medicare.returncode == commercial.returncode == 0
    under_medicare = cards_by_topic(medicare.stdout)
    assert under_medicare["tpi-eligibility"]["extension"]["tpi-rules"] == ["E3"]
    assert "Medicare" in under_medicare["tpi-eligibility"]["detail"]
    assert under_medicare["specialist-referral"]["extension"]["tpi-rules"] == ["R2"]
    under_commercial = cards_by_topic(commercial.stdout)
    assert "tpi-eligibility" not in under_commercial
    assert "specialist-referral" not in under_commercial


@pytest.mark.parametrize(("today", "e4"), [("2026-12-14", True), ("2026-12-15", False)])
def test_today_is_the_day_the_rules_judge_by(today, e4):
    """The last TPI in the ordered region was on 2026-11-03: under Medicare (42 days) E4 asks
    to defer until 2026-12-15. --today 2026-12-14 (41 days): E4; --today 2026-12-15 (42
    days, no longer fewer than 42): no E4."""
    path = VIGNETTES / "eligibility-e4-same-site-20-days-ago.json"
    result = run("evaluate", str(path), "--today", today)
    assert result.returncode == 0, result.stderr
    eligibility = cards_by_topic(result.stdout).get("tpi-eligibility")
    found = eligibility is not None and "E4" in eligibility["extension"]["tpi-rules"]
    assert found is e4
    if e4:
        assert "2026-12-15" in eligibility["summary"]


def test_the_offline_command_has_no_memory():
    """Section 3.5: the offline command prints every card, every time (no repeat suppression
    between an order-select and the order-sign of the same order)."""
    request = load_vignette("referral-r1-two-failed-neck-tpis")
    select = run("evaluate", "-", "--today", TODAY.isoformat(), stdin=json.dumps(request))
    request["hook"] = "order-sign"
    request["context"].pop("selections", None)
    sign = run("evaluate", "-", "--today", TODAY.isoformat(), stdin=json.dumps(request))
    assert select.returncode == sign.returncode == 0
    first, second = cards_by_topic(select.stdout), cards_by_topic(sign.stdout)
    assert len(first) >= 3
    assert {t: c["extension"]["tpi-rules"] for t, c in first.items()} == {
        t: c["extension"]["tpi-rules"] for t, c in second.items()
    }


def test_the_profile_is_named_on_the_criteria_met_card():
    """With the site's "criteria met" card turned on (E0), the commercial profile chosen on
    the command line is the one the card names, as the site default."""
    import os

    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    env = dict(os.environ, TPI_CDS_POLICY_SHOW_CRITERIA_MET="true")
    result = run(
        "evaluate",
        "-",
        "--today",
        TODAY.isoformat(),
        "--profile",
        "commercial",
        stdin=json.dumps(request),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    eligibility = cards_by_topic(result.stdout)["tpi-eligibility"]
    assert eligibility["indicator"] == "info"
    assert eligibility["extension"]["tpi-rules"] == ["E0"]
    assert "Commercial (site default" in eligibility["detail"]
    assert "at most 4 sessions" in eligibility["detail"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "JSON object"),
        ('{"hookInstance": "x", "context": {}}', "'hook'"),
        ('{"hook": "medication-prescribe", "hookInstance": "x", "context": {}}', "no service"),
        (
            '{"hook": "patient-view", "hookInstance": "x", "context": {"userId": "P/1"}}',
            "patientId",
        ),
    ],
)
def test_a_request_that_is_not_cds_hooks_exits_nonzero_with_one_line(text, reason):
    result = run("evaluate", "-", stdin=text)
    assert result.returncode != 0
    assert result.stdout == ""
    assert reason in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_prefetch_names_the_keys_and_prints_nothing():
    request = load_vignette(a_tpi_vignette().stem)
    del request["prefetch"]["procedures"]
    request["prefetch"]["medications"] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout"}],
    }
    result = run("evaluate", "-", "--today", TODAY.isoformat(), stdin=json.dumps(request))
    assert result.returncode == 3
    assert result.stdout == ""
    assert "procedures" in result.stderr and "medications" in result.stderr


def test_a_null_prefetch_key_means_nothing_there_not_missing():
    request = load_vignette(a_tpi_vignette().stem)
    request["prefetch"]["allergies"] = None
    result = run("evaluate", "-", "--today", TODAY.isoformat(), stdin=json.dumps(request))
    assert result.returncode == 0, result.stderr


def test_a_non_tpi_order_answers_empty_without_reading_the_record():
    """Not even a broken prefetch is looked at when nothing is a TPI."""
    request = load_vignette(a_tpi_vignette().stem)
    for entry in request["context"]["draftOrders"]["entry"]:
        entry["resource"]["code"] = {
            "coding": [{"system": "http://loinc.org", "code": "57698-3", "display": "Lipid panel"}]
        }
    request["prefetch"] = {"conditions": "not even a Bundle"}
    result = run("evaluate", "-", stdin=json.dumps(request))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '{"cards":[]}'


def test_the_shared_worked_example(shared_dir):
    """The shared example: neck myalgia, apixaban, two TPIs that did not help, no PT, no
    coverage (site default Medicare).

    The shared example response (order-select-response.json) shows the PT card at info. The
    rule page wins: P1 is a warning when a TPI session is recorded in the last 365 days, and
    this patient has two (2026-07-26, 2026-09-14) — the issue asked for "a warning for a
    repeat". Everything else is as the example shows.
    """
    result = run("evaluate", str(EXAMPLE), "--today", "2026-11-23")
    assert result.returncode == 0, result.stderr
    cards = cards_by_topic(result.stdout)
    assert {t: c["indicator"] for t, c in cards.items()} == {
        "tpi-safety": "info",  # S3 at info: apixaban alone, no INR or platelet count on record
        "tpi-eligibility": "warning",
        "pt-integration": "warning",  # P1 for a repeat (the example file says info: see above)
        "specialist-referral": "warning",
    }
    assert {t: c["extension"]["tpi-rules"] for t, c in cards.items()} == {
        "tpi-safety": ["S3"],
        "tpi-eligibility": ["E5"],
        "pt-integration": ["P1"],
        "specialist-referral": ["R1"],
    }
    assert "apixaban" in cards["tpi-safety"]["detail"]
    assert "suggestions" not in cards["tpi-safety"]
    eligibility = cards["tpi-eligibility"]
    assert "baseline 8 (2026-09-13)" in eligibility["detail"]
    assert "day 45: 7 (12 %)" in eligibility["detail"]
    assert "day 68: 7 (12 %)" in eligibility["detail"]
    (remove,) = eligibility["suggestions"]
    assert [a["resourceId"] for a in remove["actions"] if a["type"] == "delete"] == [
        "ServiceRequest/tpi-1"
    ]
    referral = cards["specialist-referral"]
    assert referral["selectionBehavior"] == "at-most-one"
    offered = {
        s["actions"][0]["resource"]["code"]["coding"][0]["code"]: s["isRecommended"]
        for s in referral["suggestions"]
    }
    assert offered == {"306265007": True, "306289000": False}
    pt = cards["pt-integration"]["suggestions"][0]["actions"][0]["resource"]
    assert pt["code"]["coding"][0]["code"] == "308447003"
    assert pt["status"] == "draft" and pt["intent"] == "order"
    assert pt["occurrencePeriod"] == {"start": "2026-11-23", "end": "2026-12-07"}
    assert pt["performerType"]["coding"][0]["code"] == "36682004"
    assert pt["bodySite"][0]["coding"][0]["code"] == "45048000"


def test_a_bad_configuration_is_refused_with_a_reason(tmp_path):
    import os

    env = dict(os.environ, TPI_CDS_POLICY_SESSION_KAP="4")
    result = run("discovery", env=env)
    assert result.returncode == 2
    assert "session_kap" in result.stderr


def test_a_policy_override_from_the_environment_changes_the_answer():
    """A session cap of 2 from the environment: the three sessions are over it, and the date
    within the limit again moves to the 2nd oldest session + 366 days (2026-05-27 ->
    2027-05-28) instead of the 1st oldest (2026-02-06 -> 2027-02-07) under the cap of 3."""
    import os

    request = copy.deepcopy(load_vignette("eligibility-e3-three-sessions-in-12-months"))
    env = dict(os.environ, TPI_CDS_POLICY_SESSION_CAP="2")
    result = run("evaluate", "-", "--today", TODAY.isoformat(), stdin=json.dumps(request), env=env)
    assert result.returncode == 0, result.stderr
    eligibility = cards_by_topic(result.stdout)["tpi-eligibility"]
    assert eligibility["extension"]["tpi-rules"] == ["E3"]
    assert "at most 2 sessions" in eligibility["detail"]
    assert "2027-05-28" in eligibility["detail"]
    assert "2027-02-07" not in eligibility["detail"]
