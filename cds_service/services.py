"""The three CDS services, each declared once; discovery is generated from these.

Prefetch templates keep to the subset EHRs support: reads and searches with reference and
token parameters only (no date arithmetic, no chained search). The observation codes come
from the engine's value sets, so a site's replacement value sets flow into discovery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cards.terminology import Terminology

PATIENT = "{{context.patientId}}"
ORDER_KEYS = (
    "conditions",
    "procedures",
    "observations",
    "medications",
    "allergies",
    "serviceRequests",
    "carePlans",
)
PATIENT_VIEW_KEYS = ("conditions", "procedures", "observations", "serviceRequests", "carePlans")
OBSERVATION_VALUE_SETS = ("pain-scores", "hba1c", "pregnancy-status", "inr", "platelet-count")
# Optional keys: read when the EHR gives them (or the service can fetch them), never a 412.
OPTIONAL_KEYS = ("coverage", "practitionerRole")
USAGE = (
    "Reads the patient's Condition, Procedure, Observation (0-10 pain scores, HbA1c, "
    "pregnancy status, INR, platelet count), MedicationRequest, AllergyIntolerance, "
    "ServiceRequest and CarePlan resources (prefetch, or fhirServer with fhirAuthorization). "
    "Optional: the patient's active Coverage (its Source of Payment Typology type picks the "
    "Medicare or commercial payer rules; without it the site's default applies) and, when "
    "context.userId is a PractitionerRole, its specialty (no referral is suggested to the "
    "ordering clinician's own specialty). TPI orders are ServiceRequests coded CPT "
    "20552/20553 (or a site's local codes); their bodySite, reasonCode / reasonReference and "
    "orderDetail are read."
)


@dataclass(frozen=True)
class Service:
    id: str
    hook: str
    title: str
    description: str
    required_keys: tuple[str, ...]

    def prefetch(self, terminology: Terminology) -> dict[str, str]:
        """Prefetch templates: every key the rules read; the PractitionerRole when given."""
        templates = prefetch_templates(terminology)
        keys = ("patient", *self.required_keys, *OPTIONAL_KEYS)
        return {key: templates[key] for key in keys}

    def discovery(self, terminology: Terminology) -> dict[str, Any]:
        return {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "prefetch": self.prefetch(terminology),
            "usageRequirements": USAGE,
        }


SERVICES: tuple[Service, ...] = (
    Service(
        id="tpi-order-select",
        hook="order-select",
        title="Trigger point injection advice (order select)",
        description=(
            "When a trigger point injection is selected: safety (infection, anesthetic "
            "allergy, anticoagulation, bleeding, steroid risks), eligibility (diagnosis, "
            "session limits, interval, response to the last injection), physical therapy "
            "alongside, and specialist referral after repeated non-response."
        ),
        required_keys=ORDER_KEYS,
    ),
    Service(
        id="tpi-order-sign",
        hook="order-sign",
        title="Trigger point injection advice (order sign)",
        description=(
            "The same trigger point injection advice as at selection, checked again on every "
            "draft order when the clinician signs."
        ),
        required_keys=ORDER_KEYS,
    ),
    Service(
        id="tpi-patient-view",
        hook="patient-view",
        title="Trigger point injection follow-up (patient view)",
        description=(
            "When the chart opens for a patient with a recent trigger point injection: "
            "physical therapy alongside it, and specialist referral after repeated "
            "non-response, recurrent or widespread pain."
        ),
        required_keys=PATIENT_VIEW_KEYS,
    ),
)
SERVICES_BY_ID = {service.id: service for service in SERVICES}
SERVICES_BY_HOOK = {service.hook: service for service in SERVICES}


def prefetch_templates(terminology: Terminology) -> dict[str, str]:
    observation_codes = ",".join(
        f"{concept.system}|{concept.code}"
        for vid in OBSERVATION_VALUE_SETS
        for concept in terminology[vid].concepts
    )
    return {
        "patient": f"Patient/{PATIENT}",
        "conditions": f"Condition?patient={PATIENT}",
        "procedures": f"Procedure?patient={PATIENT}",
        "observations": f"Observation?patient={PATIENT}&code={observation_codes}",
        "medications": f"MedicationRequest?patient={PATIENT}&status=active,on-hold",
        "allergies": f"AllergyIntolerance?patient={PATIENT}",
        "serviceRequests": f"ServiceRequest?patient={PATIENT}",
        "carePlans": f"CarePlan?patient={PATIENT}&status=active",
        "coverage": f"Coverage?patient={PATIENT}&status=active",
        "practitionerRole": "PractitionerRole/{{userPractitionerRoleId}}",
    }


def discovery_document(terminology: Terminology) -> dict[str, Any]:
    return {"services": [service.discovery(terminology) for service in SERVICES]}
