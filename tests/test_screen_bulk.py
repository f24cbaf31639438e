"""The Bulk Data client against a real FHIR server (sekmet-fhir on loopback, which serves
``$export``), and against a small loopback server for what sekmet cannot be made to do:
a long-running export and a job that fails."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cds_service import cli
from cds_service.screening.bulk import EXPORT_TYPES, BulkClient, BulkSettings
from cds_service.screening.progress import Silent
from conftest import TESTS_DIR
from fhir_servers import FhirServer, fhir_server, start_sekmet

__all__ = ["fhir_server"]  # a fixture, used by name

PANEL = TESTS_DIR / "fixtures" / "screen-panel"
GROUP = "tpi-screen-panel"
PANEL_PATIENTS = ("capped", "nonresponder", "notpi", "recent")


def panel_resources() -> list[dict[str, Any]]:
    found = []
    for path in sorted(PANEL.glob("*.ndjson")):
        found += [json.loads(line) for line in path.read_text("utf-8").splitlines() if line]
    return found


def load_panel(server: FhirServer) -> None:
    """The panel as a transaction of PUTs (ids kept), and a Group of its patients."""
    entries = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in panel_resources()
    ]
    group = {
        "resourceType": "Group",
        "id": GROUP,
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{p}"}} for p in PANEL_PATIENTS],
    }
    entries.append({"resource": group, "request": {"method": "PUT", "url": f"Group/{GROUP}"}})
    server.load({"resourceType": "Bundle", "type": "transaction", "entry": entries})


@pytest.fixture(scope="module")
def panel_server(fhir_server: FhirServer) -> FhirServer:
    load_panel(fhir_server)
    return fhir_server


@pytest.fixture(scope="module")
def local_worklist(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The panel screened from its files: what the export must reproduce."""
    out = tmp_path_factory.mktemp("local")
    assert (
        cli.main(["screen", "--ndjson", str(PANEL), "--out", str(out), "--today", "2026-11-23"])
        == 0
    )
    return (out / "worklist.csv").read_bytes()


def screen_fhir(base_url: str, out: Path, *extra: str) -> int:
    return cli.main(
        ["screen", "--fhir", base_url, "--out", str(out), "--today", "2026-11-23", *extra]
    )


def test_group_export_gives_the_same_worklist_as_the_files(
    panel_server: FhirServer, local_worklist: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TPI_CDS_BULK_TOKEN", panel_server.token)
    kept = tmp_path / "export"
    assert (
        screen_fhir(
            panel_server.base_url, tmp_path / "out", "--group", GROUP, "--keep-export", str(kept)
        )
        == 0
    )
    assert (tmp_path / "out" / "worklist.csv").read_bytes() == local_worklist
    downloaded = sorted(p.name.split("-")[0] for p in kept.glob("*.ndjson"))
    assert set(downloaded) <= set(EXPORT_TYPES)
    assert "Procedure" in downloaded and "Observation" in downloaded


def test_patient_level_export_asks_for_the_rule_types_and_waits_as_told(
    panel_server: FhirServer, tmp_path: Path
) -> None:
    """sekmet takes about a second per job and answers 202 with Retry-After and X-Progress
    meanwhile: the client polls again after the delay it was given."""
    notes: list[str] = []

    class Notes(Silent):
        def note(self, text: str) -> None:
            notes.append(text)

    client = BulkClient(
        panel_server.base_url, BulkSettings(token=panel_server.token), progress=Notes()
    )
    started = time.monotonic()
    manifest = client.export(tmp_path, level="patient", timeout=60)
    assert "_type=" + "%2C".join(EXPORT_TYPES) in manifest["request"] or (
        "_type=" + ",".join(EXPORT_TYPES) in manifest["request"]
    )
    assert client.polls >= 2 and client.waited >= 1.0  # Retry-After: 1 honoured
    assert time.monotonic() - started >= 1.0
    assert any(n.startswith("export in progress:") for n in notes)
    lines = [json.loads(x) for p in tmp_path.glob("*.ndjson") for x in p.read_text().splitlines()]
    ids = {r["id"] for r in lines if r["resourceType"] == "Patient"}
    assert set(PANEL_PATIENTS) <= ids
    assert {r["resourceType"] for r in lines} <= set(EXPORT_TYPES)


def test_a_refused_token_is_reported_and_nothing_is_written(
    panel_server: FhirServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setenv("TPI_CDS_BULK_TOKEN", "not-the-token")
    assert screen_fhir(panel_server.base_url, tmp_path / "out", "--group", GROUP) == 4
    err = capsys.readouterr().err
    assert "refused the credentials (HTTP 401)" in err
    assert "not-the-token" not in err
    assert not (tmp_path / "out").exists()


def test_an_unknown_group_is_reported(
    panel_server: FhirServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setenv("TPI_CDS_BULK_TOKEN", panel_server.token)
    assert screen_fhir(panel_server.base_url, tmp_path / "out", "--group", "no-such-group") == 4
    assert "HTTP 404" in capsys.readouterr().err


# --------------------------------------------------------------------------- SMART backend services


def pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def smart_server() -> Iterator[tuple[FhirServer, Path]]:
    """A second sekmet that also takes SMART backend-services tokens from two registered
    clients: one with an RSA key (RS384), one with an EC P-384 key (ES384)."""
    workdir = Path(tempfile.mkdtemp(prefix="tpi-sekmet-smart-"))
    keys = workdir / "keys-client"
    keys.mkdir()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP384R1())
    (keys / "rsa.pem").write_bytes(pem(rsa_key))
    (keys / "ec.pem").write_bytes(pem(ec_key))
    (keys / "other.pem").write_bytes(
        pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    )
    for name, key in (("rsa", rsa_key), ("ec", ec_key)):
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        (keys / f"{name}.pub.pem").write_bytes(public)
    server = start_sekmet(
        workdir,
        extra={
            "server_auth": {
                "types": ["bearer", "smart"],
                "tokens": ["loader-token"],
                "smart_clients": [
                    {
                        "client_id": "screen-rsa",
                        "public_key_path": str(keys / "rsa.pub.pem"),
                        "scopes": "system/*.read",
                    },
                    {
                        "client_id": "screen-ec",
                        "public_key_path": str(keys / "ec.pub.pem"),
                        "scopes": "system/*.read",
                    },
                ],
            }
        },
        token="loader-token",
    )
    try:
        load_panel(server)
        yield server, keys
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize(
    ("client", "key", "algorithm"), [("screen-rsa", "rsa", "RS384"), ("screen-ec", "ec", "ES384")]
)
def test_smart_backend_services_export(
    smart_server: tuple[FhirServer, Path],
    local_worklist: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    client: str,
    key: str,
    algorithm: str,
) -> None:
    server, keys = smart_server
    monkeypatch.setenv("TPI_CDS_BULK_CLIENT_ID", client)
    monkeypatch.setenv("TPI_CDS_BULK_PRIVATE_KEY", str(keys / f"{key}.pem"))
    monkeypatch.setenv("TPI_CDS_BULK_ALGORITHM", algorithm)
    assert screen_fhir(server.base_url, tmp_path / "out", "--group", GROUP) == 0
    assert (tmp_path / "out" / "worklist.csv").read_bytes() == local_worklist


def test_a_client_assertion_signed_with_another_key_is_refused(
    smart_server: tuple[FhirServer, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    server, keys = smart_server
    monkeypatch.setenv("TPI_CDS_BULK_CLIENT_ID", "screen-rsa")
    monkeypatch.setenv("TPI_CDS_BULK_PRIVATE_KEY", str(keys / "other.pem"))
    assert screen_fhir(server.base_url, tmp_path / "out", "--group", GROUP) == 4
    err = capsys.readouterr().err
    assert "token endpoint refused the client (HTTP 401)" in err
    assert "invalid_client" in err


def test_half_configured_smart_settings_are_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("TPI_CDS_BULK_CLIENT_ID", "screen-rsa")
    assert screen_fhir("http://127.0.0.1:9/fhir", tmp_path / "out") == 2
    assert "TPI_CDS_BULK_PRIVATE_KEY" in capsys.readouterr().err


# --------------------------------------------------------------------------- a scripted server


class ScriptedExport:
    """A loopback Bulk Data server whose job runs ``pending`` polls, then completes or fails."""

    def __init__(self, pending: int, retry_after: str, *, fail: bool = False) -> None:
        self.pending = pending
        self.retry_after = retry_after
        self.fail = fail
        self.polls: list[float] = []
        self.deleted = False
        self.kickoff_headers: dict[str, str] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(
                self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if "$export" in self.path:
                    outer.kickoff_headers = dict(self.headers)
                    self._send(202, headers={"Content-Location": f"{outer.base}/status/1"})
                elif self.path.startswith("/fhir/status/"):
                    outer.polls.append(time.monotonic())
                    done = len(outer.polls) > outer.pending
                    if done and outer.fail:
                        outcome = {
                            "resourceType": "OperationOutcome",
                            "issue": [
                                {
                                    "severity": "error",
                                    "code": "exception",
                                    "diagnostics": "export job crashed",
                                }
                            ],
                        }
                        self._send(
                            500,
                            json.dumps(outcome).encode(),
                            {"Content-Type": "application/fhir+json"},
                        )
                    elif done:
                        manifest = {
                            "transactionTime": "2026-11-23T00:00:00Z",
                            "request": f"{outer.base}/Patient/$export",
                            "requiresAccessToken": True,
                            "output": [
                                {"type": "Patient", "url": f"{outer.base}/files/Patient.ndjson"}
                            ],
                            "error": [],
                        }
                        self._send(
                            200, json.dumps(manifest).encode(), {"Content-Type": "application/json"}
                        )
                    else:
                        progress = f"{100 * len(outer.polls) // (outer.pending + 1)}%"
                        self._send(
                            202, headers={"Retry-After": outer.retry_after, "X-Progress": progress}
                        )
                elif self.path == "/fhir/files/Patient.ndjson":
                    self._send(
                        200,
                        b'{"resourceType":"Patient","id":"p1"}\n',
                        {"Content-Type": "application/fhir+ndjson"},
                    )
                else:
                    self._send(404)

            def do_DELETE(self) -> None:
                outer.deleted = True
                self._send(202)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/fhir"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def scripted() -> Iterator[list[ScriptedExport]]:
    servers: list[ScriptedExport] = []
    yield servers
    for server in servers:
        server.stop()


def test_a_slow_export_is_polled_as_the_server_asks(
    scripted: list[ScriptedExport], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    server = ScriptedExport(pending=3, retry_after="1")
    scripted.append(server)
    client = BulkClient(server.base, BulkSettings(token="t0k"), progress=Silent())
    client.export(tmp_path, timeout=30)
    gaps = [b - a for a, b in zip(server.polls, server.polls[1:], strict=False)]
    assert len(server.polls) == 4
    assert all(gap >= 0.95 for gap in gaps)  # never sooner than Retry-After
    assert server.kickoff_headers.get("Prefer") == "respond-async"
    assert server.deleted  # the client said it was done
    assert (
        tmp_path / "Patient-0000.ndjson"
    ).read_text() == '{"resourceType":"Patient","id":"p1"}\n'


def test_a_slow_export_past_the_timeout_is_cancelled(
    scripted: list[ScriptedExport],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    server = ScriptedExport(pending=100, retry_after="2")
    scripted.append(server)
    monkeypatch.setenv("TPI_CDS_BULK_TOKEN", "t0k")
    assert screen_fhir(server.base, tmp_path / "out", "--timeout", "3") == 4
    assert "did not finish in time" in capsys.readouterr().err
    assert server.deleted
    assert len(server.polls) <= 3


def test_a_failed_job_is_reported_with_the_servers_words(
    scripted: list[ScriptedExport],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    server = ScriptedExport(pending=1, retry_after="0", fail=True)
    scripted.append(server)
    monkeypatch.setenv("TPI_CDS_BULK_TOKEN", "t0k")
    assert screen_fhir(server.base, tmp_path / "out") == 4
    err = capsys.readouterr().err
    assert "the export failed (HTTP 500): export job crashed" in err
    assert not (tmp_path / "out").exists()
