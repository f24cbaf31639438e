"""Completing the data: fetch what prefetch lacks from the EHR's FHIR server.

Each missing key is fetched with the query its template names, with the hook's bearer
token, following ``next`` links, with connect/read timeouts and one overall deadline per
request. A key that cannot be fetched stays missing (the caller answers 412); a read
that finds nothing is ``null``, as the EHR would have sent it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import orjson
import requests

from cards import resources_in
from cds_service.evaluation import HookRequest
from cds_service.services import Service, prefetch_templates
from cds_service.settings import load_terminology

log = logging.getLogger(__name__)
MAX_PAGES = 20


class FetchError(Exception):
    """One key could not be fetched; the reason is safe to log (no URL, no token)."""


@dataclass(frozen=True)
class FetchLimits:
    connect_timeout: float
    read_timeout: float
    deadline: float
    max_pages: int = MAX_PAGES
    allowed_servers: tuple[str, ...] = ()
    page_size: int | None = None
    allow_http_loopback: bool = False
    max_bytes: int = 20 * 1024 * 1024
    max_resources: int = 20_000


LOOPBACK_HOSTS = ("localhost", "::1")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def is_allowed_server(url: str, allowed: tuple[str, ...], *, allow_http_loopback: bool) -> bool:
    """``fhirServer`` is caller input: fetch only from configured base URLs.

    An entry is a base URL prefix (``https://ehr.example.org/fhir``) or the word
    ``loopback`` (any server on 127.0.0.0/8, localhost or ::1). Only https, unless the
    development setting allows plain http to a loopback server.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return False
    if not host or parts.username or parts.password:
        return False
    if parts.scheme != "https" and not (
        parts.scheme == "http" and allow_http_loopback and is_loopback(host)
    ):
        return False
    for entry in allowed:
        if entry == "loopback":
            if is_loopback(host):
                return True
        elif url.rstrip("/") == entry.rstrip("/") or url.startswith(entry.rstrip("/") + "/"):
            return True
    return False


class FhirFetcher:
    """Fetches missing prefetch keys for one hook request at a time (thread-safe)."""

    def __init__(self, limits: FetchLimits, valueset_dir: str | None = None) -> None:
        self.limits = limits
        self.templates = prefetch_templates(load_terminology(valueset_dir))
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/fhir+json, application/json"
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fhir-fetch")

    def fetch(
        self,
        request: HookRequest,
        service: Service,
        keys: list[str],
        extra_servers: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """The keys that could be fetched before the deadline; the others are left out.

        ``extra_servers``: base URLs allowed for this caller (its issuer's FHIR servers).
        """
        if not request.fhir_server or not keys:
            return {}
        allowed = (*self.limits.allowed_servers, *extra_servers)
        if not is_allowed_server(
            request.fhir_server, allowed, allow_http_loopback=self.limits.allow_http_loopback
        ):
            log.warning("fhirServer not on the allowlist: not contacted")
            return {}
        deadline = time.monotonic() + self.limits.deadline
        token = (request.fhir_authorization or {}).get("access_token")
        jobs = {}
        for key in keys:
            query = render_template(self.templates[key], request.context)
            if query is None:
                continue  # a token this hook cannot fill: the key is not applicable
            jobs[self.pool.submit(self._fetch_one, request.fhir_server, query, token, deadline)] = (
                key
            )
        done, _ = wait(jobs, timeout=max(0.0, deadline - time.monotonic()))
        found: dict[str, Any] = {}
        for future in done:
            key = jobs[future]
            try:
                found[key] = future.result()
            except FetchError as exc:
                log.info("prefetch key %s not fetched: %s", key, exc)
        return found

    def _fetch_one(self, base: str, query: str, token: str | None, deadline: float) -> Any:
        if self.limits.page_size and "?" in query:
            query = f"{query}&_count={self.limits.page_size}"
        url = urljoin(base.rstrip("/") + "/", query)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        is_read = "?" not in query
        first = self._get_json(url, headers, deadline, allow_not_found=is_read)
        if is_read or first is None:
            return first
        if first.get("resourceType") != "Bundle":
            raise FetchError(f"a search answered {first.get('resourceType')!r}, not a Bundle")
        entries = [{"resource": r} for r in resources_in(first)]
        if len(entries) > self.limits.max_resources:
            raise FetchError(f"more than {self.limits.max_resources} resources")
        seen = {url}
        page = first
        for _ in range(self.limits.max_pages - 1):
            next_url = _next_link(page)
            if next_url is None:
                break
            next_url = urljoin(url, next_url)
            if next_url in seen:
                raise FetchError("the server's next links loop")
            if urlsplit(next_url).netloc != urlsplit(url).netloc:
                raise FetchError("a next link points to another host")
            seen.add(next_url)
            page = self._get_json(next_url, headers, deadline)
            if page is None or page.get("resourceType") != "Bundle":
                raise FetchError("a next page is not a Bundle")
            entries.extend({"resource": r} for r in resources_in(page))
            if len(entries) > self.limits.max_resources:
                raise FetchError(f"more than {self.limits.max_resources} resources")
        else:
            if _next_link(page) is not None:
                raise FetchError(f"more than {self.limits.max_pages} pages")
        return {"resourceType": "Bundle", "type": "searchset", "entry": entries}

    def _get_json(
        self,
        url: str,
        headers: Mapping[str, str],
        deadline: float,
        *,
        allow_not_found: bool = False,
    ) -> dict[str, Any] | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError("deadline reached")
        timeout = (
            min(self.limits.connect_timeout, remaining),
            min(self.limits.read_timeout, remaining),
        )
        try:
            with self.session.get(
                url, headers=headers, timeout=timeout, allow_redirects=False, stream=True
            ) as response:
                if allow_not_found and response.status_code in (404, 410):
                    return None
                if response.status_code != 200:
                    raise FetchError(f"HTTP {response.status_code}")
                content = self._read_capped(response, deadline)
        except requests.Timeout as exc:
            raise FetchError("timed out") from exc
        except requests.RequestException as exc:
            raise FetchError(f"connection failed ({type(exc).__name__})") from exc
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise FetchError("the answer is not JSON") from exc
        if not isinstance(body, dict):
            raise FetchError("the answer is not a JSON object")
        if body.get("resourceType") == "OperationOutcome":
            raise FetchError("the server answered an OperationOutcome")
        return body

    def _read_capped(self, response: requests.Response, deadline: float) -> bytes:
        """The body, refusing more than the byte cap and stopping at the deadline."""
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.limits.max_bytes:
            raise FetchError(f"answer larger than {self.limits.max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(chunk_size=64 * 1024):
            size += len(chunk)
            if size > self.limits.max_bytes:
                raise FetchError(f"answer larger than {self.limits.max_bytes} bytes")
            if time.monotonic() > deadline:
                raise FetchError("deadline reached while reading")
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.session.close()


def _next_link(bundle: Mapping[str, Any]) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None


def render_template(template: str, context: Mapping[str, Any]) -> str | None:
    """Fill a prefetch template's tokens from the hook context; None when one cannot be."""
    user = context.get("userId") if isinstance(context.get("userId"), str) else ""
    kind, _, user_id = user.partition("/")
    values = {
        "{{context.patientId}}": context.get("patientId"),
        "{{context.encounterId}}": context.get("encounterId"),
        "{{context.userId}}": user or None,
        "{{userPractitionerId}}": user_id if kind == "Practitioner" else None,
        "{{userPractitionerRoleId}}": user_id if kind == "PractitionerRole" else None,
    }
    for token, value in values.items():
        if token in template:
            if not isinstance(value, str) or not value:
                return None
            template = template.replace(token, quote(value, safe="/"))
    return template
