"""Feedback is never lost: many processes post at once, every acknowledged entry is on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import requests
from running import start_service

from cds_service.store import FeedbackEntry, FeedbackStore
from stores import store_url  # noqa: F401 - the fixture

CLIENTS = 4
CALLS_PER_CLIENT = 25
ENTRIES_PER_CALL = 2


def post_feedback(base: str, client: int) -> list[str]:
    """One client process: post feedback calls; return the card ids acknowledged with 200."""
    acknowledged = []
    with requests.Session() as session:
        for call in range(CALLS_PER_CLIENT):
            cards = [f"card-{client}-{call}-{n}" for n in range(ENTRIES_PER_CALL)]
            body = {
                "feedback": [
                    {
                        "card": card,
                        "outcome": "overridden",
                        "outcomeTimestamp": "2026-11-23T10:00:00Z",
                        "overrideReason": {
                            "reason": {"code": "clinical-judgment", "display": "Clinical judgment"}
                        },
                    }
                    for card in cards
                ]
            }
            response = session.post(
                f"{base}/cds-services/tpi-order-select/feedback", json=body, timeout=30
            )
            if response.status_code == 200:
                acknowledged.extend(cards)
    return acknowledged


def test_many_processes_post_and_every_acknowledged_entry_is_stored(store_url, tmp_path):  # noqa: F811
    service = start_service(
        tmp_path, workers=3, TPI_CDS_DATABASE_URL=store_url, TPI_CDS_AUTH_DISABLED="true"
    )
    try:
        with ProcessPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(post_feedback, [service.base_url] * CLIENTS, range(CLIENTS)))
    finally:
        service.stop(kill=True)  # no graceful shutdown: commits must already be durable
    acknowledged = [card for result in results for card in result]
    assert len(acknowledged) == CLIENTS * CALLS_PER_CLIENT * ENTRIES_PER_CALL
    stored = [entry["card_uuid"] for entry in FeedbackStore(store_url).export()]
    assert sorted(stored) == sorted(acknowledged)


def test_export_and_stats_from_the_command_line(store_url, tmp_path):  # noqa: F811
    store = FeedbackStore(store_url)
    store.create_schema()
    store.add(
        [
            FeedbackEntry(
                "tpi-order-select",
                "c1",
                "pt-integration",
                "accepted",
                [{"id": "s1"}],
                None,
                "2026-11-23T10:00:00Z",
            ),
            FeedbackEntry(
                "tpi-order-select",
                "c2",
                "pt-integration",
                "overridden",
                None,
                {"reason": {"code": "patient-declined", "display": "Patient declined"}},
                "2026-11-23T10:01:00Z",
            ),
            FeedbackEntry(
                "tpi-order-select",
                "c3",
                "pt-integration",
                "overridden",
                None,
                {"reason": {"code": "patient-declined", "display": "Patient declined"}},
                "2026-11-23T10:02:00Z",
            ),
        ]
    )
    env = dict(os.environ, TPI_CDS_DATABASE_URL=store_url)
    exported = subprocess.run(
        [sys.executable, "-m", "cds_service.cli", "feedback", "export"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [line["card_uuid"] for line in lines] == ["c1", "c2", "c3"]
    stats = subprocess.run(
        [sys.executable, "-m", "cds_service.cli", "feedback", "stats"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    group = json.loads(stats.stdout)["groups"][0]
    assert (group["topic"], group["accepted"], group["overridden"]) == ("pt-integration", 1, 2)
    assert group["topOverrideReasons"] == [{"reason": "Patient declined", "count": 2}]
