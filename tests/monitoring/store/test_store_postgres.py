"""The prediction store on the machine's real PostgreSQL: migrations, idempotent inserts, spilling while
the database is unreachable and replaying after, and rows kept across a restart."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, inspect, select, text

from churn_monitoring.store.database import create_store_engine, current_revision, insert_predictions, upgrade
from churn_monitoring.store.schema import predictions
from churn_monitoring.store.writer import PredictionWriter
from tests.monitoring.detector_support import TcpProxy, postgres_database
from tests.support.services import REPO, ensure_postgres, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def database_url():
    with postgres_database(ensure_postgres()) as url:
        yield url


def records(event_id: str, n: int) -> list[dict]:
    return [
        {
            "event_id": event_id,
            "row_index": i,
            "customer_id": f"{event_id[:8]}-{i}",
            "model_version": "1",
            "features": {"tenure": i, "Contract": "Month-to-month"},
            "probability": 0.1 + i / (n + 10),
            "prediction": i % 2 == 0,
            "risk_level": "Low",
            "predicted_at": datetime.now(UTC).isoformat(),
            "source": "http://localhost:9081/",
        }
        for i in range(n)
    ]


def count(url: str, event_prefix: str = "") -> int:
    engine = create_engine(url)
    with engine.connect() as connection:
        value = connection.execute(
            select(func.count())
            .select_from(predictions)
            .where(predictions.c.event_id.startswith(event_prefix))
        ).scalar_one()
    engine.dispose()
    return int(value)


def test_db_upgrade_command_creates_the_schema(database_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNOPS_")}
    env["CHURNOPS_DETECTOR_DATABASE_URL"] = database_url
    churnops = Path(sys.executable).parent / "churnops"
    result = subprocess.run(
        [str(churnops), "monitor", "db", "upgrade"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "revision 0001" in result.stdout
    engine = create_engine(database_url)
    tables = set(inspect(engine).get_table_names())
    assert {"churn_predictions", "churn_labels", "alembic_version"} <= tables
    # A second upgrade (every replica runs one at start) changes nothing.
    upgrade(engine)
    assert current_revision(engine) == "0001"
    engine.dispose()


def test_insert_skips_rows_already_stored(database_url):
    engine = create_store_engine(database_url)
    upgrade(engine)
    event_id = f"idem-{uuid.uuid4()}"
    with engine.begin() as connection:
        assert insert_predictions(connection, records(event_id, 5)) == 5
    with engine.begin() as connection:
        # A retried batch that overlaps what was committed: only the new rows count.
        assert insert_predictions(connection, records(event_id, 7)) == 2
    with engine.connect() as connection:
        features = connection.execute(
            text("SELECT features->>'Contract' FROM churn_predictions WHERE event_id = :e AND row_index = 0"),
            {"e": event_id},
        ).scalar_one()
    assert features == "Month-to-month"
    assert count(database_url, event_id) == 7
    engine.dispose()


def test_rows_spill_while_database_is_cut_off_and_are_written_once_after(database_url, tmp_path):
    upgrade(create_store_engine(database_url))
    proxy = TcpProxy(5432).start()
    proxied = database_url.replace(":5432/", f":{proxy.port}/")
    writer = PredictionWriter(
        create_store_engine(proxied),
        tmp_path / "spill",
        batch_rows=50,
        flush_seconds=0.05,
        memory_rows=100,
        retry_max_seconds=0.5,
    )
    writer.start()
    try:
        prefix = f"spill-{uuid.uuid4().hex[:6]}"
        writer.submit(records(f"{prefix}-a", 40))
        assert writer.wait_empty(20)
        proxy.cut()
        for index in range(10):
            writer.submit(records(f"{prefix}-b{index}", 30))
        wait_until(lambda: not writer.healthy, 20, "writer noticing the outage")
        assert writer.backlog == 300
        assert writer.spilled_rows >= 200  # 100 in memory at most, the rest on disk
        assert list((tmp_path / "spill").glob("*.jsonl"))
        assert count(database_url, prefix) == 40
        proxy.restore()
        assert writer.wait_empty(60), f"backlog {writer.backlog} after restore"
        assert count(database_url, prefix) == 340
        assert not list((tmp_path / "spill").glob("spill-*.jsonl"))
        assert writer.stats.spilled >= 200
    finally:
        writer.stop(5)
        proxy.stop()


def test_rows_unwritten_at_shutdown_are_replayed_by_the_next_start(database_url, tmp_path):
    upgrade(create_store_engine(database_url))
    proxy = TcpProxy(5432).start()
    proxied = database_url.replace(":5432/", f":{proxy.port}/")
    prefix = f"restart-{uuid.uuid4().hex[:6]}"
    proxy.cut()
    first = PredictionWriter(
        create_store_engine(proxied), tmp_path / "spill", flush_seconds=0.05, retry_max_seconds=0.5
    )
    first.start()
    first.submit(records(prefix, 25))
    first.stop(timeout=1)
    assert first.spilled_rows == 25
    proxy.restore()
    second = PredictionWriter(
        create_store_engine(proxied), tmp_path / "spill", flush_seconds=0.05, retry_max_seconds=0.5
    )
    assert second.backlog == 25
    second.start()
    try:
        assert second.wait_empty(30)
        assert count(database_url, prefix) == 25
    finally:
        second.stop(5)
        proxy.stop()


def test_row_the_database_refuses_is_set_aside_without_blocking_others(database_url, tmp_path):
    engine = create_store_engine(database_url)
    upgrade(engine)
    writer = PredictionWriter(engine, tmp_path / "spill", flush_seconds=0.05)
    writer.start()
    prefix = f"poison-{uuid.uuid4().hex[:6]}"
    rows = records(prefix, 3)
    rows[1]["model_version"] = "v" * 200  # longer than the column allows
    try:
        writer.submit(rows)
        assert writer.wait_empty(20)
        assert count(database_url, prefix) == 2
        assert writer.stats.rejected == 1
        assert prefix in (tmp_path / "spill" / "rejected.jsonl").read_text()
    finally:
        writer.stop(5)
