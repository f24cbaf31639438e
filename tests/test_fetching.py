"""Completing missing prefetch from a real FHIR server on loopback (sekmet-fhir).

The cards from a call with no or partial prefetch must equal those of the full-prefetch
call for the same patient. Failures a real server will not show on demand (500, slow,
HTML, a truncated body, a next-link loop) come from a small real HTTP server on loopback.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from cards import resources_in
from cds_service.auth import AuthSettings
from conftest import assert_well_formed, evaluate, load_vignette, service_client, without_uuids
from fhir_servers import fault_server, fhir_server

__all__ = ["fault_server", "fhir_server"]

STORIES = [
    "referral-r1-two-failed-neck-tpis",  # order-select: four topics, referral suggestions
    "referral-suppress-pain-physician-orders",  # reads the user's PractitionerRole
    "referral-pv-two-failed-tpis",  # patient-view
    "safety-s3-apixaban",  # an active medication
]
# One story is given a commercial Coverage (Source of Payment Typology 5, private health
# insurance), so that the payer profile (rules page section 2b) must come through the fetch.
COVERED = "referral-r1-two-failed-neck-tpis"
SOPT = "https://nahdo.org/sopt"


def commercial_coverage(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Coverage",
        "id": "coverage-1",
        "status": "active",
        "type": {
            "coding": [{"system": SOPT, "code": "5", "display": "PRIVATE HEALTH INSURANCE"}],
            "text": "Private health insurance",
        },
        "beneficiary": {"reference": f"Patient/{patient}"},
        "payor": [{"display": "Example Health Plan"}],
        "period": {"start": "2026-01-01"},
    }


def coverage_bundle(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 1,
        "entry": [{"resource": commercial_coverage(patient), "search": {"mode": "match"}}],
    }


SERVICE_FOR_HOOK = {
    "order-select": "tpi-order-select",
    "order-sign": "tpi-order-sign",
    "patient-view": "tpi-patient-view",
}


def client_for(tmp_path, **fetch: Any):
    fetch.setdefault("fhir_server_allowlist", ("loopback",))
    return service_client(
        tmp_path,
        auth=AuthSettings(enabled=False),
        fetch_allow_http_loopback=True,
        fetch_connect_timeout=fetch.pop("connect", 2.0),
        fetch_read_timeout=fetch.pop("read", 5.0),
        fetch_deadline=fetch.pop("deadline", 10.0),
        **fetch,
    )


def post(client, request: dict[str, Any]):
    return client.post(f"/cds-services/{SERVICE_FOR_HOOK[request['hook']]}", json=request)


@pytest.fixture(scope="module")
def loaded(fhir_server) -> dict[str, dict[str, Any]]:
    """The stories' records stored on the FHIR server, keeping their ids."""
    stories = {}
    for name in STORIES:
        request = load_vignette(name)
        patient = request["context"]["patientId"]
        if name == COVERED:
            request["prefetch"]["coverage"] = coverage_bundle(patient)
        entries = []
        for value in request["prefetch"].values():
            for resource in resources_in(value):
                resource = copy.deepcopy(resource)
                if resource["resourceType"] not in ("Patient", "PractitionerRole"):
                    # Vignettes reuse ids like "tpi-2026-08-17": keep each patient's apart.
                    resource["id"] = f"{patient}.{resource['id']}"[:64]
                url = f"{resource['resourceType']}/{resource['id']}"
                entries.append({"resource": resource, "request": {"method": "PUT", "url": url}})
        fhir_server.load({"resourceType": "Bundle", "type": "transaction", "entry": entries})
        stories[name] = request
    return stories


def as_the_ehr_sends_it(response: dict[str, Any], patient: str) -> dict[str, Any]:
    """A response from fetched data, with the record's references as the EHR sends them.

    The loader above stores each resource under "<patient>.<id>" (vignettes share ids), so a
    suggestion that points at a record resource — version 2's PT and specialist referrals
    carry `reasonReference` to the patient's Condition — names the server's id. Only that
    prefix, on references, is taken off; everything else is compared as it is.
    """
    prefix = f"{patient}."

    def strip(value: Any, key: str | None = None) -> Any:
        if isinstance(value, dict):
            return {k: strip(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        if key == "reference" and isinstance(value, str):
            kind, _, rid = value.partition("/")
            if rid.startswith(prefix):
                return f"{kind}/{rid[len(prefix) :]}"
        return value

    return strip(response)


def fetched(response: Any, request: dict[str, Any]) -> dict[str, Any]:
    """The fetched response without uuids, its references as the EHR sends them."""
    return as_the_ehr_sends_it(without_uuids(response.get_json()), request["context"]["patientId"])


def with_server(request: dict[str, Any], server, token: str | None = None) -> dict[str, Any]:
    request = copy.deepcopy(request)
    request["fhirServer"] = server.base_url
    request["fhirAuthorization"] = {
        "access_token": token or getattr(server, "token", "fault-server-token"),
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "tpi-cds",
    }
    return request


@pytest.mark.parametrize("name", STORIES)
def test_no_prefetch_gives_the_cards_of_full_prefetch(name, loaded, fhir_server, tmp_path):
    full = loaded[name]
    expected = without_uuids(evaluate(full))
    assert expected["cards"], "the story must produce cards"
    bare = with_server(full, fhir_server)
    del bare["prefetch"]
    response = post(client_for(tmp_path), bare)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert fetched(response, full) == expected


@pytest.mark.parametrize("name", STORIES)
def test_partial_prefetch_gives_the_cards_of_full_prefetch(name, loaded, fhir_server, tmp_path):
    full = loaded[name]
    partial = with_server(full, fhir_server)
    for key in ("procedures", "observations", "carePlans", "practitionerRole"):
        partial["prefetch"].pop(key, None)
    partial["prefetch"]["serviceRequests"] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout", "diagnostics": "EHR gave up"}],
    }
    response = post(client_for(tmp_path), partial)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert fetched(response, full) == without_uuids(evaluate(full))


def test_the_payer_profile_comes_through_the_fetch(loaded, fhir_server, tmp_path):
    """The covered story's commercial Coverage is on the server only: the eligibility card
    of the fetched answer applies the commercial profile, from the patient's coverage."""
    full = loaded[COVERED]
    bare = with_server(full, fhir_server)
    del bare["prefetch"]
    response = post(client_for(tmp_path), bare)
    assert response.status_code == 200, response.get_data(as_text=True)
    (eligibility,) = [
        c for c in response.get_json()["cards"] if c["source"]["topic"]["code"] == "tpi-eligibility"
    ]
    assert_well_formed(eligibility)
    assert "Commercial (from the patient's coverage)" in eligibility["detail"]
    assert "Medicare" not in eligibility["detail"]


def test_small_pages_are_all_followed(loaded, fhir_server, tmp_path):
    """With two resources a page, the observations come in several pages: all are read."""
    name = "referral-r1-two-failed-neck-tpis"
    assert len(list(resources_in(loaded[name]["prefetch"]["observations"]))) > 4
    bare = with_server(loaded[name], fhir_server)
    del bare["prefetch"]
    response = post(client_for(tmp_path, fetch_page_size=2), bare)
    assert response.status_code == 200
    assert fetched(response, loaded[name]) == without_uuids(evaluate(loaded[name]))


def test_a_refused_token_is_a_412(loaded, fhir_server, tmp_path):
    bare = with_server(loaded[STORIES[0]], fhir_server, token="not-the-token")
    del bare["prefetch"]
    response = post(client_for(tmp_path), bare)
    assert response.status_code == 412
    assert "procedures" in response.get_json()["issue"][0]["expression"]


def test_only_missing_keys_are_fetched_with_the_bearer_token(fault_server, tmp_path):
    request = load_vignette(STORIES[0])
    procedures = request["prefetch"].pop("procedures")
    request["prefetch"]["allergies"] = None  # "nothing there": never refetched
    # The EHR prefetched the (version 2) coverage key too, and found no active Coverage.
    request["prefetch"]["coverage"] = {"resourceType": "Bundle", "type": "searchset", "total": 0}
    request = with_server(request, fault_server, token="hook-token-123")
    fault_server.respond_json(procedures)
    response = post(client_for(tmp_path), request)
    assert response.status_code == 200
    routes = sorted(r.route for r in fault_server.requests)
    assert routes == ["/fhir/Procedure"]
    sent = fault_server.requests[0]
    assert sent.header("Authorization") == "Bearer hook-token-123"
    assert ("patient", request["context"]["patientId"]) in sent.params


def test_a_missing_coverage_key_is_fetched_and_read(fault_server, tmp_path):
    """A request from an EHR that does not prefetch `coverage` (section 2b): the service
    searches the patient's active Coverage and applies the profile it names."""
    request = load_vignette(STORIES[0])
    request["prefetch"].pop("coverage", None)
    patient = request["context"]["patientId"]
    request = with_server(request, fault_server)
    fault_server.respond_json(coverage_bundle(patient), path="Coverage")
    response = post(client_for(tmp_path), request)
    assert response.status_code == 200, response.get_data(as_text=True)
    (sent,) = fault_server.requests
    assert sent.route == "/fhir/Coverage"
    assert ("patient", patient) in sent.params
    assert ("status", "active") in sent.params
    (eligibility,) = [
        c for c in response.get_json()["cards"] if c["source"]["topic"]["code"] == "tpi-eligibility"
    ]
    assert_well_formed(eligibility)
    assert "Commercial (from the patient's coverage)" in eligibility["detail"]


@pytest.mark.parametrize(
    "fault",
    ["unauthorized", "server_error", "html", "truncated", "truncated_short_read", "looping_bundle"],
)
def test_a_failing_fhir_server_gives_a_412_not_a_500(fault, fault_server, tmp_path):
    request = with_server(load_vignette(STORIES[0]), fault_server)
    del request["prefetch"]["conditions"]
    if fault == "truncated_short_read":
        fault_server.truncated(short_read=True)
    else:
        getattr(fault_server, fault)()
    response = post(client_for(tmp_path, deadline=3.0), request)
    assert response.status_code == 412, response.get_data(as_text=True)
    assert response.get_json()["issue"][0]["expression"] == ["conditions"]
    assert fault_server.requests, "the server was asked"


def test_a_50_mb_bundle_is_refused_without_reading_it_all(fault_server, tmp_path):
    request = with_server(load_vignette(STORIES[0]), fault_server)
    del request["prefetch"]["observations"]
    fault_server.large_bundle(entries=160_000)  # about 50 MB in one page
    response = post(client_for(tmp_path, deadline=5.0), request)
    assert response.status_code == 412
    assert response.get_json()["issue"][0]["expression"] == ["observations"]


def test_too_many_resources_across_pages_are_refused(fault_server, tmp_path):
    request = with_server(load_vignette(STORIES[0]), fault_server)
    del request["prefetch"]["observations"]
    fault_server.large_bundle(entries=300)
    response = post(client_for(tmp_path, fetch_max_resources=200), request)
    assert response.status_code == 412


def test_a_slow_fhir_server_is_abandoned_at_the_deadline(fault_server, tmp_path):
    request = with_server(load_vignette(STORIES[0]), fault_server)
    del request["prefetch"]["conditions"]
    fault_server.slow(5.0)
    started = time.monotonic()
    response = post(client_for(tmp_path, read=5.0, deadline=0.5), request)
    elapsed = time.monotonic() - started
    assert response.status_code == 412
    assert elapsed < 4.0, "the answer must not wait for the slow server"


def test_a_fhir_server_not_on_the_allowlist_is_never_contacted(fault_server, tmp_path):
    request = with_server(load_vignette(STORIES[0]), fault_server)
    del request["prefetch"]["conditions"]
    fault_server.respond_json({"resourceType": "Bundle", "type": "searchset", "entry": []})
    client = client_for(tmp_path, fhir_server_allowlist=("https://ehr.example.org/fhir",))
    response = post(client, request)
    assert response.status_code == 412
    assert fault_server.requests == []


def test_a_non_tpi_order_fetches_nothing(fault_server, tmp_path):
    request = with_server(load_vignette("never-lipid-panel-order"), fault_server)
    del request["prefetch"]
    fault_server.respond_json({"resourceType": "Bundle", "type": "searchset", "entry": []})
    response = post(client_for(tmp_path), request)
    assert response.get_json() == {"cards": []}
    assert fault_server.requests == []
