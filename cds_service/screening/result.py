"""What an engine returns: the rows, and counts for the summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class ScreenResult:
    rows: list[dict[str, Any]]  # sorted by patient_id
    patients: int  # distinct patients in the export (with at least one screened resource)
    invalid_resources: int  # resources the record could not validate (skipped)
    read: dict[str, Any]  # ReadStats.as_dict()
    failed: int = 0  # patients the engine failed on (counted, not screened)
