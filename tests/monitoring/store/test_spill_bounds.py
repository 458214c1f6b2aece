"""The writer's memory queue and spill directory are bounded in bytes, what does not fit is counted, and
a spill file is replayed a line at a time (constant memory), resuming where a failure stopped it."""

from __future__ import annotations

import threading
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, func, select

from churn_monitoring.store.database import create_store_engine, upgrade
from churn_monitoring.store.schema import predictions
from churn_monitoring.store.spill import SPILL_FILE
from churn_monitoring.store.writer import PredictionWriter, encode
from tests.support.services import free_port, wait_until

KIB = 1024


def records(prefix: str, n: int) -> list[dict]:
    return [
        {
            "event_id": f"{prefix}~{i // 10}",
            "row_index": i % 10,
            "customer_id": f"{prefix}-{i}",
            "model_version": "1",
            "features": {"tenure": i % 72, "Contract": "Month-to-month", "MonthlyCharges": 70.35},
            "probability": 0.42,
            "prediction": False,
            "risk_level": "Medium",
            "predicted_at": datetime.now(UTC).isoformat(),
            "source": "http://localhost:9081/",
        }
        for i in range(n)
    ]


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'store.db'}"


def count(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as connection:
        value = connection.execute(select(func.count()).select_from(predictions)).scalar_one()
    engine.dispose()
    return int(value)


def spill_size(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.glob("*.jsonl"))


def test_queue_and_spill_are_bounded_in_bytes_and_drops_are_counted(tmp_path):
    # Nothing listens on this port: every connect is refused, as when the database host is gone.
    unreachable = create_store_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test")
    dropped: list[tuple[str, int]] = []
    writer = PredictionWriter(
        unreachable,
        tmp_path / "spill",
        flush_seconds=0.05,
        memory_bytes=64 * KIB,
        spill_max_bytes=256 * KIB,
        retry_max_seconds=0.2,
        on_drop=lambda reason, rows: dropped.append((reason, rows)),
    )
    writer.start()
    try:
        rows = records("bound", 3000)
        line_bytes = len(encode(rows[0]))
        for start in range(0, len(rows), 100):
            writer.submit(rows[start : start + 100])
        assert writer.memory_bytes_held <= 64 * KIB
        assert spill_size(tmp_path / "spill") <= 256 * KIB
        lost = sum(n for reason, n in dropped if reason == "spill_full")
        assert lost > 0
        assert writer.stats.dropped["spill_full"] == lost
        # Every row is queued, spilled or counted as dropped: none vanishes silently.
        assert writer.backlog + lost == len(rows)
        assert writer.spilled_rows * line_bytes <= 256 * KIB
    finally:
        writer.stop(timeout=0.5)
    # What shutdown could not spill (the directory is full) is counted too.
    assert spill_size(tmp_path / "spill") <= 256 * KIB
    assert writer.stats.dropped["spill_full"] + writer.spilled_rows == len(rows)


def replay_peak(directory: Path, rows: int) -> tuple[int, int]:
    """(file size, peak traced memory) of replaying a spill file of `rows` rows into SQLite."""
    spill = directory / "spill"
    spill.mkdir(parents=True)
    with (spill / SPILL_FILE).open("wb") as handle:
        handle.writelines(encode(row) for row in records(directory.name, rows))
    size = (spill / SPILL_FILE).stat().st_size
    url = sqlite_url(directory)
    engine = create_store_engine(url)
    upgrade(engine)  # before measuring: the migration imports Alembic
    writer = PredictionWriter(engine, spill, batch_rows=500, flush_seconds=0.05, migrate=False)
    assert writer.backlog == rows
    tracemalloc.start()
    try:
        writer.start()
        assert writer.wait_empty(120), f"backlog {writer.backlog}"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        writer.stop(5)
    assert count(url) == rows
    assert not list(spill.glob("*.jsonl"))
    return size, peak


def test_spill_file_is_replayed_in_constant_memory(tmp_path):
    _, small_peak = replay_peak(tmp_path / "small", 3000)
    size, large_peak = replay_peak(tmp_path / "large", 12_000)
    # A batch of 500 rows at a time: four times the file, about the same memory (about 1.2 MB).
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)
    assert large_peak < size / 2, f"peak {large_peak} bytes replaying a {size}-byte file"


def test_replay_resumes_after_a_failure_instead_of_starting_over(tmp_path):
    spill = tmp_path / "spill"
    spill.mkdir()
    rows = records("resume", 2000)
    (spill / SPILL_FILE).write_bytes(b"".join(encode(row) for row in rows))
    failed = threading.Event()

    def fail_once(inserted: int, duplicates: int) -> None:
        # The database goes away after the third batch was committed, before the writer knew it was.
        if writer.stats.inserted >= 1500 and not failed.is_set():
            failed.set()
            raise ConnectionError("database went away")

    url = sqlite_url(tmp_path)
    writer = PredictionWriter(
        create_store_engine(url),
        spill,
        batch_rows=500,
        flush_seconds=0.05,
        retry_max_seconds=0.2,
        on_batch=fail_once,
    )
    writer.start()
    try:
        assert writer.wait_empty(60)
    finally:
        writer.stop(5)
    assert failed.is_set()
    assert count(url) == len(rows)
    # Only the batch whose commit went unacknowledged is written again (and skipped as duplicate).
    assert writer.stats.duplicates == 500


def test_torn_spill_line_is_skipped_and_counted_not_retried_forever(tmp_path):
    spill = tmp_path / "spill"
    spill.mkdir()
    rows = records("torn", 30)
    lines = [encode(row) for row in rows]
    lines.insert(10, b'{"event_id": "half a li\n')
    lines.insert(20, b"\x00\x00\x00 not json\n")
    (spill / SPILL_FILE).write_bytes(b"".join(lines))
    url = sqlite_url(tmp_path)
    writer = PredictionWriter(create_store_engine(url), spill, flush_seconds=0.05)
    writer.start()
    try:
        assert writer.wait_empty(30)
    finally:
        writer.stop(5)
    assert count(url) == 30
    assert writer.stats.dropped["corrupt_spill_line"] == 2


def test_detector_counts_and_replays_what_a_previous_process_spilled(tmp_path, artefact_dir):
    from fastapi.testclient import TestClient

    from churn_monitoring.service.app import create_app
    from churn_monitoring.service.core import DetectorService
    from churn_monitoring.settings import DetectorSettings
    from tests.monitoring.detector_support import metric_value

    spill = tmp_path / "spill"
    spill.mkdir()
    (spill / SPILL_FILE).write_bytes(b"".join(encode(row) for row in records("left", 120)))
    settings = DetectorSettings(home=tmp_path, model_dir=artefact_dir, store_flush_seconds=0.05)
    with TestClient(create_app(settings, service=DetectorService(settings, load_detector=False))) as client:
        detector = client.app.state.detector
        wait_until(lambda: detector.writer.backlog == 0, 30, "the spill replayed")
        metrics = client.get("/metrics").text
    assert metric_value(metrics, "churn_store_spilled_rows_at_start") == 120
    assert metric_value(metrics, "churn_store_rows_total", {"outcome": "inserted"}) == 120
    assert count(f"sqlite:///{tmp_path / 'monitoring.db'}") == 120
