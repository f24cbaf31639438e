"""TPI sessions, pain scores, and the response to each session (clinical rules, section 2).

Version 2 reads the whole course of scores: the baseline is the pre-procedure score of the
session day, a clinical response is any follow-up score from day 7 to 84 meeting the MCID,
and the payer response asks that relief of 50 % held at every score up to the first one
from day 42. Pain that returns late after good relief is recurrence, not non-response.
"""

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
    # The earliest procedure time of the day, when any procedure carries a time of day.
    started: datetime | None = None
    # Each bodySite as recorded: the codings of one concept name one place.
    site_concepts: tuple[tuple[Site, ...], ...] = ()

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
    timed: bool = True


@dataclass(frozen=True)
class FollowUp:
    """One follow-up score of a session: its day after the session and its relief."""

    score: PainScore
    day: int
    relief: float | None
    drop: Decimal | None


@dataclass(frozen=True)
class SessionResponse:
    session: Session
    baseline: PainScore | None
    follow_ups: tuple[FollowUp, ...]
    clinical: Response
    payer: Response

    @property
    def follow_up(self) -> FollowUp | None:
        """The latest follow-up score (for a one-line mention)."""
        return self.follow_ups[-1] if self.follow_ups else None

    @property
    def best(self) -> FollowUp | None:
        """The follow-up with the most relief."""
        scored = [f for f in self.follow_ups if f.relief is not None]
        return max(scored, key=lambda f: f.relief or 0.0, default=None)

    def first_from(self, day: int) -> FollowUp | None:
        return next((f for f in self.follow_ups if f.day >= day), None)


def tpi_sessions(procedures: Iterable, tpi_codes: ValueSet, today: date) -> list[Session]:
    """Completed TPI Procedures grouped by calendar day, oldest first, none in the future."""
    by_day: dict[date, list] = {}
    precise: dict[date, bool] = {}
    started: dict[date, datetime] = {}
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
        if when.timed and (when.day not in started or when.instant < started[when.day]):
            started[when.day] = when.instant
    sessions = []
    for day in sorted(by_day):
        sites: dict[tuple[str, str], Site] = {}
        concepts: list[tuple[Site, ...]] = []
        for procedure in by_day[day]:
            for concept in procedure.bodySite or []:
                named = []
                for coding in concept.coding or []:
                    if coding.code:
                        system = normalize_system(coding.system)
                        display = coding.display or concept.text or coding.code
                        named.append(Site(system, coding.code, display))
                if not named and concept.text:
                    # A site given only as text: its region is unknown, but it is a site.
                    named.append(Site("", concept.text, concept.text))
                for site in named:
                    sites.setdefault((site.system, site.code), site)
                if named and tuple(named) not in concepts:
                    concepts.append(tuple(named))
        ids = tuple(p.id for p in by_day[day] if p.id)
        sessions.append(
            Session(
                day,
                precise[day],
                tuple(sites.values()),
                ids,
                started.get(day),
                tuple(concepts),
            )
        )
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
        when: When | None = first_when(
            observation.effectiveDateTime, start, observation.effectiveInstant
        )
        if when is None or not when.precise:
            continue
        rank = pain_codes.rank(coding.system, coding.code)
        scores.append(PainScore(when.day, when.instant, value, coding.code, rank, when.timed))
    scores.sort(key=lambda s: (s.instant, s.preference))
    return _one_per_timestamp(scores)


def _one_per_timestamp(scores: list[PainScore]) -> list[PainScore]:
    """Two codes at one timestamp are one score: the preferred code (72514-3) wins."""
    kept: dict[datetime, PainScore] = {}
    for score in scores:
        best = kept.get(score.instant)
        if best is None or score.preference < best.preference:
            kept[score.instant] = score
    return sorted(kept.values(), key=lambda s: s.instant)


def session_responses(
    sessions: Sequence[Session], scores: Sequence[PainScore], policy: PolicyProfile
) -> list[SessionResponse]:
    """The response to each session, given the next session bounds its follow-up."""
    responses = []
    for index, session in enumerate(sessions):
        next_day = sessions[index + 1].day if index + 1 < len(sessions) else None
        responses.append(respond(session, next_day, scores, policy))
    return responses


def baseline_score(
    session: Session, scores: Sequence[PainScore], policy: PolicyProfile
) -> PainScore | None:
    """The pre-procedure score (section 2).

    On the session day: the last score timed at or before the first procedure when both
    carry a time; else the earliest score of the day that is not timed after the
    procedure. Without one: the last score in the 30 days before the session day.
    """
    same_day = [s for s in scores if s.day == session.day]
    if session.started is not None:
        before = [s for s in same_day if s.timed and s.instant <= session.started]
        if before:
            return before[-1]
        untimed = [s for s in same_day if not s.timed]
        if untimed:
            return untimed[0]
    elif same_day:
        return same_day[0]
    earliest = session.day - timedelta(days=policy.baseline_window_days)
    prior = [s for s in scores if earliest <= s.day < session.day]
    return prior[-1] if prior else None


def respond(
    session: Session, next_day: date | None, scores: Sequence[PainScore], policy: PolicyProfile
) -> SessionResponse:
    if not session.precise:
        return SessionResponse(session, None, (), Response.UNKNOWN, Response.UNKNOWN)
    baseline = baseline_score(session, scores, policy)
    first = session.day + timedelta(days=policy.follow_up_min_days)
    last = session.day + timedelta(days=policy.follow_up_max_days)
    follow_ups = tuple(
        _follow_up(session, baseline, s)
        for s in scores
        if first <= s.day <= last and (next_day is None or s.day < next_day)
    )
    if baseline is None or baseline.value <= 0 or not follow_ups:
        return SessionResponse(session, baseline, follow_ups, Response.UNKNOWN, Response.UNKNOWN)
    return SessionResponse(
        session,
        baseline,
        follow_ups,
        _clinical(follow_ups, policy),
        _payer(follow_ups, policy),
    )


def _follow_up(session: Session, baseline: PainScore | None, score: PainScore) -> FollowUp:
    day = (score.day - session.day).days
    if baseline is None:
        return FollowUp(score, day, None, None)
    drop = baseline.value - score.value
    relief = float(drop / baseline.value) if baseline.value > 0 else None
    return FollowUp(score, day, relief, drop)


def meets_mcid(follow_up: FollowUp, policy: PolicyProfile) -> bool:
    return (follow_up.relief or 0.0) >= policy.clinical_relief or float(
        follow_up.drop or 0
    ) >= policy.clinical_drop


def _clinical(follow_ups: Sequence[FollowUp], policy: PolicyProfile) -> Response:
    if any(meets_mcid(f, policy) for f in follow_ups):
        return Response.RESPONDER
    if any(f.day <= policy.clinical_nonresponse_by_day for f in follow_ups):
        return Response.NON_RESPONDER
    return Response.UNKNOWN


def _payer(follow_ups: Sequence[FollowUp], policy: PolicyProfile) -> Response:
    lasting = policy.payer_follow_up_min_days
    deciding = next((i for i, f in enumerate(follow_ups) if f.day >= lasting), None)
    if deciding is not None and all(
        (f.relief or 0.0) >= policy.payer_relief for f in follow_ups[: deciding + 1]
    ):
        return Response.RESPONDER
    if any(
        f.day <= policy.clinical_nonresponse_by_day and (f.relief or 0.0) < policy.payer_relief
        for f in follow_ups
    ):
        return Response.NON_RESPONDER
    return Response.UNKNOWN


def is_snomed(system: str | None) -> bool:
    return normalize_system(system) == SNOMED


def within(day: date, today: date, days: int) -> bool:
    """The rules' lookback: dated on or after today - N days (today included)."""
    return today - timedelta(days=days) <= day <= today


def recent(when: When | None, today: date, days: int) -> bool:
    return when is not None and within(when.day, today, days)


def describe_course(response: SessionResponse, policy: PolicyProfile) -> str:
    """One session's whole course in words: baseline, every follow-up score with its day and
    relief, or what is missing ("TPI 2026-09-14: baseline 8 (2026-09-13); day 45: 7 (12 %))."""
    session = response.session
    text = f"TPI {session.day.isoformat()}"
    if not session.precise:
        return f"{text} (recorded without a day): response cannot be judged"
    baseline = response.baseline
    if baseline is None:
        base = (
            f"no pain score before it (session day or the {policy.baseline_window_days} days "
            "before)"
        )
    else:
        base = f"baseline {format_number(baseline.value)} ({baseline.day.isoformat()})"
    if not response.follow_ups:
        follow = (
            f"no follow-up score from day {policy.follow_up_min_days} to day "
            f"{policy.follow_up_max_days}"
        )
        return f"{text}: {base}; {follow}"
    scores = ", ".join(_score_text(f) for f in response.follow_ups)
    return f"{text}: {base}; {scores}"


def _score_text(follow_up: FollowUp) -> str:
    value = format_number(follow_up.score.value)
    if follow_up.relief is None:
        return f"day {follow_up.day}: {value}"
    return f"day {follow_up.day}: {value} ({format_percent(follow_up.relief)})"
