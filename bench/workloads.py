"""Realistic CDS Hooks requests for the benchmark, built from a seed (no shared data needed).

A typical record is about 300 resources; a heavy one about 5,000 (a Synthea-sized history:
thousands of unrelated lab Observations, hundreds of encounters' Procedures and Conditions).
"""

from __future__ import annotations

import random
import uuid
from datetime import date, timedelta
from typing import Any

TODAY = date(2026, 11, 23)
PATIENT = "bench-patient-1"
CPT = "http://www.ama-assn.org/go/cpt"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LABS = [
    ("8867-4", "Heart rate", "/min", 55, 100),
    ("8480-6", "Systolic blood pressure", "mm[Hg]", 105, 160),
    ("8462-4", "Diastolic blood pressure", "mm[Hg]", 60, 100),
    ("29463-7", "Body weight", "kg", 55, 110),
    ("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 70, 180),
    ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 140, 260),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 11, 17),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 4, 11),
]
OTHER_CONDITIONS = [
    ("I10", "Essential (primary) hypertension"),
    ("E78.5", "Hyperlipidemia, unspecified"),
    ("J30.9", "Allergic rhinitis, unspecified"),
    ("K21.9", "Gastro-esophageal reflux disease without esophagitis"),
    ("M17.11", "Unilateral primary osteoarthritis, right knee"),
    ("F41.1", "Generalized anxiety disorder"),
]
OTHER_PROCEDURES = [
    ("430193006", "Medication reconciliation (procedure)"),
    ("710824005", "Assessment of health and social care needs (procedure)"),
    ("171207006", "Depression screening (procedure)"),
    ("428191000124101", "Documentation of current medications (procedure)"),
]


def day(days_ago: int, hour: int = 10) -> str:
    return f"{(TODAY - timedelta(days=days_ago)).isoformat()}T{hour:02d}:00:00-05:00"


def coding(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, resource['id'])}",
        "resource": resource,
        "search": {"mode": "match"},
    }


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [entry(r) for r in resources],
    }


def condition(
    rid: str, code: str, display: str, active: bool = True, onset: int = 400
) -> dict[str, Any]:
    status = "active" if active else "resolved"
    return {
        "resourceType": "Condition",
        "id": rid,
        "clinicalStatus": coding(
            "http://terminology.hl7.org/CodeSystem/condition-clinical", status, status
        ),
        "verificationStatus": coding(
            "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "confirmed"
        ),
        "category": [
            coding(
                "http://terminology.hl7.org/CodeSystem/condition-category",
                "problem-list-item",
                "Problem List Item",
            )
        ],
        "code": coding(ICD, code, display),
        "subject": {"reference": f"Patient/{PATIENT}"},
        "onsetDateTime": day(onset)[:10],
    }


def observation(
    rid: str, code: str, display: str, value: float, unit: str, days_ago: int
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "category": [
            coding(
                "http://terminology.hl7.org/CodeSystem/observation-category",
                "vital-signs",
                "Vital Signs",
            )
        ],
        "code": coding(LOINC, code, display),
        "subject": {"reference": f"Patient/{PATIENT}"},
        "effectiveDateTime": day(days_ago),
        "valueQuantity": {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
    }


def procedure(
    rid: str, system: str, code: str, display: str, days_ago: int, site: bool = False
) -> dict[str, Any]:
    resource = {
        "resourceType": "Procedure",
        "id": rid,
        "status": "completed",
        "code": coding(system, code, display),
        "subject": {"reference": f"Patient/{PATIENT}"},
        "performedDateTime": day(days_ago),
    }
    if site:
        resource["bodySite"] = [coding(SNOMED, "45048000", "Neck structure")]
    return resource


def record(size: str) -> dict[str, Any]:
    """The prefetch of a patient with neck myalgia, on apixaban, two TPIs that did not help."""
    rng = random.Random(20261123)
    heavy = size == "heavy"
    conditions = [
        condition("c-myalgia", "M79.12", "Myalgia of auxiliary muscles, head and neck", onset=200)
    ]
    for i in range(300 if heavy else 14):
        code, display = OTHER_CONDITIONS[i % len(OTHER_CONDITIONS)]
        conditions.append(condition(f"c-{i}", code, display, active=i % 3 == 0, onset=30 + i * 7))
    procedures = [
        procedure("tpi-1", CPT, "20552", "Trigger point injection, 1-2 muscles", 119, site=True),
        procedure("tpi-2", CPT, "20552", "Trigger point injection, 1-2 muscles", 70, site=True),
    ]
    for i in range(700 if heavy else 20):
        code, display = OTHER_PROCEDURES[i % len(OTHER_PROCEDURES)]
        procedures.append(procedure(f"p-{i}", SNOMED, code, display, 20 + i * 3))
    observations = [
        observation(
            "pain-1",
            "72514-3",
            "Pain severity - 0-10 verbal numeric rating [Score] - Reported",
            8,
            "{score}",
            120,
        ),
        observation(
            "pain-2",
            "72514-3",
            "Pain severity - 0-10 verbal numeric rating [Score] - Reported",
            7.5,
            "{score}",
            71,
        ),
        observation(
            "pain-3",
            "72514-3",
            "Pain severity - 0-10 verbal numeric rating [Score] - Reported",
            7,
            "{score}",
            20,
        ),
        observation(
            "pain-4",
            "72514-3",
            "Pain severity - 0-10 verbal numeric rating [Score] - Reported",
            7,
            "{score}",
            2,
        ),
        observation("a1c-1", "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", 6.4, "%", 60),
    ]
    for i in range(3700 if heavy else 230):
        code, display, unit, low, high = LABS[i % len(LABS)]
        observations.append(
            observation(f"o-{i}", code, display, round(rng.uniform(low, high), 1), unit, 1 + i // 4)
        )
    medications = [
        {
            "resourceType": "MedicationRequest",
            "id": "mr-apixaban",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": coding(RXNORM, "1364445", "apixaban 5 MG Oral Tablet"),
            "subject": {"reference": f"Patient/{PATIENT}"},
            "authoredOn": day(90)[:10],
        }
    ]
    for i in range(120 if heavy else 12):
        medications.append(
            {
                "resourceType": "MedicationRequest",
                "id": f"mr-{i}",
                "status": "active" if i % 4 == 0 else "stopped",
                "intent": "order",
                "medicationCodeableConcept": coding(RXNORM, "316049", "Hydrochlorothiazide 25 MG"),
                "subject": {"reference": f"Patient/{PATIENT}"},
                "authoredOn": day(100 + i)[:10],
            }
        )
    allergies = [
        {
            "resourceType": "AllergyIntolerance",
            "id": "al-1",
            "clinicalStatus": coding(
                "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                "active",
                "Active",
            ),
            "code": coding(RXNORM, "7980", "Penicillin G"),
            "patient": {"reference": f"Patient/{PATIENT}"},
        }
    ]
    service_requests = [
        {
            "resourceType": "ServiceRequest",
            "id": f"sr-{i}",
            "status": "completed",
            "intent": "order",
            "code": coding(LOINC, "57698-3", "Lipid panel with direct LDL"),
            "subject": {"reference": f"Patient/{PATIENT}"},
            "authoredOn": day(30 * i + 10)[:10],
        }
        for i in range(100 if heavy else 8)
    ]
    care_plans = [
        {
            "resourceType": "CarePlan",
            "id": "cp-1",
            "status": "active",
            "intent": "plan",
            "category": [coding(SNOMED, "698360004", "Diabetes self management plan")],
            "subject": {"reference": f"Patient/{PATIENT}"},
        }
    ]
    return {
        "patient": {
            "resourceType": "Patient",
            "id": PATIENT,
            "gender": "female",
            "birthDate": "1968-03-14",
            "name": [{"family": "Benchmark", "given": ["Typical"]}],
        },
        "conditions": searchset(conditions),
        "procedures": searchset(procedures),
        "observations": searchset(observations),
        "medications": searchset(medications),
        "allergies": searchset(allergies),
        "serviceRequests": searchset(service_requests),
        "carePlans": searchset(care_plans),
    }


def order(code_system: str, code: str, display: str) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": "order-1",
        "status": "draft",
        "intent": "order",
        "code": coding(code_system, code, display),
        "subject": {"reference": f"Patient/{PATIENT}"},
        "bodySite": [coding(SNOMED, "45048000", "Neck structure")],
    }


def order_select(draft: dict[str, Any], prefetch: dict[str, Any]) -> dict[str, Any]:
    return {
        "hook": "order-select",
        "hookInstance": "5b6f1f7e-2a43-4a3c-9d0e-0000b0000001",
        "context": {
            "userId": "Practitioner/bench-clinician",
            "patientId": PATIENT,
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": draft}],
            },
            "selections": [f"ServiceRequest/{draft['id']}"],
        },
        "prefetch": prefetch,
    }


def workloads() -> dict[str, tuple[str, dict[str, Any]]]:
    """Name → (service id, request body)."""
    typical, heavy = record("typical"), record("heavy")
    tpi = order(CPT, "20552", "Trigger point injection, 1-2 muscles")
    lipids = order(LOINC, "57698-3", "Lipid panel with direct LDL")
    view = {
        "hook": "patient-view",
        "hookInstance": "5b6f1f7e-2a43-4a3c-9d0e-0000b0000002",
        "context": {"userId": "Practitioner/bench-clinician", "patientId": PATIENT},
        "prefetch": typical,
    }
    return {
        "A": ("tpi-order-select", order_select(lipids, typical)),
        "B": ("tpi-order-select", order_select(tpi, typical)),
        "C": ("tpi-order-select", order_select(tpi, heavy)),
        "D": ("tpi-patient-view", view),
    }


def resource_count(body: dict[str, Any]) -> int:
    return sum(
        len(v.get("entry", [])) if v.get("resourceType") == "Bundle" else 1
        for v in body["prefetch"].values()
    )


EXPECTED_TOPICS = {
    "A": [],
    "B": ["tpi-safety", "tpi-eligibility", "pt-integration", "specialist-referral"],
    "C": ["tpi-safety", "tpi-eligibility", "pt-integration", "specialist-referral"],
    "D": ["pt-integration", "specialist-referral"],
}
