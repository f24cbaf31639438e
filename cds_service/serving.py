"""``tpi-cds serve``: gunicorn running the application factory, as deployed."""

from __future__ import annotations

import ctypes
import gc
import os
import shutil
import sys
from typing import Any

from gunicorn.app.base import BaseApplication

from cds_service.auth import needs_public_base_url
from cds_service.settings import ServiceSettings, SettingsError
from cds_service.store import (
    FeedbackStore,
    StoreConfigurationError,
    StoreUnavailableError,
    store_label,
)

M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


class GunicornService(BaseApplication):
    """gunicorn configured from our settings instead of its own command line."""

    def __init__(self, settings: ServiceSettings, app_factory: Any = None) -> None:
        self.settings = settings
        self.app_factory = app_factory
        self.own_metrics_dir: str | None = None  # made here: removed when the master exits
        super().__init__()

    def load_config(self) -> None:
        options: dict[str, Any] = {
            "bind": self.settings.bind,
            "workers": self.settings.workers,
            # An event loop per worker reads whole requests before any thread sees them:
            # slow or half-open clients cannot take the workers (cds_service.front).
            "worker_class": "cds_service.front.Worker",
            # Import and build once in the master, then fork: workers start ready at once
            # and share those pages (copy-on-write, helped by gc.freeze()).
            "preload_app": True,
            "timeout": 30,
            "graceful_timeout": 10,
            "keepalive": 5,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "info",
        }
        if self.settings.metrics_enabled and self.app_factory is None:
            from cds_service.metrics import worker_exited

            self.cfg.set("child_exit", lambda _server, worker: worker_exited(worker.pid))
            self.cfg.set("on_exit", lambda _server: self.remove_metrics_dir())
        if "control_socket_disable" in self.cfg.settings:  # gunicorn >= 25.1
            options["control_socket_disable"] = True  # replicas on one host would share it
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from cds_service.front import asgi

        if self.app_factory is not None:  # the benchmark's ceiling app: the same front
            app = self.app_factory()
        else:
            if self.settings.metrics_enabled:
                # Before the app (and prometheus_client) is imported: the workers' shared
                # metrics folder, so /metrics adds up every worker's figures.
                from cds_service.metrics import use_multiprocess_dir

                folder = use_multiprocess_dir(self.settings.metrics_dir)
                if not self.settings.metrics_dir:
                    self.own_metrics_dir = folder
            from cds_service.app import create_app

            app = create_app(self.settings)
        tune_gc()
        from cds_service.ledger import flush_all

        return asgi(app, self.settings.max_body_bytes, on_shutdown=flush_all)

    def remove_metrics_dir(self) -> None:
        if self.own_metrics_dir:
            shutil.rmtree(self.own_metrics_dir, ignore_errors=True)


def tune_gc() -> None:
    """A worker's garbage collector, tuned for large JSON bodies.

    Everything built at start (models, value sets) is frozen out of collection, and
    collections run less often: decoding a 5,000-resource prefetch allocates hundreds of
    thousands of objects, and the default thresholds made the collector re-walk them all
    several times per request (about half of the time of such a request).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    limit_malloc_arenas()


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread its own malloc arena and keeps what a large request used in
    it: with request threads, a worker's memory grows by a whole arena per thread. Two
    arenas keep it close to a single-threaded worker's (no effect off glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, arenas)
    except (OSError, AttributeError):
        pass


def serve(settings: ServiceSettings | None = None) -> None:
    settings = settings or ServiceSettings.from_env(os.environ)
    if needs_public_base_url(settings.auth.public_base_url, settings.bind, settings.auth.enabled):
        raise SettingsError(
            f"TPI_CDS_PUBLIC_BASE_URL is required to listen on {settings.bind} with "
            "authentication on: it is the URL EHRs call, which every token's aud must name "
            "(the Host header is the caller's to choose)"
        )
    preflight_store(settings)
    host, _, port = settings.bind.rpartition(":")
    print(
        f"tpi-cds: CDS Hooks discovery at http://{host or '127.0.0.1'}:{port}/cds-services "
        f"({settings.workers} workers, feedback store {store_label(settings.store_url)})",
        file=sys.stderr,
        flush=True,
    )
    print(f"tpi-cds: {trust_line(settings)}", file=sys.stderr, flush=True)
    GunicornService(settings).run()


def preflight_store(settings: ServiceSettings) -> None:
    """Before gunicorn starts: a store that cannot work stops the start with one line
    (exit 2); one that is only down now is a degraded start that says what is missing."""
    try:
        store = FeedbackStore(settings.store_url)
    except StoreConfigurationError as exc:
        raise SettingsError(str(exc)) from None
    try:
        store.create_schema()
    except StoreUnavailableError as exc:
        print(
            f"tpi-cds: DEGRADED START: feedback cannot be stored ({exc}); hook calls are "
            "answered, feedback gets 503 until the store answers",
            file=sys.stderr,
            flush=True,
        )
    finally:
        store.dispose()


def trust_line(settings: ServiceSettings) -> str:
    """Who the service will answer, said at start: the commonest first-day mistake is a
    service that trusts nobody and answers every call 401."""
    auth = settings.auth
    if not auth.enabled:
        return "authentication is OFF: any caller is answered (local trial only)"
    if not auth.issuers:
        return (
            "no trusted issuer: every call will be answered 401; configure "
            "TPI_CDS_AUTH_ISSUERS (or TPI_CDS_AUTH_DISABLED=true for a local trial)"
        )
    names = ", ".join(issuer.iss for issuer in auth.issuers)
    plural = "issuer" if len(auth.issuers) == 1 else "issuers"
    return f"trusting {len(auth.issuers)} {plural}: {names}"
