"""Card memory (rules section 3.5): the same card not twice in an ordering session, and
snoozes that clinicians set through feedback. Through the web service, with its real
stores: SQLite here; PostgreSQL and Redis in test_memory_stores.py.

Memory's clock is set to the vignettes' day (2026-11-23, 23:00 UTC) so snoozes and their
expiry read the same whatever the calendar says when the tests run.
"""

from __future__ import annotations

import copy
import logging
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cards.card import OVERRIDE_SYSTEM
from conftest import TODAY, add_resource, card, load_vignette, rules, service_client

SELECT = "/cds-services/tpi-order-select"
SIGN = "/cds-services/tpi-order-sign"
VIEW = "/cds-services/tpi-patient-view"
# Late on the vignettes' day: after every score and session they record that day.
EVENING = datetime(TODAY.year, TODAY.month, TODAY.day, 23, tzinfo=UTC)


class Clock:
    """Memory's time, starting late on the vignettes' day; tests move it on."""

    def __init__(self) -> None:
        self.now = EVENING

    def __call__(self) -> float:
        return self.now.timestamp()

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def memory_client(tmp_path, clock: Clock | None = None, **settings: Any):
    from cds_service.settings import AuthSettings

    settings.setdefault("auth", AuthSettings(enabled=False))
    client = service_client(tmp_path, **settings)
    state = client.application.extensions["tpi_cds"]
    state.memory.clock = state.ledger.clock = clock or Clock()
    return client


def as_sign(request: dict[str, Any]) -> dict[str, Any]:
    """The same draft orders, now signed: what an EHR sends after order-select."""
    signed = copy.deepcopy(request)
    signed["hook"] = "order-sign"
    signed["hookInstance"] = str(uuid.uuid4())
    signed["context"].pop("selections", None)
    return signed


def again(request: dict[str, Any], draft_id: str | None = None) -> dict[str, Any]:
    """A new call of the same hook; with ``draft_id``, a new TPI order (a new ordering session)."""
    repeated = copy.deepcopy(request)
    repeated["hookInstance"] = str(uuid.uuid4())
    if draft_id is not None:
        old = repeated["context"]["draftOrders"]["entry"][0]["resource"]["id"]
        repeated["context"]["draftOrders"]["entry"][0]["resource"]["id"] = draft_id
        repeated["context"]["selections"] = [
            s.replace(old, draft_id) for s in repeated["context"].get("selections", [])
        ]
    return repeated


def topics(response) -> list[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return [c["source"]["topic"]["code"] for c in response.get_json()["cards"]]


def snooze(client, service: str, card_uuid: str, code: str = "snooze-30", when=EVENING) -> Any:
    body = {
        "feedback": [
            {
                "card": card_uuid,
                "outcome": "overridden",
                "overrideReason": {
                    "reason": {"system": OVERRIDE_SYSTEM, "code": code, "display": code}
                },
                "outcomeTimestamp": when.isoformat().replace("+00:00", "Z"),
            }
        ]
    }
    response = client.post(f"{service}/feedback", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


EVERYTHING = "never-everything-but-infection-or-allergy"
ALL_TOPICS = ["tpi-safety", "tpi-eligibility", "pt-integration", "specialist-referral"]


def test_order_sign_after_order_select_repeats_only_the_safety_card(tmp_path):
    client = memory_client(tmp_path)
    selected = load_vignette(EVERYTHING)
    assert topics(client.post(SELECT, json=selected)) == ALL_TOPICS
    assert topics(client.post(SIGN, json=as_sign(selected))) == ["tpi-safety"]
    # ... and a second order-sign of the same order (a re-sign) likewise.
    assert topics(client.post(SIGN, json=as_sign(selected))) == ["tpi-safety"]


def test_a_new_tpi_order_is_a_new_ordering_session(tmp_path):
    client = memory_client(tmp_path)
    selected = load_vignette(EVERYTHING)
    client.post(SELECT, json=selected)
    assert topics(client.post(SELECT, json=again(selected, draft_id="tpi-second"))) == ALL_TOPICS


def test_the_same_card_returns_after_the_repeat_window(tmp_path):
    clock = Clock()
    client = memory_client(tmp_path, clock)
    selected = load_vignette(EVERYTHING)
    client.post(SELECT, json=selected)
    clock.advance(hours=23)
    assert topics(client.post(SIGN, json=as_sign(selected))) == ["tpi-safety"]
    clock.advance(hours=2)
    assert topics(client.post(SIGN, json=as_sign(selected))) == ALL_TOPICS


def test_new_evidence_on_the_card_is_a_new_card(tmp_path):
    """Same order, same topic, but the card now shows more: it is sent again."""
    client = memory_client(tmp_path)
    selected = load_vignette("referral-r1-two-failed-neck-tpis")
    client.post(SELECT, json=selected)
    changed = again(selected)
    add_resource(changed, "conditions", fibromyalgia())
    response = client.post(SIGN, json=as_sign(changed))
    referral = card(response.get_json(), "specialist-referral")
    assert referral is not None and rules(referral) == ["R1", "R3"]


def test_another_patient_is_not_held_back_by_this_one(tmp_path):
    client = memory_client(tmp_path)
    selected = load_vignette(EVERYTHING)
    client.post(SELECT, json=selected)
    other = as_sign(selected)
    other["context"]["patientId"] = "another-patient"
    assert topics(client.post(SIGN, json=other)) == ALL_TOPICS


def test_patient_view_cards_are_sent_every_time(tmp_path):
    client = memory_client(tmp_path)
    viewed = load_vignette("referral-pv-fibromyalgia-recent-tpi")
    first = topics(client.post(VIEW, json=viewed))
    assert first == ["pt-integration", "specialist-referral"]
    assert topics(client.post(VIEW, json=again(viewed))) == first


def test_memory_off_sends_every_card(tmp_path):
    from cds_service.settings import MemorySettings

    client = memory_client(tmp_path, memory=MemorySettings(enabled=False))
    selected = load_vignette(EVERYTHING)
    client.post(SELECT, json=selected)
    assert topics(client.post(SIGN, json=as_sign(selected))) == ALL_TOPICS


# -- snoozes ----------------------------------------------------------------------------


def first_card(client, path: str, request: dict[str, Any], topic: str) -> dict[str, Any]:
    response = client.post(path, json=request)
    found = card(response.get_json(), topic)
    assert found is not None, topics(response)
    return found


def test_a_snoozed_pt_card_stays_away_for_every_later_order(tmp_path):
    client = memory_client(tmp_path)
    selected = load_vignette("referral-r1-two-failed-neck-tpis")
    pt = first_card(client, SELECT, selected, "pt-integration")
    assert {r["code"] for r in pt["overrideReasons"]} >= {"snooze-30", "snooze-90"}
    snooze(client, SELECT, pt["uuid"])
    later = again(selected, draft_id="tpi-next-week")
    # The referral finding is not snoozed: its card still shows; the PT card does not.
    assert topics(client.post(SELECT, json=later)) == ["tpi-eligibility", "specialist-referral"]
    # P1 and P2 are one finding: the chart opening does not bring it back either.
    view = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"patientId": selected["context"]["patientId"], "userId": "Practitioner/1"},
        "prefetch": selected["prefetch"],
    }
    assert "pt-integration" not in topics(client.post(VIEW, json=view))


def test_a_snooze_ends_after_its_days(tmp_path):
    clock = Clock()
    client = memory_client(tmp_path, clock)
    selected = load_vignette("pt-p1-first-tpi-no-therapy")
    pt = first_card(client, SELECT, selected, "pt-integration")
    snooze(client, SELECT, pt["uuid"], "snooze-30")
    clock.advance(days=29)
    assert topics(client.post(SELECT, json=again(selected, "tpi-b"))) == []
    clock.advance(days=2)
    assert topics(client.post(SELECT, json=again(selected, "tpi-c"))) == ["pt-integration"]


def test_snooze_90_holds_past_30_days(tmp_path):
    clock = Clock()
    client = memory_client(tmp_path, clock)
    selected = load_vignette("pt-p1-first-tpi-no-therapy")
    pt = first_card(client, SELECT, selected, "pt-integration")
    snooze(client, SELECT, pt["uuid"], "snooze-90")
    clock.advance(days=60)
    assert topics(client.post(SELECT, json=again(selected, "tpi-b"))) == []


def test_a_new_finding_shows_alone_on_a_snoozed_topic(tmp_path):
    client = memory_client(tmp_path)
    selected = load_vignette("referral-r1-two-failed-neck-tpis")
    referral = first_card(client, SELECT, selected, "specialist-referral")
    assert rules(referral) == ["R1"]
    snooze(client, SELECT, referral["uuid"])
    later = again(selected, draft_id="tpi-later")
    assert "specialist-referral" not in topics(client.post(SELECT, json=later))
    add_resource(later, "conditions", fibromyalgia())
    response = client.post(SELECT, json=again(later))
    shown = card(response.get_json(), "specialist-referral")
    assert shown is not None and rules(shown) == ["R3"]
    assert "rheumatology" in shown["summary"].lower()


def test_a_pain_score_after_the_snooze_lifts_it(tmp_path):
    client = memory_client(tmp_path)
    selected = load_vignette("referral-r1-two-failed-neck-tpis")
    referral = first_card(client, SELECT, selected, "specialist-referral")
    snooze(client, SELECT, referral["uuid"], when=EVENING - timedelta(days=3))
    later = again(selected, draft_id="tpi-later")
    assert "specialist-referral" not in topics(client.post(SELECT, json=later))
    add_resource(later, "observations", pain_score(EVENING - timedelta(days=1), 8))
    assert "specialist-referral" in topics(client.post(SELECT, json=again(later)))


def test_a_score_before_the_snooze_does_not_lift_it(tmp_path):
    client = memory_client(tmp_path)
    selected = load_vignette("referral-r1-two-failed-neck-tpis")
    referral = first_card(client, SELECT, selected, "specialist-referral")
    snooze(client, SELECT, referral["uuid"], when=EVENING - timedelta(days=1))
    later = again(selected, draft_id="tpi-later")
    add_resource(later, "observations", pain_score(EVENING - timedelta(days=2), 8))
    assert "specialist-referral" not in topics(client.post(SELECT, json=later))


def test_other_override_reasons_snooze_nothing(tmp_path):
    client = memory_client(tmp_path)
    selected = load_vignette("pt-p1-first-tpi-no-therapy")
    pt = first_card(client, SELECT, selected, "pt-integration")
    snooze(client, SELECT, pt["uuid"], code="patient-declined")
    assert topics(client.post(SELECT, json=again(selected, "tpi-b"))) == ["pt-integration"]


def test_a_snooze_reason_from_another_system_snoozes_nothing(tmp_path):
    client = memory_client(tmp_path)
    selected = load_vignette("pt-p1-first-tpi-no-therapy")
    pt = first_card(client, SELECT, selected, "pt-integration")
    body = {
        "feedback": [
            {
                "card": pt["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": {"system": "urn:other", "code": "snooze-30"}},
                "outcomeTimestamp": EVENING.isoformat(),
            }
        ]
    }
    assert client.post(f"{SELECT}/feedback", json=body).status_code == 200
    assert topics(client.post(SELECT, json=again(selected, "tpi-b"))) == ["pt-integration"]


def test_feedback_on_an_unknown_card_is_stored_and_snoozes_nothing(tmp_path):
    client = memory_client(tmp_path)
    selected = load_vignette("pt-p1-first-tpi-no-therapy")
    client.post(SELECT, json=selected)
    unknown = "3f1e0c9a-2b7d-8c53-9a11-0d2e4f6a8b10"  # a PT-topic uuid never sent
    snooze(client, SELECT, unknown)
    assert topics(client.post(SELECT, json=again(selected, "tpi-b"))) == ["pt-integration"]
    stored = list(client.application.extensions["tpi_cds"].store.export())
    assert [e["card_uuid"] for e in stored] == [unknown]
    assert stored[0]["card_rules"] is None


def test_feedback_on_a_remembered_card_keeps_its_rules(tmp_path):
    client = memory_client(tmp_path)
    referral = first_card(
        client,
        SELECT,
        load_vignette("referral-r4-tension-headache-failed-tpis"),
        "specialist-referral",
    )
    body = {
        "feedback": [
            {
                "card": referral["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": referral["suggestions"][0]["uuid"]}],
                "outcomeTimestamp": EVENING.isoformat(),
            }
        ]
    }
    assert client.post(f"{SELECT}/feedback", json=body).status_code == 200
    stored = list(client.application.extensions["tpi_cds"].store.export())
    assert stored[0]["card_rules"] == ["R1", "R4"]
    assert stored[0]["card_indicator"] == "warning"


def test_safety_cards_offer_no_snooze(tmp_path):
    client = memory_client(tmp_path)
    safety = first_card(client, SELECT, load_vignette("safety-s3-apixaban"), "tpi-safety")
    assert not {r["code"] for r in safety["overrideReasons"]} & {"snooze-30", "snooze-90"}


# -- survival, outage, privacy -----------------------------------------------------------


def test_memory_survives_a_restart(tmp_path):
    selected = load_vignette(EVERYTHING)
    memory_client(tmp_path).post(SELECT, json=selected)
    restarted = memory_client(tmp_path)
    assert topics(restarted.post(SIGN, json=as_sign(selected))) == ["tpi-safety"]


def test_a_dead_store_sends_every_card_and_says_so_once(tmp_path, caplog):
    """A PostgreSQL URL where nothing listens: memory is off, the cards all go."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = memory_client(tmp_path, database_url=f"postgresql://tpi@127.0.0.1:{port}/tpi")
    selected = load_vignette(EVERYTHING)
    with caplog.at_level(logging.WARNING):
        for _ in range(4):
            assert topics(client.post(SELECT, json=again(selected))) == ALL_TOPICS
    outages = [r for r in caplog.records if "card memory unavailable" in r.getMessage()]
    assert len(outages) == 1


def test_nothing_about_the_patient_is_stored_or_logged_in_clear(tmp_path, caplog):
    client = memory_client(tmp_path)
    selected = load_vignette("referral-r1-two-failed-neck-tpis")
    patient_id = selected["context"]["patientId"]
    assert len(patient_id) >= 6  # long enough that finding it by chance means nothing
    with caplog.at_level(logging.DEBUG):
        pt = first_card(client, SELECT, selected, "pt-integration")
        snooze(client, SELECT, pt["uuid"])
        client.post(SIGN, json=as_sign(selected))
    names = patient_names(selected)
    database = tmp_path / "tpi-cds.sqlite3"
    with sqlite3.connect(database) as connection:
        dump = "\n".join(connection.iterdump())
    assert "tpi_cds_sent_cards" in dump and "tpi_cds_snoozes" in dump
    assert names
    for secret in [patient_id, *names]:
        assert secret not in dump
        assert secret not in caplog.text
    assert database.read_bytes().find(patient_id.encode()) == -1


def test_operators_see_and_reset_memory_from_the_command_line(tmp_path, monkeypatch, capsys):
    import json

    from cds_service.cli import main

    clock = Clock()
    clock.now = datetime.now(UTC)  # the command counts what is live now, by the real clock
    client = memory_client(tmp_path, clock)
    selected = load_vignette("referral-r1-two-failed-neck-tpis")
    response = client.post(SELECT, json=selected).get_json()
    snooze(client, SELECT, card(response, "specialist-referral")["uuid"], when=clock.now)
    monkeypatch.setenv("TPI_CDS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("TPI_CDS_DATABASE_URL", raising=False)
    assert main(["memory", "stats"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["cards"] == 3  # eligibility, PT and referral cards sent
    assert stats["snoozesByTopic"] == {"specialist-referral": 1}
    assert stats["entries"] == 4
    assert stats["oldestEntry"][:10] == clock.now.date().isoformat()
    assert main(["memory", "forget", "--all"]) == 0
    assert json.loads(capsys.readouterr().out) == {"forgotten": 4}
    assert main(["memory", "stats"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 0
    # Forgotten: the order-sign shows every card again, the referral too.
    assert "specialist-referral" in topics(client.post(SIGN, json=as_sign(selected)))


def test_forget_needs_all_spelled_out(tmp_path, monkeypatch, capsys):
    from cds_service.cli import main

    monkeypatch.setenv("TPI_CDS_DATA_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as exited:
        main(["memory", "forget"])
    assert exited.value.code == 2
    assert "--all" in capsys.readouterr().err


def test_memory_stats_without_a_store_says_where_it_looked(tmp_path, monkeypatch, capsys):
    from cds_service.cli import main

    monkeypatch.setenv("TPI_CDS_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.delenv("TPI_CDS_DATABASE_URL", raising=False)
    assert main(["memory", "stats"]) == 2
    assert "no feedback store at" in capsys.readouterr().err


def patient_names(request: dict[str, Any]) -> list[str]:
    patient = request["prefetch"]["patient"]
    names = patient.get("name", []) if patient.get("resourceType") == "Patient" else []
    return [
        part for name in names for part in [*name.get("given", []), name.get("family", "")] if part
    ]


def fibromyalgia() -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": "fibromyalgia-new",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {
            "coding": [
                {
                    "system": "http://hl7.org/fhir/sid/icd-10-cm",
                    "code": "M79.7",
                    "display": "Fibromyalgia",
                }
            ]
        },
        "subject": {"reference": "Patient/x"},
        "onsetDateTime": "2026-11-01",
    }


def pain_score(when: datetime, value: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"pain-{when:%Y%m%d%H%M}",
        "status": "final",
        "code": {
            "coding": [
                {
                    "system": "http://loinc.org",
                    "code": "72514-3",
                    "display": "Pain severity - 0-10 verbal numeric rating [Score] - Reported",
                }
            ]
        },
        "subject": {"reference": "Patient/x"},
        "effectiveDateTime": when.isoformat(),
        "valueQuantity": {"value": value, "unit": "{score}"},
    }


@pytest.fixture(autouse=True)
def _no_sandbox_env(monkeypatch):
    monkeypatch.delenv("TPI_CDS_REDIS_URL", raising=False)


def test_a_short_memory_secret_is_refused_at_start():
    from cds_service.settings import ServiceSettings, SettingsError

    with pytest.raises(SettingsError, match="at least 16 bytes"):
        ServiceSettings.from_env({"TPI_CDS_MEMORY_SECRET": "hunter2"})


def test_a_configured_secret_is_used_and_none_is_stored(tmp_path):
    from cds_service.settings import MemorySettings

    secret = "9f" * 32
    client = memory_client(tmp_path, memory=MemorySettings(secret=secret))
    selected = load_vignette(EVERYTHING)
    client.post(SELECT, json=selected)
    assert topics(client.post(SIGN, json=as_sign(selected))) == ["tpi-safety"]
    with sqlite3.connect(tmp_path / "tpi-cds.sqlite3") as connection:
        stored = connection.execute("SELECT count(*) FROM tpi_cds_memory_secret").fetchone()
    assert stored == (0,)
    # Another deployment with another secret shares nothing with this one.
    other = memory_client(tmp_path, memory=MemorySettings(secret="a1" * 32))
    assert topics(other.post(SIGN, json=as_sign(selected))) == ALL_TOPICS


def test_cards_sent_are_counted_per_day_topic_and_rules_for_governance(tmp_path):
    from cds_service.store import card_counts_table

    client = memory_client(tmp_path)
    selected = load_vignette(EVERYTHING)
    client.post(SELECT, json=selected)
    client.post(SIGN, json=as_sign(selected))
    state = client.application.extensions["tpi_cds"]
    assert state.ledger.flush() == 5  # four cards, then the safety card again
    with state.store.engine.connect() as connection:
        rows = {
            (r.service_id, r.topic, r.rules, r.indicator): r.count
            for r in connection.execute(card_counts_table.select())
        }
        days = {r.day for r in connection.execute(card_counts_table.select())}
    assert rows[("tpi-order-select", "tpi-safety", "S3 S4 S5", "warning")] == 1
    assert rows[("tpi-order-sign", "tpi-safety", "S3 S4 S5", "warning")] == 1
    assert rows[("tpi-order-select", "specialist-referral", "R1 R2 R3 R5", "warning")] == 1
    assert sum(rows.values()) == 5
    assert len(days) == 1
    # Counts add up across flushes (one row per day and card kind).
    client.post(SELECT, json=again(selected, draft_id="tpi-second"))
    state.ledger.flush()
    with state.store.engine.connect() as connection:
        total = sum(r.count for r in connection.execute(card_counts_table.select()))
    assert total == 9


def test_card_counts_reach_the_store_without_another_call(tmp_path, monkeypatch):
    """A quiet service still stores what it counted: a timer, not the next request."""
    import time

    from cds_service import ledger
    from cds_service.store import card_counts_table

    monkeypatch.setattr(ledger, "FLUSH_EVERY_SECONDS", 0.2)
    client = memory_client(tmp_path)
    client.post(SELECT, json=load_vignette(EVERYTHING))
    store = client.application.extensions["tpi_cds"].store
    deadline = time.monotonic() + 5
    total = 0
    while time.monotonic() < deadline and total < 4:
        time.sleep(0.1)
        with store.engine.connect() as connection:
            total = sum(r.count for r in connection.execute(card_counts_table.select()))
    assert total == 4
