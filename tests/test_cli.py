"""The offline command answers a captured request exactly as the service will."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cds_service.evaluation import response_json
from conftest import SHARED, TODAY, VIGNETTES, evaluate, load_vignette, without_uuids

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


def test_evaluate_reads_stdin_and_takes_the_profile():
    request = load_vignette("eligibility-e3-three-sessions-in-12-months")
    text = json.dumps(request)
    medicare = run("evaluate", "-", "--today", TODAY.isoformat(), stdin=text)
    commercial = run(
        "evaluate", "-", "--today", TODAY.isoformat(), "--profile", "commercial", stdin=text
    )
    assert medicare.returncode == commercial.returncode == 0
    assert "medicare" in medicare.stdout and "commercial" in commercial.stdout
    assert without_uuids(json.loads(medicare.stdout)) != without_uuids(
        json.loads(commercial.stdout)
    )


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
    result = run("evaluate", str(EXAMPLE), "--today", "2026-11-23")
    assert result.returncode == 0, result.stderr
    cards = {c["source"]["topic"]["code"]: c for c in json.loads(result.stdout)["cards"]}
    assert {t: c["indicator"] for t, c in cards.items()} == {
        "tpi-safety": "warning",
        "tpi-eligibility": "warning",
        "pt-integration": "warning",
        "specialist-referral": "warning",
    }
    assert "apixaban" in cards["tpi-safety"]["detail"]
    assert "relief 12 %" in cards["tpi-eligibility"]["detail"]
    referral = cards["specialist-referral"]
    assert referral["selectionBehavior"] == "at-most-one"
    offered = {
        s["actions"][0]["resource"]["code"]["coding"][0]["code"]: s["isRecommended"]
        for s in referral["suggestions"]
    }
    assert offered == {"306265007": True, "306289000": False}
    pt = cards["pt-integration"]["suggestions"][0]["actions"][0]["resource"]
    assert pt["code"]["coding"][0]["code"] == "308447003"


def test_a_bad_configuration_is_refused_with_a_reason(tmp_path):
    import os

    env = dict(os.environ, TPI_CDS_POLICY_SESSION_KAP="4")
    result = run("discovery", env=env)
    assert result.returncode == 2
    assert "session_kap" in result.stderr


def test_a_policy_override_from_the_environment_changes_the_answer():
    import os

    request = copy.deepcopy(load_vignette("eligibility-e3-three-sessions-in-12-months"))
    env = dict(os.environ, TPI_CDS_POLICY_SESSION_CAP="5")
    result = run("evaluate", "-", "--today", TODAY.isoformat(), stdin=json.dumps(request), env=env)
    assert result.returncode == 0, result.stderr
    assert "at most 5 sessions" in result.stdout
