"""A database that accepts connections and never answers must not take the service down.

Found by an outside tester: every hook call failed after about 31 s (the replay check's
insert had no timeout) and /readyz answered 500 after 30 s. Here a real TCP listener on
loopback accepts and stays silent, standing in for a hung PostgreSQL.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from issuers import ISSUER, claims, jwks, rsa_key, sign

from cds_service.auth import AuthSettings, IssuerConfig
from cds_service.replay import Budget, StorePausedError
from conftest import load_vignette, service_client

KEY = rsa_key("rsa-hang")
BASE = "http://localhost"
ORDER_SELECT = "/cds-services/tpi-order-select"


@pytest.fixture
def silent_database() -> Iterator[str]:
    """A listener that accepts every connection and never sends a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"postgresql://tpi@127.0.0.1:{listener.getsockname()[1]}/tpi"
    stop.set()
    thread.join(2)
    for connection in accepted:
        connection.close()
    listener.close()


def signed_call(client) -> tuple[int, float]:
    token = sign(KEY, claims(BASE + ORDER_SELECT))
    started = time.monotonic()
    response = client.post(
        ORDER_SELECT,
        json=load_vignette("safety-s3-apixaban"),
        headers={"Authorization": f"Bearer {token}"},
    )
    return response.status_code, time.monotonic() - started


def test_signed_calls_are_answered_quickly_while_the_database_hangs(silent_database, tmp_path):
    client = service_client(
        tmp_path,
        database_url=silent_database,
        auth=AuthSettings(issuers=(IssuerConfig(iss=ISSUER, jwks=jwks(KEY)),)),
    )
    timings = []
    for _ in range(5):
        status, seconds = signed_call(client)
        assert status == 200
        timings.append(seconds)
    assert max(timings) < 1.0, timings


def test_a_replayed_token_is_still_refused_while_the_database_hangs(silent_database, tmp_path):
    """The fallback is this process's memory: a replay to the same worker is caught."""
    client = service_client(
        tmp_path,
        database_url=silent_database,
        auth=AuthSettings(issuers=(IssuerConfig(iss=ISSUER, jwks=jwks(KEY)),)),
    )
    token = sign(KEY, claims(BASE + ORDER_SELECT))
    headers = {"Authorization": f"Bearer {token}"}
    body = load_vignette("safety-s3-apixaban")
    assert client.post(ORDER_SELECT, json=body, headers=headers).status_code == 200
    assert client.post(ORDER_SELECT, json=body, headers=headers).status_code == 401


def test_readiness_answers_503_at_once_while_the_database_hangs(silent_database, tmp_path):
    client = service_client(
        tmp_path, database_url=silent_database, auth=AuthSettings(enabled=False)
    )
    started = time.monotonic()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "store" in response.get_json()["issue"][0]["diagnostics"]
    assert time.monotonic() - started < 1.5


def test_a_budget_pauses_a_store_that_missed_it():
    budget = Budget(seconds=0.05, pause=60.0, threads=1)
    with pytest.raises(Exception, match="budget"):
        budget.call(lambda: time.sleep(0.5))
    with pytest.raises(StorePausedError):
        budget.call(lambda: "not asked")
