"""TPI sessions, pain scores, and the response to each session (clinical rules, section 2)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import Enum

from cards.policy import PolicyProfile
from cards.reading import When, codings, first_when, format_number, format_percent, number
from cards.terminology import SNOMED, ValueSet, normalize_system

PAIN_SCORE_STATUSES = ("final", "amended", "corrected")


class Response(Enum):
    RESPONDER = "responder"
    NON_RESPONDER = "non-responder"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Site:
    system: str
    code: str
    display: str


@dataclass(frozen=True)
class Session:
    """One TPI session: every completed TPI Procedure of one calendar day."""

    day: date
    precise: bool
    sites: tuple[Site, ...]
    procedure_ids: tuple[str, ...]

    @property
    def site_codes(self) -> frozenset[tuple[str, str]]:
        return frozenset((s.system, s.code) for s in self.sites)


@dataclass(frozen=True)
class PainScore:
    day: date
    instant: datetime
    value: Decimal
    code: str
    preference: int


@dataclass(frozen=True)
class SessionResponse:
    session: Session
    baseline: PainScore | None
    follow_up: PainScore | None
    clinical: Response
    payer: Response

    @property
    def relief(self) -> float | None:
        if self.baseline is None or self.follow_up is None or self.baseline.value == 0:
            return None
        return float((self.baseline.value - self.follow_up.value) / self.baseline.value)

    @property
    def drop(self) -> Decimal | None:
        if self.baseline is None or self.follow_up is None:
            return None
        return self.baseline.value - self.follow_up.value

    @property
    def follow_up_day(self) -> int | None:
        return (self.follow_up.day - self.session.day).days if self.follow_up else None


def tpi_sessions(procedures: Iterable, tpi_codes: ValueSet, today: date) -> list[Session]:
    """Completed TPI Procedures grouped by calendar day, oldest first, none in the future."""
    by_day: dict[date, list] = {}
    precise: dict[date, bool] = {}
    for procedure in procedures:
        if procedure.status != "completed":
            continue
        if not any(tpi_codes.contains(c.system, c.code) for c in codings(procedure.code)):
            continue
        start = procedure.performedPeriod.start if procedure.performedPeriod else None
        when = first_when(procedure.performedDateTime, start, today=today)
        if when is None or when.day > today:
            continue
        by_day.setdefault(when.day, []).append(procedure)
        precise[when.day] = precise.get(when.day, True) and when.precise
    sessions = []
    for day in sorted(by_day):
        sites: dict[tuple[str, str], Site] = {}
        for procedure in by_day[day]:
            for concept in procedure.bodySite or []:
                for coding in concept.coding or []:
                    if coding.code:
                        system = normalize_system(coding.system)
                        display = coding.display or concept.text or coding.code
                        sites.setdefault((system, coding.code), Site(system, coding.code, display))
        ids = tuple(p.id for p in by_day[day] if p.id)
        sessions.append(Session(day, precise[day], tuple(sites.values()), ids))
    return sessions


def pain_scores(observations: Iterable, pain_codes: ValueSet) -> list[PainScore]:
    """Valid 0-10 pain scores with a calendar day, oldest first."""
    scores = []
    for observation in observations:
        if observation.status not in PAIN_SCORE_STATUSES:
            continue
        coding = next(
            (c for c in codings(observation.code) if pain_codes.contains(c.system, c.code)), None
        )
        if coding is None:
            continue
        value = number(observation.valueQuantity.value) if observation.valueQuantity else None
        if value is None:
            value = number(observation.valueInteger)
        if value is None or not 0 <= value <= 10:
            continue
        start = observation.effectivePeriod.start if observation.effectivePeriod else None
        when = first_when(observation.effectiveDateTime, start, observation.effectiveInstant)
        if when is None or not when.precise:
            continue
        rank = pain_codes.rank(coding.system, coding.code)
        scores.append(PainScore(when.day, when.instant, value, coding.code, rank))
    scores.sort(key=lambda s: (s.instant, -s.preference))
    return scores


def _latest(scores: Iterable[PainScore]) -> PainScore | None:
    """The latest score; at one timestamp the preferred code (72514-3) wins."""
    return max(scores, key=lambda s: (s.instant, -s.preference), default=None)


def session_responses(
    sessions: Sequence[Session], scores: Sequence[PainScore], policy: PolicyProfile
) -> list[SessionResponse]:
    """The response to each session, given the next session bounds its follow-up."""
    responses = []
    for index, session in enumerate(sessions):
        next_day = sessions[index + 1].day if index + 1 < len(sessions) else None
        responses.append(_respond(session, next_day, scores, policy))
    return responses


def _respond(
    session: Session, next_day: date | None, scores: Sequence[PainScore], policy: PolicyProfile
) -> SessionResponse:
    if not session.precise:
        return SessionResponse(session, None, None, Response.UNKNOWN, Response.UNKNOWN)
    earliest = session.day - timedelta(days=policy.baseline_window_days)
    baseline = _latest(s for s in scores if earliest <= s.day <= session.day)
    first = session.day + timedelta(days=policy.follow_up_min_days)
    last = session.day + timedelta(days=policy.follow_up_max_days)
    follow_up = _latest(
        s for s in scores if first <= s.day <= last and (next_day is None or s.day < next_day)
    )
    clinical = payer = Response.UNKNOWN
    if baseline is not None and follow_up is not None and baseline.value > 0:
        drop = baseline.value - follow_up.value
        relief = float(drop / baseline.value)
        met = relief >= policy.clinical_relief or float(drop) >= policy.clinical_drop
        clinical = Response.RESPONDER if met else Response.NON_RESPONDER
        if (follow_up.day - session.day).days >= policy.payer_follow_up_min_days:
            payer = Response.RESPONDER if relief >= policy.payer_relief else Response.NON_RESPONDER
    return SessionResponse(session, baseline, follow_up, clinical, payer)


def is_snomed(system: str | None) -> bool:
    return normalize_system(system) == SNOMED


def within(day: date, today: date, days: int) -> bool:
    """The rules' lookback: dated on or after today - N days (today included)."""
    return today - timedelta(days=days) <= day <= today


def recent(when: When | None, today: date, days: int) -> bool:
    return when is not None and within(when.day, today, days)


def describe_response(response: SessionResponse, policy: PolicyProfile) -> str:
    """One session's evidence in words: dates, scores, relief; or what is missing."""
    session = response.session
    text = f"TPI {session.day.isoformat()}"
    if not session.precise:
        return f"{text} (date recorded without a day): response cannot be judged"
    baseline, follow_up = response.baseline, response.follow_up
    if baseline is None:
        base = f"no baseline pain score in the {policy.baseline_window_days} days up to it"
    else:
        base = f"baseline {format_number(baseline.value)} ({baseline.day.isoformat()})"
    if follow_up is None:
        follow = (
            f"no follow-up pain score {policy.follow_up_min_days} days to "
            f"{policy.follow_up_max_days // 7} weeks after it"
        )
    else:
        follow = (
            f"follow-up {format_number(follow_up.value)} ({follow_up.day.isoformat()}, "
            f"day {response.follow_up_day})"
        )
    text = f"{text}: {base}, {follow}"
    relief, drop = response.relief, response.drop
    if baseline is not None and baseline.value == 0:
        return f"{text}; a baseline of 0 leaves no relief to measure"
    if relief is not None and drop is not None:
        unit = "point" if drop == 1 else "points"
        return f"{text}, relief {format_percent(relief)}, drop {format_number(drop)} {unit}"
    return f"{text}: response unknown"
