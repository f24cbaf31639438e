"""The attack battery: every forged, stolen or stale token gets a bare 401."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from typing import Any

import pytest
from issuers import (
    BASE,
    ISSUER,
    claims,
    ec_key,
    hmac_with_public_key,
    jwks,
    jwks_server,
    rsa_key,
    sign,
    unsigned,
)
from jwt import PyJWKSet

from cds_service.auth import AuthSettings, IssuerConfig
from conftest import load_vignette, service_client

__all__ = ["jwks_server"]

DISCOVERY = "/cds-services"
ORDER_SELECT = "/cds-services/tpi-order-select"
RSA = rsa_key("rsa-1")
EC = ec_key("ec-1")
ATTACKER = rsa_key("rsa-1")  # same kid, different key


def make_client(tmp_path, *issuers: IssuerConfig, **auth: Any):
    issuers = issuers or (IssuerConfig(iss=ISSUER, jwks=jwks(RSA, EC)),)
    return service_client(tmp_path, auth=AuthSettings(issuers=tuple(issuers), **auth))


@pytest.fixture
def client(tmp_path):
    return make_client(tmp_path)


def call(client, token: str | None, path: str = DISCOVERY):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if path == DISCOVERY:
        return client.get(path, headers=headers)
    return client.post(path, json=new_order(), headers=headers)


def new_order() -> dict:
    """The vignette as a new TPI order each time: card memory leaves out cards already
    shown for the same order, and these tests are about who may call, not about repeats."""
    request = load_vignette("referral-r1-two-failed-neck-tpis")
    draft_id = f"tpi-{uuid.uuid4().hex[:12]}"
    request["context"]["draftOrders"]["entry"][0]["resource"]["id"] = draft_id
    request["context"]["selections"] = [f"ServiceRequest/{draft_id}"]
    return request


def assert_refused(response) -> None:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.get_data() == b"", "a refusal says nothing about why"


def test_valid_rs384_and_es384_tokens_are_accepted(client):
    for key in (RSA, EC):
        assert call(client, sign(key, claims(BASE + DISCOVERY))).status_code == 200
        response = call(client, sign(key, claims(BASE + ORDER_SELECT)), ORDER_SELECT)
        assert response.status_code == 200
        assert response.get_json()["cards"]


def test_no_token(client):
    assert_refused(call(client, None))
    assert_refused(client.get(DISCOVERY, headers={"Authorization": "Basic dXNlcjpwYXNz"}))


def test_malformed_token(client):
    assert_refused(call(client, "not.a.jwt"))
    assert_refused(call(client, "x" * 5000))


def test_alg_none(client):
    assert_refused(call(client, unsigned(claims(BASE + DISCOVERY), RSA.kid)))


def test_hs256_signed_with_the_public_key(client):
    assert_refused(call(client, hmac_with_public_key(RSA, claims(BASE + DISCOVERY))))


def test_a_valid_signature_from_an_unknown_issuer(client):
    token = sign(RSA, claims(BASE + DISCOVERY, iss="https://rogue.example.org"))
    assert_refused(call(client, token))


def test_a_jku_pointing_elsewhere_is_never_fetched(client, jwks_server):
    jwks_server.document = jwks(ATTACKER)
    token = sign(ATTACKER, claims(BASE + DISCOVERY), jku=jwks_server.url)
    assert_refused(call(client, token))
    assert jwks_server.fetches == []


def test_wrong_audience(client):
    assert_refused(call(client, sign(RSA, claims("https://other.example.org/cds-services"))))
    # The token for discovery does not open a hook.
    assert_refused(call(client, sign(RSA, claims(BASE + DISCOVERY)), ORDER_SELECT))


def test_expired(client):
    now = int(time.time())
    assert_refused(call(client, sign(RSA, claims(BASE + DISCOVERY, iat=now - 600, exp=now - 300))))


def test_issued_in_the_future(client):
    now = int(time.time())
    assert_refused(call(client, sign(RSA, claims(BASE + DISCOVERY, iat=now + 600, exp=now + 900))))


def test_a_lifetime_too_long(client):
    now = int(time.time())
    assert_refused(call(client, sign(RSA, claims(BASE + DISCOVERY, iat=now, exp=now + 86_400))))


def test_missing_jti(client):
    assert_refused(call(client, sign(RSA, claims(BASE + DISCOVERY, jti=None))))


def test_a_replayed_jti(client):
    token = sign(RSA, claims(BASE + DISCOVERY))
    assert call(client, token).status_code == 200
    assert_refused(call(client, token))
    # The same jti in a fresh token is still a replay.
    again = sign(
        RSA,
        claims(
            BASE + DISCOVERY,
            jti=__import__("jwt").decode(token, options={"verify_signature": False})["jti"],
        ),
    )
    assert_refused(call(client, again))


def test_a_kid_not_in_the_key_set(client):
    stranger = rsa_key("rsa-unknown")
    assert_refused(call(client, sign(stranger, claims(BASE + DISCOVERY))))


def test_a_known_kid_signed_by_another_key(client):
    assert_refused(call(client, sign(ATTACKER, claims(BASE + DISCOVERY))))


def test_tenant_allowlist(tmp_path):
    issuer = IssuerConfig(iss=ISSUER, jwks=jwks(RSA), tenants=("north-clinic",))
    client = make_client(tmp_path, issuer)
    assert (
        call(client, sign(RSA, claims(BASE + DISCOVERY, tenant="north-clinic"))).status_code == 200
    )
    assert_refused(call(client, sign(RSA, claims(BASE + DISCOVERY, tenant="south-clinic"))))
    assert_refused(call(client, sign(RSA, claims(BASE + DISCOVERY))))


def test_public_base_url_behind_a_proxy(tmp_path):
    client = make_client(tmp_path, public_base_url="https://cds.hospital.example/tpi")
    token = sign(RSA, claims("https://cds.hospital.example/tpi/cds-services"))
    assert call(client, token).status_code == 200
    assert_refused(call(client, sign(RSA, claims(BASE + DISCOVERY))))


def test_jwks_url_keys_are_cached_and_refreshed_on_an_unknown_kid(tmp_path, jwks_server):
    jwks_server.document = jwks(RSA)
    client = make_client(
        tmp_path,
        IssuerConfig(iss=ISSUER, jwks_urls=(jwks_server.url,)),
        jwks_refresh_cooldown_seconds=0.0,
    )
    for _ in range(3):
        assert call(client, sign(RSA, claims(BASE + DISCOVERY))).status_code == 200
    assert len(jwks_server.fetches) == 1, "the key set is cached"
    rotated = ec_key("ec-rotated")
    jwks_server.document = jwks(RSA, rotated)
    assert call(client, sign(rotated, claims(BASE + DISCOVERY))).status_code == 200
    assert len(jwks_server.fetches) == 2, "an unknown kid refreshes the key set once"


def test_a_jku_on_the_issuers_list_is_honoured(tmp_path, jwks_server):
    jwks_server.document = jwks(EC)
    client = make_client(tmp_path, IssuerConfig(iss=ISSUER, jwks_urls=(jwks_server.url,)))
    assert call(client, sign(EC, claims(BASE + DISCOVERY), jku=jwks_server.url)).status_code == 200


def test_feedback_needs_a_token_too(client):
    assert_refused(client.post(f"{ORDER_SELECT}/feedback", json={"feedback": []}))


def test_health_needs_no_token(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_cors_preflight_needs_no_token(client):
    response = client.options(
        ORDER_SELECT,
        headers={
            "Origin": "https://sandbox.cds-hooks.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert response.status_code == 200


class ConnectionRecorder:
    """A listening socket on loopback that only counts who connects."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.connections = 0
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.sock.getsockname()[1]}/fhir"

    def _accept(self) -> None:
        while self.running:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self.running = False
        self.thread.join(timeout=2)
        self.sock.close()


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_fhir_server_not_configured_for_the_issuer_is_never_contacted(tmp_path, scheme):
    recorder = ConnectionRecorder()
    try:
        issuer = IssuerConfig(
            iss=ISSUER, jwks=jwks(RSA), fhir_servers=("https://ehr.example.org/fhir",)
        )
        client = make_client(tmp_path, issuer)
        request = load_vignette("referral-r1-two-failed-neck-tpis")
        del request["prefetch"]["procedures"]
        request["fhirServer"] = recorder.url.replace("https", scheme)
        request["fhirAuthorization"] = {
            "access_token": "secret-token",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "x",
        }
        token = sign(RSA, claims(BASE + ORDER_SELECT))
        response = client.post(
            ORDER_SELECT, json=request, headers={"Authorization": f"Bearer {token}"}
        )
        time.sleep(0.3)
        assert response.status_code == 412
        assert recorder.connections == 0
    finally:
        recorder.close()


def test_a_jku_off_the_list_is_no_reason_to_refuse_a_pinned_key(client, jwks_server):
    """The sandbox always sends its jku: an issuer configured with an inline JWKS still
    accepts its tokens, checked by kid, and the jku is never contacted."""
    token = sign(RSA, claims(BASE + DISCOVERY), jku=jwks_server.url)
    assert call(client, token).status_code == 200
    assert jwks_server.fetches == []


def test_a_listed_url_is_not_fetched_when_the_key_is_pinned(tmp_path, jwks_server):
    jwks_server.document = jwks(EC)
    issuer = IssuerConfig(iss=ISSUER, jwks=jwks(EC), jwks_urls=(jwks_server.url,))
    client = make_client(tmp_path, issuer)
    assert call(client, sign(EC, claims(BASE + DISCOVERY), jku=jwks_server.url)).status_code == 200
    assert jwks_server.fetches == []


def test_the_sandbox_preset_verifies_its_tokens_offline():
    """The pinned sandbox key is a usable ES384 public key with the sandbox's kid."""
    from cds_service.auth import SANDBOX

    (key,) = PyJWKSet.from_dict(SANDBOX.jwks).keys
    assert key.key_id == "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
    assert key.algorithm_name == "ES384"
    assert SANDBOX.jwks_urls == ("https://sandbox.cds-hooks.org/.well-known/jwks.json",)
