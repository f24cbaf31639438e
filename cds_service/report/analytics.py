"""Feedback analytics for governance: cards sent against what clinicians did with them.

Read from the service's own store (the same settings the service uses). Only counts and
reason codes are read out: a clinician's free-text comment may name a patient, so comments
are counted, never shown.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.exc import SQLAlchemyError

from cards.card import TOPICS
from cds_service.store import (
    FeedbackStore,
    StoreConfigurationError,
    StoreUnavailableError,
    card_counts_table,
    feedback_table,
    store_label,
)

SNOOZE_CODES = ("snooze-30", "snooze-90")
NOT_REMEMBERED = "(card not remembered)"


@dataclass
class Counts:
    """Cards sent, and the feedback they got (snoozed cards are overridden ones)."""

    sent: int = 0
    accepted: int = 0
    overridden: int = 0
    snoozed: int = 0

    @property
    def answered(self) -> int:
        return self.accepted + self.overridden

    @property
    def no_feedback(self) -> int | None:
        """Sent cards nobody accepted or overrode (None when sends were not counted)."""
        return max(self.sent - self.answered, 0) if self.sent else None

    def rate(self, part: int) -> str:
        """A share of the cards sent, as the table shows it ("—" when none were counted)."""
        return f"{part / self.sent:.0%}" if self.sent else "—"


@dataclass
class Reason:
    topic: str
    code: str
    display: str
    count: int


@dataclass
class Analytics:
    """What the analytics section shows; ``problem`` says why there is nothing to show."""

    store: str
    problem: str | None = None
    counts_table: bool = True
    by_topic: list[tuple[str, Counts]] = field(default_factory=list)
    by_rule: list[tuple[str, Counts]] = field(default_factory=list)
    reasons: list[Reason] = field(default_factory=list)
    weeks: list[tuple[date, Counts]] = field(default_factory=list)
    comments: int = 0
    total: Counts = field(default_factory=Counts)
    chart_svg: str | None = None

    @property
    def first_week(self) -> date | None:
        return self.weeks[0][0] if self.weeks else None

    @property
    def last_week(self) -> date | None:
        return self.weeks[-1][0] if self.weeks else None


def read_analytics(url: str) -> Analytics:
    """The store's feedback and card counts, aggregated; no store is not an error."""
    label = store_label(url)
    try:
        store = FeedbackStore.open_existing(url)
    except (StoreUnavailableError, StoreConfigurationError) as exc:
        return Analytics(label, problem=f"No feedback store: {exc}")
    try:
        return _aggregate(store, label)
    except SQLAlchemyError as exc:
        return Analytics(
            label, problem=f"No feedback store: cannot read {label} ({type(exc).__name__})"
        )
    finally:
        store.dispose()


def _aggregate(store: FeedbackStore, label: str) -> Analytics:
    result = Analytics(label)
    topics: dict[str, Counts] = {}
    rules: dict[str, Counts] = {}
    weeks: dict[date, Counts] = {}
    reasons: dict[tuple[str, str], Reason] = {}
    with store.engine.connect() as connection:
        result.counts_table = inspect(connection).has_table(card_counts_table.name)
        if result.counts_table:
            t = card_counts_table
            for day, topic, rule_ids, count in connection.execute(
                select(t.c.day, t.c.topic, t.c.rules, t.c.count)
            ):
                count = int(count or 0)
                topics.setdefault(topic, Counts()).sent += count
                for rule in (rule_ids or "").split():
                    rules.setdefault(rule, Counts()).sent += count
                weeks.setdefault(_week(_day(day)), Counts()).sent += count
                result.total.sent += count
        f = feedback_table
        rows = connection.execute(
            select(
                f.c.card_topic,
                f.c.outcome,
                f.c.override_reason,
                f.c.outcome_timestamp,
                f.c.received_at,
                f.c.card_rules,
            )
        )
        for topic, outcome, reason, stamp, received, card_rules in rows:
            topic = topic or "unknown"
            reason = _json(reason)
            code, display = _reason(reason)
            snoozed = outcome == "overridden" and code in SNOOZE_CODES
            if isinstance(reason, dict) and str(reason.get("userComment") or "").strip():
                result.comments += 1
            rule_ids = _json(card_rules)
            rule_ids = [str(r) for r in rule_ids] if isinstance(rule_ids, list) else []
            week = _week(_when(stamp, received))
            targets = [
                result.total,
                topics.setdefault(topic, Counts()),
                weeks.setdefault(week, Counts()),
                *(rules.setdefault(r, Counts()) for r in rule_ids or [NOT_REMEMBERED]),
            ]
            for counts in targets:
                _tally(counts, outcome, snoozed)
            if outcome == "overridden":
                entry = reasons.setdefault((topic, code), Reason(topic, code, display, 0))
                entry.count += 1
    order = {topic: i for i, topic in enumerate(TOPICS)}
    result.by_topic = sorted(topics.items(), key=lambda item: (order.get(item[0], 99), item[0]))
    result.by_rule = sorted(rules.items(), key=lambda item: _rule_key(item[0]))
    result.reasons = sorted(
        reasons.values(), key=lambda r: (order.get(r.topic, 99), r.topic, -r.count, r.display)
    )
    result.weeks = _every_week(weeks)
    if result.weeks:
        result.chart_svg = weekly_chart(result.weeks)
    return result


def _tally(counts: Counts, outcome: str, snoozed: bool) -> None:
    if outcome == "accepted":
        counts.accepted += 1
    elif outcome == "overridden":
        counts.overridden += 1
        counts.snoozed += snoozed


def _rule_key(rule: str) -> tuple[int, str]:
    group = {"S": 0, "E": 1, "P": 2, "R": 3}.get(rule[:1], 4)
    return (group, rule)


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    return value


def _reason(reason: Any) -> tuple[str, str]:
    coding = reason.get("reason") if isinstance(reason, dict) else None
    if not isinstance(coding, dict):
        return ("", "(no reason given)")
    code = str(coding.get("code") or "")
    return (code, str(coding.get("display") or code or "(no reason given)"))


def _day(text: str) -> date:
    return date.fromisoformat(str(text)[:10])


def _when(stamp: Any, received: Any) -> date:
    """When the clinician acted (the EHR's outcomeTimestamp), else when it arrived."""
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).date()
    except ValueError:
        if isinstance(received, datetime):
            return received.date()
        return _day(str(received))


def _week(day: date) -> date:
    """The Monday that starts the ISO week of a day."""
    return day - timedelta(days=day.weekday())


def _every_week(weeks: dict[date, Counts]) -> list[tuple[date, Counts]]:
    """Every week from the first to the last, quiet weeks included (a gap is a finding)."""
    if not weeks:
        return []
    first, last = min(weeks), max(weeks)
    span = []
    week = first
    while week <= last:
        span.append((week, weeks.get(week, Counts())))
        week += timedelta(days=7)
    return span


def weekly_chart(weeks: Iterable[tuple[date, Counts]]) -> str:
    """The weekly trend as inline SVG (matplotlib, rendered here: the page works offline)."""
    import matplotlib
    from matplotlib.dates import MO, DateFormatter, WeekdayLocator
    from matplotlib.figure import Figure

    weeks = list(weeks)
    days = [week for week, _ in weeks]
    with matplotlib.rc_context(
        {"svg.fonttype": "none", "svg.hashsalt": "tpi-cds-report", "font.size": 9}
    ):
        figure = Figure(figsize=(9, 3.2), layout="constrained")
        axes = figure.subplots()
        width = timedelta(days=5)
        axes.bar(days, [c.sent for _, c in weeks], width=width, color="#c9d3df", label="Cards sent")
        series = (
            ("Accepted", "accepted", "#2e7d32", "o"),
            ("Overridden", "overridden", "#c62828", "s"),
            ("Snoozed", "snoozed", "#6a1b9a", "^"),
        )
        for name, attribute, colour, marker in series:
            axes.plot(
                days,
                [getattr(c, attribute) for _, c in weeks],
                color=colour,
                marker=marker,
                markersize=4,
                linewidth=1.6,
                label=name,
            )
        axes.set_ylabel("Cards per week")
        axes.set_xlabel("Week starting (Monday)")
        axes.set_ylim(bottom=0)
        axes.grid(axis="y", color="#e5e5e5")
        axes.set_axisbelow(True)
        axes.spines[["top", "right"]].set_visible(False)
        axes.legend(loc="lower left", bbox_to_anchor=(0, 1.0), frameon=False, ncols=4)
        axes.xaxis.set_major_locator(
            WeekdayLocator(byweekday=MO, interval=max(1, math.ceil(len(days) / 14)))
        )
        axes.xaxis.set_major_formatter(DateFormatter("%Y-%m-%d"))
        for label in axes.get_xticklabels():
            label.set_rotation(30)
            label.set_horizontalalignment("right")
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    label = 'role="img" aria-label="Cards sent, accepted, overridden and snoozed per week" '
    return text[text.index("<svg") :].replace("<svg ", f"<svg {label}", 1)
