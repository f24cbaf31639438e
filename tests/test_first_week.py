"""What a hospital hits in its first week: found by a new user and by real clients.

Each test is one finding of the outside review (issue: hardening from the outside): a
chunked body over the limit, a bind address without a port, an unknown service id under
another method, start-up that does not say whom it trusts, and the worker count in a
CPU-limited container.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from running import free_port, start_service

from cds_service.auth import AuthSettings, IssuerConfig
from cds_service.serving import trust_line
from cds_service.settings import ServiceSettings, SettingsError, default_workers, usable_cpus
from conftest import load_vignette, service_client

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 16 * 1024 * 1024


# --------------------------------------------------------------------------- request bodies


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> Iterator[str]:
    service = start_service(tmp_path_factory.mktemp("first-week"), TPI_CDS_AUTH_DISABLED="true")
    yield service.base_url
    service.stop()


def post_chunked(base_url: str, chunks: Iterator[bytes]) -> tuple[int, dict]:
    """POST a body with Transfer-Encoding: chunked (no Content-Length)."""
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request(
            "POST",
            "/cds-services/tpi-order-select",
            body=chunks,
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    except (BrokenPipeError, ConnectionResetError):
        # The server may close while the client is still sending: then it refused it.
        return 413, {}
    finally:
        connection.close()


def megabytes(count: int, fill: bytes = b" ") -> Iterator[bytes]:
    block = fill * (1024 * 1024)
    for _ in range(count):
        yield block


def test_a_chunked_body_over_the_limit_is_a_413(deployed):
    status, body = post_chunked(deployed, megabytes(17, b"x"))
    assert status == 413
    if body:
        assert body["resourceType"] == "OperationOutcome"


def test_a_valid_request_padded_past_the_limit_is_a_413_not_cards(deployed):
    """Before: the stream stopped silently at 16 MB and the padded request got 200."""
    request = json.dumps(load_vignette("safety-s3-apixaban")).encode()

    def padded() -> Iterator[bytes]:
        yield request
        yield from megabytes(17)

    status, _ = post_chunked(deployed, padded())
    assert status == 413


def test_a_small_chunked_request_is_answered(deployed):
    request = json.dumps(load_vignette("safety-s3-apixaban")).encode()
    status, body = post_chunked(deployed, iter([request[:1000], request[1000:]]))
    assert status == 200
    assert body["cards"]


# --------------------------------------------------------------------------- routes


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/cds-services/unknown"),
        ("PUT", "/cds-services/unknown"),
        ("DELETE", "/cds-services/unknown/feedback"),
        ("POST", "/cds-services/unknown"),
    ],
)
def test_an_unknown_service_id_is_a_404_whatever_the_method(tmp_path, method, path):
    client = service_client(tmp_path, auth=AuthSettings(enabled=False))
    response = client.open(path, method=method, json={})
    assert response.status_code == 404
    assert "unknown" in response.get_json()["issue"][0]["diagnostics"]


def test_a_known_service_under_the_wrong_method_is_still_a_405(tmp_path):
    client = service_client(tmp_path, auth=AuthSettings(enabled=False))
    response = client.get("/cds-services/tpi-order-select")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]


# --------------------------------------------------------------------------- start-up


@pytest.mark.parametrize("bind", ["127.0.0.1", "127.0.0.1:", "127.0.0.1:99999", ":8080", "x y:80"])
def test_a_bind_address_without_a_usable_port_is_refused(bind):
    with pytest.raises(SettingsError, match="host:port"):
        ServiceSettings.from_env({"TPI_CDS_BIND": bind})


@pytest.mark.parametrize("bind", ["127.0.0.1:8080", "0.0.0.0:80", "[::1]:8080", "unix:/tmp/s"])
def test_usable_bind_addresses_are_kept(bind):
    assert ServiceSettings.from_env({"TPI_CDS_BIND": bind}).bind == bind


def test_serve_with_a_bad_bind_exits_2_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TPI_CDS_")}
    env.update(TPI_CDS_BIND="127.0.0.1", TPI_CDS_DATA_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "cds_service.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "TPI_CDS_BIND" in done.stderr


def test_start_up_says_when_no_issuer_is_trusted():
    line = trust_line(ServiceSettings(auth=AuthSettings(enabled=True, issuers=())))
    assert line.startswith("no trusted issuer: every call will be answered 401")
    assert "TPI_CDS_AUTH_ISSUERS" in line and "TPI_CDS_AUTH_DISABLED=true" in line


def test_start_up_counts_the_trusted_issuers():
    issuers = (IssuerConfig("https://ehr.example.org"), IssuerConfig("https://b.example.org"))
    line = trust_line(ServiceSettings(auth=AuthSettings(issuers=issuers)))
    assert line == "trusting 2 issuers: https://ehr.example.org, https://b.example.org"


def test_the_running_service_prints_whom_it_trusts(tmp_path):
    service = start_service(tmp_path)
    try:
        assert "no trusted issuer: every call will be answered 401" in service.log()
    finally:
        service.stop()


# --------------------------------------------------------------------------- workers


def cgroup(tmp_path: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


def test_a_cgroup_v2_quota_of_one_cpu_means_one_cpu(tmp_path):
    assert usable_cpus(cgroup(tmp_path, {"cpu.max": "100000 100000\n"})) == 1


def test_a_fractional_quota_rounds_up(tmp_path):
    assert usable_cpus(cgroup(tmp_path, {"cpu.max": "50000 100000\n"})) == 1


def test_an_unlimited_quota_leaves_the_affinity(tmp_path):
    assert usable_cpus(cgroup(tmp_path, {"cpu.max": "max 100000\n"})) == len(
        os.sched_getaffinity(0)
    )


def test_a_cgroup_v1_quota_is_read_too(tmp_path):
    root = cgroup(
        tmp_path, {"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}
    )
    assert usable_cpus(root) == 1


def test_the_default_worker_count_follows_the_usable_cpus():
    assert default_workers() == 2 * usable_cpus() + 1
    assert default_workers() <= 2 * len(os.sched_getaffinity(0)) + 1


# --------------------------------------------------------------------------- the command line


def tpi_cds(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TPI_CDS_")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "cds_service.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_version():
    done = tpi_cds("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("tpi-cds ")


def test_serve_help_lists_its_settings_and_flags():
    done = tpi_cds("serve", "--help")
    assert done.returncode == 0
    for word in ("--bind", "--workers", "--config", "TPI_CDS_BIND", "TPI_CDS_AUTH_ISSUERS"):
        assert word in done.stdout


def test_evaluate_help_gives_exit_codes_and_the_default_day():
    done = tpi_cds("evaluate", "--help")
    assert "exit codes" in done.stdout and "3  the prefetch lacks" in done.stdout
    assert "default: today" in done.stdout


def test_a_closed_pipe_ends_quietly():
    """`tpi-cds discovery | head -1`: no traceback when head stops reading."""
    done = subprocess.run(
        f"{sys.executable} -m cds_service.cli discovery | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.stdout == '{\n "servic'
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_feedback_stats_elsewhere_refuses_to_create_a_store(tmp_path):
    """Run from another folder: it says which store it looked for and creates nothing."""
    done = tpi_cds("feedback", "stats", cwd=tmp_path)
    assert done.returncode == 2
    assert "no feedback store at" in done.stderr
    assert str(tmp_path) in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_feedback_stats_names_the_store_it_read(tmp_path):
    from cds_service.store import FeedbackStore

    url = f"sqlite:///{tmp_path / 'data' / 'tpi-cds.sqlite3'}"
    FeedbackStore(url).create_schema()
    done = tpi_cds("feedback", "stats", TPI_CDS_DATA_DIR=str(tmp_path / "data"))
    assert done.returncode == 0, done.stderr
    assert f"reading the feedback store {url}" in done.stderr


# --------------------------------------------------------------------------- aud and Host


def aud_client(tmp_path: Path, **settings: object):
    from issuers import ISSUER, jwks, rsa_key

    key = rsa_key("rsa-aud")
    auth = AuthSettings(
        issuers=(IssuerConfig(iss=ISSUER, jwks=jwks(key)),),
        public_base_url=settings.pop("public_base_url", None),
    )
    return service_client(tmp_path, auth=auth, **settings), key


def discovery_with(client, key, audience: str, host: str | None = None) -> int:
    from issuers import claims, sign

    headers = {"Authorization": f"Bearer {sign(key, claims(audience))}"}
    if host:
        headers["Host"] = host
    return client.get("/cds-services", headers=headers).status_code


def test_a_token_for_another_host_is_refused_whatever_the_host_header(tmp_path):
    client, key = aud_client(tmp_path)
    assert discovery_with(client, key, "http://evil.test/cds-services", "evil.test") == 401
    assert discovery_with(client, key, "http://localhost/cds-services") == 200


def test_behind_a_proxy_only_the_public_base_url_is_accepted(tmp_path):
    client, key = aud_client(tmp_path, public_base_url="https://cds.example.org/tpi")
    assert discovery_with(client, key, "https://cds.example.org/tpi/cds-services") == 200
    assert discovery_with(client, key, "http://localhost/cds-services") == 401


def test_a_public_bind_with_authentication_needs_a_public_base_url(tmp_path):
    done = tpi_cds("serve", TPI_CDS_BIND="0.0.0.0:8080", TPI_CDS_DATA_DIR=str(tmp_path))
    assert done.returncode == 2
    assert "TPI_CDS_PUBLIC_BASE_URL is required" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# --------------------------------------------------------------------------- store mistakes


def serve_until(tmp_path: Path, marker: str, **env: str) -> tuple[int | None, str]:
    """Start `tpi-cds serve`; return its exit code (None if still running) and its stderr
    up to the line holding `marker` (or to its end)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TPI_CDS_")}
    environment.update(TPI_CDS_AUTH_DISABLED="true", TPI_CDS_WORKERS="1", **env)
    environment.setdefault("TPI_CDS_BIND", f"127.0.0.1:{free_port()}")
    process = subprocess.Popen(
        [sys.executable, "-m", "cds_service.cli", "serve"],
        env=environment,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            if marker in line:
                break
        code = process.poll()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
        process.wait(10)
    return code, "".join(lines)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("notaurl", "not a database URL"),
        ("mysql://tpi@127.0.0.1/tpi", "SQLite or PostgreSQL, not mysql"),
    ],
)
def test_a_database_url_that_cannot_work_stops_the_start_with_one_line(tmp_path, url, words):
    done = tpi_cds("serve", TPI_CDS_DATABASE_URL=url, TPI_CDS_AUTH_DISABLED="true")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert words in done.stderr


def test_a_data_dir_that_is_a_file_stops_the_start(tmp_path):
    (tmp_path / "data").write_text("not a folder")
    done = tpi_cds("serve", TPI_CDS_DATA_DIR=str(tmp_path / "data"), TPI_CDS_AUTH_DISABLED="true")
    assert done.returncode == 2
    assert "is a file" in done.stderr
    assert "Traceback" not in done.stderr


def test_postgres_spelling_is_accepted_as_postgresql():
    from cds_service.store import FeedbackStore
    from stores import POSTGRES_URL, postgres_reachable

    if not postgres_reachable():
        pytest.skip(f"no PostgreSQL reachable at {POSTGRES_URL} (CI provides one)")
    url = POSTGRES_URL.replace("postgresql://", "postgres://", 1)
    assert FeedbackStore(url).ping()


def test_a_dead_database_port_is_a_degraded_start_that_names_it(tmp_path):
    code, err = serve_until(
        tmp_path,
        "DEGRADED START",
        TPI_CDS_DATABASE_URL=f"postgresql://tpi:secret@127.0.0.1:{free_port()}/tpi",
    )
    assert code is None, err
    assert "connection refused" in err and "127.0.0.1:" in err
    assert "secret" not in err


def test_a_missing_database_is_named(tmp_path):
    from stores import POSTGRES_URL, postgres_reachable

    if not postgres_reachable():
        pytest.skip(f"no PostgreSQL reachable at {POSTGRES_URL} (CI provides one)")
    url = POSTGRES_URL.rsplit("/", 1)[0] + "/no_such_database_tpi"
    code, err = serve_until(tmp_path, "DEGRADED START", TPI_CDS_DATABASE_URL=url)
    assert code is None, err
    assert "database 'no_such_database_tpi' does not exist" in err


@pytest.mark.parametrize(
    ("message", "words"),
    [
        ("attempt to write a readonly database", "is read-only"),
        ("unable to open database file", "cannot be opened"),
    ],
)
def test_sqlite_failures_are_named(message, words):
    """A read-only data folder (not observable as root, who writes anyway): the words an
    operator gets for SQLite's own errors."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from cds_service.store import describe_failure

    error = OperationalError("CREATE TABLE", {}, sqlite3.OperationalError(message))
    assert words in describe_failure(error, "sqlite:////srv/data/tpi-cds.sqlite3")
