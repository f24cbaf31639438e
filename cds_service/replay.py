"""Replay protection: a token's ``jti`` is accepted once within its lifetime, everywhere.

Seen ids live where every worker and replica can see them: the SQL store that keeps
feedback, or Redis when configured. If that store cannot be reached, hook calls must
still be answered: the guard falls back to this process's memory and says so in the log.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as BudgetExceeded
from typing import Protocol, TypeVar

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from cds_service.store import FeedbackStore, StoreUnavailableError, seen_tokens_table

log = logging.getLogger(__name__)
CLEANUP_EVERY = 500
T = TypeVar("T")


class StorePausedError(StoreUnavailableError):
    """The store is not asked for now (already logged when the pause began)."""


class Budget:
    """Runs store calls within a small time budget, and stops asking a store that keeps
    missing it for a while: a database that hangs costs a hook call at most the budget,
    then nothing at all until the pause is over. The degradation is logged once."""

    def __init__(
        self,
        seconds: float = 0.25,
        pause: float = 10.0,
        threads: int = 4,
        fallback: str = "using this process's memory",
    ) -> None:
        self.seconds = seconds
        self.fallback = fallback
        self.pause = pause
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="store-call")
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def call(self, work: Callable[[], T]) -> T:
        """The result of ``work``, or StoreUnavailableError when out of budget or paused."""
        if time.monotonic() < self._paused_until:
            raise StorePausedError("the store missed its time budget recently")
        future = self._pool.submit(work)
        try:
            return future.result(timeout=self.seconds)
        except BudgetExceeded:
            with self._lock:
                if time.monotonic() >= self._paused_until:
                    log.error(
                        "store call took over %.2f s: %s for %.0f s",
                        self.seconds,
                        self.fallback,
                        self.pause,
                    )
                self._paused_until = time.monotonic() + self.pause
            raise StoreUnavailableError("the store did not answer within its budget") from None


class ReplayGuard(Protocol):
    def first_use(self, iss: str, jti: str, expires_at: float) -> bool: ...


def token_key(iss: str, jti: str) -> str:
    """Issuer and jti together, hashed to a fixed size (ids are caller input)."""
    return hashlib.sha256(f"{iss}\x00{jti}".encode()).hexdigest()


class MemoryReplayGuard:
    """This process only: the fallback, and enough for a single-process test."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_use(self, iss: str, jti: str, expires_at: float) -> bool:
        key = token_key(iss, jti)
        now = time.time()
        with self._lock:
            if len(self._seen) > 100_000:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
            if self._seen.get(key, 0) > now:
                return False
            self._seen[key] = expires_at
            return True


class SqlReplayGuard:
    """A row per token in the feedback store: the primary key refuses a second insert."""

    def __init__(self, store: FeedbackStore, leeway: float, budget: Budget | None = None) -> None:
        self.store = store
        self.leeway = leeway
        self.fallback = MemoryReplayGuard()
        self.budget = budget or Budget()
        self._inserts = 0

    def first_use(self, iss: str, jti: str, expires_at: float) -> bool:
        key = token_key(iss, jti)
        keep_until = expires_at + self.leeway

        def record() -> None:
            self.store.ensure_schema()
            with self.store.engine.begin() as connection:
                connection.execute(
                    insert(seen_tokens_table), {"token_key": key, "expires_at": keep_until}
                )

        try:
            self.budget.call(record)
        except IntegrityError:
            return self._expired_then_retry(key, keep_until)
        except (SQLAlchemyError, StoreUnavailableError) as exc:
            if not isinstance(exc, StorePausedError):
                log.error(
                    "replay store unavailable (%s): checking jti in this process only",
                    type(exc).__name__,
                )
            return self.fallback.first_use(iss, jti, expires_at)
        self._inserts += 1
        if self._inserts % CLEANUP_EVERY == 0:
            self._cleanup()
        self.fallback.first_use(iss, jti, expires_at)  # remembered here too, for an outage
        return True

    def _expired_then_retry(self, key: str, keep_until: float) -> bool:
        """A seen id whose lifetime is over may be used again (tokens expire; ids recur)."""
        try:
            with self.store.engine.begin() as connection:
                removed = connection.execute(
                    delete(seen_tokens_table).where(
                        seen_tokens_table.c.token_key == key,
                        seen_tokens_table.c.expires_at < time.time(),
                    )
                ).rowcount
                if not removed:
                    return False
                connection.execute(
                    insert(seen_tokens_table), {"token_key": key, "expires_at": keep_until}
                )
        except SQLAlchemyError:
            return False
        return True

    def _cleanup(self) -> None:
        try:
            with self.store.engine.begin() as connection:
                connection.execute(
                    delete(seen_tokens_table).where(seen_tokens_table.c.expires_at < time.time())
                )
        except SQLAlchemyError:
            pass


class RedisReplayGuard:
    """``SET key NX EXAT exp`` in Redis: atomic across every replica."""

    def __init__(self, url: str, leeway: float) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.leeway = leeway
        self.fallback = MemoryReplayGuard()

    def first_use(self, iss: str, jti: str, expires_at: float) -> bool:
        import redis

        key = f"tpi-cds:jti:{token_key(iss, jti)}"
        try:
            stored = self.client.set(key, b"1", nx=True, exat=int(expires_at + self.leeway) + 1)
        except redis.RedisError as exc:
            log.error(
                "replay store (Redis) unavailable (%s): checking jti in this process only",
                type(exc).__name__,
            )
            return self.fallback.first_use(iss, jti, expires_at)
        return bool(stored)
