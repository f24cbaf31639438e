"""Policy profiles: every threshold the rules use, named, with the profile's values.

Numbers marked *cited* or *chosen* on the clinical rules page live here and nowhere else.
A site picks a profile and may override any field by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class PolicyError(ValueError):
    """A profile name or override that cannot be applied."""


@dataclass(frozen=True)
class PolicyProfile:
    name: str
    # E3 / R2: sessions allowed in a rolling 12 months (cited: LCDs 3, BCBSA/eviCore 4).
    session_cap: int
    # E4: minimum days between sessions at one site (cited: LCDs 6 weeks, eviCore 2 months).
    min_interval_days: int
    # Section 2: the response to a session.
    lookback_days: int = 365
    baseline_window_days: int = 30
    follow_up_min_days: int = 7
    follow_up_max_days: int = 84
    clinical_relief: float = 0.30
    clinical_drop: float = 2.0
    payer_follow_up_min_days: int = 42
    payer_relief: float = 0.50
    # Section 2: a clinical non-responder needs a follow-up score by this day; later
    # scores alone cannot tell non-response from relief that wore off.
    clinical_nonresponse_by_day: int = 56
    # E6: a recent pain score.
    recent_pain_score_days: int = 30
    # E0: the "criteria met" card is off by default (noise on most orders).
    show_criteria_met: bool = False
    # S1: an infection counts when its onset (or record) is this recent.
    infection_recent_days: int = 30
    # S3 / S4: bleeding-risk laboratory thresholds (chosen).
    inr_threshold: float = 3.0
    inr_window_days: int = 7
    platelet_threshold: float = 50.0
    platelet_window_days: int = 30
    # S5 / S6.
    hba1c_threshold: float = 8.0
    hba1c_window_days: int = 180
    pregnancy_window_days: int = 280
    # P1 / P2.
    pt_lookback_days: int = 90
    pt_after_tpi_days: int = 90
    pt_referral_window_days: int = 14
    # R1 / R3 / R4 / referral suppression.
    nonresponder_referral_count: int = 2
    widespread_region_count: int = 4
    migraine_recent_days: int = 730
    referral_lookback_days: int = 365

    def with_overrides(self, overrides: Mapping[str, Any]) -> PolicyProfile:
        """A copy with named fields replaced; values are coerced to the field's type."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in fields or key == "name":
                known = ", ".join(sorted(k for k in fields if k != "name"))
                raise PolicyError(f"unknown policy setting {key!r}; known settings: {known}")
            changes[key] = _coerce(key, fields[key].type, value)
        return dataclasses.replace(self, **changes)


PROFILES: dict[str, PolicyProfile] = {
    "medicare": PolicyProfile(name="medicare", session_cap=3, min_interval_days=42),
    "commercial": PolicyProfile(name="commercial", session_cap=4, min_interval_days=60),
}
PROFILE_NAMES = {"medicare": "Medicare", "commercial": "Commercial"}


@dataclass(frozen=True)
class Policies:
    """Every profile with the site's overrides, and the site's default profile.

    The profile in force for a patient comes from their coverage (section 2b); the default
    applies without usable coverage.
    """

    profiles: Mapping[str, PolicyProfile]
    default: str = "medicare"

    @property
    def default_profile(self) -> PolicyProfile:
        return self.profiles[self.default]

    def __getitem__(self, name: str) -> PolicyProfile:
        return self.profiles[name]


def policies_for(default: str = "medicare", overrides: Mapping[str, Any] | None = None) -> Policies:
    """Profiles with overrides: a plain key applies to every profile; a table named after a
    profile (``{"commercial": {"session_cap": 5}}``) to that profile only, after the plain ones.
    """
    if default not in PROFILES:
        raise PolicyError(
            f"unknown policy profile {default!r}; choose one of {', '.join(PROFILES)}"
        )
    overrides = dict(overrides or {})
    per_profile = {k: overrides.pop(k) for k in list(overrides) if k in PROFILES}
    profiles = {}
    for name, profile in PROFILES.items():
        own = per_profile.get(name) or {}
        if not isinstance(own, Mapping):
            raise PolicyError(f"policy table {name!r} must be a table of settings")
        profiles[name] = profile.with_overrides(overrides).with_overrides(own)
    return Policies(profiles, default)


def policy_for(name: str = "medicare", overrides: Mapping[str, Any] | None = None) -> PolicyProfile:
    """One profile with overrides (the site default of :func:`policies_for`)."""
    return policies_for(name, overrides).default_profile


def _coerce(key: str, type_name: Any, value: Any) -> Any:
    kind = {"int": int, "float": float, "bool": bool}.get(str(type_name))
    try:
        if kind is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return lowered in ("true", "1", "yes", "on")
            return bool(value)
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            number = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value)
        else:
            return value
    except (TypeError, ValueError):
        raise PolicyError(f"policy setting {key!r} must be {type_name}, got {value!r}") from None
    if number < 0:
        raise PolicyError(f"policy setting {key!r} must not be negative, got {value!r}")
    return number
