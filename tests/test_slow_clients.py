"""Slow and half-open clients do not stop normal calls (the service as deployed).

Found by an outside tester: with gunicorn's sync workers, five connections that never
finished their headers blocked every worker. Here 200 such connections are held open while
ordinary calls are made: each is answered in time.
"""

from __future__ import annotations

import json
import socket
import time

import requests
from running import start_service

from conftest import load_vignette


def half_open(port: int, kind: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if kind == 1:  # headers never finished
        sock.sendall(b"POST /cds-services/tpi-order-select HTTP/1.1\r\nHost: x\r\n")
    elif kind == 2:  # headers done, body promised and never sent
        sock.sendall(
            b"POST /cds-services/tpi-order-select HTTP/1.1\r\nHost: x\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"hook"'
        )
    return sock  # kind 0: connected, nothing sent


def test_200_slow_connections_leave_calls_answered(tmp_path):
    service = start_service(tmp_path, workers=2, TPI_CDS_AUTH_DISABLED="true")
    port = int(service.base_url.rsplit(":", 1)[1])
    body = json.dumps(load_vignette("safety-s3-apixaban"))
    slow = []
    try:
        slow = [half_open(port, i % 3) for i in range(200)]
        timings = []
        for _ in range(10):
            started = time.monotonic()
            response = requests.post(
                f"{service.base_url}/cds-services/tpi-order-select",
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=10,
            )
            timings.append(time.monotonic() - started)
            assert response.status_code == 200
            assert response.json()["cards"]
        assert max(timings) < 2.0, timings
    finally:
        for sock in slow:
            sock.close()
        service.stop()


def test_a_keep_alive_client_is_asked_to_reconnect_now_and_then(tmp_path):
    """Every 20th response on a connection says Connection: close, so a client's few
    keep-alive connections are spread over the workers again (an event-loop worker takes
    every connection waiting when it wakes)."""
    from cds_service.front import ROTATE_EVERY

    service = start_service(tmp_path, workers=2, TPI_CDS_AUTH_DISABLED="true")
    try:
        with requests.Session() as session:
            closing = [
                session.get(f"{service.base_url}/healthz", timeout=5).headers.get("Connection")
                for _ in range(2 * ROTATE_EVERY)
            ]
        assert closing.count("close") == 2
        assert closing[ROTATE_EVERY - 1] == "close"
    finally:
        service.stop()
