"""Real-shaped data: every Synthea patient in ../shared/fixtures is read without error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cards import PatientRecord, resources_in
from cds_service.settings import load_terminology
from conftest import SHARED, evaluate, topics

SYNTHEA = SHARED / "fixtures" / "synthea-r4"
KEYS = {
    "Condition": "conditions",
    "Procedure": "procedures",
    "Observation": "observations",
    "MedicationRequest": "medications",
    "AllergyIntolerance": "allergies",
    "ServiceRequest": "serviceRequests",
    "CarePlan": "carePlans",
}


def synthea_files() -> list[Path]:
    return sorted(SYNTHEA.glob("*.json")) if SYNTHEA.is_dir() else []


def synthea_params() -> list:
    if not synthea_files():
        reason = f"{SYNTHEA} is absent (a bare clone): no Synthea patients to read"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason))]
    return [pytest.param(p, id=p.stem.split("_")[0]) for p in synthea_files()]


def order_select_for(bundle: dict[str, Any]) -> dict[str, Any]:
    """The prefetch an EHR would send for this patient, with a TPI being ordered."""
    resources = list(resources_in(bundle))
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    prefetch: dict[str, Any] = {"patient": patient}
    for key in KEYS.values():
        prefetch[key] = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    for resource in resources:
        key = KEYS.get(resource["resourceType"])
        if key:
            prefetch[key]["entry"].append(
                {
                    "fullUrl": f"urn:uuid:{resource['id']}",
                    "resource": resource,
                    "search": {"mode": "match"},
                }
            )
    tpi = {
        "resourceType": "ServiceRequest",
        "id": "tpi-draft",
        "status": "draft",
        "intent": "order",
        "code": {
            "coding": [
                {
                    "system": "http://www.ama-assn.org/go/cpt",
                    "code": "20553",
                    "display": "Trigger point injection, 3 or more muscles",
                }
            ]
        },
        "subject": {"reference": f"Patient/{patient['id']}"},
    }
    return {
        "hook": "order-select",
        "hookInstance": "0f8a7c5e-8a53-4a44-9c58-1f8d2a4d9b10",
        "context": {
            "userId": "Practitioner/synthea-clinician",
            "patientId": patient["id"],
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": tpi}],
            },
            "selections": ["ServiceRequest/tpi-draft"],
        },
        "prefetch": prefetch,
    }


@pytest.mark.parametrize("path", synthea_params())
def test_each_synthea_patient_is_read_as_an_order_select_record(path):
    bundle = json.loads(path.read_text(encoding="utf-8"))
    request = order_select_for(bundle)
    record = PatientRecord.from_resources(
        request["context"]["patientId"],
        [r for v in request["prefetch"].values() for r in resources_in(v)],
        load_terminology(None),
    )
    assert record.skipped == {}, f"resources failed validation: {dict(record.skipped)}"
    assert record.read > 50
    response = evaluate(request)
    # No TPI history and no myofascial diagnosis in Synthea: eligibility and PT always speak.
    assert {"tpi-eligibility"} <= topics(response)
    assert all(len(card["summary"]) < 140 for card in response["cards"])


def test_synthea_folder_is_present(shared_dir):
    assert len(synthea_files()) >= 20, f"expected the Synthea patients in {SYNTHEA}"


def pt_care_plan_statuses(bundle: dict[str, Any]) -> set[str]:
    """Statuses of CarePlans whose category or activity is PT / exercise therapy."""
    pt_codes = {"91251008", "229065009"}
    statuses = set()
    for plan in resources_in(bundle):
        if plan["resourceType"] != "CarePlan":
            continue
        concepts = plan.get("category", []) + [
            a["detail"]["code"] for a in plan.get("activity", []) if "code" in a.get("detail", {})
        ]
        if any(c.get("code") in pt_codes for cc in concepts for c in cc.get("coding", [])):
            statuses.add(plan["status"])
    return statuses


def test_synthea_physical_therapy_care_plans_count_only_while_active(shared_dir):
    """Synthea records PT as CarePlans (SNOMED 91251008 / 229065009): active ones are PT in
    place (no P1 card); a completed PT plan alone is not."""
    active_seen = completed_only_seen = 0
    for path in synthea_files():
        bundle = json.loads(path.read_text(encoding="utf-8"))
        statuses = pt_care_plan_statuses(bundle)
        found = topics(evaluate(order_select_for(bundle)))
        if "active" in statuses:
            active_seen += 1
            assert "pt-integration" not in found, path.name
        else:
            completed_only_seen += "completed" in statuses
            assert "pt-integration" in found, path.name
    assert active_seen >= 5
