"""The patient record the rules read: only relevant resources, typed with fhir.resources R4B.

Real prefetch is messy: search Bundles with OperationOutcome entries, ``urn:uuid:``
references, partial dates, decimal scores, unknown fields, resources of other types, and
thousands of Observations no rule reads. The record keeps a resource only when a rule can
read it (a cheap look at the raw JSON), then validates just those. A resource that still
fails validation is skipped and counted by type, never fatal.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fhir.resources.R4B.allergyintolerance import AllergyIntolerance
from fhir.resources.R4B.careplan import CarePlan
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.coverage import Coverage
from fhir.resources.R4B.fhirresourcemodel import FHIRResourceModel
from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.practitionerrole import PractitionerRole
from fhir.resources.R4B.procedure import Procedure
from fhir.resources.R4B.servicerequest import ServiceRequest
from pydantic import ValidationError

from cards.terminology import CodeIndex, Terminology

MODELS: dict[str, type[FHIRResourceModel]] = {
    "AllergyIntolerance": AllergyIntolerance,
    "CarePlan": CarePlan,
    "Condition": Condition,
    "Coverage": Coverage,
    "Medication": Medication,
    "MedicationRequest": MedicationRequest,
    "Observation": Observation,
    "PractitionerRole": PractitionerRole,
    "Procedure": Procedure,
    "ServiceRequest": ServiceRequest,
}

OBSERVATION_VALUE_SETS = ("pain-scores", "hba1c", "pregnancy-status", "inr", "platelet-count")
PROCEDURE_VALUE_SETS = ("tpi-procedures", "physical-therapy")
SERVICE_REQUEST_VALUE_SETS = (
    "physical-therapy",
    "tpi-procedures",
    "referral-pain-medicine",
    "referral-rehabilitation",
    "referral-rheumatology",
    "referral-neurology",
)
CONDITION_VALUE_SETS = (
    "qualifying-diagnoses",
    "regional-pain-diagnoses",
    "fibromyalgia",
    "skin-soft-tissue-infection",
    "systemic-infection",
    "anesthetic-allergy-history",
    "long-term-anticoagulant-use",
    "severe-liver-kidney-disease",
    "bleeding-disorders",
    "thrombocytopenia",
    "uncontrolled-diabetes",
    "pregnancy",
    "tension-type-headache",
    "migraine",
    "radiculopathy",
)
MEDICATION_REQUEST_STATUSES = ("active", "on-hold")
MEDICATION_VALUE_SETS = ("anticoagulants", "aspirin", "corticosteroids")
ALLERGY_VALUE_SETS = ("local-anesthetics", "anesthetic-allergy-history")
CARE_PLAN_VALUE_SETS = ("physical-therapy",)
MAX_STRIP_ROUNDS = 3
# References the models require but no rule reads: a sloppy export that leaves one out
# must not make the engine miss an infection or an allergy.
UNREAD_REQUIRED = {
    "Condition": ("subject",),
    "Procedure": ("subject",),
    "AllergyIntolerance": ("patient",),
    "MedicationRequest": ("subject",),
    "ServiceRequest": ("subject",),
    "CarePlan": ("subject",),
    "Coverage": ("beneficiary", "payor"),
}
PLACEHOLDER = {"display": "not given"}

# The elements the rules read, per type: only these are validated and kept. Narrative,
# identifiers, extensions and the rest are never read, so they cost nothing.
READ_ELEMENTS: dict[str, frozenset[str]] = {
    "Condition": frozenset(
        {
            "resourceType",
            "id",
            "clinicalStatus",
            "verificationStatus",
            "code",
            "subject",
            "onsetDateTime",
            "onsetPeriod",
            "recordedDate",
            "bodySite",
            "abatementDateTime",
            "abatementAge",
            "abatementPeriod",
            "abatementRange",
            "abatementString",
        }
    ),
    "Procedure": frozenset(
        {
            "resourceType",
            "id",
            "status",
            "code",
            "subject",
            "performedDateTime",
            "performedPeriod",
            "bodySite",
        }
    ),
    "Observation": frozenset(
        {
            "resourceType",
            "id",
            "status",
            "code",
            "subject",
            "effectiveDateTime",
            "effectivePeriod",
            "effectiveInstant",
            "valueQuantity",
            "valueInteger",
            "valueCodeableConcept",
        }
    ),
    "MedicationRequest": frozenset(
        {
            "resourceType",
            "id",
            "status",
            "intent",
            "medicationCodeableConcept",
            "medicationReference",
            "subject",
            "authoredOn",
            "contained",
        }
    ),
    "Medication": frozenset({"resourceType", "id", "code"}),
    "AllergyIntolerance": frozenset(
        {
            "resourceType",
            "id",
            "clinicalStatus",
            "verificationStatus",
            "code",
            "patient",
            "type",
            "criticality",
            "reaction",
            "recordedDate",
            "onsetDateTime",
        }
    ),
    "ServiceRequest": frozenset(
        {
            "resourceType",
            "id",
            "status",
            "intent",
            "code",
            "category",
            "subject",
            "encounter",
            "authoredOn",
            "occurrenceDateTime",
            "occurrencePeriod",
            "bodySite",
            "reasonCode",
            "reasonReference",
            "orderDetail",
            "note",
        }
    ),
    "CarePlan": frozenset(
        {
            "resourceType",
            "id",
            "status",
            "intent",
            "category",
            "activity",
            "subject",
            "period",
            "created",
            "addresses",
        }
    ),
    "PractitionerRole": frozenset({"resourceType", "id", "specialty"}),
    "Coverage": frozenset(
        {"resourceType", "id", "status", "type", "period", "order", "payor", "beneficiary"}
    ),
}


def resources_in(value: Any) -> Iterator[dict[str, Any]]:
    """The resources of a prefetch value: a Bundle's entries or a single resource.

    OperationOutcome entries (search.mode ``outcome``) and non-resources are not data.
    """
    if not isinstance(value, dict):
        return
    if value.get("resourceType") == "Bundle":
        entries = value.get("entry")
        if not isinstance(entries, list):
            return
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            resource = entry.get("resource")
            if not isinstance(resource, dict):
                continue
            search = entry.get("search")
            if isinstance(search, dict) and search.get("mode") == "outcome":
                continue
            if resource.get("resourceType") == "Bundle":
                yield from resources_in(resource)
            elif resource.get("resourceType") != "OperationOutcome":
                yield resource
    elif isinstance(value.get("resourceType"), str) and value["resourceType"] != "OperationOutcome":
        yield value


def parse_resource(raw: dict[str, Any]) -> FHIRResourceModel | None:
    """Validate the elements the rules read; unknown ones are dropped; invalid gives None."""
    kind = raw.get("resourceType")
    model = MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        return None
    read = READ_ELEMENTS[kind]
    data = {key: value for key, value in raw.items() if key in read}
    for name in UNREAD_REQUIRED.get(kind, ()):
        if name not in data:
            data[name] = [PLACEHOLDER] if name == "payor" else PLACEHOLDER
    raw = data
    for _ in range(MAX_STRIP_ROUNDS):
        try:
            return model.model_validate(data)
        except (ValidationError, ValueError, TypeError) as exc:
            errors = exc.errors() if isinstance(exc, ValidationError) else []
            unknown = [e["loc"] for e in errors if e.get("type") == "extra_forbidden"]
            if not unknown or len(unknown) != len(errors):
                return None
            if data is raw:
                data = copy.deepcopy(raw)
            for loc in unknown:
                _delete_path(data, loc)
    return None


def _delete_path(data: Any, loc: tuple[Any, ...]) -> None:
    node = data
    for part in loc[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(node, dict):
        node.pop(loc[-1], None)


def raw_codings(concept: Any) -> Iterator[tuple[Any, Any]]:
    """(system, code) pairs of a raw CodeableConcept, tolerating any shape."""
    if not isinstance(concept, dict):
        return
    codings = concept.get("coding")
    if isinstance(codings, list):
        for coding in codings:
            if isinstance(coding, dict):
                yield coding.get("system"), coding.get("code")


def _raw_concepts(raw: dict[str, Any], *paths: str) -> Iterator[Any]:
    for path in paths:
        value: Any = raw
        for part in path.split("."):
            if isinstance(value, list):
                value = [v.get(part) if isinstance(v, dict) else None for v in value]
                value = [x for v in value for x in (v if isinstance(v, list) else [v])]
            elif isinstance(value, dict):
                value = value.get(part)
            else:
                value = None
        if isinstance(value, list):
            yield from value
        elif value is not None:
            yield value


@dataclass
class PatientRecord:
    """What the rules may read about one patient, typed and already filtered for relevance."""

    patient_id: str
    conditions: list[Condition] = field(default_factory=list)
    procedures: list[Procedure] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)
    medication_requests: list[MedicationRequest] = field(default_factory=list)
    medications: dict[str, Medication] = field(default_factory=dict)
    allergies: list[AllergyIntolerance] = field(default_factory=list)
    service_requests: list[ServiceRequest] = field(default_factory=list)
    care_plans: list[CarePlan] = field(default_factory=list)
    practitioner_roles: list[PractitionerRole] = field(default_factory=list)
    coverages: list[Coverage] = field(default_factory=list)
    read: int = 0
    kept: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    @classmethod
    def from_resources(
        cls, patient_id: str, resources: Iterable[dict[str, Any]], terminology: Terminology
    ) -> PatientRecord:
        record = cls(patient_id=patient_id)
        relevant = terminology.derived("record-relevance", lambda: _relevance(terminology))
        seen: set[tuple[str, str]] = set()
        for raw in resources:
            record.read += 1
            kind = raw.get("resourceType")
            test = relevant.get(kind) if isinstance(kind, str) else None
            if test is None or not test(raw):
                continue
            rid = raw.get("id")
            if isinstance(rid, str) and rid:
                if (kind, rid) in seen:
                    continue
                seen.add((kind, rid))
            parsed = parse_resource(raw)
            if parsed is None:
                record.skipped[kind] += 1
                continue
            record.kept += 1
            record._add(parsed)
        return record

    def _add(self, resource: FHIRResourceModel) -> None:
        kind = resource.get_resource_type()
        if kind == "Condition":
            self.conditions.append(resource)
        elif kind == "Procedure":
            self.procedures.append(resource)
        elif kind == "Observation":
            self.observations.append(resource)
        elif kind == "MedicationRequest":
            self.medication_requests.append(resource)
            for contained in resource.contained or []:
                if contained.get_resource_type() == "Medication" and contained.id:
                    self.medications[f"#{contained.id}"] = contained
        elif kind == "Medication":
            if resource.id:
                self.medications[f"Medication/{resource.id}"] = resource
        elif kind == "AllergyIntolerance":
            self.allergies.append(resource)
        elif kind == "ServiceRequest":
            self.service_requests.append(resource)
        elif kind == "CarePlan":
            self.care_plans.append(resource)
        elif kind == "PractitionerRole":
            self.practitioner_roles.append(resource)
        elif kind == "Coverage":
            self.coverages.append(resource)


def _relevance(terminology: Terminology) -> dict[str, Callable[[dict[str, Any]], bool]]:
    """Cheap raw-JSON tests: does any rule read this resource? (built once per engine)"""

    def coded_in(value_set_ids: tuple[str, ...], *paths: str) -> Callable[[dict[str, Any]], bool]:
        index = CodeIndex(terminology[v] for v in value_set_ids)
        direct = [p for p in paths if "." not in p]
        nested = [p for p in paths if "." in p]

        def test(raw: dict[str, Any]) -> bool:
            # The hot path of the whole service: thousands of resources per request.
            for path in direct:
                value = raw.get(path)
                concepts = (value,) if type(value) is dict else value if type(value) is list else ()
                for concept in concepts:
                    codings = concept.get("coding") if type(concept) is dict else None
                    if type(codings) is list:
                        for coding in codings:
                            if type(coding) is dict and index.contains(
                                coding.get("system"), coding.get("code")
                            ):
                                return True
            for concept in _raw_concepts(raw, *nested):
                for system, code in raw_codings(concept):
                    if index.contains(system, code):
                        return True
            return False

        return test

    def coded_or_named(
        value_set_ids: tuple[str, ...], path: str
    ) -> Callable[[dict[str, Any]], bool]:
        """Coded in the sets, or named in text (EHRs send local codes with readable text)."""
        index = CodeIndex(terminology[v] for v in value_set_ids)
        coded = coded_in(value_set_ids, path)

        def test(raw: dict[str, Any]) -> bool:
            if coded(raw):
                return True
            concept = raw.get(path)
            if not isinstance(concept, dict):
                return False
            displays = [
                c.get("display") for c in concept.get("coding") or [] if isinstance(c, dict)
            ]
            return index.names_in([concept.get("text"), *displays])

        return test

    named_drug = coded_or_named(MEDICATION_VALUE_SETS, "medicationCodeableConcept")
    pt_plan = coded_in(CARE_PLAN_VALUE_SETS, "category", "activity.detail.code")

    def medication_request(raw: dict[str, Any]) -> bool:
        if raw.get("status") not in MEDICATION_REQUEST_STATUSES:
            return False
        return "medicationReference" in raw or "contained" in raw or named_drug(raw)

    def always(raw: dict[str, Any]) -> bool:
        return True

    return {
        "Condition": coded_in(CONDITION_VALUE_SETS, "code"),
        "Observation": coded_in(OBSERVATION_VALUE_SETS, "code"),
        "Procedure": coded_in(PROCEDURE_VALUE_SETS, "code"),
        "ServiceRequest": coded_in(SERVICE_REQUEST_VALUE_SETS, "code", "category"),
        "CarePlan": lambda raw: raw.get("status") == "active" and pt_plan(raw),
        "MedicationRequest": medication_request,
        "Medication": always,
        "AllergyIntolerance": coded_or_named(ALLERGY_VALUE_SETS, "code"),
        "PractitionerRole": always,
        "Coverage": lambda raw: raw.get("status") == "active",
    }
