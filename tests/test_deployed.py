"""The service as deployed (gunicorn subprocesses): replay across replicas, clean logs."""

from __future__ import annotations

import copy
import json

import requests
from issuers import ISSUER, claims, ec_key, jwks, sign
from running import start_service

from cards import resources_in
from conftest import load_vignette
from fhir_servers import fault_server, fhir_server
from stores import store_url  # noqa: F401 - the fixture

__all__ = ["fault_server", "fhir_server"]

PUBLIC = "https://cds.hospital.example"
KEY = ec_key("ec-deployed")


def issuer_env(tmp_path, **issuer: object) -> dict[str, str]:
    key_file = tmp_path / "ehr-jwks.json"
    key_file.write_text(json.dumps(jwks(KEY)), encoding="utf-8")
    entry = {"iss": ISSUER, "jwks_file": str(key_file), **issuer}
    return {"TPI_CDS_AUTH_ISSUERS": json.dumps([entry]), "TPI_CDS_PUBLIC_BASE_URL": PUBLIC}


def test_a_token_replayed_against_a_second_replica_is_refused(store_url, tmp_path):  # noqa: F811
    """Two replicas share the store: a jti accepted by one is refused by the other."""
    env = {**issuer_env(tmp_path), "TPI_CDS_DATABASE_URL": store_url}
    first = start_service(tmp_path / "a", **env)
    second = start_service(tmp_path / "b", **env)
    try:
        token = sign(KEY, claims(f"{PUBLIC}/cds-services"))
        headers = {"Authorization": f"Bearer {token}"}
        assert (
            requests.get(f"{first.base_url}/cds-services", headers=headers, timeout=10).status_code
            == 200
        )
        replay = requests.get(f"{second.base_url}/cds-services", headers=headers, timeout=10)
        assert replay.status_code == 401
        assert replay.headers["WWW-Authenticate"] == "Bearer"
        again = requests.get(f"{first.base_url}/cds-services", headers=headers, timeout=10)
        assert again.status_code == 401
    finally:
        first.stop()
        second.stop()


def test_logs_of_a_full_call_hold_no_secret_and_no_patient_data(fhir_server, tmp_path):
    """A signed call that fetches from the FHIR server with an access token: the log lines
    name the service, counts and topics, and nothing of the token, the JWT or the patient."""
    story = load_vignette("referral-r1-two-failed-neck-tpis")
    patient_id = story["context"]["patientId"]
    entries = []
    for value in story["prefetch"].values():
        for resource in resources_in(value):
            resource = copy.deepcopy(resource)
            if resource["resourceType"] != "Patient":
                resource["id"] = f"{patient_id}.{resource['id']}"[:64]
            url = f"{resource['resourceType']}/{resource['id']}"
            entries.append({"resource": resource, "request": {"method": "PUT", "url": url}})
    fhir_server.load({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    env = {
        **issuer_env(tmp_path, fhir_servers=[fhir_server.base_url]),
        "TPI_CDS_FETCH_ALLOW_HTTP_LOOPBACK": "true",
    }
    service = start_service(tmp_path, **env)
    try:
        request = copy.deepcopy(story)
        del request["prefetch"]
        request["fhirServer"] = fhir_server.base_url
        request["fhirAuthorization"] = {
            "access_token": fhir_server.token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "tpi-cds",
            "patient": patient_id,
        }
        token = sign(KEY, claims(f"{PUBLIC}/cds-services/tpi-order-select"))
        response = requests.post(
            f"{service.base_url}/cds-services/tpi-order-select",
            json=request,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert len(response.json()["cards"]) == 3
        refused = requests.post(
            f"{service.base_url}/cds-services/tpi-order-select",
            json=request,
            headers={"Authorization": f"Bearer {token}"},  # a replay: refused and logged
            timeout=30,
        )
        assert refused.status_code == 401
    finally:
        service.stop()
    log = service.log()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    hook_lines = [line for line in lines if line.get("route") == "/cds-services/<service_id>"]
    assert hook_lines[0]["status"] == 200
    assert hook_lines[0]["service"] == "tpi-order-select"
    assert hook_lines[0]["hookInstance"] == story["hookInstance"]
    assert hook_lines[0]["topics"] == ["tpi-eligibility", "pt-integration", "specialist-referral"]
    assert hook_lines[0]["resourcesRead"] > 0
    assert "procedures" in hook_lines[0]["fetchedKeys"]
    assert hook_lines[1]["status"] == 401 and "jti" in hook_lines[1]["authRefused"]
    patient = story["prefetch"]["patient"]
    secrets = [
        token,
        token.split(".")[2],
        fhir_server.token,
        patient_id,
        patient["name"][0]["family"],
        *patient["name"][0]["given"],
    ]
    for resource in (r for v in story["prefetch"].values() for r in resources_in(v)):
        secrets.append(resource["id"])
        text = resource.get("code", {}).get("text")
        if text:
            secrets.append(text)
    for secret in secrets:
        assert secret not in log, f"{secret!r} appears in the service's log"


def test_redis_keeps_seen_token_ids_across_processes_when_configured():
    """With Redis configured, a jti is accepted once whichever process sees it."""
    import os
    import uuid

    import pytest
    import redis

    url = os.environ.get("TPI_CDS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip(f"no Redis reachable at {url} (CI provides one)")
    from cds_service.replay import RedisReplayGuard

    first, second = RedisReplayGuard(url, leeway=10), RedisReplayGuard(url, leeway=10)
    jti = str(uuid.uuid4())
    expires = __import__("time").time() + 60
    assert first.first_use(ISSUER, jti, expires) is True
    assert second.first_use(ISSUER, jti, expires) is False
    assert first.first_use(ISSUER, jti, expires) is False
    assert second.first_use("https://other-issuer.example", jti, expires) is True


def test_under_load_with_a_slow_fhir_server_every_call_is_answered(fault_server, tmp_path):
    """Full-prefetch calls, calls that must fetch from a FHIR server that hangs, and
    non-TPI orders, all at once: each gets its 200 or 412 within the deadline, no 5xx."""
    from concurrent.futures import ThreadPoolExecutor

    fault_server.slow(10.0)
    env = {
        **issuer_env(tmp_path, fhir_servers=[fault_server.base_url]),
        "TPI_CDS_FETCH_ALLOW_HTTP_LOOPBACK": "true",
        "TPI_CDS_FETCH_DEADLINE": "0.3",
    }
    service = start_service(tmp_path, workers=2, **env)
    full = load_vignette("referral-r1-two-failed-neck-tpis")
    needs_fetch = copy.deepcopy(full)
    del needs_fetch["prefetch"]["procedures"]
    needs_fetch["fhirServer"] = fault_server.base_url
    needs_fetch["fhirAuthorization"] = {
        "access_token": "t",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "tpi-cds",
    }
    other = load_vignette("never-lipid-panel-order")
    calls = [(full, 200), (needs_fetch, 412), (other, 200)] * 10

    def send(call: tuple[dict, int]) -> tuple[int, int]:
        body, expected = call
        token = sign(KEY, claims(f"{PUBLIC}/cds-services/tpi-order-select"))
        response = requests.post(
            f"{service.base_url}/cds-services/tpi-order-select",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        return response.status_code, expected

    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(send, calls))
    finally:
        service.stop()
    assert [got for got, _ in results] == [expected for _, expected in results]
