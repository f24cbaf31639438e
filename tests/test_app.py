"""The web service through Flask's test client: every endpoint and every error."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cds_service.app import create_app
from cds_service.auth import AuthSettings
from cds_service.settings import ServiceSettings
from conftest import FixedToday, evaluate, load_vignette, without_uuids

NO_AUTH = AuthSettings(enabled=False)  # authentication has its own tests (test_auth.py)
ORDER_SELECT = "/cds-services/tpi-order-select"
VIGNETTE = "referral-r1-two-failed-neck-tpis"


@pytest.fixture
def settings(tmp_path) -> ServiceSettings:
    return ServiceSettings(
        engine=FixedToday(),
        data_dir=str(tmp_path),
        max_body_bytes=2 * 1024 * 1024,
        fetch_deadline=0.3,
        auth=NO_AUTH,
    )


@pytest.fixture
def client(settings):
    return create_app(settings).test_client()


def assert_outcome(response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome"
    diagnostics = body["issue"][0]["diagnostics"]
    for word in words:
        assert word in diagnostics
    assert "Traceback" not in response.get_data(as_text=True)
    return body


def test_discovery_lists_the_three_services(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    assert [s["id"] for s in response.get_json()["services"]] == [
        "tpi-order-select",
        "tpi-order-sign",
        "tpi-patient-view",
    ]


def test_a_hook_call_answers_what_the_command_prints(client):
    request = load_vignette(VIGNETTE)
    response = client.post(ORDER_SELECT, json=request)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert without_uuids(response.get_json()) == without_uuids(evaluate(request))
    assert len(response.get_json()["cards"]) == 3


def test_a_non_tpi_order_is_answered_with_no_cards(client):
    request = load_vignette("never-lipid-panel-order")
    response = client.post(ORDER_SELECT, json=request)
    assert response.status_code == 200
    assert response.get_data(as_text=True) == '{"cards":[]}'


def test_unknown_extra_fields_are_ignored(client):
    request = load_vignette(VIGNETTE)
    request["extension"] = {"com.vendor.flag": True}
    request["context"]["vendorContext"] = [1, 2, 3]
    assert client.post(ORDER_SELECT, json=request).status_code == 200


def test_patient_view_and_order_sign_services_answer(client):
    view = client.post(
        "/cds-services/tpi-patient-view", json=load_vignette("referral-pv-two-failed-tpis")
    )
    assert view.status_code == 200 and view.get_json()["cards"]
    sign = client.post(
        "/cds-services/tpi-order-sign", json=load_vignette("pt-order-sign-tpi-among-orders")
    )
    assert sign.status_code == 200 and sign.get_json()["cards"]


def test_malformed_json_is_a_400(client):
    response = client.post(ORDER_SELECT, data="{not json", content_type="application/json")
    assert_outcome(response, 400, "not valid JSON")


def test_a_body_that_is_not_a_cds_hooks_request_is_a_400(client):
    assert_outcome(client.post(ORDER_SELECT, json={"hello": "world"}), 400, "hook")
    assert_outcome(client.post(ORDER_SELECT, json=[1, 2]), 400, "JSON object")
    request = load_vignette(VIGNETTE)
    request["context"] = {}
    assert_outcome(client.post(ORDER_SELECT, json=request), 400, "context.patientId")


def test_a_hook_that_does_not_match_the_service_is_a_400(client):
    request = load_vignette(VIGNETTE)
    response = client.post("/cds-services/tpi-patient-view", json=request)
    assert_outcome(response, 400, "does not match")


def test_a_wrong_content_type_is_a_400(client):
    body = json.dumps(load_vignette(VIGNETTE))
    assert_outcome(
        client.post(ORDER_SELECT, data=body, content_type="text/plain"), 400, "Content-Type"
    )
    assert_outcome(client.post(ORDER_SELECT, data=body), 400, "Content-Type")


def test_fhir_json_content_type_is_accepted(client):
    body = json.dumps(load_vignette(VIGNETTE))
    response = client.post(
        ORDER_SELECT, data=body, content_type="application/fhir+json; charset=utf-8"
    )
    assert response.status_code == 200


def test_an_unknown_service_is_a_404(client):
    assert_outcome(client.post("/cds-services/nope", json=load_vignette(VIGNETTE)), 404, "nope")
    assert_outcome(client.post("/cds-services/nope/feedback", json={"feedback": []}), 404)
    assert_outcome(client.get("/no/such/path"), 404)


def test_a_wrong_method_is_a_405(client):
    response = client.get(ORDER_SELECT)
    assert_outcome(response, 405)
    assert "POST" in response.headers["Allow"]
    assert_outcome(client.delete("/cds-services"), 405)


def test_a_body_over_the_limit_is_a_413(client):
    request = load_vignette(VIGNETTE)
    request["padding"] = "x" * (3 * 1024 * 1024)
    assert_outcome(client.post(ORDER_SELECT, json=request), 413, "larger than")


def test_missing_prefetch_without_a_fhir_server_is_a_412_naming_the_keys(client):
    request = load_vignette(VIGNETTE)
    request.pop("fhirServer", None)
    request.pop("fhirAuthorization", None)
    del request["prefetch"]["procedures"]
    request["prefetch"]["observations"] = {"resourceType": "OperationOutcome", "issue": []}
    body = assert_outcome(
        client.post(ORDER_SELECT, json=request), 412, "procedures", "observations"
    )
    assert set(body["issue"][0]["expression"]) == {"procedures", "observations"}


def test_a_non_tpi_order_needs_no_prefetch_at_all(client):
    request = load_vignette("never-lipid-panel-order")
    del request["prefetch"]
    assert client.post(ORDER_SELECT, json=request).get_json() == {"cards": []}


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["store"] is True


def test_readiness_fails_when_the_store_is_unreachable(tmp_path):
    settings = ServiceSettings(
        engine=FixedToday(),
        database_url="postgresql://nobody@127.0.0.1:1/none?connect_timeout=1",
        auth=NO_AUTH,
    )
    client = create_app(settings).test_client()
    assert_outcome(client.get("/readyz"), 503, "store")
    # Hook calls do not need the store.
    assert client.post(ORDER_SELECT, json=load_vignette(VIGNETTE)).status_code == 200


def test_cors_preflight_allows_the_configured_origin_only(client):
    headers = {
        "Origin": "https://sandbox.cds-hooks.org",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type",
    }
    response = client.options(ORDER_SELECT, headers=headers)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://sandbox.cds-hooks.org"
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    private = client.options(
        ORDER_SELECT, headers={**headers, "Access-Control-Request-Private-Network": "true"}
    )
    assert private.headers["Access-Control-Allow-Private-Network"] == "true"
    other = client.options(ORDER_SELECT, headers={**headers, "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def feedback_entry(card_uuid: str, **fields: Any) -> dict:
    entry = {"card": card_uuid, "outcomeTimestamp": "2026-11-23T10:15:00Z", **fields}
    return entry


def test_feedback_is_stored_and_counted_per_topic(client, settings):
    cards = client.post(ORDER_SELECT, json=load_vignette(VIGNETTE)).get_json()["cards"]
    pt = next(c for c in cards if c["source"]["topic"]["code"] == "pt-integration")
    referral = next(c for c in cards if c["source"]["topic"]["code"] == "specialist-referral")
    body = {
        "feedback": [
            feedback_entry(
                pt["uuid"],
                outcome="accepted",
                acceptedSuggestions=[{"id": pt["suggestions"][0]["uuid"]}],
            ),
            feedback_entry(
                referral["uuid"],
                outcome="overridden",
                overrideReason={
                    "reason": {
                        "system": "urn:tpi-cds:override",
                        "code": "patient-declined",
                        "display": "Patient declined",
                    },
                    "userComment": "will think about it",
                },
            ),
        ]
    }
    response = client.post(f"{ORDER_SELECT}/feedback", json=body)
    assert response.status_code == 200
    from cds_service.store import FeedbackStore

    store = FeedbackStore(settings.store_url)
    stored = list(store.export())
    assert [(e["card_uuid"], e["card_topic"], e["outcome"]) for e in stored] == [
        (pt["uuid"], "pt-integration", "accepted"),
        (referral["uuid"], "specialist-referral", "overridden"),
    ]
    groups = {(g["service"], g["topic"]): g for g in store.stats()["groups"]}
    referral_stats = groups[("tpi-order-select", "specialist-referral")]
    assert referral_stats["overridden"] == 1
    assert referral_stats["topOverrideReasons"] == [{"reason": "Patient declined", "count": 1}]


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"outcome": "accepted", "acceptedSuggestions": [{"id": "s"}]}, "card"),
        ({"card": "c", "outcome": "maybe"}, "outcome"),
        ({"card": "c", "outcome": "accepted"}, "acceptedSuggestions"),
        (
            {"card": "c", "outcome": "accepted", "acceptedSuggestions": [{}]},
            "acceptedSuggestions[0]",
        ),
        ({"card": "c", "outcome": "overridden", "overrideReason": {"reason": "no"}}, "Coding"),
        (
            {"card": "c", "outcome": "overridden", "outcomeTimestamp": "yesterday"},
            "outcomeTimestamp",
        ),
    ],
)
def test_invalid_feedback_is_a_400_and_stores_nothing(client, settings, entry, reason):
    good = feedback_entry("good-card", outcome="overridden")
    bad = {"outcomeTimestamp": "2026-11-23T10:15:00Z", **entry}
    response = client.post(f"{ORDER_SELECT}/feedback", json={"feedback": [good, bad]})
    assert_outcome(response, 400, reason)
    from cds_service.store import FeedbackStore

    assert list(FeedbackStore(settings.store_url).export()) == []


def test_feedback_with_the_store_down_is_a_503_and_claims_nothing(tmp_path):
    settings = ServiceSettings(
        engine=FixedToday(),
        database_url="postgresql://nobody@127.0.0.1:1/none?connect_timeout=1",
        auth=NO_AUTH,
    )
    client = create_app(settings).test_client()
    response = client.post(
        f"{ORDER_SELECT}/feedback",
        json={"feedback": [feedback_entry("c", outcome="overridden")]},
    )
    assert_outcome(response, 503, "nothing was kept")
    assert response.headers["Retry-After"]


def test_deeply_nested_json_is_a_400_not_a_500(client):
    body = "[" * 100_000 + "]" * 100_000
    assert_outcome(
        client.post(ORDER_SELECT, data=body, content_type="application/json"), 400, "JSON"
    )


@pytest.mark.parametrize(
    "mangle",
    [
        lambda r: r["prefetch"].update(conditions="not a bundle"),
        lambda r: r["prefetch"].update(procedures={"resourceType": "Bundle", "entry": "oops"}),
        lambda r: r["prefetch"]["observations"]["entry"].append(
            {"resource": {"resourceType": "Observation", "status": ["final"], "code": 7}}
        ),
        lambda r: r["context"]["draftOrders"]["entry"].append(
            {"resource": {"resourceType": "MedicationRequest", "status": {"x": 1}}}
        ),
        lambda r: r["context"]["draftOrders"]["entry"][0]["resource"].update(
            bodySite=[{"coding": "x"}, 3]
        ),
        lambda r: r["context"].update(selections=[]),
        lambda r: r.update(prefetch=None),
        lambda r: r.update(fhirServer="not a url", fhirAuthorization={"access_token": "t"}),
    ],
)
def test_odd_but_parseable_requests_never_give_a_500(client, mangle):
    request = load_vignette(VIGNETTE)
    mangle(request)
    response = client.post(ORDER_SELECT, json=request)
    assert response.status_code in (200, 400, 412), response.get_data(as_text=True)


def test_a_store_that_was_down_at_start_is_used_once_it_is_back(tmp_path):
    database = tmp_path / "feedback.sqlite3"
    database.mkdir()  # a folder where the database file belongs: SQLite cannot open it
    settings = ServiceSettings(
        engine=FixedToday(), database_url=f"sqlite:///{database}", auth=NO_AUTH
    )
    client = create_app(settings).test_client()
    body = {"feedback": [feedback_entry("c-1", outcome="overridden")]}
    assert_outcome(client.post(f"{ORDER_SELECT}/feedback", json=body), 503, "nothing was kept")
    database.rmdir()
    assert client.post(f"{ORDER_SELECT}/feedback", json=body).status_code == 200
    from cds_service.store import FeedbackStore

    assert [e["card_uuid"] for e in FeedbackStore(settings.store_url).export()] == ["c-1"]
