"""Where the EHR's access token may go: every URL the fetcher opens passes the allowlist.

Found by an outside tester: a `next` link switching to plain http, a `fhirServer` with
`..` segments and a `userId` with `../` sent the bearer token outside the allowlisted base;
a server dripping one byte at a time kept fetch slots busy for everyone. These tests use
real loopback HTTP servers that record every request they receive.
"""

from __future__ import annotations

import copy
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from test_fetching import client_for, post, with_server

from cds_service.auth import AuthSettings
from cds_service.outbound import is_allowed_server, is_loopback, locate, refusal
from conftest import load_vignette, service_client
from fhir_servers import FaultServer, fault_server, searchset

__all__ = ["fault_server"]

STORY = "safety-s3-apixaban"
EMPTY = {"resourceType": "Bundle", "type": "searchset", "entry": []}


def missing_conditions(server: Any) -> dict[str, Any]:
    request = with_server(load_vignette(STORY), server)
    del request["prefetch"]["conditions"]
    return request


@pytest.fixture
def other_server():
    server = FaultServer()
    yield server
    server.stop()


# --------------------------------------------------------------------------- the policy


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://ehr.example.org/fhir/Condition?patient=1", True),
        ("https://EHR.example.org:443/fhir", True),
        ("http://ehr.example.org/fhir/Condition", False),  # https only
        ("https://ehr.example.org:8443/fhir", False),  # another port
        ("https://ehr.example.org/fhirx", False),  # a prefix, not a segment
        ("https://ehr.example.org/fhir/../../escape", False),
        ("https://ehr.example.org/fhir/%2e%2e/admin", False),
        ("https://ehr.example.org/fhir/a%2Fb", False),
        ("https://user:pw@ehr.example.org/fhir", False),
        ("https://ehr.example.org.evil.test/fhir", False),
        ("ftp://ehr.example.org/fhir", False),
    ],
)
def test_a_url_is_allowed_only_within_a_configured_base(url, allowed):
    assert is_allowed_server(url, ("https://ehr.example.org/fhir",), allow_http_loopback=False) is (
        allowed
    )


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("localhost", True),
        ("127.0.0.1.evil.test", False),
        ("127.example.org", False),
        ("10.0.0.1", False),
    ],
)
def test_loopback_is_an_ip_address_not_a_host_name_prefix(host, loopback):
    assert is_loopback(host) is loopback


def test_the_refusal_says_why():
    """An operator reading the log learns the real reason (plain http vs not listed)."""
    allowed = ("https://ehr.example.org/fhir",)
    assert "http" in refusal("http://ehr.example.org/fhir", allowed, allow_http_loopback=False)
    assert "allowlist" in refusal("https://other.org/fhir", allowed, allow_http_loopback=False)
    assert locate("https://ehr.example.org/fhir/../x") is None


# --------------------------------------------------------------------------- real fetches


def test_a_next_link_to_another_port_is_never_followed(fault_server, other_server, tmp_path):
    """The second page would go to another server on the same host: never contacted."""
    other_server.respond_json(EMPTY)
    fault_server.respond_json(
        searchset([], next_url=f"{other_server.base_url}/Condition?page=2"), "Condition"
    )
    response = post(client_for(tmp_path), missing_conditions(fault_server))
    assert response.status_code == 412
    assert other_server.requests == []


def test_a_next_link_outside_the_base_path_is_never_followed(fault_server, tmp_path):
    fault_server.respond_json(
        searchset([], next_url=f"{fault_server.origin}/admin/secret?page=2"), "Condition"
    )
    fault_server.respond_json(EMPTY, "/admin/secret")
    response = post(client_for(tmp_path), missing_conditions(fault_server))
    assert response.status_code == 412
    assert [r for r in fault_server.requests if r.route.startswith("/admin")] == []


def test_a_next_link_with_dot_segments_is_never_followed(fault_server, tmp_path):
    fault_server.respond_json(
        searchset([], next_url=f"{fault_server.base_url}/%2e%2e/admin?page=2"), "Condition"
    )
    response = post(client_for(tmp_path), missing_conditions(fault_server))
    assert response.status_code == 412
    assert all("admin" not in r.path for r in fault_server.requests)


def test_a_fhir_server_with_dot_segments_is_refused(fault_server, tmp_path, caplog):
    request = missing_conditions(fault_server)
    request["fhirServer"] = f"{fault_server.base_url}/../../escape"
    fault_server.respond_json(EMPTY)
    with caplog.at_level(logging.WARNING):
        response = post(client_for(tmp_path), request)
    assert response.status_code == 412
    assert fault_server.requests == []
    assert "dot segment" in caplog.text


def test_plain_http_is_named_as_the_reason(fault_server, tmp_path, caplog):
    """Without the development setting, an http loopback server is refused for being http."""
    fault_server.respond_json(EMPTY)
    strict = service_client(
        tmp_path,
        auth=AuthSettings(enabled=False),
        fhir_server_allowlist=("loopback",),
        fetch_allow_http_loopback=False,
    )
    with caplog.at_level(logging.WARNING):
        response = post(strict, missing_conditions(fault_server))
    assert response.status_code == 412
    assert fault_server.requests == []
    assert "plain http is not allowed" in caplog.text
    assert "not on the allowlist" not in caplog.text


def test_a_user_id_with_dot_segments_never_becomes_a_path(fault_server, tmp_path):
    """`PractitionerRole/../../../admin/secret`: the role is not fetched at all."""
    request = missing_conditions(fault_server)
    request["context"]["userId"] = "PractitionerRole/../../../admin/secret"
    request["prefetch"].pop("practitionerRole", None)
    fault_server.respond_json(EMPTY)
    post(client_for(tmp_path), request)
    assert fault_server.requests, "the missing conditions are fetched"
    assert all(r.route.startswith("/fhir/") for r in fault_server.requests)
    assert all("admin" not in r.path and ".." not in r.path for r in fault_server.requests)


def test_a_patient_id_that_is_not_a_fhir_id_is_not_fetched(fault_server, tmp_path):
    request = missing_conditions(fault_server)
    request["context"]["patientId"] = "../Patient/other"
    fault_server.respond_json(EMPTY)
    response = post(client_for(tmp_path), request)
    assert response.status_code == 412
    assert fault_server.requests == []


# --------------------------------------------------------------------------- slow servers


def test_a_dripping_server_is_abandoned_at_the_deadline(fault_server, tmp_path):
    """One byte every 0.3 s keeps each read inside the read timeout; the deadline still
    ends the whole fetch."""
    fault_server.drip(0.3, "Condition", body=searchset([]))
    started = time.monotonic()
    response = post(client_for(tmp_path, read=1.0, deadline=0.6), missing_conditions(fault_server))
    assert response.status_code == 412
    assert time.monotonic() - started < 2.5


def test_a_dripping_server_leaves_fetching_to_others_working(fault_server, other_server, tmp_path):
    """Many calls pointed at a dripping server at once, and a call to a healthy server in
    the middle of them still gets its data (no 412)."""
    fault_server.drip(0.3, body=searchset([]))
    other_server.respond_json(EMPTY)
    client = client_for(tmp_path, read=1.0, deadline=1.0)
    slow = missing_conditions(fault_server)
    healthy = missing_conditions(other_server)
    with ThreadPoolExecutor(max_workers=40) as pool:
        flood = [pool.submit(post, client, copy.deepcopy(slow)) for _ in range(40)]
        time.sleep(0.2)
        answer = post(client, healthy)
        assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
        assert all(f.result().status_code == 412 for f in flood)
    assert other_server.requests
