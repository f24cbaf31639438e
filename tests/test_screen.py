"""Population screening with the embedded engine: what an analyst gets from `tpi-cds screen`."""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from bench.screen_population import synthea_files, write_export
from cards import Engine
from cds_service import cli
from cds_service.evaluation import evaluate_request
from cds_service.screening import ndjson
from cds_service.screening.embedded import screen_embedded
from cds_service.screening.ndjson import classify_line, patient_key
from cds_service.screening.progress import Silent
from cds_service.screening.worklist import (
    COLUMNS,
    card_rules,
    csv_text,
    screen_patient,
    sorted_rows,
)
from cds_service.settings import EngineSettings
from conftest import TESTS_DIR

PANEL = TESTS_DIR / "fixtures" / "screen-panel"
TODAY = date(2026, 11, 23)
NEEDS_SYNTHEA = pytest.mark.skipif(
    not synthea_files(), reason="../shared/fixtures/synthea-r4 is absent (a bare clone)"
)
PREFETCH_KEYS = {
    "Condition": "conditions",
    "Procedure": "procedures",
    "Observation": "observations",
    "ServiceRequest": "serviceRequests",
    "CarePlan": "carePlans",
    "Coverage": "coverage",
}


def run_screen(*args: str) -> int:
    return cli.main(["screen", *args])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------- the panel


@pytest.fixture(scope="module")
def panel_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("panel")
    assert run_screen("--ndjson", str(PANEL), "--out", str(out), "--today", "2026-11-23") == 0
    return out


def test_panel_rows_are_the_patients_to_act_on(panel_out: Path) -> None:
    rows = {r["patient_id"]: r for r in read_csv(panel_out / "worklist.csv")}
    assert sorted(rows) == ["capped", "nonresponder", "recent"]  # no TPI, no row
    nonresponder = rows["nonresponder"]
    assert nonresponder["findings"] == "R1"
    assert nonresponder["sessions_12m"] == "2"
    assert nonresponder["last_session"] == "2026-08-10"
    assert nonresponder["last_clinical_response"] == "non-responder"
    assert nonresponder["next_session_on"] == "2026-11-23"
    assert "Refer to pain medicine" in nonresponder["suggested_action"]
    recent = rows["recent"]
    assert recent["findings"] == "E4 P2"
    assert recent["pt_integration"] == "P2"
    assert recent["interval_ends"] == "2026-12-14"  # 2026-11-02 + 42 days (Medicare)
    assert recent["next_session_on"] == "2026-12-14"
    assert recent["suggested_action"].startswith("No TPI before 2026-12-14")
    capped = rows["capped"]
    assert capped["findings"] == "E3 R2"
    assert capped["sessions_12m"] == "3"
    assert capped["payer_profile"] == "medicare"
    assert capped["payer_origin"] == "coverage"
    assert capped["cap_ends"] == "2027-01-16"  # the oldest of 3 sessions + 366 days
    assert capped["next_session_on"] == "2027-01-16"
    assert capped["pt_integration"] == ""  # an active PT care plan: no P2


def test_panel_summary_counts_by_finding(panel_out: Path) -> None:
    summary = json.loads((panel_out / "summary.json").read_text("utf-8"))
    assert summary["patients"] == 4
    assert summary["worklist_rows"] == 3
    assert summary["findings"] == {"E3": 1, "E4": 1, "P2": 1, "R1": 1, "R2": 1}
    assert summary["input"]["malformed_lines"] == 0
    assert summary["today"] == "2026-11-23"


def test_parquet_holds_the_same_rows_as_the_csv(panel_out: Path) -> None:
    table = pq.read_table(panel_out / "worklist.parquet")
    assert tuple(table.column_names) == COLUMNS
    rows = table.to_pylist()
    assert [r["patient_id"] for r in rows] == ["capped", "nonresponder", "recent"]
    assert rows[0]["cap_ends"] == date(2027, 1, 16)
    assert rows[0]["sessions_12m"] == 3
    assert rows[1]["cap_ends"] is None


def patient_view_request(patient_id: str, resources: list[dict[str, Any]]) -> dict[str, Any]:
    """The patient-view request an EHR would send for this patient, from the same data."""
    prefetch: dict[str, Any] = {
        key: {"resourceType": "Bundle", "type": "searchset", "entry": []}
        for key in PREFETCH_KEYS.values()
    }
    for resource in resources:
        if resource["resourceType"] == "Patient":
            prefetch["patient"] = resource
        elif resource["resourceType"] in PREFETCH_KEYS:
            bundle = prefetch[PREFETCH_KEYS[resource["resourceType"]]]
            bundle["entry"].append({"resource": resource, "search": {"mode": "match"}})
    return {
        "hook": "patient-view",
        "hookInstance": "5b0a3a4e-9b0e-4f4e-8d55-1c2f3e4a5b6c",
        "context": {"userId": "Practitioner/analyst", "patientId": patient_id},
        "prefetch": prefetch,
    }


def resources_by_patient(folder: Path) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in ndjson.export_files(folder):
        with ndjson.open_lines(path) as lines:
            for line in lines:
                key, _ = classify_line(line)
                if key is not None:
                    found[key].append(orjson.loads(line))
    return found


def test_findings_agree_with_evaluate_on_each_patient(panel_out: Path) -> None:
    """What the worklist says per patient is what patient-view would show in the chart."""
    rows = {r["patient_id"]: r for r in read_csv(panel_out / "worklist.csv")}
    engine = EngineSettings().build_engine()
    for patient_id, resources in resources_by_patient(PANEL).items():
        body = evaluate_request(
            patient_view_request(patient_id, resources), today=TODAY, engine=engine
        )
        rules = sorted({r for card in body["cards"] for r in card_rules(card)})
        row = rows.get(patient_id)
        if row is None:
            assert rules == [], patient_id
            continue
        screened = sorted(f"{row['pt_integration']} {row['specialist_referral']}".split())
        assert screened == rules, patient_id


# --------------------------------------------------------------------------- Synthea


@pytest.fixture(scope="module")
def synthea_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two copies of the Synthea patients as an export, a third with TPI sessions; the
    Observations gzipped; plus lines no screening can use."""
    folder = tmp_path_factory.mktemp("synthea-export")
    write_export(
        folder,
        2,
        TODAY,
        gzip_types=frozenset({"Observation"}),
        extra_lines={
            "Condition": ['{"resourceType":"Condition","id":"c-no-subject"}', "{not json", ""],
            "Observation": ['["a list, not a resource"]', '{"id":"no-type"}'],
        },
    )
    return folder


@NEEDS_SYNTHEA
def test_synthea_export_screens_with_bad_lines_counted_and_skipped(
    synthea_export: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert (
        run_screen("--ndjson", str(synthea_export), "--out", str(out), "--today", "2026-11-23") == 0
    )
    summary = json.loads((out / "summary.json").read_text("utf-8"))
    assert summary["patients"] == 44
    assert summary["input"]["malformed_lines"] == 3
    assert summary["input"]["without_patient_reference"] == 1
    assert summary["input"]["other_resource_types"] > 0  # Encounters are not screened
    rows = read_csv(out / "worklist.csv")
    assert len(rows) == summary["worklist_rows"] == 15  # every third patient has TPIs
    assert [r["patient_id"] for r in rows] == sorted(r["patient_id"] for r in rows)
    assert summary["findings"]["R1"] > 0 and summary["findings"]["P2"] > 0
    assert all(
        set(r["findings"].split()) <= {"P2", "R1", "R2", "R3", "R4", "R5", "E3", "E4"} for r in rows
    )


@NEEDS_SYNTHEA
def test_spilling_to_many_buckets_gives_the_same_worklist(
    synthea_export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export is grouped through bucket files: many small buckets, same rows."""
    settings = EngineSettings()
    one = screen_embedded(synthea_export, TODAY, settings, Silent())
    monkeypatch.setattr(ndjson, "SPILL_CHUNK", 64 * 1024)
    many = screen_embedded(synthea_export, TODAY, settings, Silent())
    assert (
        ndjson.bucket_count(sum(p.stat().st_size for p in ndjson.export_files(synthea_export))) > 10
    )
    assert csv_text(many.rows) == csv_text(one.rows)
    assert many.patients == one.patients == 44


def test_patient_references_in_the_forms_exports_use() -> None:
    assert patient_key({"resourceType": "Patient", "id": "p1"}) == "p1"
    assert (
        patient_key({"resourceType": "Condition", "subject": {"reference": "Patient/p1"}}) == "p1"
    )
    assert (
        patient_key(
            {
                "resourceType": "Procedure",
                "subject": {"reference": "https://ehr.example/fhir/Patient/p1/_history/2"},
            }
        )
        == "p1"
    )
    assert (
        patient_key({"resourceType": "Observation", "subject": {"reference": "urn:uuid:abc-1"}})
        == "abc-1"
    )
    assert (
        patient_key({"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p2"}})
        == "p2"
    )
    assert (
        patient_key({"resourceType": "Coverage", "beneficiary": {"reference": "Patient/p3"}})
        == "p3"
    )
    assert patient_key({"resourceType": "Condition", "subject": {"reference": "Group/g1"}}) is None
    assert patient_key({"resourceType": "Condition", "subject": {"display": "someone"}}) is None


def test_an_empty_folder_gives_an_empty_worklist(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    assert run_screen("--ndjson", str(tmp_path / "in"), "--out", str(tmp_path / "out")) == 0
    assert (tmp_path / "out" / "worklist.csv").read_text("utf-8") == ",".join(COLUMNS) + "\n"


def test_a_missing_folder_is_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_screen("--ndjson", str(tmp_path / "nope"), "--out", str(tmp_path / "out")) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_progress_and_summary_never_name_a_patient(
    panel_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert run_screen("--ndjson", str(PANEL), "--out", str(tmp_path), "--today", "2026-11-23") == 0
    printed = capsys.readouterr()
    text = printed.out + printed.err + (tmp_path / "summary.json").read_text("utf-8")
    for patient_id in ("capped", "nonresponder", "recent", "notpi"):
        assert patient_id not in text
    assert "screened 4 patients" in printed.out


def test_spark_engine_without_pyspark_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)  # as if the extra were not installed
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    code = run_screen("--ndjson", str(PANEL), "--out", str(tmp_path), "--engine", "spark")
    assert code == 2
    assert "pip install 'tpi-cds[spark]'" in capsys.readouterr().err


@NEEDS_SYNTHEA
def test_dropping_unread_resources_before_grouping_changes_no_row(synthea_export: Path) -> None:
    """Resources no rule reads (vital signs, ...) are dropped before the spill: the rows
    are those of screening everything."""
    engine = EngineSettings().build_engine()

    def worklist(relevant: ndjson.Relevance | None) -> str:
        rows = []
        stats = ndjson.ReadStats()
        files = ndjson.export_files(synthea_export)
        for patient_id, lines in ndjson.grouped_by_patient(files, stats, relevant=relevant):
            row = screen_patient(patient_id, lines, TODAY, engine).row
            if row is not None:
                rows.append(row)
        return csv_text(sorted_rows(rows))

    everything = worklist(None)
    assert everything == worklist(ndjson.record_relevance(engine.terminology))
    assert everything.count("\n") == 16  # header + 15 rows


def test_a_patient_the_engine_fails_on_is_counted_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """One patient whose record breaks the engine must not cost the clinic its worklist."""
    real = Engine.advise_keyed

    def breaks_on_recent(self: Engine, record: Any, orders: Any, today: date) -> Any:
        if record.patient_id == "recent":
            raise ValueError("a record the engine cannot read")
        return real(self, record, orders, today)

    monkeypatch.setattr(Engine, "advise_keyed", breaks_on_recent)
    assert run_screen("--ndjson", str(PANEL), "--out", str(tmp_path), "--today", "2026-11-23") == 0
    summary = json.loads((tmp_path / "summary.json").read_text("utf-8"))
    assert summary["patients_failed"] == 1
    assert [r["patient_id"] for r in read_csv(tmp_path / "worklist.csv")] == [
        "capped",
        "nonresponder",
    ]
    printed = capsys.readouterr()
    assert "1 patient(s) could not be screened" in printed.out
    assert "cannot read" not in printed.out + printed.err  # the error may quote the record
