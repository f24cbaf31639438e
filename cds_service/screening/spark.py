"""The Apache Spark engine: the same per-patient function, run on Spark through PySpark.

NDJSON is read as text, each line keyed by its patient, grouped by patient, and
``worklist.screen_patient`` applied per group on the executors. Only rows (patients with a
TPI in 365 days) and counts come back to the driver.

PySpark is an optional extra: ``pip install 'tpi-cds[spark]'``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

from cds_service.screening.ndjson import (
    MALFORMED,
    NO_PATIENT,
    NOT_READ,
    OTHER_TYPE,
    classify_line,
    open_lines,
    record_relevance,
)
from cds_service.screening.ndjson import export_files as _export_files
from cds_service.screening.progress import Progress
from cds_service.screening.result import ScreenResult
from cds_service.screening.worklist import engine_for, screen_safely, settings_key, sorted_rows
from cds_service.settings import EngineSettings

SKIP = "\x00"  # key prefix of skipped lines (a FHIR id never holds a NUL)
SPLIT_BYTES = 16 * 2**20  # one task reads this much of a file (gzip files: one task each)
INSTALL_HINT = "pip install 'tpi-cds[spark]'"


class SparkUnavailableError(RuntimeError):
    """PySpark or Java is missing; the message says how to get them."""


def spark_session(master: str | None = None, *, app_name: str = "tpi-cds screen") -> Any:
    """A SparkSession: ``master`` when given; under spark-submit, the one it set up;
    otherwise ``local[*]``. Local sessions bind to loopback and run this Python."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise SparkUnavailableError(
            f"the spark engine needs PySpark 4 or later: {INSTALL_HINT}"
        ) from exc
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ and master is None
    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", str(sys.stderr.isatty()).lower())
    )
    if not submitted:
        master = master or "local[*]"
        builder = builder.master(master)
        if master.startswith("local"):
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            builder = (
                builder.config("spark.driver.host", "127.0.0.1")
                .config("spark.driver.bindAddress", "127.0.0.1")
                .config("spark.sql.shuffle.partitions", "4")
            )
    try:
        return builder.getOrCreate()
    except Exception as exc:  # py4j raises plain exceptions when Java cannot start
        if "JAVA" in str(exc).upper():
            raise SparkUnavailableError(
                f"Spark could not start its JVM (it needs Java 17 or later: JAVA_HOME or java "
                f"on PATH): {exc}"
            ) from exc
        raise


def _active_session() -> Any:
    """A session this process already runs (then it is not ours to stop)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return None
    return SparkSession.getActiveSession()


def file_splits(files: Iterable[Path]) -> list[tuple[str, int, int]]:
    """(path, start, end) byte ranges of about SPLIT_BYTES; end -1 is the whole file (a
    gzip file cannot be entered in the middle)."""
    splits = []
    for path in files:
        size = path.stat().st_size
        if path.name.endswith(".gz") or size <= SPLIT_BYTES:
            splits.append((str(path), 0, -1))
            continue
        splits += [
            (str(path), start, min(start + SPLIT_BYTES, size))
            for start in range(0, size, SPLIT_BYTES)
        ]
    return splits


def split_lines(splits: Iterable[tuple[str, int, int]]) -> Iterator[bytes]:
    """The lines of byte ranges, read by the executor itself, a range at a time (as
    Hadoop's line reader splits text: a line belongs to the range its first byte is in).
    Reading here, not through the JVM's text reader, spares every line a trip from the
    JVM to Python, which kept a second core busy even in ``local[1]``."""
    for name, start, end in splits:
        if end < 0:
            with open_lines(Path(name)) as source:
                block = source.read()
        else:
            with open(name, "rb") as source:
                if start > 0:
                    source.seek(start - 1)
                    start += len(source.readline()) - 1  # the line begun before is not ours
                source.seek(start)
                block = source.read(max(0, end - start)) if start < end else b""
                if block and not block.endswith(b"\n"):
                    block += source.readline()  # the last line runs past the range
        lines = block.split(b"\n")
        if lines[-1] == b"":
            lines.pop()  # after the last newline there is no line
        for line in lines:
            yield line.rstrip(b"\r")


def key_lines(lines: Iterable[str | bytes], key: str) -> Iterator[tuple[str, str | bytes]]:
    """(patient id, line) for each line to screen; then, per reason, one (SKIP + why,
    count) for the lines skipped, so skipped lines are counted, not shuffled."""
    relevant = record_relevance(engine_for(key).terminology)
    skipped: dict[str, int] = {}
    for line in lines:
        patient, why = classify_line(line, relevant)
        if patient is not None:
            yield patient, line
        else:
            skipped[why] = skipped.get(why, 0) + 1
    for why, number in skipped.items():
        yield SKIP + why, str(number)


def screen_partition(
    groups: Iterable[tuple[str, Iterable[str]]], today: date, key: str
) -> Iterator[tuple[str, Any]]:
    """Screen the patients of one partition; yield its rows and one tuple of counts."""
    engine = engine_for(key)
    counts = {"patients": 0, "kept": 0, "invalid": 0, "lines": 0, "failed": 0}
    skipped: dict[str, int] = {}
    for patient_id, lines in groups:
        if patient_id.startswith(SKIP):
            number = sum(int(n) for n in lines)
            counts["lines"] += number
            why = patient_id.removeprefix(SKIP)
            if why:
                skipped[why] = skipped.get(why, 0) + number
            continue
        lines = list(lines)
        counts["patients"] += 1
        counts["kept"] += len(lines)
        counts["lines"] += len(lines)
        result = screen_safely(patient_id, lines, today, engine)
        counts["invalid"] += result.invalid
        counts["failed"] += result.failed
        if result.row is not None:
            yield "row", result.row
    yield "counts", (counts, skipped)


def screen_spark(
    folder: Path,
    today: date,
    settings: EngineSettings,
    progress: Progress,
    *,
    master: str | None = None,
    spark: Any = None,
    partitions: int | None = None,
) -> ScreenResult:
    """Screen an export folder on Spark; a session started here is stopped at the end
    (one the process already had, or the one given, is left running)."""
    own = spark is None and _active_session() is None
    if spark is None:
        progress.note("starting Spark")
        spark = spark_session(master)
    try:
        files = _export_files(folder)
        read = {"files": len(files), "lines": 0, "resources_screened": 0}
        skipped: dict[str, int] = {}
        rows: list[dict[str, Any]] = []
        patients = invalid = failed = 0
        if files:
            context = spark.sparkContext
            parallel = context.defaultParallelism
            groups = partitions or max(2, parallel * 4)
            key = settings_key(settings)
            progress.note(f"screening {len(files)} files on Spark ({context.master})")
            # Byte ranges of the files, one task each: the executors read their own lines
            # (the export folder must be at the same path on every executor, as for any
            # local-path input of Spark).
            splits = file_splits(files)
            ranges = context.parallelize(splits, len(splits))
            keyed = ranges.mapPartitions(lambda part: key_lines(split_lines(part), key))
            grouped = keyed.groupByKey(numPartitions=groups)
            results = grouped.mapPartitions(
                lambda part: screen_partition(part, today, key)
            ).collect()
            for kind, value in results:
                if kind == "row":
                    rows.append(value)
                    continue
                counts, skips = value
                patients += counts["patients"]
                invalid += counts["invalid"]
                failed += counts["failed"]
                read["lines"] += counts["lines"]
                read["resources_screened"] += counts["kept"]
                for why, number in skips.items():
                    skipped[why] = skipped.get(why, 0) + number
        read["malformed_lines"] = skipped.get(MALFORMED, 0)
        read["without_patient_reference"] = skipped.get(NO_PATIENT, 0)
        read["other_resource_types"] = skipped.get(OTHER_TYPE, 0)
        read["not_read_by_rules"] = skipped.get(NOT_READ, 0)
        return ScreenResult(sorted_rows(rows), patients, invalid, read, failed)
    finally:
        if own:
            spark.stop()
