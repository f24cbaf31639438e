"""Configuration: environment variables with one prefix, and an optional TOML file.

Environment wins over the file. Every threshold of the policy profile can be overridden,
either all at once (``TPI_CDS_POLICY`` = a JSON object) or one by one
(``TPI_CDS_POLICY_SESSION_CAP=4``).
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cards import Engine, Terminology, policies_for
from cds_service.auth import (
    ALLOWED_ALGORITHMS,
    SANDBOX,
    AuthSettings,
    ConfigurationError,
    IssuerConfig,
)

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
        policies = policies_for(self.profile, self.policy_overrides)
        return Engine(load_terminology(self.valueset_dir), policies)

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


def _number(
    environ: Mapping[str, str], values: Mapping[str, Any], key: str, default: float
) -> float:
    raw = environ.get(f"{PREFIX}{key.upper()}", values.get(key, default))
    try:
        number = float(raw)
    except (TypeError, ValueError):
        raise SettingsError(f"{PREFIX}{key.upper()} must be a number, got {raw!r}") from None
    if number <= 0:
        raise SettingsError(f"{PREFIX}{key.upper()} must be positive, got {raw!r}")
    return number


def default_workers() -> int:
    """2 x usable CPUs + 1 (gunicorn's advice), counting the CPUs this process may really
    use: its affinity and a cgroup CPU quota (a container limited to 2 CPUs on a 64-core
    host gets 5 workers, not 129)."""
    return 2 * usable_cpus() + 1


def usable_cpus(cgroup_root: str = "/sys/fs/cgroup") -> int:
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota(Path(cgroup_root))
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def _cgroup_cpu_quota(root: Path) -> float | None:
    """CPUs allowed by cgroup v2 ``cpu.max`` or v1 ``cfs_quota_us / cfs_period_us``."""
    try:
        fields = (root / "cpu.max").read_text().split()
        if fields and fields[0] != "max":
            return int(fields[0]) / int(fields[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


@dataclass(frozen=True)
class MemorySettings:
    """Card memory: on by default; the repeat window; the secret keying its hashes."""

    enabled: bool = True
    repeat_hours: float = 24.0
    secret: str | None = None
    budget_seconds: float = 0.2

    @classmethod
    def from_env(cls, environ: Mapping[str, str], values: Mapping[str, Any]) -> MemorySettings:
        hours = _number(environ, values, "memory_repeat_hours", cls.repeat_hours)
        if hours < 0:
            raise SettingsError(f"{PREFIX}MEMORY_REPEAT_HOURS must be 0 or more, got {hours}")
        return cls(
            enabled=_flag(environ, values, "memory", True),
            repeat_hours=float(hours),
            secret=checked_secret(
                environ.get(f"{PREFIX}MEMORY_SECRET", values.get("memory_secret")) or None
            ),
        )


MIN_SECRET_BYTES = 16


def _is_hex(text: str | None) -> bool:
    if not text or len(text) % 2:
        return False
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def secret_bytes(text: str | None) -> bytes | None:
    """A configured secret: hex digits as the bytes they spell, other text as UTF-8."""
    if not text:
        return None
    return bytes.fromhex(text) if _is_hex(text) else text.encode()


def checked_secret(text: str | None) -> str | None:
    """A configured secret must carry at least 16 bytes (32 hex digits or 16 characters)."""
    if text is None:
        return None
    size = len(text) // 2 if _is_hex(text) else len(text.encode())
    if size < MIN_SECRET_BYTES:
        raise SettingsError(
            f"TPI_CDS_MEMORY_SECRET must hold at least {MIN_SECRET_BYTES} bytes "
            "(for example: python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    return text


@dataclass(frozen=True)
class ServiceSettings:
    """Everything the web service reads from its environment, checked once at start."""

    engine: EngineSettings = field(default_factory=EngineSettings)
    bind: str = "127.0.0.1:8080"
    workers: int = field(default_factory=default_workers)
    data_dir: str = "data"
    database_url: str | None = None
    cors_origins: tuple[str, ...] = ("https://sandbox.cds-hooks.org",)
    fetch_connect_timeout: float = 0.2
    fetch_read_timeout: float = 0.5
    fetch_deadline: float = 0.6
    max_body_bytes: int = 16 * 1024 * 1024
    fhir_server_allowlist: tuple[str, ...] = ()
    fetch_page_size: int | None = None
    fetch_allow_http_loopback: bool = False
    fetch_max_bytes: int = 20 * 1024 * 1024
    fetch_max_resources: int = 20_000
    auth: AuthSettings = field(default_factory=AuthSettings)
    redis_url: str | None = None
    memory: MemorySettings = field(default_factory=MemorySettings)
    metrics_enabled: bool = True
    metrics_allow: tuple[str, ...] = ("loopback", "private")
    metrics_dir: str | None = None

    @property
    def store_url(self) -> str:
        """SQLite under the data folder unless a database URL is configured."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'tpi-cds.sqlite3'}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ServiceSettings:
        values = _file_values(environ.get(f"{PREFIX}CONFIG"))
        service = values.get("service", {})
        cors = _string_list(
            environ.get(f"{PREFIX}CORS_ORIGINS", service.get("cors_origins")), cls.cors_origins
        )
        allowlist = _string_list(
            environ.get(f"{PREFIX}FHIR_SERVER_ALLOWLIST", service.get("fhir_server_allowlist")), ()
        )
        workers = _number(environ, service, "workers", default_workers())
        body = _number(environ, service, "max_body_bytes", cls.max_body_bytes)
        return cls(
            engine=EngineSettings.from_env(environ),
            bind=checked_bind(environ.get(f"{PREFIX}BIND", service.get("bind", cls.bind))),
            workers=int(workers),
            data_dir=environ.get(f"{PREFIX}DATA_DIR", service.get("data_dir", cls.data_dir)),
            database_url=environ.get(f"{PREFIX}DATABASE_URL", service.get("database_url")) or None,
            cors_origins=cors,
            fetch_connect_timeout=_number(
                environ, service, "fetch_connect_timeout", cls.fetch_connect_timeout
            ),
            fetch_read_timeout=_number(
                environ, service, "fetch_read_timeout", cls.fetch_read_timeout
            ),
            fetch_deadline=_number(environ, service, "fetch_deadline", cls.fetch_deadline),
            max_body_bytes=int(body),
            fhir_server_allowlist=allowlist,
            fetch_allow_http_loopback=_flag(environ, service, "fetch_allow_http_loopback", False),
            fetch_max_bytes=int(_number(environ, service, "fetch_max_bytes", cls.fetch_max_bytes)),
            fetch_max_resources=int(
                _number(environ, service, "fetch_max_resources", cls.fetch_max_resources)
            ),
            auth=_auth_settings(environ, values.get("auth", {})),
            redis_url=environ.get(f"{PREFIX}REDIS_URL", service.get("redis_url")) or None,
            memory=MemorySettings.from_env(environ, service),
            metrics_enabled=_flag(environ, service, "metrics", True),
            metrics_allow=_scrape_allow(
                environ.get(f"{PREFIX}METRICS_ALLOW", service.get("metrics_allow"))
            ),
            metrics_dir=environ.get(f"{PREFIX}METRICS_DIR", service.get("metrics_dir")) or None,
            fetch_page_size=int(page)
            if (page := environ.get(f"{PREFIX}FETCH_PAGE_SIZE", service.get("fetch_page_size")))
            else None,
        )


def _scrape_allow(value: Any) -> tuple[str, ...]:
    """Who may read /metrics, checked at start: networks, ``loopback``, ``private``, ``any``."""
    from cds_service.metrics import ScrapeAllowList

    entries = _string_list(value, ServiceSettings.metrics_allow)
    try:
        ScrapeAllowList(entries)
    except ValueError as exc:
        raise SettingsError(
            f"{PREFIX}METRICS_ALLOW: {exc} (give networks such as 10.0.0.0/8, or the words "
            "loopback, private, any)"
        ) from None
    return entries


BIND = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):(?P<port>\d{1,5})")


def checked_bind(value: Any) -> str:
    """``host:port`` (``[::1]:8080`` for IPv6) or ``unix:/path``; anything else is refused
    at start rather than silently listening somewhere else."""
    text = str(value).strip()
    if text.startswith("unix:") and len(text) > len("unix:"):
        return text
    match = BIND.fullmatch(text)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise SettingsError(
            f"{PREFIX}BIND must be host:port (for example 127.0.0.1:8080) or unix:/path, "
            f"not {text!r}"
        )
    return text


def _string_list(value: Any, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return tuple(str(item) for item in value)


def _flag(environ: Mapping[str, str], values: Mapping[str, Any], key: str, default: bool) -> bool:
    raw = environ.get(f"{PREFIX}{key.upper()}", values.get(key, default))
    if isinstance(raw, bool):
        return raw
    lowered = str(raw).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{PREFIX}{key.upper()} must be true or false, got {raw!r}")


def _auth_settings(environ: Mapping[str, str], values: Mapping[str, Any]) -> AuthSettings:
    """Issuers from ``[[auth.issuers]]`` in the file and/or ``TPI_CDS_AUTH_ISSUERS`` (JSON)."""
    entries = list(values.get("issuers", []))
    raw = environ.get(f"{PREFIX}AUTH_ISSUERS")
    if raw:
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"{PREFIX}AUTH_ISSUERS is not JSON: {exc}") from exc
        entries.extend(parsed if isinstance(parsed, list) else [parsed])
    try:
        issuers = [IssuerConfig.from_mapping(entry) for entry in entries]
    except ConfigurationError as exc:
        raise SettingsError(f"auth issuers: {exc}") from exc
    if _flag(environ, values, "auth_sandbox", False) or values.get("sandbox") is True:
        issuers.append(SANDBOX)
    algorithms = _string_list(
        environ.get(f"{PREFIX}AUTH_ALGORITHMS", values.get("algorithms")), ALLOWED_ALGORITHMS
    )
    try:
        return AuthSettings(
            enabled=not _flag(environ, values, "auth_disabled", values.get("disabled", False)),
            issuers=tuple(issuers),
            algorithms=algorithms,
            leeway_seconds=_number(environ, values, "auth_leeway_seconds", 10.0),
            max_lifetime_seconds=_number(environ, values, "auth_max_lifetime_seconds", 600.0),
            jwks_cache_seconds=_number(environ, values, "auth_jwks_cache_seconds", 300.0),
            public_base_url=environ.get(f"{PREFIX}PUBLIC_BASE_URL", values.get("public_base_url"))
            or None,
        )
    except ConfigurationError as exc:
        raise SettingsError(f"auth: {exc}") from exc
