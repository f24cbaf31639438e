"""The benchmark measures real work: each workload, sent a few times through the app,
gets exactly the cards it should (and the ceiling app answers what a ceiling answers)."""

from __future__ import annotations

import orjson
import pytest

from bench.ceiling import create_ceiling_app
from bench.workloads import EXPECTED_TOPICS, resource_count, workloads
from bench.workloads import TODAY as BENCH_TODAY
from cds_service.auth import AuthSettings
from conftest import TODAY, assert_well_formed, service_client


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return service_client(tmp_path_factory.mktemp("bench"), auth=AuthSettings(enabled=False))


def test_the_workloads_are_the_sizes_the_benchmark_claims():
    loads = workloads()
    assert BENCH_TODAY == TODAY
    assert 250 <= resource_count(loads["A"][1]) <= 350
    assert 250 <= resource_count(loads["B"][1]) <= 350
    assert 4500 <= resource_count(loads["C"][1]) <= 5500
    assert 250 <= resource_count(loads["D"][1]) <= 350


@pytest.mark.parametrize("name", ["A", "B", "C", "D"])
def test_each_workload_gets_its_cards_every_time(client, name):
    service, body = workloads()[name]
    for attempt in range(3):
        # The benchmark sends a new TPI order each time (card memory would leave out cards
        # already shown for the same order): so does this test.
        if "draftOrders" in body["context"]:
            body["context"]["draftOrders"]["entry"][0]["resource"]["id"] = f"order-{name}-{attempt}"
            body["context"]["selections"] = [f"ServiceRequest/order-{name}-{attempt}"]
        data = orjson.dumps(body)
        response = client.post(
            f"/cds-services/{service}", data=data, content_type="application/json"
        )
        assert response.status_code == 200
        cards = response.get_json()["cards"]
        assert [card["source"]["topic"]["code"] for card in cards] == EXPECTED_TOPICS[name]
        for card in cards:
            assert_well_formed(card)
    if name in ("B", "C"):
        # Rules v2: apixaban alone is S3 at info; two sessions gave no clinically important
        # relief (R1, warning). Summary wording is free ("TPIs" or "injections"); the finding
        # and its numbers are not.
        safety, referral = cards[0], cards[-1]
        assert safety["extension"]["tpi-rules"] == ["S3"]
        assert safety["indicator"] == "info"
        assert "apixaban" in safety["detail"]
        assert referral["extension"]["tpi-rules"] == ["R1"]
        assert referral["indicator"] == "warning"
        assert "Both of the last 2" in referral["summary"]
        assert "30 %" in referral["summary"]


def test_the_ceiling_decodes_the_body_and_answers_no_cards():
    ceiling = create_ceiling_app().test_client()
    body = orjson.dumps(workloads()["B"][1])
    response = ceiling.post(
        "/cds-services/tpi-order-select", data=body, content_type="application/json"
    )
    assert response.get_data() == b'{"cards":[]}'
    broken = ceiling.post(
        "/cds-services/tpi-order-select", data=b"{not json", content_type="application/json"
    )
    assert broken.status_code == 500  # it really decodes: a bad body fails
