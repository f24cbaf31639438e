"""Prometheus metrics: what operations watch, in the format their tools already scrape.

Under gunicorn every worker writes its figures to files in one folder
(``prometheus_client``'s multiprocess mode) and ``GET /metrics`` adds them up, so a scrape
sees the whole service whichever worker answers it. Labels are few and bounded: a service
id, a status code, a topic, an indicator, a prefetch key, an outcome, a store — never a
patient, a user or a hookInstance.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Where a hook's latency falls: an answer from prefetch is milliseconds, a fetch hundreds.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
KNOWN_REASONS = frozenset(
    {
        "benefit-outweighs-risk",
        "already-addressed",
        "information-inaccurate",
        "payer-exception",
        "documented-elsewhere",
        "clinical-judgment",
        "patient-declined",
        "addressed-elsewhere",
        "snooze-30",
        "snooze-90",
    }
)
STORES = ("feedback", "memory")
PRIVATE_NETWORKS = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
)
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")


def use_multiprocess_dir(folder: str | None) -> str:
    """Before any worker starts (and before prometheus_client is imported): the folder the
    workers share, emptied — figures of an earlier run must not be added to this one's."""
    if folder:
        path = Path(folder)
    else:
        # In memory when the system offers it (/dev/shm): every counter update writes its
        # memory-mapped file, which on disk the kernel would keep writing back.
        shm = Path("/dev/shm")
        where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
        path = Path(tempfile.mkdtemp(prefix="tpi-cds-metrics-", dir=where))
    if path.exists():
        for child in path.iterdir():
            if child.is_file() and child.suffix == ".db":
                child.unlink()
            elif child.is_dir():
                shutil.rmtree(child)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    return str(path)


def worker_exited(pid: int) -> None:
    """gunicorn's child_exit hook: a dead worker's live gauges no longer count."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


class Metrics:
    """The service's metrics, in a registry of their own (an app built twice in one
    process, as tests do, must not register the same names twice)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "tpi_cds_http_requests_total",
            "HTTP requests answered, by endpoint, CDS service and status code.",
            ["endpoint", "service", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "tpi_cds_http_request_duration_seconds",
            "Time to answer an HTTP request, by endpoint, CDS service and status code.",
            ["endpoint", "service", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.cards = Counter(
            "tpi_cds_cards_sent_total",
            "Cards sent in hook responses, by topic and indicator.",
            ["service", "topic", "indicator"],
            registry=registry,
        )
        self.withheld = Counter(
            "tpi_cds_cards_withheld_total",
            "Cards card memory left out: already shown in this ordering session (repeat) "
            "or changed by a running snooze (snooze).",
            ["service", "topic", "reason"],
            registry=registry,
        )
        self.fetches = Counter(
            "tpi_cds_fetch_requests_total",
            "Prefetch keys fetched from the EHR's FHIR server, by key.",
            ["key"],
            registry=registry,
        )
        self.fetch_failures = Counter(
            "tpi_cds_fetch_failures_total",
            "Prefetch keys whose fetch failed (error, refusal, bad answer), by key.",
            ["key"],
            registry=registry,
        )
        self.fetch_deadlines = Counter(
            "tpi_cds_fetch_deadline_exceeded_total",
            "Prefetch keys not fetched within the hook's fetch deadline, by key.",
            ["key"],
            registry=registry,
        )
        self.feedback = Counter(
            "tpi_cds_feedback_entries_total",
            "Feedback entries stored, by service, card topic, outcome and override reason.",
            ["service", "topic", "outcome", "reason"],
            registry=registry,
        )
        self.snoozes = Counter(
            "tpi_cds_snoozes_total",
            "Snoozes started from feedback, by topic.",
            ["topic"],
            registry=registry,
        )
        self.store_up = Gauge(
            "tpi_cds_store_up",
            "1 when the store's last call succeeded, 0 when it failed (per worker; the "
            "most recent across workers).",
            ["store"],
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        self.store_errors = Counter(
            "tpi_cds_store_errors_total",
            "Store calls that failed or missed their time budget, by store.",
            ["store"],
            registry=registry,
        )
        self._children: dict[tuple, object] = {}
        self._lock = threading.Lock()
        for store in STORES:
            self.store_errors.labels(store)

    def _child(self, metric: object, *labels: str) -> object:
        """``metric.labels(...)``, cached: label lookups are most of a counter's cost."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.setdefault(key, metric.labels(*labels))  # type: ignore[attr-defined]
        return child

    def request(self, endpoint: str, service: str, status: int, seconds: float) -> None:
        code = str(status)
        self._child(self.requests, endpoint, service, code).inc()  # type: ignore[attr-defined]
        self._child(self.latency, endpoint, service, code).observe(seconds)  # type: ignore[attr-defined]

    def cards_sent(self, service: str, cards: Iterable[dict]) -> None:
        for card in cards:
            topic = card["source"]["topic"]["code"]
            self._child(self.cards, service, topic, card["indicator"]).inc()  # type: ignore[attr-defined]

    def cards_withheld(self, service: str, reason: str, topics: Iterable[str]) -> None:
        for topic in topics:
            self._child(self.withheld, service, topic, reason).inc()  # type: ignore[attr-defined]

    def fetch(self, key: str, outcome: str) -> None:
        """outcome: ``ok``, ``failed`` or ``deadline`` (every one counts as a fetch)."""
        self._child(self.fetches, key).inc()  # type: ignore[attr-defined]
        if outcome == "failed":
            self._child(self.fetch_failures, key).inc()  # type: ignore[attr-defined]
        elif outcome == "deadline":
            self._child(self.fetch_deadlines, key).inc()  # type: ignore[attr-defined]

    def feedback_entry(self, service: str, topic: str | None, outcome: str, reason: str) -> None:
        label = reason if reason in KNOWN_REASONS or reason == "none" else "other"
        self._child(self.feedback, service, topic or "unknown", outcome, label).inc()  # type: ignore[attr-defined]

    def snooze_started(self, topic: str) -> None:
        self._child(self.snoozes, topic).inc()  # type: ignore[attr-defined]

    def store(self, store: str, ok: bool) -> None:
        self._child(self.store_up, store).set(1 if ok else 0)  # type: ignore[attr-defined]
        if not ok:
            self._child(self.store_errors, store).inc()  # type: ignore[attr-defined]

    def exposition(self) -> tuple[bytes, str]:
        """The text format, added up across workers in multiprocess mode."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class ScrapeAllowList:
    """Who may read /metrics: networks, with the words ``loopback``, ``private`` and
    ``any``. Checked on the connection's address (behind a proxy: the proxy's)."""

    def __init__(self, entries: Iterable[str]) -> None:
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.any = False
        for entry in entries:
            word = entry.strip().lower()
            if word in ("any", "*"):
                self.any = True
            elif word == "loopback":
                networks += [ipaddress.ip_network(n) for n in LOOPBACK_NETWORKS]
            elif word == "private":
                networks += [ipaddress.ip_network(n) for n in PRIVATE_NETWORKS]
            elif word:
                networks.append(ipaddress.ip_network(word, strict=False))
        self.networks = tuple(networks)

    def allows(self, address: str | None) -> bool:
        if self.any:
            return True
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)
