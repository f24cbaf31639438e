"""How the rules read FHIR elements: calendar days, codings, statuses, numbers.

One reading for every rule, so that "active", "dated" and "coded" mean the same thing
everywhere (the clinical rules page, section 1).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from cards.terminology import ValueSet, normalize_code, normalize_system


@dataclass(frozen=True)
class When:
    """A FHIR date/dateTime as the rules use it: its own calendar day, and an instant to sort."""

    day: date
    instant: datetime
    precise: bool
    timed: bool = False

    @classmethod
    def of(cls, value: Any, *, today: date | None = None) -> When | None:
        """A dateTime counts on its own calendar date, as written (no time-zone shift).

        A partial date (``2026`` or ``2026-07``) resolves to its last day, capped at
        today: counting a session at its latest possible day never under-counts.
        """
        if value is None:
            return None
        if isinstance(value, datetime):
            instant = value if value.tzinfo else value.replace(tzinfo=UTC)
            return cls(value.date(), instant.astimezone(UTC), True, True)
        if isinstance(value, date):
            return cls(value, datetime.combine(value, time.min, UTC), True)
        if isinstance(value, str):
            return cls._partial(value, today)
        return None

    @classmethod
    def _partial(cls, text: str, today: date | None) -> When | None:
        parts = text.split("-")
        try:
            year = int(parts[0])
            month = int(parts[1]) if len(parts) > 1 else 12
            if not 1 <= month <= 12:
                return None
            day = date(year, month, calendar.monthrange(year, month)[1])
        except (ValueError, IndexError):
            return None
        if today is not None and day > today:
            day = today
        return cls(day, datetime.combine(day, time.max, UTC), False)


def first_when(*values: Any, today: date | None = None) -> When | None:
    for value in values:
        when = When.of(value, today=today)
        if when is not None:
            return when
    return None


def codings(concept: Any) -> Iterator[Any]:
    """The Codings of a CodeableConcept model (or a list of them)."""
    if concept is None:
        return
    if isinstance(concept, list):
        for item in concept:
            yield from codings(item)
        return
    yield from concept.coding or []


def matching_coding(concept: Any, value_set: ValueSet) -> Any | None:
    return next((c for c in codings(concept) if value_set.contains(c.system, c.code)), None)


def in_value_set(concept: Any, value_set: ValueSet) -> bool:
    return matching_coding(concept, value_set) is not None


def concept_text(concept: Any) -> str:
    """Readable text of a CodeableConcept: its text, else the first display."""
    if concept is None:
        return ""
    if isinstance(concept, list):
        return "; ".join(filter(None, (concept_text(c) for c in concept)))
    if concept.text:
        return concept.text
    return next((c.display for c in codings(concept) if c.display), "")


def label(concept: Any, value_set: ValueSet | None = None) -> str:
    """``Display (CODE)`` for the matching coding, for evidence in a card's detail."""
    coding = matching_coding(concept, value_set) if value_set else None
    if coding is None:
        coding = next(codings(concept), None)
    if coding is None:
        return concept_text(concept) or "unnamed"
    display = coding.display or concept_text(concept)
    system = normalize_system(coding.system)
    code = normalize_code(system, coding.code)
    return f"{display} ({code})" if display else code


def name_match(concept: Any, value_set: ValueSet) -> str | None:
    """Matched by code; or, when no code matches, by a fallback name in displays or text."""
    coding = matching_coding(concept, value_set)
    if coding is not None:
        return coding.display or concept_text(concept) or coding.code
    texts: list[str] = []
    if concept is not None:
        texts.append(concept.text or "")
        texts.extend(c.display or "" for c in codings(concept))
    for text in texts:
        name = value_set.name_in(text)
        if name:
            return concept_text(concept) or name
    return None


def status_code(concept: Any) -> str | None:
    """The code of a status CodeableConcept such as clinicalStatus."""
    return next((c.code for c in codings(concept) if c.code), None)


def condition_is_active(condition: Any) -> bool:
    clinical = status_code(condition.clinicalStatus)
    verification = status_code(condition.verificationStatus)
    if verification in ("refuted", "entered-in-error"):
        return False
    if clinical is None:
        return not _has_abatement(condition)
    return clinical in ("active", "recurrence", "relapse")


def _has_abatement(condition: Any) -> bool:
    return any(
        getattr(condition, name, None) is not None
        for name in (
            "abatementDateTime",
            "abatementAge",
            "abatementPeriod",
            "abatementRange",
            "abatementString",
        )
    )


def onset_or_recorded(condition: Any, today: date) -> When | None:
    """A condition's onset (dateTime or period start; other onset types count as none),
    else its recordedDate."""
    start = condition.onsetPeriod.start if condition.onsetPeriod else None
    return first_when(condition.onsetDateTime, start, condition.recordedDate, today=today)


def allergy_is_active(allergy: Any) -> bool:
    clinical = status_code(allergy.clinicalStatus)
    verification = status_code(allergy.verificationStatus)
    if verification in ("refuted", "entered-in-error"):
        return False
    return clinical in (None, "active")


def reference_matches(reference: str | None, kind: str, rid: str | None) -> bool:
    """Does a reference (``Type/id``, absolute URL, history, ``urn:uuid:id``) point at it?"""
    if not reference or not rid:
        return False
    if reference.startswith("urn:uuid:"):
        return reference[len("urn:uuid:") :] == rid
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return len(parts) >= 2 and parts[-2] == kind and parts[-1] == rid


def number(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        result = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return result if result.is_finite() else None


def format_number(value: Decimal | float | int) -> str:
    """As recorded, trailing zeros dropped: 7.50 → 7.5, 8.0 → 8."""
    text = format(Decimal(str(value)).normalize(), "f")
    return text


def format_percent(fraction: float) -> str:
    return f"{round(fraction * 100)} %"


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def sentence(text: str) -> str:
    """First letter upper case, the rest as written ("no INR" → "No INR", not "No inr")."""
    return text[:1].upper() + text[1:]
