"""``tpi-cds screen``: the subcommand's arguments and what it does with them."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from cds_service.screening.progress import Progress
from cds_service.screening.result import ScreenResult
from cds_service.screening.worklist import finding_counts, write_outputs
from cds_service.settings import EngineSettings, SettingsError

EXIT_OK = 0
EXIT_INPUT = 1
EXIT_CONFIGURATION = 2
EXIT_BULK = 4
ENGINES = ("embedded", "spark")

SCREEN_EPILOG = """output (in --out):
  worklist.csv, worklist.parquet  one row per patient with a TPI session in 365 days
  summary.json                    counts by finding, patients read, lines skipped
Bulk Data client settings (environment or the TOML file's [bulk] table):
  TPI_CDS_BULK_TOKEN            a bearer token for the FHIR server, or SMART backend services:
  TPI_CDS_BULK_CLIENT_ID, TPI_CDS_BULK_PRIVATE_KEY (PEM file), TPI_CDS_BULK_KEY_ID,
  TPI_CDS_BULK_ALGORITHM (RS384 | ES384), TPI_CDS_BULK_SCOPE, TPI_CDS_BULK_TOKEN_URL
exit codes:
  0  the worklist was written
  1  the input cannot be read
  2  the configuration is wrong (or PySpark is missing for --engine spark)
  4  the Bulk Data export failed (refused, failed job, timed out)"""


def add_parser(commands: Any, judging_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``screen`` subcommand, added to the command line's subparsers (``--today`` and
    ``--profile`` as the command line defines them for ``evaluate`` too)."""
    screen = commands.add_parser(
        "screen",
        help="screen a population (Bulk Data export) and write a worklist",
        description="Screen every patient of a FHIR Bulk Data export with the patient-view "
        "rules and write a worklist of those with a TPI session in the last 365 days.",
        epilog=SCREEN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = screen.add_mutually_exclusive_group(required=True)
    source.add_argument("--ndjson", type=Path, help="a Bulk Data export folder (*.ndjson[.gz])")
    source.add_argument("--fhir", help="a FHIR base URL to run $export against")
    screen.add_argument("--group", help="with --fhir: export Group/{id} instead of all patients")
    screen.add_argument(
        "--system",
        action="store_true",
        help="with --fhir: a system-level $export instead of Patient/$export",
    )
    screen.add_argument("--out", type=Path, required=True, help="folder for the worklist")
    screen.add_argument("--engine", choices=ENGINES, default="embedded")
    screen.add_argument("--master", help="Spark master URL (default local[*])")
    judging_options(screen)
    screen.add_argument(
        "--keep-export",
        type=Path,
        help="with --fhir: keep the downloaded NDJSON in this folder (default: removed)",
    )
    screen.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="with --fhir: seconds to wait for the export (default 3600)",
    )


def run(args: argparse.Namespace, settings: EngineSettings) -> int:
    """Screen, write the outputs, print the summary; the exit code."""
    today = args.today or settings.today()
    if args.ndjson and (args.group or args.system or args.keep_export):
        print("tpi-cds: --group, --system and --keep-export go with --fhir", file=sys.stderr)
        return EXIT_INPUT
    progress = Progress()
    started = time.monotonic()
    try:
        if args.fhir:
            result = _from_fhir(args, settings, today, progress)
        else:
            result = _screen(args.ndjson, args, settings, today, progress)
    except _Failure as exc:
        print(f"tpi-cds: {exc.message}", file=sys.stderr)
        return exc.code
    finally:
        progress.close()
    summary = summary_of(result, today, args.engine, time.monotonic() - started)
    paths = write_outputs(result.rows, summary, args.out)
    print(summary_text(summary))
    print(f"wrote {paths['csv']}, {paths['parquet']} and {paths['summary']}")
    return EXIT_OK


class _Failure(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _screen(
    folder: Path,
    args: argparse.Namespace,
    settings: EngineSettings,
    today: date,
    progress: Progress,
) -> ScreenResult:
    if not folder.is_dir():
        raise _Failure(f"{folder} is not a folder", EXIT_INPUT)
    if args.engine == "spark":
        from cds_service.screening.spark import SparkUnavailableError, screen_spark

        try:
            return screen_spark(folder, today, settings, progress, master=args.master)
        except SparkUnavailableError as exc:
            raise _Failure(str(exc), EXIT_CONFIGURATION) from exc
    from cds_service.screening.embedded import screen_embedded

    return screen_embedded(folder, today, settings, progress)


def _from_fhir(
    args: argparse.Namespace, settings: EngineSettings, today: date, progress: Progress
) -> ScreenResult:
    from cds_service.screening.bulk import BulkClient, BulkError, BulkSettings

    try:
        bulk = BulkSettings.from_env(os.environ)
    except SettingsError as exc:
        raise _Failure(f"configuration: {exc}", EXIT_CONFIGURATION) from exc
    client = BulkClient(args.fhir, bulk, progress=progress)
    level = "group" if args.group else "system" if args.system else "patient"
    with tempfile.TemporaryDirectory(prefix="tpi-export-") as tmp:
        folder = args.keep_export or Path(tmp)
        try:
            client.export(folder, level=level, group=args.group, timeout=args.timeout)
        except BulkError as exc:
            raise _Failure(f"bulk export: {exc}", EXIT_BULK) from exc
        return _screen(folder, args, settings, today, progress)


def summary_of(result: ScreenResult, today: date, engine: str, seconds: float) -> dict[str, Any]:
    """summary.json: counts only (no patient id), the run's facts under ``run``."""
    return {
        "today": today.isoformat(),
        "patients": result.patients,
        "patients_failed": result.failed,
        "worklist_rows": len(result.rows),
        "findings": finding_counts(result.rows),
        "input": {**result.read, "invalid_resources": result.invalid_resources},
        "run": {"engine": engine, "seconds": round(seconds, 3)},
    }


def summary_text(summary: dict[str, Any]) -> str:
    lines = [
        f"screened {summary['patients']} patients on {summary['today']}: "
        f"{summary['worklist_rows']} with a TPI session in the last 365 days",
    ]
    findings = summary["findings"]
    if findings:
        lines.append("findings: " + ", ".join(f"{k} {v}" for k, v in findings.items()))
    else:
        lines.append("findings: none")
    if summary["patients_failed"]:
        lines.append(
            f"{summary['patients_failed']} patient(s) could not be screened (engine error): "
            "they are not in the worklist"
        )
    read = summary["input"]
    lines.append(
        f"read {read['lines']} lines in {read['files']} files: {read['resources_screened']} "
        f"screened; skipped {read['malformed_lines']} malformed, "
        f"{read['without_patient_reference']} without a patient reference, "
        f"{read['other_resource_types'] + read['not_read_by_rules']} no rule reads; "
        f"{read['invalid_resources']} invalid resources"
    )
    return "\n".join(lines)
