"""The test servers themselves: what sekmet-fhir does with our data, and the fault server.

These tests talk HTTP with `requests` only, so they say what any FHIR client of the
service will meet: which searches the real server answers, how it wants `patient=`,
what a Synthea transaction does to ids and references.
"""

from __future__ import annotations

import copy
import json
import math
import time
import uuid
from typing import Any

import pytest
import requests

from conftest import SHARED
from fhir_servers import (
    STUB_TAG,
    FaultServer,
    FhirLoadError,
    FhirServer,
    LoadedBundle,
    fault_server,
    fhir_server,
)

__all__ = ["fault_server", "fhir_server"]  # fixtures, used by name

SYNTHEA = SHARED / "fixtures" / "synthea-r4"
# 6 Conditions, 8 pain scores (72514-3) and 8 HbA1c (4548-4), MedicationRequests active
# and stopped, CarePlans active and completed: every search below has something to find.
PATIENT_FILE = "Derek_Becker_3c7d3369-55b5-420b-83d3-c5dda319b9c9.json"
OTHER_FILE = "Casimira_Nicolas_4dd15313-3a62-4661-89fa-79382929a2e8.json"
RAW_FILE = "Jacob_Larson_0b324782-31d1-4659-89ab-58e075d6e61f.json"
PAIN, HBA1C = "72514-3", "4548-4"
TIMEOUT = 10


def synthea(name: str) -> dict[str, Any]:
    path = SYNTHEA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (a bare clone): no Synthea patient to load")
    return json.loads(path.read_text("utf-8"))


def get(server: FhirServer, path: str, **params: Any) -> requests.Response:
    return requests.get(server.url(path), params=params, headers=server.auth, timeout=TIMEOUT)


def search_all(server: FhirServer, path: str, max_pages: int = 50, **params: Any) -> list[dict]:
    """Every page of a search, following `next`; (page bundles), bounded."""
    pages, url, query = [], server.url(path), params
    while url:
        assert len(pages) < max_pages, f"more than {max_pages} pages: a loop?"
        r = requests.get(url, params=query, headers=server.auth, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        pages.append(r.json())
        url = next(
            (lk["url"] for lk in pages[-1].get("link", []) if lk["relation"] == "next"), None
        )
        query = None  # the next link carries the whole query
    return pages


def matches(pages: list[dict], resource_type: str) -> set[str]:
    return {
        e["resource"]["id"]
        for p in pages
        for e in p.get("entry", [])
        if e["search"]["mode"] == "match" and e["resource"]["resourceType"] == resource_type
    }


def expected(loaded: LoadedBundle, bundle: dict, resource_type: str, keep: Any = None) -> set[str]:
    """Server ids of the bundle's resources of one type that `keep` accepts."""
    return {
        loaded.ref(e["fullUrl"]).split("/")[1]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == resource_type and (keep is None or keep(e["resource"]))
    }


def has_code(resource: dict, *codes: str) -> bool:
    return any(
        c.get("system") == "http://loinc.org" and c.get("code") in codes
        for c in resource.get("code", {}).get("coding", [])
    )


# --------------------------------------------------------------------------- sekmet


@pytest.fixture(scope="module")
def derek(fhir_server: FhirServer) -> tuple[LoadedBundle, dict]:
    """Derek Becker loaded by POST (new ids), plus one on-hold MedicationRequest of ours.

    Synthea writes no on-hold medications; the copy lets `status=active,on-hold` show OR.
    """
    bundle = synthea(PATIENT_FILE)
    active = next(
        e
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "MedicationRequest"
        and e["resource"]["status"] == "active"
    )
    on_hold = copy.deepcopy(active)
    on_hold["fullUrl"] = f"urn:uuid:{uuid.uuid4()}"
    on_hold["resource"]["id"] = on_hold["fullUrl"].removeprefix("urn:uuid:")
    on_hold["resource"]["status"] = "on-hold"
    bundle["entry"].append(on_hold)
    return fhir_server.load_synthea(bundle), bundle


def test_server_answers_on_loopback_with_an_r4_capability_statement(fhir_server):
    assert fhir_server.base_url.startswith("http://127.0.0.1:")
    assert fhir_server.base_url.endswith("/fhir")
    r = requests.get(fhir_server.url("metadata"), timeout=TIMEOUT)  # open, as FHIR expects
    assert r.status_code == 200
    assert r.json()["fhirVersion"] == "4.0.1"
    assert fhir_server.started_in < 30


def test_a_request_without_the_token_is_refused(fhir_server, derek):
    loaded, _ = derek
    url = fhir_server.url(f"Condition?patient={loaded.patient_id}")
    missing = requests.get(url, timeout=TIMEOUT)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert missing.json()["resourceType"] == "OperationOutcome"
    wrong = requests.get(url, headers={"Authorization": "Bearer not-it"}, timeout=TIMEOUT)
    assert wrong.status_code == 401
    assert requests.get(url, headers=fhir_server.auth, timeout=TIMEOUT).status_code == 200


def test_a_raw_synthea_file_is_refused_because_it_points_at_trimmed_entries(fhir_server):
    bundle = synthea(RAW_FILE)
    with pytest.raises(FhirLoadError) as refused:
        fhir_server.load(bundle)
    assert refused.value.status == 400
    assert "unresolved reference 'urn:uuid:" in str(refused.value)
    family = bundle["entry"][0]["resource"]["name"][0]["family"]
    after = get(fhir_server, "Patient", family=family).json()
    assert after["total"] == 0, "the transaction was rolled back whole"


def test_the_transaction_gives_new_ids_and_rewrites_urn_uuid_references(fhir_server, derek):
    loaded, bundle = derek
    statuses = {e["response"]["status"] for e in loaded.response["entry"]}
    assert statuses == {"201 Created"}
    assert loaded.response["type"] == "transaction-response"
    original = bundle["entry"][0]["resource"]["id"]
    assert loaded.patient_id != original, "POST: the server chose the id"
    assert get(fhir_server, f"Patient/{original}").status_code == 404
    # every urn:uuid reference now reads Type/id (relative) and resolves on the server
    condition = get(fhir_server, "Condition", patient=loaded.patient_id).json()["entry"][0]
    assert condition["fullUrl"].startswith(f"{fhir_server.base_url}/Condition/")
    resource = condition["resource"]
    assert resource["subject"] == {"reference": f"Patient/{loaded.patient_id}"}
    assert resource["encounter"]["reference"] in set(loaded.ids.values())
    encounter = get(fhir_server, resource["encounter"]["reference"]).json()
    practitioner = encounter["participant"][0]["individual"]["reference"]
    assert practitioner.startswith("Practitioner/")
    stub = get(fhir_server, practitioner).json()
    assert STUB_TAG in stub["meta"]["tag"]


def test_patient_read(fhir_server, derek):
    loaded, bundle = derek
    r = get(fhir_server, f"Patient/{loaded.patient_id}")
    assert r.status_code == 200
    patient = r.json()
    assert patient["id"] == loaded.patient_id
    assert patient["name"] == bundle["entry"][0]["resource"]["name"]
    assert patient["meta"]["versionId"] == "1"


@pytest.mark.parametrize("form", ["{id}", "Patient/{id}"])
def test_conditions_are_found_by_patient_either_way(fhir_server, derek, form):
    loaded, bundle = derek
    pages = search_all(fhir_server, "Condition", patient=form.format(id=loaded.patient_id))
    assert matches(pages, "Condition") == expected(loaded, bundle, "Condition")
    assert len(expected(loaded, bundle, "Condition")) == 6


def test_count_2_gives_pages_linked_by_next_that_add_up_to_everything(fhir_server, derek):
    loaded, bundle = derek
    want = expected(loaded, bundle, "Condition")
    pages = search_all(fhir_server, "Condition", patient=loaded.patient_id, _count=2)
    assert len(pages) == math.ceil(len(want) / 2) == 3
    assert all(len(p["entry"]) <= 2 for p in pages)
    assert all(p["total"] == len(want) for p in pages)
    assert matches(pages, "Condition") == want
    nexts = [lk["url"] for p in pages[:-1] for lk in p["link"] if lk["relation"] == "next"]
    assert all(u.startswith(f"{fhir_server.base_url}/Condition?") for u in nexts)
    assert "_offset=2" in nexts[0]


def test_observation_code_or_with_system_and_code(fhir_server, derek):
    loaded, bundle = derek
    codes = f"http://loinc.org|{PAIN},http://loinc.org|{HBA1C}"
    pages = search_all(fhir_server, "Observation", patient=loaded.patient_id, code=codes)
    want = expected(loaded, bundle, "Observation", lambda r: has_code(r, PAIN, HBA1C))
    assert len(want) == 16
    assert matches(pages, "Observation") == want
    just_pain = search_all(fhir_server, "Observation", patient=loaded.patient_id, code=PAIN)
    assert len(matches(just_pain, "Observation")) == 8
    other_system = search_all(
        fhir_server, "Observation", patient=loaded.patient_id, code=f"http://snomed.info/sct|{PAIN}"
    )
    assert matches(other_system, "Observation") == set(), "the system is checked too"


def test_medication_request_status_or(fhir_server, derek):
    loaded, bundle = derek
    pages = search_all(
        fhir_server, "MedicationRequest", patient=loaded.patient_id, status="active,on-hold"
    )
    want = expected(
        loaded, bundle, "MedicationRequest", lambda r: r["status"] in ("active", "on-hold")
    )
    assert len(want) == 5  # 4 active from Synthea, our on-hold copy
    assert matches(pages, "MedicationRequest") == want
    statuses = {e["resource"]["status"] for p in pages for e in p["entry"]}
    assert statuses == {"active", "on-hold"}


def test_care_plan_status_active(fhir_server, derek):
    loaded, bundle = derek
    pages = search_all(fhir_server, "CarePlan", patient=loaded.patient_id, status="active")
    want = expected(loaded, bundle, "CarePlan", lambda r: r["status"] == "active")
    assert len(want) == 2
    assert matches(pages, "CarePlan") == want


def test_practitioner_role_read(fhir_server, derek):
    loaded, _ = derek
    practitioner = next(iter(loaded.server_ids("Practitioner")))
    role = {
        "resourceType": "PractitionerRole",
        "id": "tpi-test-role",
        "active": True,
        "practitioner": {"reference": f"Practitioner/{practitioner}"},
        "code": [{"coding": [{"system": "http://snomed.info/sct", "code": "309343006"}]}],
    }
    headers = {**fhir_server.auth, "Content-Type": "application/fhir+json"}
    put = requests.put(
        fhir_server.url("PractitionerRole/tpi-test-role"),
        data=json.dumps(role),
        headers=headers,
        timeout=TIMEOUT,
    )
    assert put.status_code in (200, 201), put.text  # update as create: our id is kept
    r = get(fhir_server, "PractitionerRole/tpi-test-role")
    assert r.status_code == 200
    assert r.json()["practitioner"] == role["practitioner"]
    missing = get(fhir_server, "PractitionerRole/no-such-role")
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"


def test_an_unknown_search_parameter_is_ignored_with_a_warning_unless_strict(fhir_server, derek):
    loaded, _ = derek
    lenient = get(fhir_server, "Condition", patient=loaded.patient_id, bogus="x").json()
    assert lenient["total"] == 6, "the parameter was dropped, not applied"
    outcome = [e for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome and outcome[0]["resource"]["issue"][0]["severity"] == "warning"
    strict = requests.get(
        fhir_server.url("Condition"),
        params={"patient": loaded.patient_id, "bogus": "x"},
        headers={**fhir_server.auth, "Prefer": "handling=strict"},
        timeout=TIMEOUT,
    )
    assert strict.status_code == 400


def test_stable_ids_keep_the_files_ids_and_reloading_updates(fhir_server):
    bundle = synthea(OTHER_FILE)
    original = bundle["entry"][0]["resource"]["id"]
    first = fhir_server.load_synthea(bundle, stable_ids=True)
    assert first.patient_id == original
    conditions = get(fhir_server, "Condition", patient=original).json()
    assert conditions["total"] == 11
    assert conditions["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{original}"
    again = fhir_server.load_synthea(bundle, stable_ids=True)
    assert {e["response"]["status"] for e in again.response["entry"]} == {"200 OK"}
    assert get(fhir_server, "Condition", patient=original).json()["total"] == 11
    assert get(fhir_server, f"Patient/{original}").json()["meta"]["versionId"] == "2"


def test_reset_empties_the_server(fhir_server):
    """Last in this module: reset clears the whole session's server."""
    bundle = synthea(RAW_FILE)
    loaded = fhir_server.load_synthea(bundle)
    assert get(fhir_server, f"Patient/{loaded.patient_id}").status_code == 200
    fhir_server.reset()
    assert get(fhir_server, f"Patient/{loaded.patient_id}").status_code == 404
    assert get(fhir_server, "Condition", _count=0).json()["total"] == 0
    again = fhir_server.load_synthea(bundle)  # and it goes on working
    assert get(fhir_server, f"Patient/{again.patient_id}").status_code == 200


# --------------------------------------------------------------------------- fault server


def test_fault_server_records_requests_and_headers(fault_server):
    fault_server.respond_json({"resourceType": "Patient", "id": "p1"}, path="Patient/p1")
    r = requests.get(
        f"{fault_server.base_url}/Patient/p1?_summary=true",
        headers={"Authorization": "Bearer abc"},
        timeout=TIMEOUT,
    )
    assert r.json()["id"] == "p1"
    [seen] = fault_server.requests
    assert seen.method == "GET"
    assert seen.path == "/fhir/Patient/p1?_summary=true"
    assert seen.route == "/fhir/Patient/p1"
    assert seen.params == [("_summary", "true")]
    assert seen.header("authorization") == "Bearer abc"
    unset = requests.get(f"{fault_server.base_url}/Condition", timeout=TIMEOUT)
    assert unset.status_code == 404


def test_fault_server_401_and_500_per_path_and_globally(fault_server):
    fault_server.server_error()
    fault_server.unauthorized(path="Patient/p1")
    r401 = requests.get(f"{fault_server.base_url}/Patient/p1", timeout=TIMEOUT)
    assert r401.status_code == 401
    assert r401.headers["WWW-Authenticate"].startswith("Bearer")
    r500 = requests.get(f"{fault_server.base_url}/Condition?patient=p1", timeout=TIMEOUT)
    assert r500.status_code == 500
    assert r500.json()["resourceType"] == "OperationOutcome"


def test_fault_server_slow_answer_times_the_client_out(fault_server):
    fault_server.slow(5, path="Condition")
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        requests.get(f"{fault_server.base_url}/Condition", timeout=0.3)
    assert time.monotonic() - started < 2
    fault_server.slow(0.2, path="Observation")
    assert requests.get(f"{fault_server.base_url}/Observation", timeout=5).json()["total"] == 0


def test_fault_server_stops_promptly_while_a_handler_sleeps():
    server = FaultServer()
    server.slow(30)
    with pytest.raises(requests.Timeout):
        requests.get(f"{server.base_url}/Condition", timeout=0.2)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 3
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.base_url}/Condition", timeout=1)


def test_fault_server_html_instead_of_json(fault_server):
    fault_server.html()
    r = requests.get(f"{fault_server.base_url}/Condition", timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/html"
    with pytest.raises(ValueError):
        r.json()


def test_fault_server_truncated_json(fault_server):
    fault_server.truncated(path="Condition")
    r = requests.get(f"{fault_server.base_url}/Condition", timeout=TIMEOUT)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    fault_server.truncated(path="Observation", short_read=True)
    with pytest.raises(requests.RequestException):
        requests.get(f"{fault_server.base_url}/Observation", timeout=TIMEOUT)


def test_fault_server_bundle_whose_next_link_loops(fault_server):
    fault_server.looping_bundle(path="Observation")
    url = f"{fault_server.base_url}/Observation?patient=p1&_count=1"
    for _ in range(3):
        page = requests.get(url, timeout=TIMEOUT).json()
        following = next(lk["url"] for lk in page["link"] if lk["relation"] == "next")
        assert following == url
        url = following
    assert len(fault_server.requests) == 3


def test_fault_server_large_bundle(fault_server):
    fault_server.large_bundle(path="Observation", entries=5000)
    r = requests.get(f"{fault_server.base_url}/Observation", timeout=TIMEOUT)
    assert len(r.content) > 1_000_000
    assert len(r.json()["entry"]) == 5000
