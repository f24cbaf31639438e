"""The feedback store: SQL through SQLAlchemy, SQLite by default, PostgreSQL by URL.

An entry is acknowledged only after its transaction has committed: SQLite runs in WAL
mode with synchronous writes so a committed row survives a crash of the process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

metadata = MetaData()

feedback_table = Table(
    "tpi_cds_feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("service_id", String(100), nullable=False, index=True),
    Column("card_uuid", String(64), nullable=False, index=True),
    Column("card_topic", String(40), nullable=True),
    Column("outcome", String(20), nullable=False),
    Column("accepted_suggestions", JSON, nullable=True),
    Column("override_reason", JSON, nullable=True),
    Column("outcome_timestamp", String(64), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    # What card memory knew of the card when its feedback came (null when it did not):
    # lets governance count feedback per rule, not only per topic.
    Column("card_rules", JSON, nullable=True),
    Column("card_indicator", String(20), nullable=True),
)
# Columns added after the first release: a store created earlier gets them at start.
ADDED_FEEDBACK_COLUMNS = {"card_rules": "JSON", "card_indicator": "VARCHAR(20)"}

card_counts_table = Table(
    "tpi_cds_card_counts",
    metadata,
    # Cards sent per day, service, topic, rule ids (space-separated) and indicator: what
    # governance needs to set feedback against, with nothing about any patient in it.
    Column("day", String(10), primary_key=True),
    Column("service_id", String(100), primary_key=True),
    Column("topic", String(40), primary_key=True),
    Column("rules", String(200), primary_key=True),
    Column("indicator", String(20), primary_key=True),
    Column("count", Integer, nullable=False),
)


seen_tokens_table = Table(
    "tpi_cds_seen_jti",
    metadata,
    Column("token_key", String(255), primary_key=True),
    Column("expires_at", Float, nullable=False, index=True),
)


# Card memory (section 3.5 of the rules): keyed hashes only, never a patient id in clear.
memory_secret_table = Table(
    "tpi_cds_memory_secret",
    metadata,
    Column("name", String(20), primary_key=True),
    Column("secret", String(128), nullable=False),
)

sent_cards_table = Table(
    "tpi_cds_sent_cards",
    metadata,
    Column("card_uuid", String(64), primary_key=True),
    # HMAC of tenant, patient id, draft order ids, topic, rule ids and evidence fingerprint.
    Column("repeat_key", String(64), nullable=False, index=True),
    Column("service_id", String(100), nullable=False),
    Column("topic", String(40), nullable=False),
    Column("rules", String(200), nullable=False),
    Column("indicator", String(20), nullable=False),
    # Snooze group -> HMAC of tenant, patient id, topic and group (what a snooze would key).
    Column("snooze_keys", JSON, nullable=True),
    Column("sent_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
)

snoozes_table = Table(
    "tpi_cds_snoozes",
    metadata,
    Column("snooze_key", String(64), primary_key=True),
    Column("topic", String(40), nullable=False),
    Column("rule", String(20), nullable=False),
    Column("reason", String(20), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
)

CONNECT_TIMEOUT_SECONDS = 2
STATEMENT_TIMEOUT_MS = 3000


class StoreConfigurationError(ValueError):
    """A store URL or data folder that cannot work: the service does not start."""


def describe_failure(exc: BaseException, url: str) -> str:
    """Why a store call failed, in words an operator can act on (no password)."""
    cause = exc.__cause__ or exc
    text = str(getattr(cause, "orig", None) or cause).lower()
    where = store_label(normalized_url(url))
    try:
        parsed = make_url(normalized_url(url))
        server = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    except ArgumentError:
        server = where
    if "does not exist" in text and "database" in text:
        return f"database {make_url(normalized_url(url)).database!r} does not exist on {server}"
    if "connection refused" in text:
        return f"nothing answers at {server} (connection refused)"
    if "timeout" in text or "timed out" in text:
        return f"{server} did not answer in time"
    if "authentication failed" in text or "password" in text:
        return f"{server} refused the user name or password"
    if "readonly" in text or "read-only" in text:
        return f"the SQLite store {where} is read-only"
    if "unable to open database file" in text:
        return f"the SQLite store {where} cannot be opened (folder not writable?)"
    return f"{where}: {type(cause).__name__}"


class StoreUnavailableError(RuntimeError):
    """The database cannot be reached or refused the write; nothing was acknowledged."""


@dataclass(frozen=True)
class FeedbackEntry:
    service_id: str
    card_uuid: str
    card_topic: str | None
    outcome: str
    accepted_suggestions: list[dict[str, Any]] | None
    override_reason: dict[str, Any] | None
    outcome_timestamp: str
    card_rules: list[str] | None = None
    card_indicator: str | None = None


def store_label(url: str) -> str:
    """The store as a log line may name it: a SQLite path in full, a server URL without
    its user and password."""
    if url.startswith("sqlite"):
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


def existing_sqlite_path(url: str) -> Path | None:
    """The SQLite file of a store URL (None for other databases)."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1]
    return Path(path) if path and path != ":memory:" else None


class FeedbackStore:
    @classmethod
    def open_existing(cls, url: str) -> FeedbackStore:
        """A store that must already exist (the reading commands): nothing is created."""
        path = existing_sqlite_path(url)
        if path is not None and not path.is_file():
            raise StoreUnavailableError(
                f"no feedback store at {path}: run the command where the service keeps its "
                "data, or set TPI_CDS_DATA_DIR / TPI_CDS_DATABASE_URL to the service's store"
            )
        store = cls(url)
        try:
            present = inspect(store.engine).has_table(feedback_table.name)
        except SQLAlchemyError as exc:
            raise StoreUnavailableError(
                f"cannot read the feedback store {store_label(url)}: {type(exc).__name__}"
            ) from exc
        if not present:
            raise StoreUnavailableError(
                f"{store_label(url)} holds no feedback table: not the service's store?"
            )
        store.schema_ready = True
        return store

    def __init__(self, url: str, durable: bool = True) -> None:
        self.url = url
        self.engine = _make_engine(url, durable)
        self.schema_ready = False

    def create_schema(self) -> None:
        try:
            metadata.create_all(self.engine)
            self._add_missing_columns()
        except SQLAlchemyError as exc:
            raise StoreUnavailableError(
                f"cannot create the feedback schema: {describe_failure(exc, self.url)}"
            ) from exc
        self.schema_ready = True

    def _add_missing_columns(self) -> None:
        """A feedback table from an earlier release gains the columns added since."""
        present = {c["name"] for c in inspect(self.engine).get_columns(feedback_table.name)}
        missing = [name for name in ADDED_FEEDBACK_COLUMNS if name not in present]
        if not missing:
            return
        with self.engine.begin() as connection:
            for name in missing:
                connection.execute(
                    text(
                        f"ALTER TABLE {feedback_table.name} "
                        f"ADD COLUMN {name} {ADDED_FEEDBACK_COLUMNS[name]}"
                    )
                )

    def ensure_schema(self) -> None:
        """A database that was down at start gets its tables when it comes back."""
        if not self.schema_ready:
            self.create_schema()

    def add(self, entries: Sequence[FeedbackEntry]) -> None:
        """All entries in one transaction; returns only after the commit."""
        self.ensure_schema()
        now = datetime.now(UTC)
        rows = [
            {
                "service_id": e.service_id,
                "card_uuid": e.card_uuid,
                "card_topic": e.card_topic,
                "outcome": e.outcome,
                "accepted_suggestions": e.accepted_suggestions,
                "override_reason": e.override_reason,
                "outcome_timestamp": e.outcome_timestamp,
                "received_at": now,
                "card_rules": e.card_rules,
                "card_indicator": e.card_indicator,
            }
            for e in entries
        ]
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(feedback_table), rows)
        except SQLAlchemyError as exc:
            raise StoreUnavailableError(f"feedback not stored: {type(exc).__name__}") from exc

    def ping(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    def export(self) -> Iterator[dict[str, Any]]:
        """Every stored entry, oldest first, as plain JSON-able dicts."""
        with self.engine.connect() as connection:
            result = connection.execute(select(feedback_table).order_by(feedback_table.c.id))
            for row in result.mappings():
                entry = dict(row)
                entry["received_at"] = _iso(entry["received_at"])
                yield entry

    def stats(self, top_reasons: int = 5) -> dict[str, Any]:
        """Per service and card topic: accepted vs overridden, and the top override reasons."""
        table = feedback_table
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        with self.engine.connect() as connection:
            counts = connection.execute(
                select(
                    table.c.service_id, table.c.card_topic, table.c.outcome, func.count()
                ).group_by(table.c.service_id, table.c.card_topic, table.c.outcome)
            )
            for service_id, topic, outcome, count in counts:
                group = groups.setdefault(
                    (service_id, topic or "unknown"),
                    {
                        "service": service_id,
                        "topic": topic or "unknown",
                        "accepted": 0,
                        "overridden": 0,
                        "overrideReasons": {},
                    },
                )
                group[outcome] = group.get(outcome, 0) + count
            reasons = connection.execute(
                select(table.c.service_id, table.c.card_topic, table.c.override_reason).where(
                    table.c.outcome == "overridden"
                )
            )
            for service_id, topic, reason in reasons:
                label = _reason_label(reason)
                tally = groups[(service_id, topic or "unknown")]["overrideReasons"]
                tally[label] = tally.get(label, 0) + 1
        summary = []
        for group in sorted(groups.values(), key=lambda g: (g["service"], g["topic"])):
            total = group["accepted"] + group["overridden"]
            ranked = sorted(group["overrideReasons"].items(), key=lambda item: (-item[1], item[0]))
            summary.append(
                {
                    "service": group["service"],
                    "topic": group["topic"],
                    "total": total,
                    "accepted": group["accepted"],
                    "overridden": group["overridden"],
                    "acceptanceRate": round(group["accepted"] / total, 3) if total else None,
                    "topOverrideReasons": [
                        {"reason": label, "count": count} for label, count in ranked[:top_reasons]
                    ],
                }
            )
        return {"groups": summary}

    def dispose(self) -> None:
        self.engine.dispose()


def _reason_label(reason: Any) -> str:
    if isinstance(reason, str):
        reason = json.loads(reason)
    if not isinstance(reason, dict) or not isinstance(reason.get("reason"), dict):
        return "(no reason given)"
    coding = reason["reason"]
    return str(coding.get("display") or coding.get("code") or "(no reason given)")


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.isoformat()
    return value


def normalized_url(url: str) -> str:
    """``postgres://`` (what most platforms hand out) is PostgreSQL too."""
    if url.startswith("postgres://"):
        return "postgresql://" + url.removeprefix("postgres://")
    return url


def _make_engine(url: str, durable: bool = True) -> Engine:
    """The engine for a store URL; a URL that cannot work is a StoreConfigurationError
    naming the cause in one line (never the password)."""
    url = normalized_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreConfigurationError(
            "the feedback store URL is not a database URL (sqlite:///path or "
            "postgresql://user@host:5432/db)"
        ) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreConfigurationError(
            f"the feedback store must be SQLite or PostgreSQL, not {parsed.get_backend_name()}"
        )
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            folder = Path(path).parent
            if folder.exists() and not folder.is_dir():
                raise StoreConfigurationError(f"the data folder {folder} is a file")
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreConfigurationError(
                    f"the data folder {folder} cannot be created ({exc.strerror})"
                ) from None
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_durability(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # Feedback is acknowledged only once on disk; card memory (durable=False) may
            # lose its last moments to a power cut, and saves an fsync per hook call.
            cursor.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    connect_args: dict[str, Any] = {}
    if url.startswith("postgresql+psycopg://"):
        # A database that accepts and never answers must not hold a request: every store
        # call is bounded (connect, each statement, and a dead peer on an open connection).
        own = make_url(url).query.get("options") or ""
        own = own if isinstance(own, str) else " ".join(own)
        connect_args = {
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            # Kept with the URL's own options (a search_path, say): these replace them.
            "options": f"{own} -c statement_timeout={STATEMENT_TIMEOUT_MS}".strip(),
            "tcp_user_timeout": STATEMENT_TIMEOUT_MS,
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 2,
        }
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=2,
        max_overflow=4,
        pool_timeout=CONNECT_TIMEOUT_SECONDS,
        connect_args=connect_args,
    )
