"""A FHIR Bulk Data client: kick off ``$export``, wait for it, download the NDJSON files.

Kick-off asks for the resource types the patient-view rules read (``_type``) with
``Prefer: respond-async``; the status endpoint is polled as the server asks
(``Retry-After``, with ``X-Progress`` shown), and the manifest's files are downloaded with
the access token when it says one is required. Credentials: a static bearer token, or
SMART Backend Services (client credentials with an RS384 / ES384 client assertion).

Nothing read from the export is printed: only counts and the server's own error text.
"""

from __future__ import annotations

import contextlib
import email.utils
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests

from cds_service.screening.progress import Progress
from cds_service.settings import PREFIX, SettingsError, _file_values

# The resource types the patient-view rules read (and Patient, to count who was screened).
EXPORT_TYPES = (
    "Patient",
    "Condition",
    "Procedure",
    "Observation",
    "ServiceRequest",
    "CarePlan",
    "Coverage",
)
ALGORITHMS = ("RS384", "ES384")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
NDJSON = "application/fhir+ndjson"
ASSERTION_LIFETIME = 240  # seconds; servers accept at most 300
REQUEST_TIMEOUT = 60.0  # seconds for one request (a file download streams past this)
FIRST_WAIT = 1.0  # seconds before the first re-poll when the server gives no Retry-After
LONGEST_WAIT = 120.0  # seconds between polls at most, whatever Retry-After says
TRANSIENT_TRIES = 3  # consecutive network failures tolerated while polling
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class BulkError(RuntimeError):
    """The export could not be had: a refusal, a failed job, a time-out."""


class BulkAuthError(BulkError):
    """The FHIR server or its token endpoint refused our credentials."""


@dataclass(frozen=True)
class BulkSettings:
    """How the client authenticates (environment ``TPI_CDS_BULK_*`` or the TOML ``[bulk]``)."""

    token: str | None = None
    client_id: str | None = None
    private_key: str | None = None  # path of a PEM file
    key_id: str | None = None
    algorithm: str = "RS384"
    scope: str = "system/*.read"
    token_url: str | None = None

    @property
    def smart(self) -> bool:
        return self.client_id is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BulkSettings:
        table = _file_values(environ.get(f"{PREFIX}CONFIG")).get("bulk", {})

        def value(name: str) -> str | None:
            found = environ.get(f"{PREFIX}BULK_{name.upper()}", table.get(name))
            return str(found) if found not in (None, "") else None

        settings = cls(
            token=value("token"),
            client_id=value("client_id"),
            private_key=value("private_key"),
            key_id=value("key_id"),
            algorithm=value("algorithm") or "RS384",
            scope=value("scope") or "system/*.read",
            token_url=value("token_url"),
        )
        if settings.algorithm not in ALGORITHMS:
            raise SettingsError(
                f"{PREFIX}BULK_ALGORITHM must be one of {', '.join(ALGORITHMS)}, "
                f"got {settings.algorithm!r}"
            )
        if settings.smart and not settings.private_key:
            raise SettingsError(
                f"{PREFIX}BULK_CLIENT_ID needs {PREFIX}BULK_PRIVATE_KEY (a PEM file)"
            )
        if settings.smart and settings.token:
            raise SettingsError(
                f"set either {PREFIX}BULK_TOKEN or {PREFIX}BULK_CLIENT_ID (SMART), not both"
            )
        return settings


def export_url(base_url: str, level: str, group: str | None) -> str:
    base = base_url.rstrip("/")
    if level == "group":
        if not group:
            raise BulkError("a group export needs a Group id")
        return f"{base}/Group/{group}/$export"
    if level == "patient":
        return f"{base}/Patient/$export"
    return f"{base}/$export"


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def diagnostics(response: requests.Response) -> str:
    """The server's own words about a failure: OperationOutcome diagnostics or OAuth error."""
    try:
        body = response.json()
    except ValueError:
        return (response.text or "").strip()[:200] or response.reason or ""
    if isinstance(body, dict):
        if body.get("resourceType") == "OperationOutcome":
            texts = [
                str(i.get("diagnostics") or i.get("code") or "")
                for i in body.get("issue") or []
                if isinstance(i, dict)
            ]
            return "; ".join(t for t in texts if t)[:300]
        if "error" in body:
            return f"{body['error']}: {body.get('error_description', '')}".strip(": ")[:300]
    return str(body)[:200]


class BulkClient:
    """One FHIR server's Bulk Data export, start to files on disk."""

    def __init__(
        self,
        base_url: str,
        settings: BulkSettings,
        *,
        progress: Progress | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise BulkError(f"{base_url!r} is not an http(s) URL")
        if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
            raise BulkError("plain http is allowed only on loopback: use https")
        self.base_url = base_url.rstrip("/")
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.settings = settings
        self.progress = progress or Progress()
        self.session = session or requests.Session()
        self.sleep = sleep
        self._token: str | None = settings.token
        self._token_expires = float("inf")
        self.polls = 0  # status requests made (for tests and the summary)
        self.waited = 0.0  # seconds slept between polls

    # ---- credentials

    def _authorization(self) -> dict[str, str]:
        if self.settings.smart and (
            self._token is None or time.monotonic() > self._token_expires - 30
        ):
            self._token = self._smart_token()
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def token_endpoint(self) -> str:
        if self.settings.token_url:
            return self.settings.token_url
        url = f"{self.base_url}/.well-known/smart-configuration"
        try:
            response = self.session.get(
                url, headers={"Accept": "application/json"}, timeout=REQUEST_TIMEOUT
            )
            found = response.json().get("token_endpoint") if response.ok else None
        except (requests.RequestException, ValueError, AttributeError) as exc:
            raise BulkAuthError(f"cannot read {url}: {exc}") from exc
        if not isinstance(found, str) or not found:
            raise BulkAuthError(
                f"{url} names no token_endpoint (HTTP {response.status_code}); "
                f"set {PREFIX}BULK_TOKEN_URL"
            )
        return found

    def _smart_token(self) -> str:
        """SMART Backend Services: a signed client assertion for an access token."""
        settings = self.settings
        token_url = self.token_endpoint()
        try:
            key = Path(settings.private_key or "").read_bytes()
        except OSError as exc:
            raise BulkAuthError(f"cannot read the private key: {exc.strerror}") from exc
        now = int(time.time())
        claims = {
            "iss": settings.client_id,
            "sub": settings.client_id,
            "aud": token_url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
            "jti": secrets.token_hex(16),
        }
        headers = {"typ": "JWT", **({"kid": settings.key_id} if settings.key_id else {})}
        try:
            assertion = jwt.encode(claims, key, algorithm=settings.algorithm, headers=headers)
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise BulkAuthError(
                f"cannot sign the client assertion with {settings.algorithm}: {exc}"
            ) from exc
        try:
            response = self.session.post(
                token_url,
                data={
                    "grant_type": "client_credentials",
                    "scope": settings.scope,
                    "client_assertion_type": ASSERTION_TYPE,
                    "client_assertion": assertion,
                },
                headers={"Accept": "application/json"},
                timeout=REQUEST_TIMEOUT,
            )
        except requests.RequestException as exc:
            raise BulkAuthError(f"the token endpoint did not answer: {exc}") from exc
        if response.status_code != 200:
            raise BulkAuthError(
                f"the token endpoint refused the client (HTTP {response.status_code}): "
                f"{diagnostics(response)}"
            )
        try:
            body = response.json()
            token = body["access_token"]
            lifetime = float(body.get("expires_in") or 300)
        except (ValueError, KeyError, TypeError) as exc:
            raise BulkAuthError("the token endpoint's answer holds no access_token") from exc
        self._token_expires = time.monotonic() + lifetime
        return str(token)

    # ---- the export

    def export(
        self,
        folder: Path,
        *,
        level: str = "patient",
        group: str | None = None,
        timeout: float = 3600.0,
        types: tuple[str, ...] = EXPORT_TYPES,
    ) -> dict[str, Any]:
        """Run one export into ``folder``; the manifest. Raises BulkError."""
        status_url = self.kick_off(level, group, types)
        try:
            manifest = self.wait(status_url, time.monotonic() + timeout)
        except BulkError:
            self._delete(status_url)
            raise
        self.download(manifest, folder)
        self._delete(status_url)
        return manifest

    def kick_off(self, level: str, group: str | None, types: tuple[str, ...]) -> str:
        url = export_url(self.base_url, level, group)
        self.progress.note(f"starting a {level}-level $export of {len(types)} resource types")
        try:
            response = self.session.get(
                url,
                params={"_type": ",".join(types), "_outputFormat": NDJSON},
                headers={
                    "Accept": "application/fhir+json",
                    "Prefer": "respond-async",
                    **self._authorization(),
                },
                timeout=REQUEST_TIMEOUT,
            )
        except requests.RequestException as exc:
            raise BulkError(f"the FHIR server did not answer the kick-off: {exc}") from exc
        if response.status_code in (401, 403):
            raise BulkAuthError(
                f"the FHIR server refused the credentials (HTTP {response.status_code}): "
                f"{diagnostics(response)}"
            )
        if response.status_code != 202:
            raise BulkError(
                f"the kick-off was answered HTTP {response.status_code}, not 202: "
                f"{diagnostics(response)}"
            )
        location = response.headers.get("Content-Location")
        if not location:
            raise BulkError("the kick-off answer has no Content-Location (status URL)")
        return location

    def wait(self, status_url: str, deadline: float) -> dict[str, Any]:
        """Poll the status endpoint until the manifest, honouring Retry-After."""
        pause = FIRST_WAIT
        failures = 0
        last_progress = None
        while True:
            try:
                response = self.session.get(
                    status_url,
                    headers={"Accept": "application/json", **self._authorization()},
                    timeout=REQUEST_TIMEOUT,
                )
                failures = 0
            except requests.RequestException as exc:
                failures += 1
                if failures >= TRANSIENT_TRIES:
                    raise BulkError(f"the status endpoint did not answer: {exc}") from exc
                response = None
            self.polls += 1
            if response is not None and response.status_code == 200:
                return self._manifest(response)
            if response is not None and response.status_code in (401, 403):
                raise BulkAuthError(
                    f"the status endpoint refused the credentials (HTTP "
                    f"{response.status_code}): {diagnostics(response)}"
                )
            if response is not None and response.status_code not in (202, 429):
                raise BulkError(
                    f"the export failed (HTTP {response.status_code}): {diagnostics(response)}"
                )
            asked = retry_after(response.headers.get("Retry-After")) if response else None
            if response is not None:
                progress = response.headers.get("X-Progress")
                if progress and progress != last_progress:
                    self.progress.note(f"export in progress: {progress[:100]}")
                    last_progress = progress
            delay = min(asked if asked is not None else pause, LONGEST_WAIT)
            if asked is None:
                pause = min(pause * 2, LONGEST_WAIT)
            if time.monotonic() + delay > deadline:
                raise BulkError("the export did not finish in time (--timeout); cancelled it")
            self.sleep(delay)
            self.waited += delay

    def _manifest(self, response: requests.Response) -> dict[str, Any]:
        try:
            manifest = response.json()
        except ValueError as exc:
            raise BulkError("the export's manifest is not JSON") from exc
        if not isinstance(manifest, dict) or not isinstance(manifest.get("output"), list):
            raise BulkError("the export's manifest has no output list")
        return manifest

    def download(self, manifest: dict[str, Any], folder: Path) -> None:
        """Each output file to ``{type}-{n}.ndjson`` in ``folder``; error files counted."""
        folder.mkdir(parents=True, exist_ok=True)
        outputs = [o for o in manifest["output"] if isinstance(o, dict) and o.get("url")]
        needs_token = bool(manifest.get("requiresAccessToken"))
        self.progress.start("downloading export files", len(outputs))
        for index, item in enumerate(outputs):
            kind = str(item.get("type") or "Resource")
            safe = "".join(c for c in kind if c.isalnum()) or "Resource"
            self._fetch(str(item["url"]), folder / f"{safe}-{index:04d}.ndjson", needs_token)
            self.progress.advance(1)
        self.progress.done()
        errors = [e for e in manifest.get("error") or [] if isinstance(e, dict) and e.get("url")]
        if errors:
            self.progress.note(
                f"the server reported {len(errors)} error file(s) with the export "
                "(OperationOutcomes; not screened)"
            )

    def _fetch(self, url: str, target: Path, needs_token: bool) -> None:
        headers = {"Accept": NDJSON}
        if needs_token:
            parts = urlsplit(url)
            if f"{parts.scheme}://{parts.netloc}" != self.origin:
                raise BulkError(
                    "a file that requires the access token is on another server; "
                    "the token is sent only to the FHIR server's own origin"
                )
            headers.update(self._authorization())
        try:
            with self.session.get(url, headers=headers, stream=True, timeout=REQUEST_TIMEOUT) as r:
                if r.status_code in (401, 403):
                    raise BulkAuthError(f"a file download was refused (HTTP {r.status_code})")
                if r.status_code != 200:
                    raise BulkError(f"a file download failed (HTTP {r.status_code})")
                with target.open("wb") as out:
                    for chunk in r.iter_content(chunk_size=1 << 20):
                        out.write(chunk)
        except requests.RequestException as exc:
            raise BulkError(f"a file download failed: {exc}") from exc

    def _delete(self, status_url: str) -> None:
        """Tell the server we are done (it may free the files); failures do not matter."""
        with contextlib.suppress(requests.RequestException, BulkError):
            self.session.delete(status_url, headers=self._authorization(), timeout=10)
