"""The Spark engine on a real local Spark (local[2]): the same worklist as the embedded one.

Java 17 and PySpark (the test extra) are what this needs; Spark starts once per session.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from bench.screen_population import synthea_files, write_export
from cds_service import cli
from cds_service.screening.command import summary_of
from cds_service.screening.embedded import screen_embedded
from cds_service.screening.progress import Silent
from cds_service.screening.spark import screen_spark, spark_session
from cds_service.screening.worklist import csv_text
from cds_service.settings import EngineSettings
from conftest import TESTS_DIR

PANEL = TESTS_DIR / "fixtures" / "screen-panel"
TODAY = date(2026, 11, 23)

if shutil.which("java") is None and not __import__("os").environ.get("JAVA_HOME"):
    pytest.fail("Spark needs Java 17 (java on PATH or JAVA_HOME)", pytrace=False)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    session = spark_session("local[2]", app_name="tpi-cds screen tests")
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Synthea patients twice over (a third with TPIs), one file gzipped, bad lines in."""
    if not synthea_files():
        pytest.skip("../shared/fixtures/synthea-r4 is absent (a bare clone)")
    folder = tmp_path_factory.mktemp("spark-export")
    write_export(
        folder,
        2,
        TODAY,
        gzip_types=frozenset({"Procedure"}),
        extra_lines={
            "Observation": ["{truncated", '{"resourceType":"Observation","id":"orphan"}', ""],
        },
    )
    return folder


def comparable(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k != "run"}


def test_spark_gives_the_embedded_worklist_byte_for_byte(spark: Any, export: Path) -> None:
    settings = EngineSettings()
    embedded = screen_embedded(export, TODAY, settings, Silent())
    on_spark = screen_spark(export, TODAY, settings, Silent(), spark=spark)
    assert len(embedded.rows) == 15
    assert csv_text(on_spark.rows) == csv_text(embedded.rows)
    assert comparable(summary_of(on_spark, TODAY, "spark", 0)) == comparable(
        summary_of(embedded, TODAY, "embedded", 0)
    )
    assert on_spark.read["malformed_lines"] == 1
    assert on_spark.read["without_patient_reference"] == 1


def test_spark_on_the_panel_with_another_profile(spark: Any) -> None:
    """Engine settings reach the executors: the commercial cap (4) leaves 'capped' under it."""
    settings = EngineSettings(profile="commercial")
    embedded = screen_embedded(PANEL, TODAY, settings, Silent())
    on_spark = screen_spark(PANEL, TODAY, settings, Silent(), spark=spark)
    assert csv_text(on_spark.rows) == csv_text(embedded.rows)
    capped = next(r for r in on_spark.rows if r["patient_id"] == "capped")
    assert capped["payer_profile"] == "medicare"  # its coverage decides, not the default
    nonresponder = next(r for r in on_spark.rows if r["patient_id"] == "nonresponder")
    assert nonresponder["payer_profile"] == "commercial"
    assert nonresponder["interval_ends"] == date(2026, 10, 9)  # 2026-08-10 + 60 days


def test_the_command_runs_on_spark(spark: Any, export: Path, tmp_path: Path) -> None:
    """`tpi-cds screen --engine spark --master local[2]` writes the same files."""
    spark_out, embedded_out = tmp_path / "spark", tmp_path / "embedded"
    common = ["--ndjson", str(export), "--today", "2026-11-23"]
    assert cli.main(["screen", *common, "--out", str(embedded_out)]) == 0
    assert (
        cli.main(
            [
                "screen",
                *common,
                "--out",
                str(spark_out),
                "--engine",
                "spark",
                "--master",
                "local[2]",
            ]
        )
        == 0
    )
    spark_csv = (spark_out / "worklist.csv").read_bytes()
    assert spark_csv == (embedded_out / "worklist.csv").read_bytes()
    summary = json.loads((spark_out / "summary.json").read_text("utf-8"))
    assert summary["run"]["engine"] == "spark"
    assert summary["patients"] == 44


@pytest.mark.parametrize("split_bytes", [1, 7, 64, 1000, 10**6])
def test_byte_ranges_give_every_line_once(tmp_path: Path, monkeypatch, split_bytes: int) -> None:
    """Each executor reads its own byte range: a line belongs to the range its first
    byte is in, whatever the range size, with CRLF endings and no final newline."""
    from cds_service.screening import spark as spark_engine

    lines = [b'{"resourceType":"Patient","id":"p%d"}' % i for i in range(40)]
    lines[5] = b""  # a blank line is a line too
    path = tmp_path / "Patient.ndjson"
    path.write_bytes(b"\r\n".join(lines[:20]) + b"\r\n" + b"\n".join(lines[20:]))
    monkeypatch.setattr(spark_engine, "SPLIT_BYTES", split_bytes)
    splits = spark_engine.file_splits([path])
    assert list(spark_engine.split_lines(splits)) == lines
