"""The Flask application: discovery, the three hooks, feedback, health.

A thin layer: it reads the HTTP request, asks ``evaluation`` for the answer the offline
command would print, and turns every failure into a 4xx with an OperationOutcome.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app, g, request
from flask_cors import CORS
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from cards import Engine, OrderContext
from cards.engine import Advisor
from cds_service.auth import Authenticator, AuthError, audience_bases
from cds_service.evaluation import (
    HookRequest,
    InvalidRequestError,
    MissingPrefetchError,
    evaluate_request,
    response_json,
)
from cds_service.feedback import InvalidFeedbackError, parse_feedback
from cds_service.fetching import FetchLimits, FhirFetcher
from cds_service.ledger import CardLedger
from cds_service.logs import configure_logging
from cds_service.memory import CardMemory, SentCard, backend_for
from cds_service.metrics import Metrics, ScrapeAllowList
from cds_service.replay import Budget, RedisReplayGuard, ReplayGuard, SqlReplayGuard
from cds_service.services import SERVICES_BY_ID, discovery_document
from cds_service.settings import ServiceSettings, load_terminology
from cds_service.store import FeedbackEntry, FeedbackStore, StoreUnavailableError

log = logging.getLogger(__name__)
requests_log = logging.getLogger("cds_service.requests")
JSON_TYPES = ("application/json", "application/fhir+json")
ISSUE_CODES = {
    400: "invalid",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    412: "incomplete",
    413: "too-long",
    415: "not-supported",
    503: "transient",
}


@dataclass
class Runtime:
    """What a worker builds once at start and uses for every request."""

    settings: ServiceSettings
    engine: Engine
    store: FeedbackStore
    fetcher: FhirFetcher
    discovery: str
    authenticator: Authenticator | None
    readiness: Budget
    memory: CardMemory
    metrics: Metrics | None
    scrape_allow: ScrapeAllowList
    ledger: CardLedger
    audience_bases: tuple[str, ...] = ()


def runtime() -> Runtime:
    return current_app.extensions["tpi_cds"]


def create_app(
    settings: ServiceSettings | None = None, environ: Mapping[str, str] | None = None
) -> Flask:
    """The application factory (also what gunicorn calls: ``cds_service.app:create_app()``)."""
    settings = settings or ServiceSettings.from_env(os.environ if environ is None else environ)
    configure_logging()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    store = FeedbackStore(settings.store_url)
    try:
        store.create_schema()
    except StoreUnavailableError as exc:
        log.warning("feedback store unavailable at start: %s", exc)
    engine = settings.engine.build_engine()
    authenticator = None
    if settings.auth.enabled:
        authenticator = Authenticator(settings.auth, replay_guard(settings, store))
    else:
        log.warning(
            "AUTHENTICATION IS OFF (TPI_CDS_AUTH_DISABLED): any caller can use this service. "
            "Development only; never expose it like this."
        )
    app.extensions["tpi_cds"] = Runtime(
        settings=settings,
        engine=engine,
        store=store,
        fetcher=FhirFetcher(
            FetchLimits(
                settings.fetch_connect_timeout,
                settings.fetch_read_timeout,
                settings.fetch_deadline,
                allowed_servers=settings.fhir_server_allowlist,
                page_size=settings.fetch_page_size,
                allow_http_loopback=settings.fetch_allow_http_loopback,
                max_bytes=settings.fetch_max_bytes,
                max_resources=settings.fetch_max_resources,
            ),
            settings.engine.valueset_dir,
        ),
        discovery=json.dumps(discovery_document(load_terminology(settings.engine.valueset_dir))),
        authenticator=authenticator,
        readiness=Budget(seconds=0.5, pause=2.0, threads=2),
        memory=CardMemory(
            backend_for(FeedbackStore(settings.store_url, durable=False), settings.redis_url),
            settings.memory,
        ),
        metrics=Metrics() if settings.metrics_enabled else None,
        scrape_allow=ScrapeAllowList(settings.metrics_allow),
        ledger=CardLedger(store),
        audience_bases=audience_bases(settings.auth.public_base_url, settings.bind),
    )
    _watch(app.extensions["tpi_cds"])
    if settings.cors_origins:
        CORS(
            app,
            origins=list(settings.cors_origins),
            allow_headers=["Authorization", "Content-Type"],
            methods=["GET", "POST", "OPTIONS"],
            max_age=600,
            # A public web page (the sandbox) calling a service on the user's own machine.
            allow_private_network=True,
        )
        _only_for_browsers(app)
    app.register_blueprint(cds_hooks)
    app.register_blueprint(health)
    # Nothing opened at start may be shared by forked workers: each opens its own.
    store.dispose()
    app.before_request(_start_request)
    app.after_request(_log_request)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    return app


def _watch(state: Runtime) -> None:
    """The parts that see fetches and store calls report them to the metrics."""
    metrics = state.metrics
    if metrics is None:
        return
    state.fetcher.on_outcome = metrics.fetch
    state.memory.on_store = lambda ok: metrics.store("memory", ok)


def _only_for_browsers(app: Flask) -> None:
    """EHR servers call without an ``Origin`` header: spare them flask-cors' per-request work
    (about a tenth of the cost of a non-TPI order-select); browsers always send one."""
    hooks = app.after_request_funcs.setdefault(None, [])
    cors_hook = hooks[-1]

    def cors_when_origin(response: Response) -> Response:
        return cors_hook(response) if "Origin" in request.headers else response

    hooks[-1] = cors_when_origin


def operation_outcome(status: int, diagnostics: str, **extra: Any) -> Response:
    issue = {
        "severity": "error",
        "code": ISSUE_CODES.get(status, "processing"),
        "diagnostics": diagnostics,
        **extra,
    }
    body = {"resourceType": "OperationOutcome", "issue": [issue]}
    return Response(json.dumps(body), status=status, mimetype="application/fhir+json")


def _start_request() -> None:
    g.started = time.perf_counter()
    g.observed = {}


def _log_request(response: Response) -> Response:
    """One JSON line per request: what happened, how long, how much; nothing private."""
    req = request._get_current_object()  # type: ignore[attr-defined]
    context = g._get_current_object()  # type: ignore[attr-defined]
    started = getattr(context, "started", None) or time.perf_counter()
    fields: dict[str, Any] = {
        "event": "request",
        "method": req.method,
        "route": req.url_rule.rule if req.url_rule else "unmatched",
        "status": response.status_code,
        "durationMs": round((time.perf_counter() - started) * 1000, 1),
    }
    service_id = (req.view_args or {}).get("service_id")
    if service_id in SERVICES_BY_ID:
        fields["service"] = service_id
    fields.update(getattr(context, "observed", {}))
    requests_log.info(fields)
    metrics = runtime().metrics
    if metrics is not None:
        metrics.request(
            ENDPOINTS.get(fields["route"], "other"),
            fields.get("service", ""),
            response.status_code,
            time.perf_counter() - started,
        )
    return response


ENDPOINTS = {
    "/cds-services": "discovery",
    "/cds-services/<service_id>": "hook",
    "/cds-services/<service_id>/feedback": "feedback",
    "/healthz": "health",
    "/readyz": "health",
    "/metrics": "metrics",
}


def replay_guard(settings: ServiceSettings, store: FeedbackStore) -> ReplayGuard:
    if settings.redis_url:
        return RedisReplayGuard(settings.redis_url, settings.auth.leeway_seconds)
    return SqlReplayGuard(store, settings.auth.leeway_seconds)


def _authenticate() -> Response | None:
    """Every discovery, hook and feedback call carries an EHR's signed JWT."""
    g.issuer = None
    state = runtime()
    if state.authenticator is None:
        return None
    if request.method == "OPTIONS":
        return None
    audience = [f"{base}{request.path}" for base in state.audience_bases]
    try:
        claims = state.authenticator.verify(request.headers.get("Authorization"), audience)
    except AuthError as exc:
        g.observed["authRefused"] = str(exc)
        return Response(status=401, headers={"WWW-Authenticate": "Bearer"})
    g.issuer = state.authenticator.issuer(claims["iss"])
    return None


SERVICE_PATH = re.compile(r"/cds-services/(?P<id>[^/]+)(/feedback)?/?")


def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    if status == 405:
        # A service id that does not exist is a 404 whatever the method.
        match = SERVICE_PATH.fullmatch(request.path)
        if match is not None and match["id"] not in SERVICES_BY_ID:
            return operation_outcome(404, f"no CDS service with id {match['id']!r}")
    if isinstance(error, RequestEntityTooLarge):
        limit = runtime().settings.max_body_bytes
        return operation_outcome(413, f"the request body is larger than {limit} bytes")
    response = operation_outcome(status, error.description or error.name)
    if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    return response


def _unexpected_error(error: Exception) -> Response:
    log.error("unexpected %s while answering %s", type(error).__name__, request.path)
    return operation_outcome(500, "internal error: the service could not answer this request")


def _read_body() -> bytes:
    """The request body, refusing any body over the size limit with a 413.

    Werkzeug checks a declared Content-Length; a chunked body (no Content-Length) it only
    cuts off silently at the limit, so that one is read here, counting every byte.
    """
    if request.content_length is not None:
        return request.get_data(cache=False)
    stream = request.environ.get("wsgi.input")
    if stream is None or not request.environ.get("wsgi.input_terminated"):
        return b""
    limit = runtime().settings.max_body_bytes
    chunks, size = [], 0
    while chunk := stream.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise RequestEntityTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def _json_body() -> Any:
    mimetype = (request.mimetype or "").lower()
    if mimetype not in JSON_TYPES:
        raise InvalidRequestError(
            f"the Content-Type must be application/json, not {request.content_type or 'missing'}"
        )
    data = _read_body()
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"the body is not valid JSON ({exc})") from exc


cds_hooks = Blueprint("cds_hooks", __name__)
cds_hooks.before_request(_authenticate)
health = Blueprint("health", __name__)


@cds_hooks.get("/cds-services")
def discovery() -> Response:
    return Response(runtime().discovery, mimetype="application/json")


@cds_hooks.post("/cds-services/<service_id>")
def hook(service_id: str) -> Response:
    service = SERVICES_BY_ID.get(service_id)
    if service is None:
        return operation_outcome(404, f"no CDS service with id {service_id!r}")
    state = runtime()
    try:
        body = _json_body()
        issuer_servers = g.issuer.fhir_servers if g.get("issuer") else ()
        answer = evaluate_request(
            body,
            today=state.settings.engine.today(),
            engine=state.engine,
            service=service,
            fetch_missing=lambda req, svc, keys: state.fetcher.fetch(
                req, svc, keys, issuer_servers
            ),
            observe=g.observed,
            select_cards=_memory_selection(service.id),
        )
    except InvalidRequestError as exc:
        return operation_outcome(400, str(exc))
    except MissingPrefetchError as exc:
        return operation_outcome(
            412,
            f"prefetch lacks {', '.join(exc.keys)} and it could not be fetched from fhirServer",
            expression=exc.keys,
        )
    state.ledger.count(service.id, answer["cards"])
    metrics = state.metrics
    if metrics is not None:
        metrics.cards_sent(service.id, answer["cards"])
        _count_withheld(service.id)
    return Response(response_json(answer), mimetype="application/json")


def _count_withheld(service_id: str) -> None:
    metrics = runtime().metrics
    if metrics is None:
        return
    for field_name, reason in (("repeatedTopics", "repeat"), ("snoozedTopics", "snooze")):
        topics = g.observed.get(field_name)
        if topics:
            metrics.cards_withheld(service_id, reason, topics)


def _memory_selection(
    service_id: str,
) -> Callable[[Advisor, HookRequest, OrderContext], list[dict[str, Any]]]:
    """Card memory for this call: repeats and snoozes of this tenant's patient."""
    state = runtime()
    observed = g.observed

    def select(advisor: Advisor, hook: HookRequest, orders: OrderContext) -> list[dict[str, Any]]:
        return state.memory.select(
            advisor,
            tenant=tenant_of(hook),
            patient_id=hook.patient_id,
            drafts=[order.id or "" for order in orders.tpi_orders],
            order_hook=orders.is_order_hook,
            service_id=service_id,
            observe=observed,
        )

    return select


def tenant_of(hook: HookRequest) -> str:
    """Whose patient ids these are: the signing issuer, else the EHR's FHIR server."""
    issuer = g.get("issuer")
    if issuer is not None:
        return f"iss:{issuer.iss}"
    return f"fhir:{(hook.fhir_server or '').rstrip('/')}"


@cds_hooks.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    if service_id not in SERVICES_BY_ID:
        return operation_outcome(404, f"no CDS service with id {service_id!r}")
    try:
        entries = parse_feedback(_json_body(), service_id)
        g.observed["feedbackEntries"] = len(entries)
    except (InvalidRequestError, InvalidFeedbackError) as exc:
        return operation_outcome(400, str(exc))
    state = runtime()
    known = state.memory.known_cards([entry.card_uuid for entry in entries])
    entries = [_with_card(entry, known.get(entry.card_uuid)) for entry in entries]
    try:
        state.store.add(entries)
    except StoreUnavailableError as exc:
        if state.metrics is not None:
            state.metrics.store("feedback", False)
        log.error("feedback store unavailable: %s", exc)
        response = operation_outcome(
            503, "feedback could not be stored now; nothing was kept, retry"
        )
        response.headers["Retry-After"] = "5"
        return response
    snoozed_topics = state.memory.snooze_from_feedback(entries, known)
    if snoozed_topics:
        g.observed["snoozes"] = len(snoozed_topics)
    if state.metrics is not None:
        _count_feedback(state.metrics, service_id, entries, snoozed_topics)
    return Response(json.dumps({"stored": len(entries)}), mimetype="application/json")


def _count_feedback(
    metrics: Metrics, service_id: str, entries: list[FeedbackEntry], snoozed_topics: list[str]
) -> None:
    metrics.store("feedback", True)
    for entry in entries:
        reason = (entry.override_reason or {}).get("reason") or {}
        metrics.feedback_entry(
            service_id, entry.card_topic, entry.outcome, str(reason.get("code") or "none")
        )
    for topic in snoozed_topics:
        metrics.snooze_started(topic)


def _with_card(entry: FeedbackEntry, card: SentCard | None) -> FeedbackEntry:
    """Feedback on a remembered card also keeps its rule ids (governance counts per rule)."""
    if card is None:
        return entry
    return replace(entry, card_rules=list(card.rules), card_indicator=card.indicator)


@health.get("/healthz")
def healthz() -> Response:
    return Response('{"status":"ok"}', mimetype="application/json")


@health.get("/metrics")
def metrics_page() -> Response:
    """Prometheus exposition, no JWT (a scraper has none): only for allowed networks."""
    state = runtime()
    if state.metrics is None:
        return operation_outcome(404, "metrics are turned off (TPI_CDS_METRICS=false)")
    if not state.scrape_allow.allows(request.remote_addr):
        return operation_outcome(
            403, "metrics are not served to this address (see TPI_CDS_METRICS_ALLOW)"
        )
    body, content_type = state.metrics.exposition()
    return Response(body, content_type=content_type)


@health.get("/readyz")
def readyz() -> Response:
    state = runtime()
    try:
        store_ok = state.readiness.call(state.store.ping)
    except StoreUnavailableError:
        store_ok = False  # a store that hangs: answered at once, not after its timeouts
    if state.metrics is not None:
        state.metrics.store("feedback", store_ok)
    checks = {"valueSets": len(state.engine.terminology) > 0, "store": store_ok}
    if not all(checks.values()):
        failing = ", ".join(k for k, ok in checks.items() if not ok)
        return operation_outcome(503, f"not ready: {failing} unavailable")
    return Response(json.dumps({"status": "ready", **checks}), mimetype="application/json")
