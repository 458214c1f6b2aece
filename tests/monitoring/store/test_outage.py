"""Fault test: the prediction store's PostgreSQL unreachable for 30 s while payload logs keep flowing into
the detector (a real process); after it returns every logged prediction is stored exactly once.

The outage is real: the detector reaches PostgreSQL only through a TCP proxy this test owns, and cutting
the proxy closes the open connections and refuses new ones, as a database host going away does. The
machine's PostgreSQL itself is never stopped.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from churn_monitoring.store.schema import predictions
from tests.monitoring.detector_support import (
    Scorer,
    TcpProxy,
    post_call,
    postgres_database,
    slack_receiver,
    start_detector,
    v1_request,
    v1_response,
    wait_for_metric,
)
from tests.support.customers import sample_customers
from tests.support.services import ensure_postgres

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_SECONDS = 30.0
BEFORE_SECONDS = 4.0
AFTER_SECONDS = 4.0
CALLS_PER_SECOND = 25


def test_thirty_second_database_outage_loses_and_duplicates_nothing(tmp_path, artefact_dir, telco_rows):
    scorer = Scorer(artefact_dir)
    pool = []
    for seed in range(40):
        customers = sample_customers(telco_rows, random.Random(seed).randint(1, 8), seed=seed)
        pool.append((v1_request(customers), v1_response(scorer.answers(customers)), len(customers)))

    with postgres_database(ensure_postgres(), prefix="churnops_outage") as url, slack_receiver() as slack:
        proxy = TcpProxy(5432).start()
        detector = start_detector(
            {
                "CHURNOPS_DETECTOR_HOME": str(tmp_path / "home"),
                "CHURNOPS_DETECTOR_DATABASE_URL": url.replace(":5432/", f":{proxy.port}/"),
                "CHURNOPS_DETECTOR_MODEL_DIR": str(artefact_dir),
                "CHURNOPS_DETECTOR_DRIFT_BACKEND": "scipy",
                "CHURNOPS_DETECTOR_STORE_MEMORY_ROWS": "500",
                "CHURNOPS_DETECTOR_STORE_RETRY_MAX_SECONDS": "2",
                "CHURNOPS_DETECTOR_SLACK_WEBHOOK_URL": slack.url,
            },
            tmp_path / "detector.log",
        )
        sent: dict[str, int] = {}
        statuses: list[int] = []
        observed: dict[str, float] = {}
        try:
            wait_for_metric(detector, "churn_store_up", lambda v: v == 1.0, timeout=30)
            stop = threading.Event()

            def traffic() -> None:
                with httpx.Client(timeout=10) as client:
                    while not stop.is_set():
                        started = time.monotonic()
                        request, response, rows = random.choice(pool)
                        event_id = str(uuid.uuid4())
                        sent_at = datetime.now(UTC)
                        replies = post_call(
                            client,
                            f"{detector.url}/",
                            request,
                            response,
                            event_id=event_id,
                            response_first=random.random() < 0.3,
                            at=sent_at,
                        )
                        statuses.extend(r.status_code for r in replies)
                        sent[event_id] = rows
                        if random.random() < 0.05:  # a pair delivered again (same headers, same bodies)
                            replies = post_call(
                                client, f"{detector.url}/", request, response, event_id=event_id, at=sent_at
                            )
                            statuses.extend(r.status_code for r in replies)
                        time.sleep(max(0.0, 1 / CALLS_PER_SECOND - (time.monotonic() - started)))

            sender = threading.Thread(target=traffic, daemon=True)
            sender.start()
            time.sleep(BEFORE_SECONDS)
            proxy.cut()
            cut_at = time.monotonic()
            observed["store_up_during"] = wait_for_metric(
                detector, "churn_store_up", lambda v: v == 0.0, timeout=15
            )
            time.sleep(OUTAGE_SECONDS - (time.monotonic() - cut_at) - 1)
            observed["backlog_during"] = detector.metric("churn_store_backlog_rows") or 0.0
            observed["spilled_during"] = detector.metric("churn_store_spilled_rows") or 0.0
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - cut_at)))
            proxy.restore()
            observed["outage_seconds"] = time.monotonic() - cut_at
            time.sleep(AFTER_SECONDS)
            stop.set()
            sender.join(timeout=20)
            wait_for_metric(detector, "churn_store_backlog_rows", lambda v: v == 0.0, timeout=90)
            wait_for_metric(detector, "churn_store_up", lambda v: v == 1.0, timeout=10)
        finally:
            detector.stop()
            proxy.stop()

        expected_rows = sum(sent.values())
        engine = create_engine(url)
        with engine.connect() as connection:
            total = connection.execute(select(func.count()).select_from(predictions)).scalar_one()
            # Stored as `<ce-id>~<digest of both events>`: one call per ce-id here.
            per_event = {
                stored.rsplit("~", 1)[0]: rows
                for stored, rows in connection.execute(
                    select(predictions.c.event_id, func.count()).group_by(predictions.c.event_id)
                ).all()
            }
        engine.dispose()
        print(
            f"outage {observed['outage_seconds']:.1f} s, calls {len(sent)}, rows {expected_rows}, "
            f"backlog during {observed['backlog_during']:.0f}, spilled during {observed['spilled_during']:.0f}"
        )
        assert set(statuses) == {200}, "every event was acknowledged, outage or not"
        assert observed["outage_seconds"] >= OUTAGE_SECONDS
        assert observed["backlog_during"] > 500, "rows piled up while the database was away"
        assert observed["spilled_during"] > 0, "past the memory bound rows went to the spill file"
        assert per_event == sent, "every logged prediction stored, none lost"
        assert total == expected_rows, "and none twice"
        log = detector.log_text()
        assert "store_unavailable" in log
        assert "store_spill_replayed" in log
        assert "secret-token" not in log, "the Slack webhook URL must never be logged"
