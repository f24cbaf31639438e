"""The Flask application: discovery, the three hooks, feedback, health.

A thin layer: it reads the HTTP request, asks ``evaluation`` for the answer the offline
command would print, and turns every failure into a 4xx with an OperationOutcome.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from flask_cors import CORS
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from cards import Engine
from cds_service.evaluation import (
    InvalidRequestError,
    MissingPrefetchError,
    evaluate_request,
    response_json,
)
from cds_service.feedback import InvalidFeedbackError, parse_feedback
from cds_service.fetching import FetchLimits, FhirFetcher
from cds_service.services import SERVICES_BY_ID, discovery_document
from cds_service.settings import ServiceSettings, load_terminology
from cds_service.store import FeedbackStore, StoreUnavailableError

log = logging.getLogger(__name__)
JSON_TYPES = ("application/json", "application/fhir+json")
ISSUE_CODES = {
    400: "invalid",
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


def runtime() -> Runtime:
    return current_app.extensions["tpi_cds"]


def create_app(
    settings: ServiceSettings | None = None, environ: Mapping[str, str] | None = None
) -> Flask:
    """The application factory (also what gunicorn calls: ``cds_service.app:create_app()``)."""
    settings = settings or ServiceSettings.from_env(os.environ if environ is None else environ)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    store = FeedbackStore(settings.store_url)
    try:
        store.create_schema()
    except StoreUnavailableError as exc:
        log.warning("feedback store unavailable at start: %s", exc)
    engine = settings.engine.build_engine()
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
            ),
            settings.engine.valueset_dir,
        ),
        discovery=json.dumps(discovery_document(load_terminology(settings.engine.valueset_dir))),
    )
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
    app.register_blueprint(cds_hooks)
    app.register_blueprint(health)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    return app


def operation_outcome(status: int, diagnostics: str, **extra: Any) -> Response:
    issue = {
        "severity": "error",
        "code": ISSUE_CODES.get(status, "processing"),
        "diagnostics": diagnostics,
        **extra,
    }
    body = {"resourceType": "OperationOutcome", "issue": [issue]}
    return Response(json.dumps(body), status=status, mimetype="application/fhir+json")


def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
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


def _json_body() -> Any:
    mimetype = (request.mimetype or "").lower()
    if mimetype not in JSON_TYPES:
        raise InvalidRequestError(
            f"the Content-Type must be application/json, not {request.content_type or 'missing'}"
        )
    data = request.get_data(cache=False)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"the body is not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise InvalidRequestError("the body's JSON is nested too deeply") from exc


cds_hooks = Blueprint("cds_hooks", __name__)
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
        answer = evaluate_request(
            body,
            today=state.settings.engine.today(),
            engine=state.engine,
            service=service,
            fetch_missing=state.fetcher.fetch,
        )
    except InvalidRequestError as exc:
        return operation_outcome(400, str(exc))
    except MissingPrefetchError as exc:
        return operation_outcome(
            412,
            f"prefetch lacks {', '.join(exc.keys)} and it could not be fetched from fhirServer",
            expression=exc.keys,
        )
    return Response(response_json(answer), mimetype="application/json")


@cds_hooks.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    if service_id not in SERVICES_BY_ID:
        return operation_outcome(404, f"no CDS service with id {service_id!r}")
    try:
        entries = parse_feedback(_json_body(), service_id)
    except (InvalidRequestError, InvalidFeedbackError) as exc:
        return operation_outcome(400, str(exc))
    try:
        runtime().store.add(entries)
    except StoreUnavailableError as exc:
        log.error("feedback store unavailable: %s", exc)
        response = operation_outcome(
            503, "feedback could not be stored now; nothing was kept, retry"
        )
        response.headers["Retry-After"] = "5"
        return response
    return Response(json.dumps({"stored": len(entries)}), mimetype="application/json")


@health.get("/healthz")
def healthz() -> Response:
    return Response('{"status":"ok"}', mimetype="application/json")


@health.get("/readyz")
def readyz() -> Response:
    state = runtime()
    checks = {"valueSets": len(state.engine.terminology) > 0, "store": state.store.ping()}
    if not all(checks.values()):
        failing = ", ".join(k for k, ok in checks.items() if not ok)
        return operation_outcome(503, f"not ready: {failing} unavailable")
    return Response(json.dumps({"status": "ready", **checks}), mimetype="application/json")
