"""The orders of the hook: which draft order is a TPI, and what else is being ordered.

This is read from raw JSON before anything else, because order-select fires for every
order a clinician picks: a request without a TPI order must cost almost nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.servicerequest import ServiceRequest

from cards.record import parse_resource, raw_codings, resources_in
from cards.terminology import Terminology

ORDER_HOOKS = ("order-select", "order-sign")


@dataclass(frozen=True)
class TpiOrder:
    """A TPI draft order: its reference (for a delete suggestion), its body sites, its
    reasons (the indication the EHR attached) and the free text of its details and notes."""

    resource_type: str
    id: str | None
    body_sites: tuple[tuple[str, str, str], ...]
    body_site_concepts: tuple[dict[str, Any], ...] = ()
    reason_codes: tuple[tuple[str, str, str], ...] = ()
    reason_concepts: tuple[dict[str, Any], ...] = ()
    reason_references: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()
    detail_codes: tuple[tuple[str, str, str], ...] = ()

    @property
    def reference(self) -> str | None:
        return f"{self.resource_type}/{self.id}" if self.id else None


@dataclass
class DraftOrders:
    """Every draft order of the ordering session (selected or not), typed."""

    medication_requests: list[MedicationRequest] = field(default_factory=list)
    service_requests: list[ServiceRequest] = field(default_factory=list)
    skipped: int = 0


@dataclass
class OrderContext:
    """What the hook tells about this moment: who, for whom, and what is being ordered."""

    hook: str
    patient_id: str
    encounter_id: str | None = None
    user_reference: str | None = None
    tpi_orders: list[TpiOrder] = field(default_factory=list)
    drafts: DraftOrders = field(default_factory=DraftOrders)

    @property
    def is_order_hook(self) -> bool:
        return self.hook in ORDER_HOOKS


def draft_order_resources(context: dict[str, Any]) -> list[dict[str, Any]]:
    return list(resources_in(context.get("draftOrders")))


def find_tpi_orders(hook: str, context: dict[str, Any], terminology: Terminology) -> list[TpiOrder]:
    """TPI orders among the draft orders; on order-select only those in ``selections``."""
    if hook not in ORDER_HOOKS:
        return []
    tpi = terminology["tpi-procedures"]
    selections = context.get("selections") if hook == "order-select" else None
    selected = (
        {s for s in selections if isinstance(s, str)} if isinstance(selections, list) else set()
    )
    found = []
    for raw in draft_order_resources(context):
        kind = raw.get("resourceType")
        if kind not in ("ServiceRequest", "Procedure"):
            continue
        if not any(
            isinstance(c, str) and tpi.contains(s, c) for s, c in raw_codings(raw.get("code"))
        ):
            continue
        rid = raw.get("id") if isinstance(raw.get("id"), str) else None
        if hook == "order-select" and not _is_selected(kind, rid, selected):
            continue
        found.append(
            TpiOrder(
                kind,
                rid,
                tuple(_body_sites(raw.get("bodySite"), prefer_text=True)),
                body_site_concepts=tuple(_concepts(raw.get("bodySite"))),
                reason_codes=tuple(_body_sites(raw.get("reasonCode"))),
                reason_concepts=tuple(_concepts(raw.get("reasonCode"))),
                reason_references=tuple(
                    r["reference"]
                    for r in raw.get("reasonReference") or []
                    if isinstance(r, dict) and isinstance(r.get("reference"), str)
                )
                if isinstance(raw.get("reasonReference"), list)
                else (),
                texts=tuple(_order_texts(raw)),
                detail_codes=tuple(_body_sites(raw.get("orderDetail"))),
            )
        )
    return found


def _concepts(value: Any) -> Iterable[dict[str, Any]]:
    """CodeableConcepts rebuilt from their string parts (they are copied into suggestions,
    which must be valid FHIR whatever the caller sent). A concept with nothing usable is
    kept empty: it is still a site, of unknown region."""
    if not isinstance(value, list):
        return
    for concept in value:
        if not isinstance(concept, dict):
            continue
        codings = (
            [
                {
                    k: c[k]
                    for k in ("system", "code", "display")
                    if isinstance(c.get(k), str) and c[k]
                }
                for c in concept.get("coding") or []
                if isinstance(c, dict) and isinstance(c.get("code"), str) and c["code"]
            ]
            if isinstance(concept.get("coding"), list)
            else []
        )
        clean: dict[str, Any] = {}
        if codings:
            clean["coding"] = codings
        if isinstance(concept.get("text"), str) and concept["text"]:
            clean["text"] = concept["text"]
        yield clean


def _order_texts(raw: dict[str, Any]) -> Iterable[str]:
    """Free text of orderDetail and note, where an EHR names the injectate."""
    for concept in _concepts(raw.get("orderDetail")):
        if isinstance(concept.get("text"), str):
            yield concept["text"]
        for coding in concept.get("coding") or []:
            if isinstance(coding, dict) and isinstance(coding.get("display"), str):
                yield coding["display"]
    for note in _concepts(raw.get("note")):
        if isinstance(note.get("text"), str):
            yield note["text"]


def _is_selected(kind: str, rid: str | None, selected: set[str]) -> bool:
    if not rid:
        return False
    for selection in selected:
        parts = selection.split("/_history/")[0].rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] == kind and parts[-1] == rid:
            return True
    return False


def _body_sites(value: Any, *, prefer_text: bool = False) -> Iterable[tuple[str, str, str]]:
    """(system, code, words) of each coding; for body sites the clinician's own words
    ("Left upper trapezius") come before the code's display."""
    if not isinstance(value, list):
        return
    for concept in value:
        if not isinstance(concept, dict) or not isinstance(concept.get("coding"), list):
            continue
        for coding in concept["coding"]:
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                text, display = concept.get("text"), coding.get("display")
                first = text if isinstance(text, str) else None
                second = display if isinstance(display, str) else None
                if not prefer_text:
                    first, second = second, first
                system = coding.get("system") if isinstance(coding.get("system"), str) else ""
                yield (system, coding["code"], first or second or coding["code"])


def parse_draft_orders(context: dict[str, Any]) -> DraftOrders:
    drafts = DraftOrders()
    for raw in draft_order_resources(context):
        kind = raw.get("resourceType")
        if kind not in ("MedicationRequest", "ServiceRequest"):
            continue
        parsed = parse_resource(raw)
        if parsed is None:
            drafts.skipped += 1
        elif kind == "MedicationRequest":
            drafts.medication_requests.append(parsed)
        else:
            drafts.service_requests.append(parsed)
    return drafts
