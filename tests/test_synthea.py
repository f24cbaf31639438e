"""Real-shaped data: every Synthea patient in ../shared/fixtures is read without error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cards import PatientRecord, resources_in
from cds_service.settings import load_terminology
from conftest import SHARED, assert_well_formed, evaluate, topics

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


# --------------------------------------------------------------------------- therapy in place
# Rules page v2, P1 "Active therapy in place": an active CarePlan counts when it is a
# rehabilitation plan (category or activity with role `therapy` in physical-therapy) or a
# musculoskeletal plan (category with role `msk-care-plan`, or it addresses a qualifying,
# regional pain, fibromyalgia or radiculopathy diagnosis) with an exercise activity (role
# `exercise`). An exercise activity in any other plan (diabetes, hyperlipidemia, heart
# failure, respiratory) is general fitness and does not count.
PAIN_VALUE_SETS = (
    "qualifying-diagnoses",
    "regional-pain-diagnoses",
    "fibromyalgia",
    "radiculopathy",
)


def codings_of(concepts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c.get("system"), c.get("code")) for cc in concepts for c in cc.get("coding", [])]


def plan_counts_as_therapy(plan: dict[str, Any], bundle: dict[str, Any]) -> bool:
    """Whether one CarePlan is therapy in place, read from the page and the value sets."""
    terminology = load_terminology(None)
    pt = terminology["physical-therapy"]

    def has(role: str, pairs: list[tuple[str, str]]) -> bool:
        return any(role in pt.roles_of(system, code) for system, code in pairs)

    if plan["status"] != "active":
        return False
    categories = codings_of(plan.get("category", []))
    activities = codings_of(
        [a["detail"]["code"] for a in plan.get("activity", []) if "code" in a.get("detail", {})]
    )
    if has("therapy", categories + activities):
        return True
    if not has("exercise", activities):
        return False
    if has("msk-care-plan", categories):
        return True
    addressed = {a["reference"] for a in plan.get("addresses", [])}
    for entry in bundle["entry"]:
        condition = entry["resource"]
        if condition["resourceType"] != "Condition":
            continue
        if (
            entry.get("fullUrl") not in addressed
            and f"Condition/{condition['id']}" not in addressed
        ):
            continue
        pairs = codings_of([condition["code"]])
        if any(terminology[v].contains(s, c) for v in PAIN_VALUE_SETS for s, c in pairs):
            return True
    return False


def care_plans(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in resources_in(bundle) if r["resourceType"] == "CarePlan"]


def therapy_plans(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in care_plans(bundle) if plan_counts_as_therapy(p, bundle)]


def exercise_only_in_other_plans(bundle: dict[str, Any]) -> bool:
    """An active plan with an exercise activity, none of which counts as therapy."""
    pt = load_terminology(None)["physical-therapy"]
    exercising = [
        p
        for p in care_plans(bundle)
        if p["status"] == "active"
        and any(
            "exercise" in pt.roles_of(s, c)
            for s, c in codings_of(
                [
                    a["detail"]["code"]
                    for a in p.get("activity", [])
                    if "code" in a.get("detail", {})
                ]
            )
        )
    ]
    return bool(exercising) and not therapy_plans(bundle)


def pt_card(bundle: dict[str, Any]) -> dict[str, Any] | None:
    found = [
        c
        for c in evaluate(order_select_for(bundle))["cards"]
        if c["source"]["topic"]["code"] == "pt-integration"
    ]
    return found[0] if found else None


def bundle_named(name: str) -> dict[str, Any]:
    (path,) = [p for p in synthea_files() if p.name.startswith(name)]
    return json.loads(path.read_text(encoding="utf-8"))


def test_synthea_records_no_other_therapy_in_place(shared_dir):
    """The Synthea fixtures end by 2021: no PT/OT Procedure in the 90 days before 2026-11-23
    and no PT ServiceRequest, so their care plans alone decide P1 in the tests below."""
    pt = load_terminology(None)["physical-therapy"]
    for path in synthea_files():
        for r in resources_in(json.loads(path.read_text(encoding="utf-8"))):
            if r["resourceType"] not in ("Procedure", "ServiceRequest"):
                continue
            if not any(pt.contains(s, c) for s, c in codings_of([r["code"]])):
                continue
            assert r["resourceType"] == "Procedure", path.name
            when = r.get("performedDateTime") or r["performedPeriod"]["start"]
            assert when < "2026-08-25", path.name  # 90 days before 2026-11-23


def test_synthea_care_plans_count_as_therapy_only_as_the_page_says(shared_dir):
    """For every patient (a first TPI being ordered): P1 at info exactly when no active plan
    is a rehabilitation plan or a musculoskeletal plan with an exercise activity."""
    in_place = without = 0
    for path in synthea_files():
        bundle = json.loads(path.read_text(encoding="utf-8"))
        card = pt_card(bundle)
        if therapy_plans(bundle):
            in_place += 1
            assert card is None, path.name
        else:
            without += 1
            assert card is not None, path.name
            assert_well_formed(card)
            assert card["indicator"] == "info", path.name  # no TPI history: a first TPI
            assert card["extension"]["tpi-rules"] == ["P1"]
    assert in_place >= 2 and without >= 10


def test_musculoskeletal_plans_with_exercise_are_therapy_in_place(shared_dir):
    """Derek Becker's active knee-osteoarthritis plan (category 872781000000100 Musculoskeletal
    care, activity Joint mobility exercises) and Reuben Lind's active gout plan (Musculoskeletal
    care, Physical exercises): therapy in place, no P1 (version 1 missed these)."""
    for name in ("Derek_Becker", "Reuben_Lind"):
        bundle = bundle_named(name)
        assert therapy_plans(bundle), name
        assert pt_card(bundle) is None, name


def test_exercise_in_a_diabetes_lipid_or_heart_failure_plan_is_not_therapy(shared_dir):
    """Casimira Nicolas (diabetes self-management plan with Exercise therapy 229065009) and
    Chadwick Von (hyperlipidemia and heart-failure plans with Physical exercises 183301007):
    general fitness, not therapy for the pain: P1 fires (version 1 counted these)."""
    for name in ("Casimira_Nicolas", "Chadwick_Von"):
        bundle = bundle_named(name)
        assert exercise_only_in_other_plans(bundle), name
        card = pt_card(bundle)
        assert card is not None, name
        assert card["extension"]["tpi-rules"] == ["P1"]
    others = [
        p.name
        for p in synthea_files()
        if exercise_only_in_other_plans(json.loads(p.read_text(encoding="utf-8")))
    ]
    assert len(others) >= 5


def test_a_musculoskeletal_plan_without_exercise_is_not_therapy(shared_dir):
    """Fabian Yundt's whiplash plan (Musculoskeletal care: heat therapy, rest), made active:
    a musculoskeletal plan with no exercise activity is not therapy in place: P1 still fires."""
    bundle = bundle_named("Fabian_Yundt")
    (plan,) = care_plans(bundle)
    plan["status"] = "active"
    assert not therapy_plans(bundle)
    card = pt_card(bundle)
    assert card is not None
    assert card["extension"]["tpi-rules"] == ["P1"]


def test_an_active_physical_therapy_plan_is_therapy_in_place(shared_dir):
    """Elvina Lemke's ACL-injury plan (category 91251008 Physical therapy procedure,
    stretching exercises) is completed: it does not count, P1 fires; made active, it is a
    rehabilitation plan: no P1."""
    bundle = bundle_named("Elvina_Lemke")
    assert pt_card(bundle) is not None
    (plan,) = [
        p
        for p in care_plans(bundle)
        if ("http://snomed.info/sct", "91251008") in codings_of(p.get("category", []))
    ]
    assert plan["status"] == "completed"
    plan["status"] = "active"
    assert therapy_plans(bundle) == [plan]
    assert pt_card(bundle) is None
