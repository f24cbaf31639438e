"""Structured JSON logs: one line per event, and never a secret or patient data.

What may appear: service ids, hookInstance, status, durations, counts, topics, reasons
chosen by our code. What never appears: tokens, JWTs, URLs with queries, patient ids,
names, identifiers or resource content.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if isinstance(record.msg, dict):
            fields.update(record.msg)
        else:
            fields["message"] = record.getMessage()
        if record.exc_info:
            fields["error"] = record.exc_info[0].__name__ if record.exc_info[0] else "unknown"
        return json.dumps(fields, ensure_ascii=False, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    """Our loggers write JSON lines to stderr (gunicorn passes stderr through)."""
    logger = logging.getLogger("cds_service")
    if any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def safe_id(value: Any) -> str | None:
    """A caller-supplied id fit for a log line (a UUID-like token), else None."""
    return value if isinstance(value, str) and SAFE_ID.match(value) else None
