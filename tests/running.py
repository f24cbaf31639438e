"""The service as deployed: ``tpi-cds serve`` (gunicorn) in a subprocess on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningService:
    process: subprocess.Popen
    base_url: str
    log_path: Path

    def stop(self, *, kill: bool = False) -> None:
        """SIGKILL skips any graceful shutdown: what was acknowledged must already be stored."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def start_service(tmp_path: Path, workers: int = 2, **env: str) -> RunningService:
    """Start the service with these TPI_CDS_* settings and wait until /readyz answers."""
    port = free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    log_path = tmp_path / f"service-{port}.log"
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TPI_CDS_") or k == "TPI_CDS_TEST_DATABASE_URL"
    }
    environment.update(
        TPI_CDS_BIND=f"127.0.0.1:{port}",
        TPI_CDS_WORKERS=str(workers),
        TPI_CDS_DATA_DIR=str(tmp_path / "data"),
        **env,
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cds_service.cli", "serve"],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    service = RunningService(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the service exited at start:\n{service.log()[-3000:]}")
        try:
            if requests.get(f"{service.base_url}/readyz", timeout=5).status_code == 200:
                return service
        except requests.RequestException:
            time.sleep(0.1)
    service.stop(kill=True)
    raise AssertionError(f"the service was not ready within 30 s:\n{service.log()[-3000:]}")
