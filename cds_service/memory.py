"""Card memory (section 3.5 of the rules): the same card not twice in an ordering session,
and snoozes that clinicians set through feedback.

What is kept is keyed hashes (HMAC-SHA256 with a deployment secret) and the rule ids,
topics and times needed to use them: never a patient id, name or resource content.

- For each card sent: its uuid, a *repeat key* (tenant + patient id + TPI draft order ids +
  topic + rule ids + evidence fingerprint) and, for the snoozable topics, the snooze key of
  each of its findings, kept for the repeat window.
- For each snooze: its key (tenant + patient id + topic + snooze group), the rule, the
  reason and its start, kept until it ends.

The tenant (the JWT issuer, else the request's fhirServer) keeps two EHRs that use the same
patient ids apart. Memory lives in the SQL store that keeps feedback, or in Redis; when it
cannot be reached, cards are sent as if nothing were remembered, within a small time budget,
and the degradation is logged once.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from cards.card import SNOOZABLE_TOPICS, SNOOZE_DAYS, AdvisedCard, snooze_group
from cards.engine import Advisor
from cds_service.replay import Budget, StorePausedError
from cds_service.settings import MemorySettings, secret_bytes
from cds_service.store import (
    FeedbackEntry,
    FeedbackStore,
    memory_secret_table,
    sent_cards_table,
    snoozes_table,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
SECRET_NAME = "card-memory"
REDIS_PREFIX = "tpi-cds:memory:"
OVERRIDE_SYSTEM = "urn:tpi-cds:override"
PURGE_EVERY_SECONDS = 300.0


@dataclass(frozen=True)
class SentCard:
    """What is remembered of one card sent: nothing in it names the patient."""

    card_uuid: str
    repeat_key: str
    service_id: str
    topic: str
    rules: tuple[str, ...]
    indicator: str
    snooze_keys: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Snooze:
    key: str
    topic: str
    rule: str
    reason: str
    started_at: float
    expires_at: float


@dataclass(frozen=True)
class Recall:
    """What memory holds for one request: repeat keys sent within the window, and the start
    of each snooze still running."""

    seen: frozenset[str] = frozenset()
    snoozes: dict[str, float] = field(default_factory=dict)


class MemoryBackend(Protocol):
    def stored_secret(self) -> bytes: ...
    def recall(
        self, repeat_keys: Sequence[str], snooze_keys: Sequence[str], since: float, now: float
    ) -> Recall: ...
    def remember(self, cards: Sequence[SentCard], now: float, expires_at: float) -> None: ...
    def exchange(
        self,
        repeat_keys: Sequence[str],
        snooze_keys: Sequence[str],
        since: float,
        now: float,
        expires_at: float,
        decide: Callable[[Recall], list[SentCard] | None],
    ) -> Recall: ...
    def sent_cards(self, uuids: Sequence[str]) -> dict[str, SentCard]: ...
    def add_snoozes(self, snoozes: Sequence[Snooze]) -> None: ...
    def purge(self, now: float) -> int: ...
    def stats(self, now: float) -> dict[str, Any]: ...
    def forget_all(self) -> int: ...


class SqlMemory:
    """Memory in the feedback store's database (SQLite by default, PostgreSQL by URL)."""

    def __init__(self, store: FeedbackStore) -> None:
        self.store = store
        # The driver's placeholder: SQLite's "?", psycopg's "%s".
        self._mark = "?" if store.engine.dialect.paramstyle == "qmark" else "%s"

    def stored_secret(self) -> bytes:
        """The deployment's secret: made once by whichever process asks first."""
        self.store.ensure_schema()
        table = memory_secret_table
        with self.store.engine.begin() as connection:
            found = connection.execute(
                select(table.c.secret).where(table.c.name == SECRET_NAME)
            ).scalar()
        if found:
            return bytes.fromhex(found)
        try:
            with self.store.engine.begin() as connection:
                connection.execute(
                    insert(table), {"name": SECRET_NAME, "secret": secrets.token_hex(32)}
                )
        except IntegrityError:
            pass  # another worker made it first: read theirs
        with self.store.engine.begin() as connection:
            found = connection.execute(
                select(table.c.secret).where(table.c.name == SECRET_NAME)
            ).scalar_one()
        return bytes.fromhex(found)

    def recall(
        self, repeat_keys: Sequence[str], snooze_keys: Sequence[str], since: float, now: float
    ) -> Recall:
        return self.exchange(repeat_keys, snooze_keys, since, now, now, lambda _: None)

    def remember(self, cards: Sequence[SentCard], now: float, expires_at: float) -> None:
        self.exchange([], [], now, now, expires_at, lambda _: list(cards))

    def exchange(
        self,
        repeat_keys: Sequence[str],
        snooze_keys: Sequence[str],
        since: float,
        now: float,
        expires_at: float,
        decide: Callable[[Recall], list[SentCard] | None],
    ) -> Recall:
        """Read what is remembered, let ``decide`` choose what to remember, write it: one
        connection. The reads run before the write transaction begins (SQLite's driver
        begins it at the INSERT), so no read lock is ever upgraded."""
        self.store.ensure_schema()
        seen: frozenset[str] = frozenset()
        snoozes: dict[str, float] = {}
        # The hook's hot path: plain SQL on SQLAlchemy's pooled connection. Core would
        # compile each statement with its expanding IN lists: about 0.4 ms of the 0.5 ms
        # this call took (measured), where the budget for memory is 1 ms.
        mark = self._mark
        with self.store.engine.connect() as connection:
            if repeat_keys:
                rows = connection.exec_driver_sql(
                    f"SELECT repeat_key FROM {sent_cards_table.name} WHERE repeat_key IN "
                    f"({', '.join([mark] * len(repeat_keys))}) AND sent_at >= {mark}",
                    (*repeat_keys, since),
                )
                seen = frozenset(row[0] for row in rows)
            if snooze_keys:
                rows = connection.exec_driver_sql(
                    f"SELECT snooze_key, started_at FROM {snoozes_table.name} WHERE snooze_key "
                    f"IN ({', '.join([mark] * len(snooze_keys))}) AND expires_at > {mark}",
                    (*snooze_keys, now),
                )
                snoozes = {key: started for key, started in rows}
            recall = Recall(seen, snoozes)
            cards = decide(recall)
            if cards:
                connection.exec_driver_sql(
                    f"INSERT INTO {sent_cards_table.name} (card_uuid, repeat_key, service_id, "
                    "topic, rules, indicator, snooze_keys, sent_at, expires_at) VALUES "
                    f"({', '.join([mark] * 9)})",
                    [
                        (
                            c.card_uuid,
                            c.repeat_key,
                            c.service_id,
                            c.topic,
                            " ".join(c.rules),
                            c.indicator,
                            json.dumps(c.snooze_keys) if c.snooze_keys else None,
                            now,
                            expires_at,
                        )
                        for c in cards
                    ],
                )
            connection.commit()
        return recall

    def sent_cards(self, uuids: Sequence[str]) -> dict[str, SentCard]:
        if not uuids:
            return {}
        table = sent_cards_table
        with self.store.engine.connect() as connection:
            rows = connection.execute(
                select(table).where(table.c.card_uuid.in_(list(uuids)))
            ).mappings()
            return {row["card_uuid"]: _sent_card(row) for row in rows}

    def add_snoozes(self, snoozes: Sequence[Snooze]) -> None:
        """A later snooze of the same finding replaces the earlier one."""
        if not snoozes:
            return
        with self.store.engine.begin() as connection:
            connection.execute(
                delete(snoozes_table).where(
                    snoozes_table.c.snooze_key.in_([s.key for s in snoozes])
                )
            )
            connection.execute(
                insert(snoozes_table),
                [
                    {
                        "snooze_key": s.key,
                        "topic": s.topic,
                        "rule": s.rule,
                        "reason": s.reason,
                        "started_at": s.started_at,
                        "expires_at": s.expires_at,
                    }
                    for s in snoozes
                ],
            )

    def purge(self, now: float) -> int:
        with self.store.engine.begin() as connection:
            removed = connection.execute(
                delete(sent_cards_table).where(sent_cards_table.c.expires_at <= now)
            ).rowcount
            removed += connection.execute(
                delete(snoozes_table).where(snoozes_table.c.expires_at <= now)
            ).rowcount
        return removed

    def stats(self, now: float) -> dict[str, Any]:
        with self.store.engine.connect() as connection:
            cards = connection.execute(
                select(func.count(), func.min(sent_cards_table.c.sent_at)).where(
                    sent_cards_table.c.expires_at > now
                )
            ).one()
            by_topic = connection.execute(
                select(snoozes_table.c.topic, func.count(), func.min(snoozes_table.c.started_at))
                .where(snoozes_table.c.expires_at > now)
                .group_by(snoozes_table.c.topic)
            ).all()
        snoozes = {topic: count for topic, count, _ in by_topic}
        starts = [start for _, _, start in by_topic if start is not None]
        if cards[1] is not None:
            starts.append(cards[1])
        return _stats(cards[0], snoozes, min(starts) if starts else None)

    def forget_all(self) -> int:
        with self.store.engine.begin() as connection:
            removed = connection.execute(delete(sent_cards_table)).rowcount
            removed += connection.execute(delete(snoozes_table)).rowcount
        return removed


def _sent_card(row: Any) -> SentCard:
    keys = row["snooze_keys"]
    if isinstance(keys, str):
        keys = json.loads(keys)
    return SentCard(
        card_uuid=row["card_uuid"],
        repeat_key=row["repeat_key"],
        service_id=row["service_id"],
        topic=row["topic"],
        rules=tuple(row["rules"].split()),
        indicator=row["indicator"],
        snooze_keys=dict(keys or {}),
    )


def _stats(cards: int, snoozes: dict[str, int], oldest: float | None) -> dict[str, Any]:
    return {
        "cards": cards,
        "snoozes": sum(snoozes.values()),
        "snoozesByTopic": dict(sorted(snoozes.items())),
        "entries": cards + sum(snoozes.values()),
        "oldestEntry": datetime.fromtimestamp(oldest, UTC).isoformat() if oldest else None,
    }


class RedisMemory:
    """Memory in Redis: every entry a key with its own expiry, so Redis itself purges."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)

    def stored_secret(self) -> bytes:
        key = f"{REDIS_PREFIX}secret"
        self.client.set(key, secrets.token_hex(32), nx=True)
        return bytes.fromhex(self.client.get(key).decode())  # type: ignore[union-attr]

    def recall(
        self, repeat_keys: Sequence[str], snooze_keys: Sequence[str], since: float, now: float
    ) -> Recall:
        names = [f"{REDIS_PREFIX}sent:{k}" for k in repeat_keys]
        names += [f"{REDIS_PREFIX}snooze:{k}" for k in snooze_keys]
        if not names:
            return Recall()
        values = self.client.mget(names)
        sent_values = values[: len(repeat_keys)]
        seen = {
            key
            for key, value in zip(repeat_keys, sent_values, strict=True)
            if value is not None and float(value) >= since
        }
        snoozes = {
            key: float(json.loads(value)["start"])
            for key, value in zip(snooze_keys, values[len(repeat_keys) :], strict=True)
            if value is not None
        }
        return Recall(frozenset(seen), snoozes)

    def exchange(
        self,
        repeat_keys: Sequence[str],
        snooze_keys: Sequence[str],
        since: float,
        now: float,
        expires_at: float,
        decide: Callable[[Recall], list[SentCard] | None],
    ) -> Recall:
        recall = self.recall(repeat_keys, snooze_keys, since, now)
        cards = decide(recall)
        if cards:
            self.remember(cards, now, expires_at)
        return recall

    def remember(self, cards: Sequence[SentCard], now: float, expires_at: float) -> None:
        if not cards:
            return
        until = int(expires_at) + 1
        pipe = self.client.pipeline(transaction=False)
        for c in cards:
            entry = {
                "repeat": c.repeat_key,
                "service": c.service_id,
                "topic": c.topic,
                "rules": list(c.rules),
                "indicator": c.indicator,
                "snooze": c.snooze_keys,
                "sent": now,
            }
            pipe.set(f"{REDIS_PREFIX}card:{c.card_uuid}", json.dumps(entry), exat=until)
            pipe.set(f"{REDIS_PREFIX}sent:{c.repeat_key}", repr(now), exat=until)
        pipe.execute()

    def sent_cards(self, uuids: Sequence[str]) -> dict[str, SentCard]:
        if not uuids:
            return {}
        values = self.client.mget([f"{REDIS_PREFIX}card:{u}" for u in uuids])
        found = {}
        for card_uuid, value in zip(uuids, values, strict=True):
            if value is None:
                continue
            entry = json.loads(value)
            found[card_uuid] = SentCard(
                card_uuid=card_uuid,
                repeat_key=entry["repeat"],
                service_id=entry["service"],
                topic=entry["topic"],
                rules=tuple(entry["rules"]),
                indicator=entry["indicator"],
                snooze_keys=dict(entry.get("snooze") or {}),
            )
        return found

    def add_snoozes(self, snoozes: Sequence[Snooze]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for s in snoozes:
            value = {"topic": s.topic, "rule": s.rule, "reason": s.reason, "start": s.started_at}
            pipe.set(f"{REDIS_PREFIX}snooze:{s.key}", json.dumps(value), exat=int(s.expires_at) + 1)
        pipe.execute()

    def purge(self, now: float) -> int:
        return 0  # every key carries its own expiry

    def _keys(self, kind: str) -> Iterable[bytes]:
        return self.client.scan_iter(match=f"{REDIS_PREFIX}{kind}:*", count=1000)

    def stats(self, now: float) -> dict[str, Any]:
        cards, oldest = 0, None
        for name in self._keys("card"):
            value = self.client.get(name)
            if value is None:
                continue
            cards += 1
            sent = float(json.loads(value)["sent"])
            oldest = sent if oldest is None else min(oldest, sent)
        snoozes: Counter[str] = Counter()
        for name in self._keys("snooze"):
            value = self.client.get(name)
            if value is None:
                continue
            entry = json.loads(value)
            snoozes[entry["topic"]] += 1
            oldest = entry["start"] if oldest is None else min(oldest, entry["start"])
        return _stats(cards, dict(snoozes), oldest)

    def forget_all(self) -> int:
        removed = 0
        for kind in ("card", "sent", "snooze"):
            names = list(self._keys(kind))
            for start in range(0, len(names), 500):
                removed += self.client.delete(*names[start : start + 500])
        # The secret stays: a reset forgets entries, it does not re-key what comes next.
        return removed


class CardMemory:
    """The service's use of memory: filter the engine's cards, remember what was sent,
    turn snooze feedback into snoozes. Never raises for a store that is down."""

    def __init__(
        self, backend: MemoryBackend, settings: MemorySettings, budget: Budget | None = None
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.budget = budget or Budget(
            seconds=settings.budget_seconds,
            pause=10.0,
            threads=4,
            fallback="card memory off (cards sent as if nothing were remembered)",
        )
        self._secret = secret_bytes(settings.secret)
        # The time memory goes by (seconds since the epoch); tests set it to their own day.
        self.clock: Callable[[], float] = time.time
        # Told whether each store call succeeded: the service's metrics.
        self.on_store: Callable[[bool], None] = lambda ok: None
        self._healthy = True
        self._retry_after = 0.0
        self._lock = threading.Lock()
        self._next_purge = time.monotonic() + PURGE_EVERY_SECONDS
        self._purging = False

    @property
    def repeat_seconds(self) -> float:
        return self.settings.repeat_hours * 3600.0

    # -- keys -------------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        assert self._secret is not None
        return hmac.digest(self._secret, "\x1f".join(parts).encode(), "sha256").hex()

    def repeat_key(self, tenant: str, patient_id: str, drafts: str, card: AdvisedCard) -> str:
        return self._key(
            "repeat", tenant, patient_id, drafts, card.topic, " ".join(card.rules), card.fingerprint
        )

    def snooze_key(self, tenant: str, patient_id: str, topic: str, group: str) -> str:
        return self._key("snooze", tenant, patient_id, topic, group)

    # -- calls within the budget --------------------------------------------------------

    def _call(self, what: str, work: Callable[[], T]) -> tuple[bool, T | None]:
        """(True, ``work``'s result), or (False, None) when memory is down: logged once
        per outage, and not asked again for a few seconds."""
        if time.monotonic() < self._retry_after:
            return False, None
        try:
            if self._secret is None:
                self._secret = self.budget.call(self.backend.stored_secret)
            result = self.budget.call(work)
        except StorePausedError:
            return False, None
        except Exception as exc:  # any failure of the store degrades, never fails
            self._down(what, exc)
            self.on_store(False)
            return False, None
        self.on_store(True)
        if not self._healthy:
            with self._lock:
                if not self._healthy:
                    self._healthy = True
                    log.warning("card memory is back: repeats and snoozes apply again")
        return True, result

    def _down(self, what: str, exc: BaseException) -> None:
        with self._lock:
            self._retry_after = time.monotonic() + 5.0
            if self._healthy:
                self._healthy = False
                log.error(
                    "card memory unavailable (%s while %s): cards are sent as if nothing "
                    "were remembered until it is back",
                    type(exc).__name__,
                    what,
                )

    # -- the hook ---------------------------------------------------------------------

    def select(
        self,
        advisor: Advisor,
        *,
        tenant: str,
        patient_id: str,
        drafts: Sequence[str],
        order_hook: bool,
        service_id: str,
        observe: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """The cards to send: snoozed findings left out, repeats left out (order hooks,
        never safety), and what is sent remembered — in one call to the store (two when a
        snooze is running, as the engine is asked again without the snoozed findings)."""
        advised = advisor.cards()
        if not advised or not self.settings.enabled:
            return [a.card for a in advised]
        if self._secret is None and not self._call("reading the secret", lambda: None)[0]:
            return [a.card for a in advised]
        keys = _PatientKeys(self, tenant, patient_id, " ".join(sorted(drafts)))
        now = self.clock()
        since, expires = now - self.repeat_seconds, now + self.repeat_seconds
        snooze_keys = {
            keys.snooze(a.topic, snooze_group(rule)): snooze_group(rule)
            for a in advised
            if a.topic in SNOOZABLE_TOPICS
            for rule in a.rules
        }
        chosen: list[list[AdvisedCard]] = []
        active: set[str] = set()

        def decide(recall: Recall) -> list[SentCard] | None:
            """What to remember, or None while a running snooze changes the cards."""
            active.update(
                snooze_keys[key]
                for key, started in recall.snoozes.items()
                if not advisor.evidence_since(datetime.fromtimestamp(started, UTC))
            )
            if active:
                return None
            chosen.append(self._unrepeated(advised, keys, recall.seen, order_hook, observe))
            return [keys.sent_card(a, service_id) for a in chosen[0]]

        repeat_keys = [keys.repeat(a) for a in advised] if order_hook else []
        ok, _ = self._call(
            "recalling",
            lambda: self.backend.exchange(
                repeat_keys, list(snooze_keys), since, now, expires, decide
            ),
        )
        if not ok:
            return [a.card for a in advised]
        if active:
            before = {a.topic: a.rules for a in advised}
            advised = advisor.cards(frozenset(active))
            after = {a.topic: a.rules for a in advised}
            observe["snoozedTopics"] = [t for t, r in before.items() if after.get(t) != r]
            chosen.clear()

            def decide_again(recall: Recall) -> list[SentCard]:
                chosen.append(self._unrepeated(advised, keys, recall.seen, order_hook, observe))
                return [keys.sent_card(a, service_id) for a in chosen[0]]

            repeat_keys = [keys.repeat(a) for a in advised] if order_hook else []
            ok, _ = self._call(
                "recalling",
                lambda: self.backend.exchange(repeat_keys, [], since, now, expires, decide_again),
            )
            if not ok:
                return [a.card for a in advised]
        self._maybe_purge()
        return [a.card for a in chosen[0]]

    @staticmethod
    def _unrepeated(
        advised: Sequence[AdvisedCard],
        keys: _PatientKeys,
        seen: frozenset[str],
        order_hook: bool,
        observe: dict[str, Any],
    ) -> list[AdvisedCard]:
        """Cards not sent before in this ordering session; safety cards always go."""
        if not order_hook:
            return list(advised)
        kept = [a for a in advised if a.topic == "tpi-safety" or keys.repeat(a) not in seen]
        if len(kept) < len(advised):
            shown = {id(a) for a in kept}
            observe["repeatedTopics"] = [a.topic for a in advised if id(a) not in shown]
        return kept

    # -- feedback -----------------------------------------------------------------------

    def known_cards(self, uuids: Sequence[str]) -> dict[str, SentCard]:
        """The remembered cards among these uuids (empty when memory is down)."""
        if not self.settings.enabled:
            return {}
        _, found = self._call("reading cards for feedback", lambda: self.backend.sent_cards(uuids))
        return found or {}

    def snooze_from_feedback(
        self, entries: Sequence[FeedbackEntry], known: dict[str, SentCard]
    ) -> list[str]:
        """Snoozes for overrides with a snooze reason on remembered PT and referral cards:
        the topic of each entry that started one (none when they could not be stored)."""
        now = self.clock()
        snoozes: dict[str, Snooze] = {}
        topics: list[str] = []
        for entry in entries:
            days = snooze_days(entry)
            card = known.get(entry.card_uuid)
            if days is None or card is None or card.topic not in SNOOZABLE_TOPICS:
                continue
            started = min(_epoch(entry.outcome_timestamp), now)
            expires = started + days * 86400.0
            if expires <= now:
                continue
            reason = f"snooze-{days}"
            topics.append(card.topic)
            for group, key in card.snooze_keys.items():
                snoozes[key] = Snooze(key, card.topic, group, reason, started, expires)
        if not snoozes:
            return []
        ok, _ = self._call(
            "storing snoozes", lambda: self.backend.add_snoozes(list(snoozes.values()))
        )
        return topics if ok else []

    # -- upkeep -----------------------------------------------------------------------

    def _maybe_purge(self) -> None:
        """Expired entries go in a thread of their own, never on a request's time."""
        if time.monotonic() < self._next_purge or self._purging:
            return
        with self._lock:
            if self._purging:
                return
            self._purging = True
            self._next_purge = time.monotonic() + PURGE_EVERY_SECONDS

        def purge() -> None:
            try:
                self.backend.purge(self.clock())
            except Exception as exc:  # logged; the next purge tries again
                log.warning("card memory purge failed (%s)", type(exc).__name__)
            finally:
                self._purging = False

        threading.Thread(target=purge, name="memory-purge", daemon=True).start()


class _PatientKeys:
    """One request's keys, each computed once: repeat keys per card, snooze keys per
    topic and finding."""

    def __init__(self, memory: CardMemory, tenant: str, patient_id: str, drafts: str) -> None:
        self.memory, self.tenant, self.patient_id, self.drafts = memory, tenant, patient_id, drafts
        self._repeat: dict[int, str] = {}
        self._snooze: dict[tuple[str, str], str] = {}

    def repeat(self, card: AdvisedCard) -> str:
        key = self._repeat.get(id(card))
        if key is None:
            key = self._repeat[id(card)] = self.memory.repeat_key(
                self.tenant, self.patient_id, self.drafts, card
            )
        return key

    def snooze(self, topic: str, group: str) -> str:
        key = self._snooze.get((topic, group))
        if key is None:
            key = self._snooze[(topic, group)] = self.memory.snooze_key(
                self.tenant, self.patient_id, topic, group
            )
        return key

    def sent_card(self, card: AdvisedCard, service_id: str) -> SentCard:
        snoozable = card.topic in SNOOZABLE_TOPICS
        return SentCard(
            card_uuid=card.card["uuid"],
            repeat_key=self.repeat(card),
            service_id=service_id,
            topic=card.topic,
            rules=card.rules,
            indicator=card.indicator,
            snooze_keys={
                snooze_group(r): self.snooze(card.topic, snooze_group(r)) for r in card.rules
            }
            if snoozable
            else {},
        )


def snooze_days(entry: FeedbackEntry) -> int | None:
    """30 or 90 for an override with one of the service's snooze reasons, else None."""
    if entry.outcome != "overridden" or not entry.override_reason:
        return None
    reason = entry.override_reason.get("reason") or {}
    system = reason.get("system")
    if system not in (None, OVERRIDE_SYSTEM):
        return None
    return SNOOZE_DAYS.get(str(reason.get("code")))


def _epoch(timestamp: str) -> float:
    value = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def backend_for(store: FeedbackStore, redis_url: str | None) -> SqlMemory | RedisMemory:
    return RedisMemory(redis_url) if redis_url else SqlMemory(store)
