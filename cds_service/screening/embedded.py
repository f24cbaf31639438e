"""The embedded engine: one process, the export spilled to bucket files and grouped by patient.

It needs nothing but the package, and its memory is bounded by one bucket of the export
(see ``ndjson.grouped_by_patient``), not by the whole export.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from cds_service.screening.ndjson import (
    ReadStats,
    export_files,
    grouped_by_patient,
    record_relevance,
)
from cds_service.screening.progress import Progress
from cds_service.screening.result import ScreenResult
from cds_service.screening.worklist import engine_for, screen_safely, settings_key, sorted_rows
from cds_service.settings import EngineSettings


def screen_embedded(
    folder: Path,
    today: date,
    settings: EngineSettings,
    progress: Progress,
    *,
    spill_dir: str | None = None,
) -> ScreenResult:
    """Screen every patient of an export folder in this process."""
    engine = engine_for(settings_key(settings))
    files = export_files(folder)
    stats = ReadStats()
    rows = []
    patients = invalid = failed = 0
    mib = 1024 * 1024
    progress.start("reading the export (MiB)", -(-sum(f.stat().st_size for f in files) // mib))
    started = {"grouping": False}

    def file_read(size: int) -> None:
        progress.advance(size / mib)

    def bucket(index: int, total: int) -> None:
        if not started["grouping"]:
            progress.done()
            progress.start("screening patients (by bucket)", total)
            started["grouping"] = True
        elif index:
            progress.advance(1)

    for patient_id, lines in grouped_by_patient(
        files,
        stats,
        spill_dir=spill_dir,
        relevant=record_relevance(engine.terminology),
        on_bytes=file_read,
        on_bucket=bucket,
    ):
        patients += 1
        result = screen_safely(patient_id, lines, today, engine)
        invalid += result.invalid
        failed += result.failed
        if result.row is not None:
            rows.append(result.row)
    if not started["grouping"]:
        progress.done()
    else:
        progress.advance(1)
        progress.done()
    return ScreenResult(sorted_rows(rows), patients, invalid, stats.as_dict(), failed)
