"""A CDS Hooks request in, the response body out: shared by the command and the web service.

The order is checked first: an order hook without a TPI order is answered
``{"cards": []}`` before any prefetch is read or any record is built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson

from cards import Engine, OrderContext, parse_draft_orders, resources_in
from cards.engine import Advisor
from cards.orders import ORDER_HOOKS
from cds_service.logs import safe_id
from cds_service.services import OPTIONAL_KEYS, SERVICES_BY_HOOK, Service


class InvalidRequestError(ValueError):
    """The body is not a CDS Hooks request this service can answer (HTTP 400)."""


class MissingPrefetchError(Exception):
    """Data the rules need is neither in prefetch nor fetchable (HTTP 412)."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        super().__init__(f"prefetch lacks data the rules need: {', '.join(keys)}")


@dataclass(frozen=True)
class HookRequest:
    hook: str
    hook_instance: str
    context: dict[str, Any]
    prefetch: dict[str, Any]
    fhir_server: str | None
    fhir_authorization: dict[str, Any] | None

    @property
    def patient_id(self) -> str:
        return self.context["patientId"]


def parse_request(body: Any, service: Service | None = None) -> HookRequest:
    """Check the shape the spec requires; unknown extra fields are ignored."""
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    hook = body.get("hook")
    if not isinstance(hook, str) or not hook:
        raise InvalidRequestError("'hook' is required and must be a string")
    if service is not None and hook != service.hook:
        raise InvalidRequestError(
            f"hook {hook!r} does not match service {service.id!r}, which answers {service.hook!r}"
        )
    if service is None and hook not in SERVICES_BY_HOOK:
        known = ", ".join(SERVICES_BY_HOOK)
        raise InvalidRequestError(f"no service answers hook {hook!r}; known hooks: {known}")
    hook_instance = body.get("hookInstance")
    if not isinstance(hook_instance, str) or not hook_instance:
        raise InvalidRequestError("'hookInstance' is required and must be a string")
    context = body.get("context")
    if not isinstance(context, dict):
        raise InvalidRequestError("'context' is required and must be a JSON object")
    for key in ("patientId", "userId"):
        if not isinstance(context.get(key), str) or not context[key]:
            raise InvalidRequestError(f"'context.{key}' is required and must be a string")
    if "encounterId" in context and not isinstance(context["encounterId"], str | None):
        raise InvalidRequestError("'context.encounterId' must be a string")
    if hook in ORDER_HOOKS:
        orders = context.get("draftOrders")
        if not isinstance(orders, dict) or orders.get("resourceType") != "Bundle":
            raise InvalidRequestError("'context.draftOrders' is required and must be a FHIR Bundle")
    if hook == "order-select":
        selections = context.get("selections")
        if not isinstance(selections, list) or not all(isinstance(s, str) for s in selections):
            raise InvalidRequestError(
                "'context.selections' is required and must be a list of strings"
            )
    prefetch = body.get("prefetch")
    if prefetch is None:
        prefetch = {}
    if not isinstance(prefetch, dict):
        raise InvalidRequestError("'prefetch' must be a JSON object")
    fhir_server = body.get("fhirServer")
    if fhir_server is not None and not isinstance(fhir_server, str):
        raise InvalidRequestError("'fhirServer' must be a string")
    authorization = body.get("fhirAuthorization")
    if authorization is not None:
        if not isinstance(authorization, dict):
            raise InvalidRequestError("'fhirAuthorization' must be a JSON object")
        if not isinstance(authorization.get("access_token"), str):
            raise InvalidRequestError("'fhirAuthorization.access_token' is required")
        if fhir_server is None:
            raise InvalidRequestError("'fhirServer' is required when 'fhirAuthorization' is given")
    return HookRequest(hook, hook_instance, context, prefetch, fhir_server, authorization)


def is_provided(value: Any) -> bool:
    """A prefetch key holding data or an explicit null ("nothing there")."""
    if value is None:
        return True
    return isinstance(value, dict) and value.get("resourceType") not in (None, "OperationOutcome")


def missing_keys(service: Service, prefetch: Mapping[str, Any]) -> list[str]:
    """Required keys absent or holding an OperationOutcome (the EHR failed to fetch them)."""
    return [k for k in service.required_keys if k not in prefetch or not is_provided(prefetch[k])]


def evaluate_request(
    body: Any,
    *,
    today: date,
    engine: Engine,
    service: Service | None = None,
    fetch_missing: Callable[[HookRequest, Service, list[str]], Mapping[str, Any]] | None = None,
    observe: dict[str, Any] | None = None,
    select_cards: Callable[[Advisor, HookRequest, OrderContext], list[dict[str, Any]]]
    | None = None,
) -> dict[str, Any]:
    """The response body for one hook call (``{"cards": [...]}``).

    ``observe``, when given, is filled with what a log line may say about the call:
    counts and topics, never content. ``select_cards``, when given, decides which of the
    engine's cards are sent (the web service's card memory); the offline command sends all.
    """
    seen: dict[str, Any] = {} if observe is None else observe
    request = parse_request(body, service)
    service = service or SERVICES_BY_HOOK[request.hook]
    seen["hookInstance"] = safe_id(request.hook_instance) or "(not a plain id)"
    tpi_orders = engine.tpi_orders(request.hook, request.context)
    seen["tpiOrders"] = len(tpi_orders)
    if request.hook in ORDER_HOOKS and not tpi_orders:
        seen["cards"] = 0
        return {"cards": []}
    prefetch = dict(request.prefetch)
    missing = missing_keys(service, prefetch)
    optional = [k for k in OPTIONAL_KEYS if k not in prefetch]
    if (missing or optional) and fetch_missing is not None:
        fetched = fetch_missing(request, service, missing + optional)
        seen["fetchedKeys"] = sorted(fetched)
        prefetch.update(fetched)
        missing = missing_keys(service, prefetch)
    if missing:
        seen["missingKeys"] = missing
        raise MissingPrefetchError(missing)
    record = engine.record(request.patient_id, _prefetched_resources(prefetch))
    seen.update(
        resourcesRead=record.read,
        resourcesKept=record.kept,
        resourcesInvalid=sum(record.skipped.values()),
    )
    orders = OrderContext(
        hook=request.hook,
        patient_id=request.patient_id,
        encounter_id=request.context.get("encounterId") or None,
        user_reference=request.context.get("userId"),
        tpi_orders=tpi_orders,
    )
    if orders.is_order_hook:
        orders.drafts = parse_draft_orders(request.context)
    advisor = engine.advisor(record, orders, today)
    if select_cards is None:
        cards = [advised.card for advised in advisor.cards()]
    else:
        cards = select_cards(advisor, request, orders)
    seen["cards"] = len(cards)
    seen["topics"] = [card["source"]["topic"]["code"] for card in cards]
    return {"cards": cards}


def _prefetched_resources(prefetch: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for value in prefetch.values():
        yield from resources_in(value)


def response_json(body: Mapping[str, Any]) -> str:
    """The exact text both the command and the web service send (compact UTF-8 JSON)."""
    return orjson.dumps(body).decode()
