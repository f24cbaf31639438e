"""Reading a Bulk Data export: NDJSON lines keyed by the patient they belong to.

One line is one resource. A line that is not a JSON object, or a resource that names no
patient, is counted and skipped: an export of a whole clinic always holds a few, and one
bad line must not stop the screening of everyone else.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from cards.record import MODELS, _relevance
from cards.terminology import Terminology

# The resource types the engine reads (and Patient, to count who was screened).
SCREENED_TYPES = frozenset({"Patient", *MODELS})
# Elements that name the patient a resource belongs to, in the order they are tried.
PATIENT_ELEMENTS = ("subject", "patient", "beneficiary")
MALFORMED = "malformed"
NO_PATIENT = "no_patient"
OTHER_TYPE = "other_type"
NOT_READ = "not_read"
Relevance = Mapping[str, Callable[[dict[str, Any]], bool]]
SPILL_CHUNK = 32 * 1024 * 1024  # input bytes per spill bucket: a bucket is read whole
MAX_BUCKETS = 4096
PROGRESS_LINES = 8192  # lines between progress reports


def export_files(folder: Path) -> list[Path]:
    """The NDJSON files of an export folder (``*.ndjson`` and ``*.ndjson.gz``), by name."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    files = [p for p in folder.iterdir() if p.is_file() and p.name.endswith((".ndjson", ".gz"))]
    return sorted(p for p in files if p.name.endswith((".ndjson", ".ndjson.gz")))


def open_lines(path: Path) -> IO[bytes]:
    """A binary file object; ``.gz`` files are read through gzip."""
    return gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")


def patient_of_reference(reference: Any) -> str | None:
    """The patient id a reference names: ``Patient/ID``, an absolute URL ending in
    ``/Patient/ID`` (a version suffix ``/_history/N`` dropped), or ``urn:uuid:ID``."""
    if not isinstance(reference, dict):
        return None
    text = reference.get("reference")
    if not isinstance(text, str) or not text:
        return None
    if text.startswith("urn:uuid:"):
        return text.removeprefix("urn:uuid:") or None
    parts = text.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1]:
        return parts[-1]
    return None


def patient_key(resource: dict[str, Any]) -> str | None:
    """Whose resource this is: a Patient by its own id, any other by the patient it names."""
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) and rid else None
    for element in PATIENT_ELEMENTS:
        key = patient_of_reference(resource.get(element))
        if key is not None:
            return key
    return None


def record_relevance(terminology: Terminology) -> Relevance:
    """The record's own cheap tests of whether any rule reads a resource (built once per
    engine by ``cards.record``): a resource the record would drop anyway is dropped before
    grouping, so vital signs and other unread Observations are never spilled or shuffled."""
    return terminology.derived("record-relevance", lambda: _relevance(terminology))


def classify_line(line: bytes | str, relevant: Relevance | None = None) -> tuple[str | None, str]:
    """(patient id, "") for a line to screen, or (None, why) for one to skip.

    Blank lines are neither: they give (None, ""). With ``relevant``, a resource no rule
    reads is skipped as NOT_READ (Patient resources are kept: they count who was screened).
    """
    if not line.strip():
        return None, ""
    try:
        resource = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, MALFORMED
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return None, MALFORMED
    if resource["resourceType"] not in SCREENED_TYPES:
        return None, OTHER_TYPE
    key = patient_key(resource)
    if key is None:
        return None, NO_PATIENT
    kind = resource["resourceType"]
    if relevant is not None and kind != "Patient":
        test = relevant.get(kind)
        if test is None or not test(resource):
            return None, NOT_READ
    return key, ""


@dataclass
class ReadStats:
    """What was read: lines, and the ones skipped by reason (counts only, never content)."""

    files: int = 0
    bytes: int = 0
    lines: int = 0
    kept: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def count(self, why: str) -> None:
        self.skipped[why] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "lines": self.lines,
            "resources_screened": self.kept,
            "malformed_lines": self.skipped[MALFORMED],
            "without_patient_reference": self.skipped[NO_PATIENT],
            "other_resource_types": self.skipped[OTHER_TYPE],
            "not_read_by_rules": self.skipped[NOT_READ],
        }


def bucket_of(patient_id: str, buckets: int) -> int:
    """A stable bucket for a patient (crc32, not ``hash``: the same in every process)."""
    return zlib.crc32(patient_id.encode()) % buckets


def bucket_count(total_bytes: int) -> int:
    return max(1, min(MAX_BUCKETS, -(-total_bytes // SPILL_CHUNK)))


def grouped_by_patient(
    files: list[Path],
    stats: ReadStats,
    *,
    spill_dir: str | None = None,
    relevant: Relevance | None = None,
    on_bytes: Callable[[int], None] | None = None,
    on_bucket: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[str, list[bytes]]]:
    """Each patient's lines, patient by patient, without holding the export in memory.

    Pass one spills every kept line to one of N temporary bucket files chosen by a hash of
    its patient id (N grows with the export, about 32 MiB of input per bucket); pass two
    reads one bucket at a time and groups it in memory. Memory is bounded by the largest
    bucket, not by the export. The temporary files are removed when the iterator ends.
    """
    sizes = [p.stat().st_size for p in files]
    buckets = bucket_count(sum(sizes))
    stats.files = len(files)
    with tempfile.TemporaryDirectory(prefix="tpi-screen-", dir=spill_dir) as tmp:
        paths = [Path(tmp) / f"bucket-{i:04d}" for i in range(buckets)]
        handles: dict[int, IO[bytes]] = {}
        try:
            for path, size in zip(files, sizes, strict=True):
                with open_lines(path) as source:
                    # bytes of the file on disk read so far (compressed ones: compressed)
                    raw = source.fileobj if isinstance(source, gzip.GzipFile) else source
                    reported = 0
                    for line in source:
                        stats.lines += 1
                        if on_bytes is not None and not stats.lines % PROGRESS_LINES:
                            position = raw.tell()  # type: ignore[union-attr]
                            on_bytes(position - reported)
                            reported = position
                        key, why = classify_line(line, relevant)
                        if key is None:
                            if why:
                                stats.count(why)
                            continue
                        stats.kept += 1
                        index = bucket_of(key, buckets)
                        handle = handles.get(index)
                        if handle is None:
                            handle = handles[index] = paths[index].open("wb")
                        handle.write(key.encode() + b"\t" + line.rstrip(b"\r\n") + b"\n")
                stats.bytes += size
                if on_bytes is not None:
                    on_bytes(size - reported)
        finally:
            for handle in handles.values():
                handle.close()
        for index, path in enumerate(paths):
            if on_bucket is not None:
                on_bucket(index, buckets)
            if index not in handles:
                continue
            groups: dict[str, list[bytes]] = {}
            with path.open("rb") as spilled:
                for record in spilled:
                    key, _, line = record.rstrip(b"\n").partition(b"\t")
                    groups.setdefault(key.decode(), []).append(line)
            os.unlink(path)
            for patient_id in groups:
                yield patient_id, groups[patient_id]
