"""CDS Hooks 2.0 authentication: a JWT signed by an EHR we trust, on every call.

Checks, in order: a bearer token; an allowed asymmetric algorithm (never ``none``, never
HMAC); an issuer on the allowlist; the signing key from that issuer's configured key set
(a ``jku`` only when it is one of that issuer's JWKS URLs); the signature; ``aud`` equal
to the URL called; ``exp``, ``iat`` (with a small leeway) and a maximum lifetime; the
tenant when an allowlist is set; and a ``jti`` never seen before within its lifetime,
across every worker and replica. Any failure is the same bare 401: the caller learns
nothing about which check failed; the log says which, without the token.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient, PyJWKSet

from cds_service.outbound import is_loopback, locate
from cds_service.replay import ReplayGuard

log = logging.getLogger(__name__)
ALLOWED_ALGORITHMS = ("RS384", "ES384")
FORBIDDEN_ALGORITHMS = ("none", "HS256", "HS384", "HS512")
SANDBOX_ISSUER = "https://sandbox.cds-hooks.org"
SANDBOX_JWKS_URL = "https://sandbox.cds-hooks.org/.well-known/jwks.json"


class AuthError(Exception):
    """Why a token was refused: for the log only, never for the caller."""


class ConfigurationError(ValueError):
    """An issuer entry that cannot be used."""


@dataclass(frozen=True)
class IssuerConfig:
    """One EHR (or sandbox) we accept calls from, and where its keys and FHIR servers are."""

    iss: str
    jwks: Mapping[str, Any] | None = None
    jwks_file: str | None = None
    jwks_urls: tuple[str, ...] = ()
    fhir_servers: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, value: Mapping[str, Any]) -> IssuerConfig:
        if not isinstance(value, Mapping) or not isinstance(value.get("iss"), str):
            raise ConfigurationError("each issuer needs an 'iss' string")
        urls = value.get("jwks_urls", value.get("jwks_url", ()))
        urls = (urls,) if isinstance(urls, str) else tuple(urls)
        issuer = cls(
            iss=value["iss"],
            jwks=value.get("jwks"),
            jwks_file=value.get("jwks_file"),
            jwks_urls=tuple(str(u) for u in urls),
            fhir_servers=tuple(str(s) for s in value.get("fhir_servers", ())),
            tenants=tuple(str(t) for t in value.get("tenants", ())),
        )
        if not (issuer.jwks or issuer.jwks_file or issuer.jwks_urls):
            raise ConfigurationError(f"issuer {issuer.iss}: give jwks, jwks_file or jwks_urls")
        for url in issuer.jwks_urls:
            if not (url.startswith("https://") or _is_loopback_http(url)):
                raise ConfigurationError(f"issuer {issuer.iss}: JWKS URLs must be https")
        return issuer


# The public sandbox's signing key, pinned so that `make run` works with the sandbox on a
# machine that cannot reach its JWKS URL. The sandbox signs ES384 with this kid
# (cds-hooks/sandbox, src/retrieve-data-helpers/jwt-generator.js); the public key is the one
# the sandbox publishes, as copied into cerner/cds-services-tutorial (index.js) and two
# other public projects, all with the same x and y.
SANDBOX_KEY = {
    "kty": "EC",
    "crv": "P-384",
    "kid": "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f",
    "use": "sig",
    "alg": "ES384",
    "x": "dw_JGR8nB2I6XveNxUOl2qk699ZPLM2nYI5STSdiEl9avAkrm3CkfYMbrrjr8laB",
    "y": "Sm3mLE-n1zYNla_aiE3cb3nZsL51RbC7ysw3q8aJLxGm-hx79RPMYpITDjp7kgzy",
}
SANDBOX = IssuerConfig(
    iss=SANDBOX_ISSUER, jwks={"keys": [SANDBOX_KEY]}, jwks_urls=(SANDBOX_JWKS_URL,)
)


@dataclass(frozen=True)
class AuthSettings:
    enabled: bool = True
    issuers: tuple[IssuerConfig, ...] = ()
    algorithms: tuple[str, ...] = ALLOWED_ALGORITHMS
    leeway_seconds: float = 10.0
    max_lifetime_seconds: float = 600.0
    jwks_cache_seconds: float = 300.0
    jwks_timeout_seconds: float = 2.0
    # An unknown kid refreshes a key set at most this often: a flood of invented kids
    # must not turn into a flood of fetches.
    jwks_refresh_cooldown_seconds: float = 5.0
    public_base_url: str | None = None

    def __post_init__(self) -> None:
        bad = [
            a
            for a in self.algorithms
            if a in FORBIDDEN_ALGORITHMS or a[:2] not in ("RS", "ES", "PS")
        ]
        if bad:
            raise ConfigurationError(f"algorithms not allowed for CDS Hooks: {', '.join(bad)}")


@dataclass
class _IssuerKeys:
    """An issuer's key sources: static sets, and a cached client per JWKS URL."""

    config: IssuerConfig
    static: list[PyJWKSet] = field(default_factory=list)
    clients: dict[str, PyJWKClient] = field(default_factory=dict)


class Authenticator:
    def __init__(self, settings: AuthSettings, replay: ReplayGuard | None) -> None:
        self.settings = settings
        self.replay = replay
        self._issuers: dict[str, _IssuerKeys] = {}
        self._lock = threading.Lock()
        for issuer in settings.issuers:
            keys = _IssuerKeys(issuer)
            if issuer.jwks:
                keys.static.append(_key_set(issuer.jwks, issuer.iss))
            if issuer.jwks_file:
                try:
                    document = json.loads(Path(issuer.jwks_file).read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    raise ConfigurationError(
                        f"issuer {issuer.iss}: cannot read JWKS file {issuer.jwks_file}"
                    ) from exc
                keys.static.append(_key_set(document, issuer.iss))
            for url in issuer.jwks_urls:
                keys.clients[url] = PyJWKClient(
                    url,
                    cache_jwk_set=True,
                    lifespan=settings.jwks_cache_seconds,
                    timeout=settings.jwks_timeout_seconds,
                    cooldown_duration=settings.jwks_refresh_cooldown_seconds,
                )
            self._issuers[issuer.iss] = keys

    def issuer(self, iss: str) -> IssuerConfig | None:
        keys = self._issuers.get(iss)
        return keys.config if keys else None

    def verify(self, authorization: str | None, audience: str | list[str]) -> dict[str, Any]:
        """The verified claims, or AuthError."""
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthError("no bearer token")
        token = authorization.removeprefix("Bearer ").strip()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed token ({type(exc).__name__})") from exc
        algorithm = header.get("alg")
        if algorithm not in self.settings.algorithms:
            raise AuthError(f"algorithm {algorithm!r} not allowed")
        iss = unverified.get("iss")
        keys = self._issuers.get(iss) if isinstance(iss, str) else None
        if keys is None:
            raise AuthError("issuer not on the allowlist")
        key = self._signing_key(keys, header)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(self.settings.algorithms),
                audience=audience,
                issuer=iss,
                leeway=self.settings.leeway_seconds,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"token refused ({type(exc).__name__})") from exc
        lifetime = float(claims["exp"]) - float(claims["iat"])
        if lifetime > self.settings.max_lifetime_seconds + self.settings.leeway_seconds:
            raise AuthError(f"token lifetime {lifetime:.0f} s is too long")
        if keys.config.tenants and claims.get("tenant") not in keys.config.tenants:
            raise AuthError("tenant not on the issuer's allowlist")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise AuthError("jti must be a non-empty string")
        if self.replay is not None and not self.replay.first_use(iss, jti, float(claims["exp"])):
            raise AuthError("jti already used")
        return claims

    def _signing_key(self, keys: _IssuerKeys, header: Mapping[str, Any]) -> PyJWK:
        """The issuer's configured key with the token's kid.

        Pinned keys first (no fetch at all). A ``jku`` on the issuer's list is asked
        first among the listed URLs; any other ``jku`` is never fetched and is no reason
        to refuse: the token is checked against the configured keys like one without it.
        """
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("no kid in the token header")
        for key_set in keys.static:
            for key in key_set.keys:
                if key.key_id == kid:
                    return key
        jku = header.get("jku")
        listed = keys.clients.get(jku) if isinstance(jku, str) else None
        clients = [listed] if listed is not None else []
        clients += [c for c in keys.clients.values() if c is not listed]
        for client in clients:
            try:
                return self._from_client(client, kid)
            except AuthError:
                continue
        raise AuthError("kid not in the issuer's key set")

    @staticmethod
    def _from_client(client: PyJWKClient, kid: str) -> PyJWK:
        try:
            return client.get_signing_key(kid)  # refreshes once on an unknown kid
        except jwt.PyJWKClientError as exc:
            raise AuthError(f"key {type(exc).__name__}") from exc


def _is_loopback_http(url: str) -> bool:
    """Plain http only for a key server on this machine (a development or test setup)."""
    location = locate(url)
    return location is not None and location.scheme == "http" and is_loopback(location.host)


def _key_set(document: Any, iss: str) -> PyJWKSet:
    try:
        return PyJWKSet.from_dict(document)
    except (jwt.PyJWTError, KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"issuer {iss}: the JWKS cannot be used ({exc})") from exc


def audience_bases(public_base_url: str | None, bind: str) -> tuple[str, ...]:
    """The URLs a token's ``aud`` may name (plus the path called).

    Behind a proxy: the public base URL, and nothing else. Without one, only this service's
    own loopback address (a development setup): never the request's ``Host`` header, which
    a caller chooses. A non-loopback bind without a public base URL is refused at start.
    """
    if public_base_url:
        return (public_base_url.rstrip("/"),)
    host, _, port = bind.rpartition(":")
    suffix = "" if port == "80" else f":{port}"
    if not is_loopback(host.strip("[]")) and host not in ("", "0.0.0.0", "::", "[::]"):
        return ()
    return tuple(f"http://{name}{suffix}" for name in ("127.0.0.1", "localhost", "[::1]"))


def needs_public_base_url(public_base_url: str | None, bind: str, auth_enabled: bool) -> bool:
    """Authentication on a non-loopback address needs the URL EHRs call."""
    host = bind.rpartition(":")[0].strip("[]")
    return (
        auth_enabled
        and not public_base_url
        and not bind.startswith("unix:")
        and not (is_loopback(host))
    )
