"""Real HTTP servers on loopback for tests that fetch FHIR data.

Two pytest fixtures, imported by the test modules that need them::

    from fhir_servers import fault_server, fhir_server

    __all__ = ["fault_server", "fhir_server"]  # fixtures, used by name (keeps ruff quiet)

Every module that imports ``fhir_server`` gets the same server: one per session.

``fhir_server`` (session scope) is a real FHIR R4 server: sekmet-fhir 0.1.1 (PyPI
``sekmet-fhir``), run as a subprocess with ``python -m sekmet.cli serve --config
<tmp>/settings.yaml``, listening on 127.0.0.1 at a free port, with a SQLite database in
a temporary directory, and refusing any request to ``/fhir/...`` that lacks the static
bearer token (``server_auth: {types: [bearer], tokens: [...]}``). Only
``GET /fhir/metadata`` is open, as FHIR expects. What it does with a Synthea
transaction (ids, references) is shown by tests/test_fhir_servers.py.

``fault_server`` (function scope) is a stdlib ``http.server`` in a thread that answers
with the failures a real server cannot be made to show on demand: 401, 500, slow
answers, HTML, truncated JSON, a Bundle whose ``next`` link loops, a large Bundle. It
records every request it receives.

Both bind 127.0.0.1 only, and every wait is bounded.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0  # seconds the fhir_server fixture waits for sekmet to answer
REQUEST_TIMEOUT = 30.0  # seconds for one ordinary request to sekmet
LOAD_TIMEOUT = 120.0  # seconds for one transaction Bundle (the largest Synthea file takes ~2 s)
STOP_TIMEOUT = 10.0  # seconds sekmet gets to exit after SIGTERM before it is killed

# Where a dangling `urn:uuid:` reference sits -> the resource type a stub for it gets.
# The Synthea files in shared/fixtures were trimmed of Practitioner, Organization and Goal
# entries, but still point at them, and a FHIR server rejects a transaction whose
# urn:uuid references do not resolve (sekmet: 400 "unresolved reference").
STUB_TYPES = {
    "individual": "Practitioner",
    "requester": "Practitioner",
    "performer": "Practitioner",
    "asserter": "Practitioner",
    "recorder": "Practitioner",
    "author": "Practitioner",
    "generalPractitioner": "Practitioner",
    "serviceProvider": "Organization",
    "managingOrganization": "Organization",
    "organization": "Organization",
    "goal": "Goal",
    "location": "Location",
}
STUB_TAG = {"system": "urn:tpi-cds:test", "code": "stub", "display": "stub for a trimmed entry"}


class FhirLoadError(AssertionError):
    """The FHIR server refused a transaction Bundle."""

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.body = body
        try:
            issues = json.loads(body).get("issue", [])
            detail = "; ".join(str(i.get("diagnostics", i.get("code"))) for i in issues)
        except (ValueError, AttributeError):
            detail = body[:500]
        super().__init__(f"transaction refused with HTTP {status}: {detail}")


# --------------------------------------------------------------------------- bundles


def _references(node: Any, key: str | None = None) -> Iterator[tuple[str | None, dict]]:
    """(element name, Reference dict) for every Reference in a resource tree."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield key, node
        for k, v in node.items():
            yield from _references(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _references(v, key)


def add_missing_references(bundle: dict) -> dict:
    """A copy of a transaction Bundle with a stub entry for every dangling urn:uuid reference.

    Each stub is the smallest valid resource of the type the referring element implies
    (see STUB_TYPES), tagged STUB_TAG, with the original URN as its identifier so that a
    test can find it (``Practitioner?identifier=urn:ietf:rfc:3986|urn:uuid:...``).
    """
    out = copy.deepcopy(bundle)
    entries = out.setdefault("entry", [])
    present = {e.get("fullUrl") for e in entries}
    patient = next(
        (e["fullUrl"] for e in entries if e.get("resource", {}).get("resourceType") == "Patient"),
        None,
    )
    missing: dict[str, str] = {}
    for entry in entries:
        for key, ref in _references(entry.get("resource")):
            url = ref["reference"]
            if url.startswith("urn:uuid:") and url not in present and url not in missing:
                if key not in STUB_TYPES:
                    raise ValueError(f"dangling reference {url} in '{key}': no stub type known")
                missing[url] = STUB_TYPES[key]
    for url, rtype in missing.items():
        stub: dict[str, Any] = {
            "resourceType": rtype,
            "meta": {"tag": [STUB_TAG]},
            "identifier": [{"system": "urn:ietf:rfc:3986", "value": url}],
        }
        if rtype == "Goal":
            stub["lifecycleStatus"] = "active"
            stub["description"] = {"text": "Goal trimmed from the export"}
            if patient is None:
                raise ValueError("a Goal stub needs the bundle's Patient entry")
            stub["subject"] = {"reference": patient}
        entries.append(
            {"fullUrl": url, "resource": stub, "request": {"method": "POST", "url": rtype}}
        )
    return out


def keep_ids(bundle: dict) -> dict:
    """A copy of a transaction Bundle whose POST entries become PUT Type/id (update as create).

    POST lets the server assign new ids; PUT keeps the ids the file has (for a stub, the
    uuid of its urn:uuid fullUrl), and loading the same file twice updates instead of
    duplicating.
    """
    out = copy.deepcopy(bundle)
    for entry in out.get("entry", []):
        resource, request = entry.get("resource") or {}, entry.get("request") or {}
        if request.get("method", "").upper() != "POST":
            continue
        rid = resource.get("id")
        full = entry.get("fullUrl", "")
        if not rid and full.startswith("urn:uuid:"):
            rid = full.removeprefix("urn:uuid:")
        if not rid:
            continue
        resource["id"] = rid
        entry["request"] = {"method": "PUT", "url": f"{resource['resourceType']}/{rid}"}
    return out


@dataclass
class LoadedBundle:
    """What a transaction did: the response Bundle and where each entry ended up."""

    response: dict
    ids: dict[str, str]  # request entry fullUrl -> "Type/id" on the server
    patient_id: str | None  # the server's id of the bundle's Patient

    def ref(self, full_url: str) -> str:
        return self.ids[full_url]

    def server_ids(self, resource_type: str) -> set[str]:
        """Server ids of every entry of one type."""
        prefix = f"{resource_type}/"
        return {v.removeprefix(prefix) for v in self.ids.values() if v.startswith(prefix)}


def id_map(request_bundle: dict, response_bundle: dict, base_url: str) -> dict[str, str]:
    """fullUrl of each request entry -> "Type/id" (response entries are in request order)."""
    out: dict[str, str] = {}
    for req, resp in zip(
        request_bundle.get("entry", []), response_bundle.get("entry", []), strict=True
    ):
        location = (resp.get("response") or {}).get("location", "")
        local = location.removeprefix(base_url.rstrip("/") + "/").split("/_history")[0]
        if req.get("fullUrl") and local:
            out[req["fullUrl"]] = local
    return out


# --------------------------------------------------------------------------- sekmet


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _parent_death_signal() -> Callable[[], None] | None:
    """Linux: a pre-exec hook making the kernel SIGTERM the server if pytest dies.

    prctl is looked up here, in the parent: the hook runs between fork and exec, where
    only the plainest calls are safe.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:  # pragma: no cover - runs in the child
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return hook


def sekmet_settings(
    port: int, token: str, data_dir: Path, extra: dict[str, Any] | None = None
) -> str:
    """settings.yaml for a loopback, bearer-only sekmet with its side effects switched off;
    ``extra`` replaces top-level settings (e.g. ``server_auth`` with SMART clients).

    JSON is YAML, so no YAML writer is needed.
    """
    settings = {
        "base_url": f"http://{LOOPBACK}:{port}/fhir",
        "host": LOOPBACK,
        "port": port,
        "data_dir": str(data_dir),
        "own_private_key_path": str(data_dir / "keys" / "sekmet_private.pem"),
        "server_auth": {"types": ["bearer"], "tokens": [token]},
        # the simulator would answer writes like a pharmacy: an active MedicationRequest
        # gets a MedicationDispense 2 s later, so the data would change under the tests
        "simulator": {"enabled": False},
        "log_inbound": False,  # no copy of every request body in the SQLite traffic log
        "validation": {"inbound": "strict"},  # sekmet's default: invalid resources get 400
    }
    settings.update(extra or {})
    return json.dumps(settings, indent=2)


@dataclass
class FhirServer:
    """A running sekmet-fhir FHIR R4 server."""

    base_url: str  # e.g. http://127.0.0.1:PORT/fhir
    token: str
    config_path: Path
    log_path: Path
    process: subprocess.Popen = field(repr=False)
    started_in: float = 0.0  # seconds from launch until it answered
    session: requests.Session = field(default_factory=requests.Session, repr=False)

    @property
    def auth(self) -> dict[str, str]:
        """The Authorization header the server requires."""
        return {"Authorization": f"Bearer {self.token}"}

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def load(self, bundle: dict) -> dict:
        """POST a transaction Bundle to the base; the transaction-response Bundle.

        Raises FhirLoadError when the server refuses it (it then stores nothing).
        """
        response = self.session.post(
            self.base_url,
            data=json.dumps(bundle),
            headers={**self.auth, "Content-Type": "application/fhir+json"},
            timeout=LOAD_TIMEOUT,
        )
        if response.status_code != 200:
            raise FhirLoadError(response.status_code, response.text)
        return response.json()

    def load_synthea(self, source: Path | dict, *, stable_ids: bool = False) -> LoadedBundle:
        """Load a Synthea file (or its parsed Bundle) after adding stubs for trimmed entries.

        With stable_ids the resources keep their ids (entries become PUT Type/id);
        otherwise the server gives every resource a new id, as POST means.
        """
        bundle = json.loads(source.read_text("utf-8")) if isinstance(source, Path) else source
        bundle = add_missing_references(bundle)
        if stable_ids:
            bundle = keep_ids(bundle)
        response = self.load(bundle)
        ids = id_map(bundle, response, self.base_url)
        patient = next(
            (v for v in ids.values() if v.startswith("Patient/")),
            None,
        )
        return LoadedBundle(response, ids, patient.removeprefix("Patient/") if patient else None)

    def reset(self) -> None:
        """Delete every resource (and sekmet's logs) with ``sekmet reset --yes``.

        sekmet has no HTTP operation for this; its CLI clears the same SQLite database
        the running server reads, and the server sees the change at once. It clears the
        whole session's server: call it only where no other test's data must survive.
        """
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "sekmet.cli",
                "reset",
                "--yes",
                "--config",
                str(self.config_path),
            ],
            cwd=self.config_path.parent,
            env=_sekmet_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"sekmet reset failed ({done.returncode}): {done.stderr[-2000:]}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text("utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        self.session.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)


def _sekmet_env() -> dict[str, str]:
    """The environment without SEKMET_* overrides (they would beat the settings file)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEKMET_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _wait_until_up(server: FhirServer, deadline: float) -> None:
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"sekmet exited with code {server.process.returncode} before answering;"
                f" its log ({server.log_path}):\n{server.log_tail()}"
            )
        try:
            r = requests.get(server.url("metadata"), timeout=2)
            if r.status_code == 200 and r.json().get("resourceType") == "CapabilityStatement":
                return
        except (requests.RequestException, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"sekmet did not answer GET {server.url('metadata')} within {START_TIMEOUT:.0f} s;"
                f" its log ({server.log_path}):\n{server.log_tail()}"
            )
        time.sleep(0.1)


def start_sekmet(
    workdir: Path,
    token: str | None = None,
    attempts: int = 3,
    extra: dict[str, Any] | None = None,
) -> FhirServer:
    """Start sekmet on a free loopback port and wait (at most START_TIMEOUT) until it answers;
    ``extra`` as for sekmet_settings."""
    if importlib.util.find_spec("sekmet") is None:
        raise RuntimeError(
            "sekmet-fhir is not installed in this Python: pip install sekmet-fhir==0.1.1"
            " (it is in the project's test extras)"
        )
    token = token or f"tpi-test-{secrets.token_hex(12)}"
    deadline = time.monotonic() + START_TIMEOUT
    last_error: Exception | None = None
    for attempt in range(attempts):  # another process may take the free port first
        port = _free_port()
        config = workdir / f"settings-{attempt}.yaml"
        config.write_text(sekmet_settings(port, token, workdir / "data", extra), "utf-8")
        log_path = workdir / f"sekmet-{attempt}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "sekmet.cli", "serve", "--config", str(config)],
                cwd=workdir,
                env=_sekmet_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_parent_death_signal(),
            )
        server = FhirServer(f"http://{LOOPBACK}:{port}/fhir", token, config, log_path, process)
        launched = time.monotonic()
        try:
            _wait_until_up(server, deadline)
            server.started_in = time.monotonic() - launched
            return server
        except RuntimeError as e:
            server.stop()
            last_error = e
            if "address already in use" not in server.log_tail().lower():
                break
    raise RuntimeError(str(last_error))


class _Shared:
    """One sekmet for the whole pytest session.

    pytest makes a separate fixture of a session-scoped fixture for every test module that
    imports it; they all share this server, which stops when the last of them is torn
    down (at the end of the session), or at interpreter exit as a safety net.
    """

    lock = threading.Lock()
    server: FhirServer | None = None
    workdir: str | None = None
    users = 0
    failure: str | None = None

    @classmethod
    def acquire(cls) -> FhirServer:
        with cls.lock:
            if cls.failure:
                raise RuntimeError(cls.failure)
            if cls.server is None:
                workdir = tempfile.mkdtemp(prefix="tpi-sekmet-")
                try:
                    cls.server = start_sekmet(Path(workdir))
                except Exception as e:
                    shutil.rmtree(workdir, ignore_errors=True)
                    cls.failure = str(e)
                    raise
                cls.workdir = workdir
                atexit.register(cls.stop)
            cls.users += 1
            return cls.server

    @classmethod
    def release(cls) -> None:
        with cls.lock:
            cls.users -= 1
            if cls.users > 0:
                return
        cls.stop()

    @classmethod
    def stop(cls) -> None:
        with cls.lock:
            server, workdir = cls.server, cls.workdir
            cls.server, cls.workdir, cls.users = None, None, 0
        if server is not None:
            server.stop()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[FhirServer]:
    """sekmet-fhir on 127.0.0.1, bearer token required, empty when it starts.

    One server serves the whole session, whichever modules import this fixture.
    """
    server = _Shared.acquire()
    try:
        yield server
    finally:
        _Shared.release()


# --------------------------------------------------------------------------- fault server


@dataclass
class RecordedRequest:
    method: str
    path: str  # as sent, query included: /fhir/Condition?patient=1
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """A header's value, whatever the case of its name."""
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    @property
    def route(self) -> str:
        """The path without its query string."""
        return urlsplit(self.path).path

    @property
    def params(self) -> list[tuple[str, str]]:
        return parse_qsl(urlsplit(self.path).query, keep_blank_values=True)


@dataclass
class Behaviour:
    """How the fault server answers: after `delay` seconds, `status` with `body`.

    `body` may be bytes, a dict (sent as JSON) or a function of the request's absolute
    URL returning either. With `declared_length` the Content-Length header claims that
    many bytes, the body is sent as it is and the connection closed: a short read.
    """

    status: int = 200
    body: bytes | dict | Callable[[str], bytes | dict] = b""
    content_type: str = "application/fhir+json"
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    declared_length: int | None = None
    drip_interval: float = 0.0


def _outcome(code: str, text: str) -> dict:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }


def searchset(entries: list[dict], next_url: str | None = None, self_url: str = "") -> dict:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(entries),
        "link": [{"relation": "self", "url": self_url}],
        "entry": [
            {"fullUrl": f"urn:uuid:{r.get('id', i)}", "resource": r, "search": {"mode": "match"}}
            for i, r in enumerate(entries)
        ],
    }
    if next_url:
        bundle["link"].append({"relation": "next", "url": next_url})
    return bundle


def _observation(i: int, patient: str) -> dict:
    return {
        "resourceType": "Observation",
        "id": f"obs-{i}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2026-01-01T00:00:00Z",
        "valueQuantity": {"value": 60 + i % 40, "unit": "/min"},
    }


class FaultServer:
    """A loopback HTTP server whose answers a test chooses, per path or for every path.

    Paths are given relative to base_url ("Condition", "Patient/p1") or as absolute paths
    ("/fhir/Condition"); a path with a query string matches only that exact query, one
    without matches any query. A path-specific behaviour beats the global one; with
    neither the server answers 404 with an OperationOutcome.
    """

    BASE_PATH = "/fhir"

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.stopping = threading.Event()
        self._behaviours: dict[str, Behaviour] = {}
        self._default: Behaviour | None = None
        self._lock = threading.Lock()
        self._httpd = _FaultHTTPServer((LOOPBACK, 0), _FaultHandler)
        self._httpd.fault = self
        self.port = self._httpd.server_address[1]
        self.origin = f"http://{LOOPBACK}:{self.port}"
        self.base_url = f"{self.origin}{self.BASE_PATH}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    # ---- choosing behaviours

    def _key(self, path: str) -> str:
        return path if path.startswith("/") else f"{self.BASE_PATH}/{path}"

    def set(self, behaviour: Behaviour, path: str | None = None) -> Behaviour:
        """Answer requests to `path` (every path when None) with `behaviour`."""
        with self._lock:
            if path is None:
                self._default = behaviour
            else:
                self._behaviours[self._key(path)] = behaviour
        return behaviour

    def clear(self) -> None:
        with self._lock:
            self._behaviours.clear()
            self._default = None
        self.requests.clear()

    def respond_json(self, body: dict, path: str | None = None, status: int = 200) -> Behaviour:
        return self.set(Behaviour(status=status, body=body), path)

    def unauthorized(self, path: str | None = None) -> Behaviour:
        return self.set(
            Behaviour(
                status=401,
                body=_outcome("login", "Authentication required"),
                headers={"WWW-Authenticate": 'Bearer realm="fault-server"'},
            ),
            path,
        )

    def server_error(self, path: str | None = None, status: int = 500) -> Behaviour:
        return self.set(Behaviour(status=status, body=_outcome("exception", "boom")), path)

    def slow(self, seconds: float, path: str | None = None, body: dict | None = None) -> Behaviour:
        """Wait `seconds` (cut short when the fixture stops), then answer 200 with `body`."""
        return self.set(
            Behaviour(delay=seconds, body=body if body is not None else searchset([])), path
        )

    def html(self, path: str | None = None, status: int = 200) -> Behaviour:
        page = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Portal</body></html>"
        return self.set(Behaviour(status=status, body=page, content_type="text/html"), path)

    def truncated(
        self, path: str | None = None, body: dict | None = None, short_read: bool = False
    ) -> Behaviour:
        """A JSON body cut in half.

        By default the Content-Length matches the cut body (a complete HTTP answer that is
        not valid JSON); with short_read it announces the whole body and the connection
        closes early (the client's transport fails).
        """
        data = json.dumps(body if body is not None else searchset([_observation(0, "p1")])).encode()
        cut = data[: len(data) // 2]
        return self.set(
            Behaviour(body=cut, declared_length=len(data) if short_read else None), path
        )

    def drip(self, interval: float, path: str | None = None, body: dict | None = None) -> Behaviour:
        """Answer 200 at once, then send the body one byte every `interval` seconds: each
        read stays within a read timeout while the whole answer takes minutes."""
        return self.set(
            Behaviour(body=body if body is not None else searchset([]), drip_interval=interval),
            path,
        )

    def looping_bundle(self, path: str | None = None) -> Behaviour:
        """A one-entry searchset Bundle whose `next` link is the URL that was requested."""

        def page(url: str) -> dict:
            return searchset([_observation(0, "p1")], next_url=url, self_url=url)

        return self.set(Behaviour(body=page), path)

    def large_bundle(
        self, path: str | None = None, entries: int = 5000, patient: str = "p1"
    ) -> Behaviour:
        """A searchset Bundle of `entries` Observations (5000 make about 1.6 MB) in one page."""
        data = json.dumps(searchset([_observation(i, patient) for i in range(entries)])).encode()
        return self.set(Behaviour(body=data), path)

    # ---- serving

    def behaviour_for(self, path: str) -> Behaviour | None:
        with self._lock:
            return (
                self._behaviours.get(path)
                or self._behaviours.get(urlsplit(path).path)
                or self._default
            )

    def stop(self) -> None:
        self.stopping.set()  # wakes handlers that are sleeping out a delay
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


class _FaultHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fault: FaultServer


class _FaultHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _FaultHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _handle(self) -> None:
        fault = self.server.fault
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fault.requests.append(RecordedRequest(self.command, self.path, dict(self.headers), body))
        behaviour = fault.behaviour_for(self.path) or Behaviour(
            status=404, body=_outcome("not-found", f"no behaviour set for {self.path}")
        )
        if behaviour.delay and fault.stopping.wait(behaviour.delay):
            self.close_connection = True
            return
        payload = behaviour.body
        if callable(payload):
            payload = payload(f"{fault.origin}{self.path}")
        data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        self.send_response(behaviour.status)
        self.send_header("Content-Type", behaviour.content_type)
        for k, v in behaviour.headers.items():
            self.send_header(k, v)
        short = behaviour.declared_length is not None
        self.send_header("Content-Length", str(behaviour.declared_length if short else len(data)))
        if short:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD" and behaviour.drip_interval:
            with contextlib.suppress(OSError):
                self.wfile.flush()
                for i in range(len(data)):
                    if fault.stopping.wait(behaviour.drip_interval):
                        break
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
            self.close_connection = True
        elif self.command != "HEAD":
            with contextlib.suppress(OSError):
                self.wfile.write(data)
                self.wfile.flush()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer()
    try:
        yield server
    finally:
        server.stop()
