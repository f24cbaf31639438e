"""Configuration: environment variables with one prefix, and an optional TOML file.

Environment wins over the file. Every threshold of the policy profile can be overridden,
either all at once (``TPI_CDS_POLICY`` = a JSON object) or one by one
(``TPI_CDS_POLICY_SESSION_CAP=4``).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cards import Engine, Terminology, policy_for

PREFIX = "TPI_CDS_"


class SettingsError(ValueError):
    """Configuration that cannot be used; the service refuses to start with it."""


@dataclass(frozen=True)
class EngineSettings:
    profile: str = "medicare"
    policy_overrides: Mapping[str, Any] = field(default_factory=dict)
    valueset_dir: str | None = None
    timezone: str = "UTC"

    def build_engine(self) -> Engine:
        policy = policy_for(self.profile, self.policy_overrides)
        return Engine(load_terminology(self.valueset_dir), policy)

    def today(self) -> date:
        """One "today" per request, in the configured time zone."""
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SettingsError(f"unknown time zone {self.timezone!r}") from exc
        return datetime.now(zone).date()

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> EngineSettings:
        values = _file_values(environ.get(f"{PREFIX}CONFIG"))
        overrides: dict[str, Any] = dict(values.get("policy", {}))
        if f"{PREFIX}POLICY" in environ:
            try:
                parsed = json.loads(environ[f"{PREFIX}POLICY"])
            except json.JSONDecodeError as exc:
                raise SettingsError(f"{PREFIX}POLICY is not JSON: {exc}") from exc
            if not isinstance(parsed, dict):
                raise SettingsError(f"{PREFIX}POLICY must be a JSON object")
            overrides.update(parsed)
        for key, value in environ.items():
            if key.startswith(f"{PREFIX}POLICY_"):
                overrides[key.removeprefix(f"{PREFIX}POLICY_").lower()] = value
        settings = cls(
            profile=environ.get(f"{PREFIX}PROFILE", values.get("profile", "medicare")),
            policy_overrides=overrides,
            valueset_dir=environ.get(f"{PREFIX}VALUESET_DIR", values.get("valueset_dir")) or None,
            timezone=environ.get(f"{PREFIX}TIMEZONE", values.get("timezone", "UTC")),
        )
        settings.today()
        return settings


def _file_values(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with Path(path).open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise SettingsError(f"cannot read configuration file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"configuration file {path} is not valid TOML: {exc}") from exc


@lru_cache(maxsize=8)
def load_terminology(valueset_dir: str | None) -> Terminology:
    """Value sets are loaded once per process (per folder)."""
    return Terminology.load(valueset_dir)
