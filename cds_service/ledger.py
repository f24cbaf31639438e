"""Cards sent, counted per day, service, topic, rule ids and indicator: what the
governance report sets feedback against. Nothing about any patient is in it.

Counts gather in the worker's memory and go to the store every 10 seconds and when the
worker exits, in a thread of their own: a hook call never waits for them. A worker killed
outright loses at most its last 10 seconds of counts (the cards themselves were sent).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from cds_service.store import FeedbackStore, card_counts_table

log = logging.getLogger(__name__)
FLUSH_EVERY_SECONDS = 10.0
Key = tuple[str, str, str, str, str]  # day, service, topic, rules, indicator
_LEDGERS: weakref.WeakSet[CardLedger] = weakref.WeakSet()


def flush_all() -> None:
    """gunicorn's worker_exit hook: this worker's last counts go to the store."""
    for ledger in list(_LEDGERS):
        ledger.flush()


class CardLedger:
    def __init__(self, store: FeedbackStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._counts: Counter[Key] = Counter()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        _LEDGERS.add(self)

    def count(self, service_id: str, cards: Iterable[dict[str, Any]]) -> None:
        day = datetime.fromtimestamp(self.clock(), UTC).date().isoformat()
        with self._lock:
            for card in cards:
                rules = " ".join((card.get("extension") or {}).get("tpi-rules") or [])
                topic = card["source"]["topic"]["code"]
                self._counts[(day, service_id, topic, rules, card["indicator"])] += 1
            if self._timer is None:
                # Counts waiting: stored within FLUSH_EVERY_SECONDS, even if no call follows.
                self._timer = threading.Timer(FLUSH_EVERY_SECONDS, self._flush_in_background)
                self._timer.daemon = True
                self._timer.start()

    def _flush_in_background(self) -> None:
        with self._lock:
            self._timer = None
        self.flush()
        with self._lock:
            if self._counts and self._timer is None:  # the store was down: try again later
                self._timer = threading.Timer(FLUSH_EVERY_SECONDS, self._flush_in_background)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> int:
        """Add the gathered counts to the store; kept for the next flush if it fails."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
        if not counts:
            return 0
        rows = [
            {
                "day": day,
                "service_id": service,
                "topic": topic,
                "rules": rules,
                "indicator": indicator,
                "count": count,
            }
            for (day, service, topic, rules, indicator), count in counts.items()
        ]
        try:
            self.store.ensure_schema()
            dialect = self.store.engine.dialect.name
            make = postgresql_insert if dialect == "postgresql" else sqlite_insert
            statement = make(card_counts_table)
            statement = statement.on_conflict_do_update(
                index_elements=[c.name for c in card_counts_table.primary_key.columns],
                set_={"count": card_counts_table.c.count + statement.excluded["count"]},
            )
            with self.store.engine.begin() as connection:
                connection.execute(statement, rows)
        except Exception as exc:  # the store is down: keep the counts for the next try
            with self._lock:
                self._counts.update(counts)
            log.warning("card counts not stored now (%s): kept for later", type(exc).__name__)
            return 0
        return sum(counts.values())
