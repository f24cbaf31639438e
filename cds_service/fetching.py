"""Completing the data: fetch what prefetch lacks from the EHR's FHIR server.

Each missing key is fetched with the query its template names, with the hook's bearer
token, following ``next`` links, with connect/read timeouts and one overall deadline per
request. A key that cannot be fetched stays missing (the caller answers 412); a read
that finds nothing is ``null``, as the EHR would have sent it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin

import orjson
import requests
import urllib3

from cards import resources_in
from cds_service.evaluation import HookRequest
from cds_service.outbound import locate, refusal
from cds_service.services import Service, prefetch_templates
from cds_service.settings import load_terminology

log = logging.getLogger(__name__)
MAX_PAGES = 20
FETCH_THREADS = 32
# One FHIR server may hold at most this many fetch slots at once: a slow server (or one
# caller's) cannot take them all from everyone else.
SLOTS_PER_SERVER = 24
READ_CHUNK = 64 * 1024
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


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


class FhirFetcher:
    """Fetches missing prefetch keys for one hook request at a time (thread-safe)."""

    def __init__(self, limits: FetchLimits, valueset_dir: str | None = None) -> None:
        self.limits = limits
        self.templates = prefetch_templates(load_terminology(valueset_dir))
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/fhir+json, application/json"
        self.pool = ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="fhir-fetch")
        self._in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()
        # Told each key's outcome ("ok", "failed", "deadline"): the service's metrics.
        self.on_outcome: Callable[[str, str], None] = lambda key, outcome: None

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
        why = refusal(
            request.fhir_server, allowed, allow_http_loopback=self.limits.allow_http_loopback
        )
        if why is not None:
            log.warning("fhirServer not contacted: %s", why)
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
        done, late = wait(jobs, timeout=max(0.0, deadline - time.monotonic()))
        found: dict[str, Any] = {}
        for future in done:
            key = jobs[future]
            try:
                found[key] = future.result()
            except FetchError as exc:
                log.info("prefetch key %s not fetched: %s", key, exc)
                self.on_outcome(key, "failed")
            else:
                self.on_outcome(key, "ok")
        for future in late:
            self.on_outcome(jobs[future], "deadline")
        return found

    def _fetch_one(self, base: str, query: str, token: str | None, deadline: float) -> Any:
        """One key, holding one of the server's slots for no longer than the deadline."""
        server = locate(base)
        key = f"{server.scheme}://{server.host}:{server.port}" if server else base
        with self._lock:
            if self._in_flight[key] >= SLOTS_PER_SERVER:
                raise FetchError("the FHIR server already has every fetch slot it may use")
            self._in_flight[key] += 1
        try:
            return self._fetch_pages(base, query, token, deadline)
        finally:
            with self._lock:
                self._in_flight[key] -= 1

    def _fetch_pages(self, base: str, query: str, token: str | None, deadline: float) -> Any:
        if self.limits.page_size and "?" in query:
            query = f"{query}&_count={self.limits.page_size}"
        url = urljoin(base.rstrip("/") + "/", query)
        base_location = locate(base)
        opened = locate(url)
        if base_location is None or opened is None or not opened.within(base_location):
            raise FetchError("the query leaves the FHIR server's base")
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
            following = locate(next_url)
            if following is None or not following.within(base_location):
                # Another scheme (http), host, port or path: the token never goes there.
                raise FetchError("a next link leaves the FHIR server's base")
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
        except (requests.Timeout, urllib3.exceptions.TimeoutError) as exc:
            raise FetchError("timed out") from exc
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            # Reading the body raw (read1), transport errors come from urllib3 itself.
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
        while True:
            if time.monotonic() > deadline:
                raise FetchError("deadline reached while reading")
            # read1 returns what has arrived (a server dripping bytes cannot hold the read
            # past the deadline); each wait is bounded by the read timeout.
            chunk = response.raw.read1(READ_CHUNK, decode_content=True)
            if not chunk:
                break
            size += len(chunk)
            if size > self.limits.max_bytes:
                raise FetchError(f"answer larger than {self.limits.max_bytes} bytes")
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
    if not _is_fhir_id(user_id):
        user, user_id = "", ""
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
            if token == "{{context.userId}}":
                text = f"{quote(kind, safe='')}/{quote(user_id, safe='')}"
            elif _is_fhir_id(value):
                text = quote(value, safe="")
            else:
                return None  # not a FHIR id: it must not become a path
            template = template.replace(token, text)
    return template


def _is_fhir_id(value: str) -> bool:
    """A FHIR id (one path segment): ``[A-Za-z0-9-.]{1,64}``, and never ``.`` or ``..``."""
    return bool(FHIR_ID.fullmatch(value)) and value not in (".", "..")
