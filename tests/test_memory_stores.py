"""Card memory in its real stores: SQLite, the machine's PostgreSQL and Redis; shared by two
gunicorn replicas; a Redis that dies mid-run; expiry and purge.

Redis tests use database 11 of the configured server (emptied first), so they neither see
nor disturb what another run keeps in database 0.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
import requests
from running import free_port, start_service
from test_memory import EVERYTHING, again, as_sign

from cards.card import OVERRIDE_SYSTEM
from cds_service.memory import RedisMemory, SentCard, Snooze, SqlMemory
from cds_service.store import FeedbackStore
from conftest import card, load_vignette
from stores import store_url  # noqa: F401 - a fixture, used by name

REDIS_BASE = os.environ.get("TPI_CDS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_URL = REDIS_BASE.rsplit("/", 1)[0] + "/11"


def redis_reachable() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def redis_url() -> Iterator[str]:
    if not redis_reachable():
        pytest.skip(f"no Redis reachable at {REDIS_URL} (CI provides one)")
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


def a_card(topic: str = "pt-integration", rules: tuple[str, ...] = ("P1",)) -> SentCard:
    return SentCard(
        card_uuid=str(uuid.uuid4()),
        repeat_key=uuid.uuid4().hex * 2,
        service_id="tpi-order-select",
        topic=topic,
        rules=rules,
        indicator="info",
        snooze_keys={"P": uuid.uuid4().hex * 2},
    )


def backends(kind: str, url: str):
    if kind == "redis":
        return RedisMemory(url)
    store = FeedbackStore(url, durable=False)
    store.create_schema()
    return SqlMemory(store)


# -- each backend on its own -------------------------------------------------------------


def test_sql_memory_expires_and_purges(store_url):  # noqa: F811
    memory = backends("sql", store_url)
    t0 = 1_800_000_000.0
    sent = [a_card() for _ in range(50)]
    memory.remember(sent, now=t0, expires_at=t0 + 86_400)
    memory.add_snoozes(
        [Snooze(sent[0].snooze_keys["P"], "pt-integration", "P", "snooze-30", t0, t0 + 30 * 86_400)]
    )
    keys = [c.repeat_key for c in sent[:3]]
    recalled = memory.recall(keys, [sent[0].snooze_keys["P"]], since=t0 - 1, now=t0 + 60)
    assert recalled.seen == set(keys)
    assert recalled.snoozes == {sent[0].snooze_keys["P"]: t0}
    assert memory.stats(t0 + 60)["entries"] == 51
    # A day later the cards are past their expiry; the snooze runs on.
    assert memory.recall(keys, [], since=t0 + 86_400 - 86_400 + 1, now=t0 + 86_401).seen == set()
    assert memory.purge(t0 + 86_401) == 50
    assert memory.stats(t0 + 86_401) == {
        "cards": 0,
        "snoozes": 1,
        "snoozesByTopic": {"pt-integration": 1},
        "entries": 1,
        "oldestEntry": "2027-01-15T08:00:00+00:00",
    }
    assert memory.purge(t0 + 31 * 86_400) == 1
    assert memory.stats(t0 + 31 * 86_400)["entries"] == 0


def test_every_replica_gets_the_same_secret(store_url):  # noqa: F811
    first, second = backends("sql", store_url), backends("sql", store_url)
    assert first.stored_secret() == second.stored_secret()
    assert len(first.stored_secret()) == 32


def test_redis_memory_lets_redis_expire_entries(redis_url):
    memory = backends("redis", redis_url)
    now = time.time()
    sent = a_card()
    memory.remember([sent], now=now, expires_at=now + 1)
    assert memory.recall([sent.repeat_key], [], since=now - 1, now=now).seen == {sent.repeat_key}
    assert memory.sent_cards([sent.card_uuid])[sent.card_uuid].rules == ("P1",)
    assert memory.stats(now)["cards"] == 1
    deadline = time.monotonic() + 5
    while memory.sent_cards([sent.card_uuid]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert memory.sent_cards([sent.card_uuid]) == {}
    assert memory.recall([sent.repeat_key], [], since=now - 1, now=now).seen == set()


def test_redis_secret_is_made_once(redis_url):
    assert RedisMemory(redis_url).stored_secret() == RedisMemory(redis_url).stored_secret()


# -- two gunicorn replicas sharing a store ------------------------------------------------


def post(base: str, service: str, body) -> requests.Response:
    response = requests.post(f"{base}/cds-services/{service}", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response


def topics_of(response: requests.Response) -> list[str]:
    return [c["source"]["topic"]["code"] for c in response.json()["cards"]]


def play_ordering_session(first: str, second: str) -> list[str]:
    """What the held-out EHR script does: select on one replica, sign on the other, snooze
    the PT card, order again. Returns what must never be stored or logged in clear."""
    selected = load_vignette("referral-r1-two-failed-neck-tpis")
    selected["context"]["patientId"] = f"replica-{uuid.uuid4().hex[:8]}"
    private = [selected["context"]["patientId"], "Alvarez", "Lucia"]
    assert selected["prefetch"]["patient"]["name"][0]["family"] == "Alvarez"
    shown = post(first, "tpi-order-select", selected).json()
    # These services judge by the real calendar: the vignette's cards may shift with it,
    # what memory does with them may not.
    shown_topics = topics_of_cards(shown)
    assert "pt-integration" in shown_topics and "specialist-referral" in shown_topics
    assert topics_of(post(second, "tpi-order-sign", as_sign(selected))) == [
        t for t in shown_topics if t == "tpi-safety"
    ]
    feedback = {
        "feedback": [
            {
                "card": card(shown, "pt-integration")["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": {"system": OVERRIDE_SYSTEM, "code": "snooze-30"}},
                "outcomeTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        ]
    }
    assert post(second, "tpi-order-select/feedback", feedback).json() == {"stored": 1}
    later = again(selected, draft_id="tpi-next-visit")
    assert topics_of(post(first, "tpi-order-select", later)) == [
        t for t in shown_topics if t != "pt-integration"
    ]
    return private


def topics_of_cards(body) -> list[str]:
    return [c["source"]["topic"]["code"] for c in body["cards"]]


REPLICA_ENV = {"TPI_CDS_AUTH_DISABLED": "true"}


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_two_replicas_share_memory_in_postgresql(tmp_path, store_url):  # noqa: F811
    logs, private = replicas_play(tmp_path, TPI_CDS_DATABASE_URL=store_url)
    stored = postgres_dump(store_url)
    assert "tpi_cds_sent_cards" in stored and "tpi_cds_snoozes" in stored
    assert_nothing_in_clear(private, stored, *logs)


def test_two_replicas_share_memory_in_redis(tmp_path, redis_url):
    logs, private = replicas_play(tmp_path, TPI_CDS_REDIS_URL=redis_url)
    stored = redis_dump(redis_url)
    assert "tpi-cds:memory:snooze:" in stored
    assert_nothing_in_clear(private, stored, *logs)


def replicas_play(tmp_path, **store: str) -> tuple[list[str], list[str]]:
    """Two gunicorn replicas sharing one store play an ordering session: their logs, and
    what must never be stored or logged in clear."""
    env = {**REPLICA_ENV, **store}
    first = start_service(tmp_path / "a", **env)
    second = start_service(tmp_path / "b", **env)
    try:
        private = play_ordering_session(first.base_url, second.base_url)
    finally:
        first.stop()
        second.stop()
    return [first.log(), second.log()], private


def assert_nothing_in_clear(private: list[str], *texts: str) -> None:
    for text in texts:
        for secret in private:
            assert secret not in text


def postgres_dump(url: str) -> str:
    """Every row of every table in the test's schema, as text."""
    import psycopg

    from cds_service.store import normalized_url

    with psycopg.connect(normalized_url(url)) as connection:
        tables = [
            name
            for (name,) in connection.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()"
            )
        ]
        dump = [
            f"{table}: {connection.execute(f'SELECT * FROM {table}').fetchall()!r}"
            for table in tables
        ]
    return "\n".join(dump)


def redis_dump(url: str) -> str:
    """Every key and value of the test's Redis database, as text."""
    import redis

    client = redis.Redis.from_url(url)
    return "\n".join(f"{key.decode()}={client.get(key)!r}" for key in client.scan_iter(count=1000))


# -- a store that dies mid-run ------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path) -> Iterator[tuple[str, callable, callable]]:
    """A redis-server of this test's own, on a free port, that the test can kill."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (CI has it)")
    port = free_port()
    command = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp_path),
    ]
    process: list[subprocess.Popen] = []

    def start() -> None:
        process.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def kill() -> None:
        process[-1].kill()
        process[-1].wait(5)

    start()
    yield f"redis://127.0.0.1:{port}/0", kill, start
    for running in process:
        if running.poll() is None:
            running.kill()
            running.wait(5)


def test_cards_are_answered_in_time_when_redis_dies_mid_run(tmp_path, own_redis):
    url, kill, restart = own_redis
    service = start_service(tmp_path, workers=2, **REPLICA_ENV, TPI_CDS_REDIS_URL=url)
    base = service.base_url
    selected = load_vignette(EVERYTHING)
    try:
        everything = topics_of(post(base, "tpi-order-select", selected))
        assert "tpi-safety" in everything and len(everything) > 1
        assert topics_of(post(base, "tpi-order-sign", as_sign(selected))) == ["tpi-safety"]
        kill()
        timings = []
        for _ in range(12):
            started = time.monotonic()
            signed = post(base, "tpi-order-sign", as_sign(selected))
            timings.append(time.monotonic() - started)
            # Nothing remembered: every card goes, as for a first call.
            assert topics_of(signed) == everything
        assert max(timings) < 1.0, timings
        restart()
        time.sleep(5.5)  # past the pause after a failure
        post(base, "tpi-order-select", again(selected, draft_id="tpi-after"))
        post(base, "tpi-order-select", again(selected, draft_id="tpi-after"))
    finally:
        service.stop()
    log = service.log()
    outages = log.count("card memory unavailable")
    assert 1 <= outages <= 2, log[-3000:]  # once per worker that saw it, not per request
    assert "card memory is back" in log


def test_memory_store_growth_is_bounded_by_purging(store_url):  # noqa: F811
    """A busy day's cards are gone after purging: nothing grows without bound."""
    memory = backends("sql", store_url)
    t0 = 1_800_000_000.0
    for hour in range(48):
        now = t0 + hour * 3600
        memory.remember([a_card() for _ in range(10)], now=now, expires_at=now + 86_400)
        memory.purge(now)
    # Only the last 24 hours' cards remain (24 or 25 hourly batches of ten).
    assert memory.stats(t0 + 47 * 3600)["cards"] in (240, 250)


def test_a_worker_that_stops_stores_its_card_counts(tmp_path):
    """Counts gather in each worker and reach the store when it exits (SIGTERM)."""
    import sqlite3

    service = start_service(tmp_path, workers=2, **REPLICA_ENV)
    sent = 0
    try:
        for index in range(6):
            answer = post(
                service.base_url,
                "tpi-order-select",
                again(load_vignette(EVERYTHING), draft_id=f"tpi-count-{index}"),
            )
            sent += len(answer.json()["cards"])
    finally:
        service.stop()
    with sqlite3.connect(tmp_path / "data" / "tpi-cds.sqlite3") as connection:
        (counted,) = connection.execute("SELECT sum(count) FROM tpi_cds_card_counts").fetchone()
    assert counted == sent
