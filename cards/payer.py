"""The patient's payer (section 2b): which policy profile is in force, and why.

The coverage in force is the active Coverage whose period covers today, with the lowest
``order``. Its type in the Source of Payment Typology picks the profile (1 → Medicare;
5, 6 → commercial); a site maps its own payer codes or payor identifiers by extending the
``payer-medicare`` / ``payer-commercial`` value sets. Anything else: the site's default.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from cards.policy import PROFILE_NAMES, Policies, PolicyProfile
from cards.reading import codings, concept_text, first_when
from cards.terminology import Terminology, normalize_system

SOPT = "https://nahdo.org/sopt"
SOPT_ALIASES = ("urn:oid:2.16.840.1.113883.3.221.5", "http://nahdo.org/sopt")
SOPT_PREFIXES = {"1": "medicare", "5": "commercial", "6": "commercial"}
PAYER_VALUE_SETS = {"medicare": "payer-medicare", "commercial": "payer-commercial"}


@dataclass(frozen=True)
class PayerProfile:
    """The profile in force and where it came from, as a card states it."""

    policy: PolicyProfile
    from_coverage: bool
    origin: str

    @property
    def label(self) -> str:
        """ "Medicare, from the patient's coverage" / "Medicare (site default: …)"."""
        return f"{PROFILE_NAMES.get(self.policy.name, self.policy.name)} {self.origin}"


def coverage_in_force(coverages: list[Any], today: date) -> Any | None:
    """The active Coverage whose period covers today, lowest ``order`` first (absent last;
    on a tie, the first listed)."""
    candidates = []
    for index, coverage in enumerate(coverages):
        if coverage.status != "active":
            continue
        period = coverage.period
        start = first_when(period.start, today=today) if period else None
        end = first_when(period.end, today=None) if period else None
        if start is not None and start.day > today:
            continue
        if end is not None and end.day < today:
            continue
        order = coverage.order if coverage.order is not None else float("inf")
        candidates.append((order, index, coverage))
    return min(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else None


def payer_profile(
    coverages: list[Any], policies: Policies, terminology: Terminology, today: date
) -> PayerProfile:
    coverage = coverage_in_force(coverages, today)
    default = policies.default_profile
    if coverage is None:
        return PayerProfile(default, False, "(site default: no coverage in force on record)")
    profile = _mapped_profile(coverage, terminology)
    if profile is not None:
        return PayerProfile(policies[profile], True, "(from the patient's coverage)")
    kind = concept_text(coverage.type) or "coverage type not recorded"
    return PayerProfile(default, False, f"(site default: the coverage, {kind}, maps to no profile)")


def _mapped_profile(coverage: Any, terminology: Terminology) -> str | None:
    pairs = [(c.system, c.code) for c in codings(coverage.type)]
    for payor in coverage.payor or []:
        identifier = payor.identifier
        if identifier is not None and identifier.value:
            pairs.append((identifier.system, identifier.value))
    for profile, value_set_id in PAYER_VALUE_SETS.items():
        if value_set_id in terminology and any(
            terminology[value_set_id].contains(s, c) for s, c in pairs
        ):
            return profile
    for system, code in pairs:
        system = normalize_system(system)
        if (system == SOPT or system in SOPT_ALIASES) and code:
            profile = SOPT_PREFIXES.get(code.strip()[:1])
            if profile:
                return profile
    return None
