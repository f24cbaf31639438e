"""Structured JSON logs: one line per event, and never a secret or patient data.

What may appear: service ids, hookInstance, status, durations, counts, topics, reasons
chosen by our code. What never appears: tokens, JWTs, URLs with queries, patient ids,
names, identifiers or resource content.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import orjson

SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; on every request's path, so it is kept cheap (orjson)."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.gmtime(record.created)
        fields: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if isinstance(record.msg, dict):
            fields.update(record.msg)
        else:
            fields["message"] = record.getMessage()
        if record.exc_info:
            fields["error"] = record.exc_info[0].__name__ if record.exc_info[0] else "unknown"
        return orjson.dumps(fields, default=str).decode()


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
