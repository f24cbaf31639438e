"""Prometheus metrics, read as Prometheus reads them: a running gunicorn with several
workers scraped over HTTP, the exposition parsed with prometheus_client's own parser."""

from __future__ import annotations

import copy
import uuid
from collections import defaultdict
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from running import start_service
from test_fetching import client_for, post, with_server
from test_memory import as_sign

from cds_service.settings import ServiceSettings, SettingsError
from conftest import load_vignette, service_client
from fhir_servers import fault_server

__all__ = ["fault_server"]  # a fixture, used by name

EVERYTHING = "never-everything-but-infection-or-allergy"


def samples(text: str) -> dict[str, dict[tuple, float]]:
    """Sample name → {sorted label items: value}: what a PromQL selector would see."""
    found: dict[str, dict[tuple, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    return sum(
        v
        for key, v in found.get(name, {}).items()
        if all(dict(key).get(k) == want for k, want in labels.items())
    )


def new_order(request: dict[str, Any]) -> dict[str, Any]:
    fresh = copy.deepcopy(request)
    draft_id = f"tpi-{uuid.uuid4().hex[:10]}"
    fresh["hookInstance"] = str(uuid.uuid4())
    fresh["context"]["draftOrders"]["entry"][0]["resource"]["id"] = draft_id
    fresh["context"]["selections"] = [f"ServiceRequest/{draft_id}"]
    return fresh


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Four workers; every call on a new connection so the calls spread over them."""
    folder = tmp_path_factory.mktemp("metrics")
    service = start_service(
        folder,
        workers=4,
        TPI_CDS_AUTH_DISABLED="true",
        TPI_CDS_METRICS_DIR=str(folder / "prometheus"),
    )
    yield service, folder / "prometheus"
    service.stop()


def test_counts_add_up_across_workers(served):
    service, prometheus_dir = served
    base = service.base_url
    before = samples(requests.get(f"{base}/metrics", timeout=10).text)
    sent: dict[tuple[str, str], int] = defaultdict(int)
    calls = 40
    request = load_vignette(EVERYTHING)
    for _ in range(calls):
        with requests.Session() as session:  # a new connection each time
            answer = session.post(
                f"{base}/cds-services/tpi-order-select", json=new_order(request), timeout=10
            )
        assert answer.status_code == 200
        for card in answer.json()["cards"]:
            sent[(card["source"]["topic"]["code"], card["indicator"])] += 1
    bad = requests.post(
        f"{base}/cds-services/tpi-order-select",
        data=b"{not json",
        timeout=10,
        headers={"Content-Type": "application/json"},
    )
    assert bad.status_code == 400
    after = samples(requests.get(f"{base}/metrics", timeout=10).text)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"endpoint": "hook", "service": "tpi-order-select", "status": "200"}
    assert grew("tpi_cds_http_requests_total", **ok) == calls
    assert grew("tpi_cds_http_request_duration_seconds_count", **ok) == calls
    assert grew("tpi_cds_http_request_duration_seconds_bucket", le="+Inf", **ok) == calls
    assert grew("tpi_cds_http_requests_total", endpoint="hook", status="400") == 1
    for (topic, indicator), count in sent.items():
        assert grew("tpi_cds_cards_sent_total", topic=topic, indicator=indicator) == count
    # More than one worker wrote figures, and the scrape added them up.
    assert len(list(prometheus_dir.glob("counter_*.db"))) > 1


def test_cards_left_out_by_memory_are_counted(served):
    service, _ = served
    base = service.base_url
    before = samples(requests.get(f"{base}/metrics", timeout=10).text)
    selected = new_order(load_vignette(EVERYTHING))
    shown = requests.post(f"{base}/cds-services/tpi-order-select", json=selected, timeout=10)
    signed = requests.post(
        f"{base}/cds-services/tpi-order-sign", json=as_sign(selected), timeout=10
    )
    left_out = len(shown.json()["cards"]) - len(signed.json()["cards"])
    assert left_out == 3
    after = samples(requests.get(f"{base}/metrics", timeout=10).text)
    grown = value(after, "tpi_cds_cards_withheld_total", reason="repeat") - value(
        before, "tpi_cds_cards_withheld_total", reason="repeat"
    )
    assert grown == left_out
    assert value(after, "tpi_cds_cards_withheld_total", topic="pt-integration", reason="repeat")


def test_feedback_is_counted_by_outcome_and_reason(served):
    service, _ = served
    base = service.base_url
    shown = requests.post(
        f"{base}/cds-services/tpi-order-select",
        json=new_order(load_vignette("referral-r1-two-failed-neck-tpis")),
        timeout=10,
    ).json()
    pt = next(c for c in shown["cards"] if c["source"]["topic"]["code"] == "pt-integration")
    before = samples(requests.get(f"{base}/metrics", timeout=10).text)
    feedback = {
        "feedback": [
            {
                "card": pt["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": {"code": "snooze-30"}},
                "outcomeTimestamp": "2026-11-23T10:00:00Z",
            }
        ]
    }
    stored = requests.post(
        f"{base}/cds-services/tpi-order-select/feedback", json=feedback, timeout=10
    )
    assert stored.status_code == 200
    after = samples(requests.get(f"{base}/metrics", timeout=10).text)
    labels = {"topic": "pt-integration", "outcome": "overridden", "reason": "snooze-30"}
    assert (
        value(after, "tpi_cds_feedback_entries_total", **labels)
        - value(before, "tpi_cds_feedback_entries_total", **labels)
        == 1
    )
    assert value(after, "tpi_cds_store_up", store="feedback") == 1


def test_no_patient_user_or_hook_instance_in_any_label(served):
    service, _ = served
    request = new_order(load_vignette(EVERYTHING))
    requests.post(f"{service.base_url}/cds-services/tpi-order-select", json=request, timeout=10)
    text = requests.get(f"{service.base_url}/metrics", timeout=10).text
    context = request["context"]
    for private in (context["patientId"], context["userId"], request["hookInstance"]):
        assert private not in text
    label_names = {
        name
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for name in sample.labels
    }
    assert label_names <= {
        "endpoint",
        "service",
        "status",
        "topic",
        "indicator",
        "reason",
        "key",
        "outcome",
        "store",
        "le",
        "pid",
    }


def test_metric_names_follow_prometheus_conventions(served):
    service, _ = served
    text = requests.get(f"{service.base_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("tpi_cds_")
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        if family.type == "histogram":
            assert family.name.endswith("_seconds")
    assert "# HELP tpi_cds_http_request_duration_seconds" in text


# -- in one process: fetching, stores, access ----------------------------------------------


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    return samples(response.get_data(as_text=True))


def test_fetches_failures_and_deadlines_are_counted_by_key(fault_server, tmp_path):
    client = client_for(tmp_path, read=5.0, deadline=0.5)
    request = with_server(load_vignette("pt-p1-first-tpi-no-therapy"), fault_server)
    del request["prefetch"]["conditions"]
    fault_server.slow(3.0)
    assert post(client, request).status_code == 412
    fault_server.clear()
    fault_server.server_error()
    assert post(client, new_order(request)).status_code == 412
    found = scrape(client)
    assert value(found, "tpi_cds_fetch_requests_total", key="conditions") == 2
    assert value(found, "tpi_cds_fetch_deadline_exceeded_total", key="conditions") == 1
    assert value(found, "tpi_cds_fetch_failures_total", key="conditions") == 1


def test_a_dead_store_shows_in_the_metrics(tmp_path):
    import socket

    from cds_service.auth import AuthSettings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = service_client(
        tmp_path,
        auth=AuthSettings(enabled=False),
        database_url=f"postgresql://tpi@127.0.0.1:{port}/tpi",
    )
    assert client.get("/readyz").status_code == 503
    client.post("/cds-services/tpi-order-select", json=load_vignette(EVERYTHING))
    feedback = {
        "feedback": [
            {
                "card": str(uuid.uuid4()),
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-23T10:00:00Z",
            }
        ]
    }
    assert client.post("/cds-services/tpi-order-select/feedback", json=feedback).status_code == 503
    found = scrape(client)
    assert value(found, "tpi_cds_store_up", store="feedback") == 0
    assert value(found, "tpi_cds_store_up", store="memory") == 0
    assert value(found, "tpi_cds_store_errors_total", store="feedback") >= 1
    assert value(found, "tpi_cds_store_errors_total", store="memory") >= 1


def test_metrics_are_only_for_allowed_addresses(tmp_path):
    from cds_service.auth import AuthSettings

    client = service_client(tmp_path, auth=AuthSettings(enabled=False))
    assert client.get("/metrics").status_code == 200  # the test client calls from loopback
    inside = client.get("/metrics", environ_base={"REMOTE_ADDR": "10.2.3.4"})
    assert inside.status_code == 200
    outside = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert outside.status_code == 403
    assert "TPI_CDS_METRICS_ALLOW" in outside.get_json()["issue"][0]["diagnostics"]
    restricted = service_client(
        tmp_path / "b", auth=AuthSettings(enabled=False), metrics_allow=("192.0.2.0/24",)
    )
    assert restricted.get("/metrics").status_code == 403
    assert restricted.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 200


def test_metrics_can_be_turned_off(tmp_path):
    from cds_service.auth import AuthSettings

    client = service_client(tmp_path, auth=AuthSettings(enabled=False), metrics_enabled=False)
    assert client.get("/metrics").status_code == 404
    assert (
        client.post("/cds-services/tpi-order-select", json=load_vignette(EVERYTHING)).status_code
        == 200
    )


def test_a_bad_scrape_allow_list_is_refused_at_start():
    with pytest.raises(SettingsError, match="METRICS_ALLOW"):
        ServiceSettings.from_env({"TPI_CDS_METRICS_ALLOW": "10.0.0.0/33"})


def test_metrics_need_no_token(tmp_path):
    from issuers import ISSUER, jwks, rsa_key

    from cds_service.auth import AuthSettings, IssuerConfig

    client = service_client(
        tmp_path,
        auth=AuthSettings(issuers=(IssuerConfig(iss=ISSUER, jwks=jwks(rsa_key("m"))),)),
    )
    assert client.get("/cds-services").status_code == 401
    assert client.get("/metrics").status_code == 200
