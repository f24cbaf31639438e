"""A Bulk Data export made from the Synthea fixtures: for the screening tests and benchmark.

The 22 Synthea patients (../shared/fixtures/synthea-r4, read in place) are copied as many
times as asked, every copy with new ids (each uuid's first block replaced by the copy
number), and a third of the patients are given TPI sessions with 0-10 pain scores, so the
rules do real work: recent sessions (P2, E4), repeats up to the cap (E3, R2), and
non-response (R1) alternate by patient.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import IO, Any

SYNTHEA = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "synthea-r4"
UUID = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")
CPT = "http://www.ama-assn.org/go/cpt"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
TRAPEZIUS = {"system": SNOMED, "code": "31764008", "display": "Structure of trapezius muscle"}
LUMBAR = {"system": SNOMED, "code": "52612000", "display": "Structure of lumbar region of back"}


def synthea_files(folder: Path = SYNTHEA) -> list[Path]:
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def _template(path: Path) -> list[tuple[str, list[str]]]:
    """(resource type, the resource's JSON text split around each uuid's first block)."""
    bundle = json.loads(path.read_text("utf-8"))
    out = []
    for entry in bundle.get("entry", []):
        resource = entry.get("resource") or {}
        text = json.dumps(resource, separators=(",", ":"))
        out.append((resource["resourceType"], UUID.split(text)))
    return out


def _render(parts: list[str], copy: int) -> str:
    """The text with every uuid's first block set to the copy number (new, stable ids)."""
    prefix = f"{copy:08x}"
    return "".join(p if i % 2 == 0 else f"{prefix}{p}" for i, p in enumerate(parts))


def tpi_resources(patient_id: str, number: int, today: date) -> list[dict[str, Any]]:
    """TPI sessions and pain scores for patient ``number``: 1-4 sessions, the last 20-110
    days ago, 8 weeks apart; the odd ones do not respond (same pain at day 14 and 42)."""
    sessions = 1 + number % 4
    last = 20 + (number // 3 % 7) * 15
    responder = number % 2 == 0
    site = TRAPEZIUS if number % 5 else LUMBAR
    subject = {"reference": f"urn:uuid:{patient_id}"}
    out: list[dict[str, Any]] = []
    for j in range(sessions):
        day = today - timedelta(days=last + 56 * j)
        at = datetime.combine(day, time(10, 0), tzinfo=UTC)
        out.append(
            {
                "resourceType": "Procedure",
                "id": f"tpi-{patient_id}-{j}",
                "status": "completed",
                "code": {
                    "coding": [
                        {"system": CPT, "code": "20553", "display": "TPI, 3 or more muscles"}
                    ]
                },
                "subject": subject,
                "performedDateTime": at.isoformat(),
                "bodySite": [{"coding": [site]}],
            }
        )
        scores = [(-30, 7), (14 * 24 * 60, 2 if responder else 7)]
        scores.append((42 * 24 * 60, 2 if responder else 6))
        for k, (minutes, value) in enumerate(scores):
            when = at + timedelta(minutes=minutes)
            if when.date() > today:
                continue
            out.append(
                {
                    "resourceType": "Observation",
                    "id": f"pain-{patient_id}-{j}-{k}",
                    "status": "final",
                    "code": {"coding": [{"system": LOINC, "code": "72514-3"}]},
                    "subject": subject,
                    "effectiveDateTime": when.isoformat(),
                    "valueQuantity": {"value": value, "unit": "{score}"},
                }
            )
    return out


def population(
    copies: int, today: date, *, tpi_every: int = 3, folder: Path = SYNTHEA
) -> Iterator[tuple[str, str]]:
    """(resource type, NDJSON line) for ``copies`` x the Synthea patients."""
    templates = [_template(p) for p in synthea_files(folder)]
    number = 0
    for copy in range(copies):
        for template in templates:
            patient_id = None
            for kind, parts in template:
                line = _render(parts, copy)
                if kind == "Patient":
                    patient_id = json.loads(line)["id"]
                yield kind, line
            if patient_id is not None and number % tpi_every == 0:
                for resource in tpi_resources(patient_id, number, today):
                    yield resource["resourceType"], json.dumps(resource, separators=(",", ":"))
            number += 1


def write_export(
    out: Path,
    copies: int,
    today: date,
    *,
    gzip_types: frozenset[str] = frozenset(),
    tpi_every: int = 3,
    extra_lines: dict[str, list[str]] | None = None,
) -> dict[str, int]:
    """Write ``{Type}.ndjson`` (or ``.ndjson.gz`` for ``gzip_types``) files, one resource a
    line, as a Bulk Data export does; ``extra_lines`` appends raw lines to a type's file.
    Returns the number of lines per type."""
    out.mkdir(parents=True, exist_ok=True)
    handles: dict[str, IO[str]] = {}
    counts: dict[str, int] = {}

    def handle(kind: str) -> IO[str]:
        if kind not in handles:
            if kind in gzip_types:
                handles[kind] = gzip.open(  # noqa: SIM115 - closed in the finally below
                    out / f"{kind}.ndjson.gz", "wt", encoding="utf-8"
                )
            else:
                handles[kind] = (out / f"{kind}.ndjson").open("w", encoding="utf-8")
        return handles[kind]

    try:
        for kind, line in population(copies, today, tpi_every=tpi_every):
            handle(kind).write(line + "\n")
            counts[kind] = counts.get(kind, 0) + 1
        for kind, lines in (extra_lines or {}).items():
            for line in lines:
                handle(kind).write(line + "\n")
                counts[kind] = counts.get(kind, 0) + 1
    finally:
        for h in handles.values():
            h.close()
    return counts
