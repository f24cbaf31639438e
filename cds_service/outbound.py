"""Where the service may send a request: the outbound URL policy.

Caller input names URLs (``fhirServer``, ``next`` links, ``jku``); every URL the service
opens is normalised first and compared with configured bases by scheme, host, port and
whole path segments. Host names are never resolved to decide whether they are loopback.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Location:
    """A URL as the allowlist compares it: scheme, host, port and decoded path segments."""

    scheme: str
    host: str
    port: int
    segments: tuple[str, ...]

    def within(self, base: Location) -> bool:
        """Same scheme, host and port, and the base's path as a prefix by whole segments."""
        return (self.scheme, self.host, self.port) == (
            base.scheme,
            base.host,
            base.port,
        ) and self.segments[: len(base.segments)] == base.segments


def locate(url: str) -> Location | None:
    """Parse and normalise a URL; None for anything but a plain http(s) URL: user info, a
    bad port, or a dot segment (``..``, also percent-encoded) never survives."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in DEFAULT_PORTS or not host or parts.username or parts.password:
        return None
    segments = []
    for raw in parts.path.split("/"):
        segment = unquote(raw)
        if segment in (".", "..") or "/" in segment or "\\" in segment:
            return None
        if segment:
            segments.append(segment)
    return Location(scheme, host, port or DEFAULT_PORTS[scheme], tuple(segments))


def is_loopback(host: str) -> bool:
    """localhost, or an IP address on the loopback network (parsed, never resolved)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refusal(url: str, allowed: tuple[str, ...], *, allow_http_loopback: bool) -> str | None:
    """Why this URL may not be fetched, or None when it may.

    An allowlist entry is a base URL (``https://ehr.example.org/fhir``: same scheme, host,
    port, and its path as a prefix by segments) or the word ``loopback`` (127.0.0.0/8,
    ::1, localhost). Only https, unless the development setting allows plain http to a
    loopback server.
    """
    location = locate(url)
    if location is None:
        return "not a plain http(s) URL (user info, a bad port or a dot segment)"
    if location.scheme != "https" and not (allow_http_loopback and is_loopback(location.host)):
        return "plain http is not allowed (https only)"
    for entry in allowed:
        if entry == "loopback":
            if is_loopback(location.host):
                return None
            continue
        base = locate(entry)
        if base is not None and location.within(base):
            return None
    return "not on the allowlist"


def is_allowed_server(url: str, allowed: tuple[str, ...], *, allow_http_loopback: bool) -> bool:
    return refusal(url, allowed, allow_http_loopback=allow_http_loopback) is None
