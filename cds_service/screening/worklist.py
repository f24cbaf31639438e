"""One worklist row per patient: the patient-view advice and the cap and interval facts.

``screen_patient`` is a pure function of (the patient's NDJSON lines, today, the engine
settings), so the embedded engine and Spark give the same row for the same patient. The
lines are sorted before they are read: whichever order a shuffle delivered them in, the
record is the same.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from cards import Engine, OrderContext
from cards.card import RULES_EXTENSION
from cards.eligibility import cap_ends, interval_ends, session_cap, too_soon
from cards.facts import Facts
from cds_service.settings import EngineSettings

COLUMNS = (
    "patient_id",
    "findings",
    "sessions_12m",
    "last_session",
    "last_clinical_response",
    "last_payer_response",
    "payer_profile",
    "payer_origin",
    "pt_integration",
    "specialist_referral",
    "eligibility",
    "cap_ends",
    "interval_ends",
    "next_session_on",
    "suggested_action",
)
DATE_COLUMNS = frozenset({"last_session", "cap_ends", "interval_ends", "next_session_on"})
TOPIC_COLUMNS = {"pt-integration": "pt_integration", "specialist-referral": "specialist_referral"}
USER = "Practitioner/tpi-cds-screen"
NO_ACTION = "none"


@dataclass(frozen=True)
class PatientResult:
    """What screening one patient gave: a row (None without a TPI in 365 days) and the
    resources the record could not use (counts only)."""

    row: dict[str, Any] | None
    invalid: int
    failed: bool = False


def settings_key(settings: EngineSettings) -> str:
    """The engine settings as JSON text: hashable, and cheap to send to Spark executors."""
    return json.dumps(
        {
            "profile": settings.profile,
            "policy_overrides": dict(settings.policy_overrides),
            "valueset_dir": settings.valueset_dir,
            "timezone": settings.timezone,
        },
        sort_keys=True,
    )


@lru_cache(maxsize=4)
def engine_for(key: str) -> Engine:
    """One engine per process and settings (value sets are loaded once; a package
    without them is refused by ``Terminology.load``)."""
    return EngineSettings(**json.loads(key)).build_engine()


def screen_patient(
    patient_id: str, lines: Iterable[bytes | str], today: date, engine: Engine
) -> PatientResult:
    """The worklist row of one patient, as the patient-view service would advise today."""
    resources = []
    for line in sorted(x.encode() if isinstance(x, str) else x for x in lines):
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict):
            resources.append(value)
    record = engine.record(patient_id, resources)
    invalid = sum(record.skipped.values())
    orders = OrderContext(hook="patient-view", patient_id=patient_id, user_reference=USER)
    facts = Facts(record, orders, engine.terminology, engine.policies, today)
    sessions = facts.sessions_last_year
    if not sessions:
        return PatientResult(None, invalid)
    advised = engine.advise_keyed(record, orders, today)
    by_topic: dict[str, tuple[str, ...]] = {a.topic: a.rules for a in advised}
    eligibility = []
    cap_day = None
    if session_cap(facts) is not None:
        eligibility.append("E3")
        cap_day = cap_ends(facts)
    if too_soon(facts) is not None:
        eligibility.append("E4")
    interval_day = interval_ends(facts)
    next_day = max(d for d in (today, cap_day, interval_day) if d is not None)
    response = facts.responses[-1] if facts.responses else None
    payer = facts.payer
    rules = sorted({*eligibility, *(r for a in advised for r in a.rules)})
    actions = []
    if next_day > today:
        actions.append(f"No TPI before {next_day.isoformat()}")
    actions.extend(_action(a.card) for a in advised)
    row = {
        "patient_id": patient_id,
        "findings": " ".join(rules),
        "sessions_12m": len(sessions),
        "last_session": sessions[-1].day,
        "last_clinical_response": response.clinical.value if response else "unknown",
        "last_payer_response": response.payer.value if response else "unknown",
        "payer_profile": payer.policy.name,
        "payer_origin": "coverage" if payer.from_coverage else "site default",
        "pt_integration": " ".join(by_topic.get("pt-integration", ())),
        "specialist_referral": " ".join(by_topic.get("specialist-referral", ())),
        "eligibility": " ".join(eligibility),
        "cap_ends": cap_day,
        "interval_ends": interval_day,
        "next_session_on": next_day,
        "suggested_action": "; ".join(actions) or NO_ACTION,
    }
    return PatientResult(row, invalid)


def screen_safely(
    patient_id: str, lines: Iterable[bytes | str], today: date, engine: Engine
) -> PatientResult:
    """``screen_patient``, with a patient the engine fails on counted instead of ending the
    whole run (the error is not printed: it may quote the record)."""
    try:
        return screen_patient(patient_id, lines, today, engine)
    except Exception:
        return PatientResult(None, 0, failed=True)


def _action(card: Mapping[str, Any]) -> str:
    """What a card asks for: its recommended suggestion's label, else its summary."""
    for suggestion in card.get("suggestions") or []:
        if suggestion.get("isRecommended"):
            return str(suggestion["label"])
    return str(card["summary"])


def card_rules(card: Mapping[str, Any]) -> list[str]:
    """The rule ids a card carries in its extension."""
    return list((card.get("extension") or {}).get(RULES_EXTENSION) or [])


# --------------------------------------------------------------------------- output


def sorted_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: r["patient_id"])


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """The worklist as CSV: fixed columns, ISO dates, ``\\n`` line ends."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else _text(row[c]) for c in COLUMNS])
    return out.getvalue()


def _text(value: Any) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


def write_parquet(rows: Sequence[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = []
    for column in COLUMNS:
        if column in DATE_COLUMNS:
            kind = pa.date32()
        elif column == "sessions_12m":
            kind = pa.int32()
        else:
            kind = pa.string()
        fields.append(pa.field(column, kind, nullable=column != "patient_id"))
    schema = pa.schema(fields)
    table = pa.Table.from_pydict({c: [r[c] for r in rows] for c in COLUMNS}, schema=schema)
    pq.write_table(table, path)


def finding_counts(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for row in rows:
        counts.update(row["findings"].split())
    return dict(sorted(counts.items()))


def write_outputs(
    rows: Sequence[dict[str, Any]], summary: dict[str, Any], out_dir: Path
) -> dict[str, Path]:
    """worklist.csv, worklist.parquet and summary.json in ``out_dir`` (created)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out_dir / "worklist.csv",
        "parquet": out_dir / "worklist.parquet",
        "summary": out_dir / "summary.json",
    }
    paths["csv"].write_text(csv_text(rows), encoding="utf-8")
    write_parquet(rows, paths["parquet"])
    paths["summary"].write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return paths
