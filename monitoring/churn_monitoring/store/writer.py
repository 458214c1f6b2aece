"""Writing logged predictions to the store off the receive path, without losing or duplicating any.

The receiving handler only appends rows to a bounded in-memory queue (`submit`); one writer thread drains
it in batches. When the database is unreachable the thread backs off and retries, the queue fills, and
rows past its bound go to a spill file on disk (JSON lines) instead; once the database answers again the
spill files are replayed, then the queue. Every insert skips rows whose (event_id, row_index) is already
stored, so a batch retried after a commit whose answer was lost, or a spill file replayed twice, is stored
once. Rows the database refuses for what they are (not for being unreachable) go to a `rejected` file so
that one bad row cannot block the queue. On shutdown whatever could not be written is spilled, and the next
start replays it.

A library queue (Celery, a broker) would add a service to run; the work here is one thread and a file.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from churn_monitoring.store.database import insert_predictions, upgrade

log = structlog.get_logger(__name__)

SPILL_FILE = "spill-current.jsonl"
REPLAY_GLOB = "replay-*.jsonl"
REJECTED_FILE = "rejected.jsonl"
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
    ConnectionError,
    OSError,
)


@dataclass
class WriterStats:
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    spilled: int = 0
    replayed: int = 0
    failures: int = 0


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, TRANSIENT_ERRORS)


class PredictionWriter:
    """One background thread that owns all writes of predictions."""

    def __init__(
        self,
        engine: Engine,
        spill_dir: Path,
        *,
        batch_rows: int = 500,
        flush_seconds: float = 0.5,
        memory_rows: int = 20_000,
        retry_max_seconds: float = 5.0,
        migrate: bool = True,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.spill_dir = spill_dir
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.memory_rows = memory_rows
        self.retry_max = retry_max_seconds
        self.stats = WriterStats()
        self.healthy = False
        self.schema_ready = not migrate
        self._on_batch = on_batch
        self._queue: deque[dict[str, Any]] = deque()
        self._inflight: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff = 0.0
        spill_dir.mkdir(parents=True, exist_ok=True)
        self._spilled_rows = sum(_count_lines(p) for p in self._spill_files(include_current=True))

    # --- receive side (event loop) ---

    def submit(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Queue rows for writing; never waits for the database. Past the memory bound rows are spilled."""
        if not records:
            return
        with self._lock:
            room = max(self.memory_rows - len(self._queue) - len(self._inflight), 0)
            self._queue.extend(dict(r) for r in records[:room])
            overflow = records[room:]
            if overflow:
                self._spill(overflow)
            self._wake.notify()

    @property
    def backlog(self) -> int:
        """Rows received but not yet stored: queued, in the batch being written, and spilled to disk."""
        with self._lock:
            return len(self._queue) + len(self._inflight) + self._spilled_rows

    @property
    def spilled_rows(self) -> int:
        with self._lock:
            return self._spilled_rows

    # --- lifecycle ---

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what can be written within `timeout`, spill the rest for the next start."""
        self.wait_empty(timeout)
        with self._lock:
            self._stopping = True
            self._wake.notify()
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=max(self.retry_max, 1.0) + 15.0)
        with self._lock:
            leftover = [*self._inflight, *self._queue]
            self._inflight = []
            self._queue.clear()
            if leftover:
                self._spill(leftover, sync=True)
                log.warning("store_rows_spilled_at_shutdown", rows=len(leftover))

    def wait_empty(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.backlog == 0:
                return True
            time.sleep(0.05)
        return self.backlog == 0

    # --- writer thread ---

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
            try:
                if not self.schema_ready:
                    upgrade(self.engine)
                    self.schema_ready = True
                    self._succeeded()
                    log.info("store_schema_ready")
                if self._replay_one():
                    self._succeeded()
                    continue
                if self._write_queue():
                    self._succeeded()
            except Exception as error:
                self._failed(error)

    def _succeeded(self) -> None:
        if not self.healthy:
            log.info("store_available")
        self.healthy = True
        self._backoff = 0.0

    def _failed(self, error: BaseException) -> None:
        self.stats.failures += 1
        if self.healthy or self._backoff == 0.0:
            log.warning(
                "store_unavailable", error=type(error).__name__, detail=str(error).splitlines()[0][:200]
            )
        self.healthy = False
        self._backoff = min(max(self._backoff * 2, 0.25), self.retry_max)
        # Not the queue's condition: new rows must not cut the back-off short while the database is down.
        self._stop_event.wait(timeout=self._backoff)

    def _write_queue(self) -> bool:
        """Write one batch from memory; False when there was nothing to write."""
        with self._lock:
            if not self._inflight:
                if len(self._queue) < self.batch_rows and not self._stopping:
                    self._wake.wait(timeout=self.flush_seconds)
                count = min(len(self._queue), self.batch_rows)
                self._inflight = [self._queue.popleft() for _ in range(count)]
            batch = list(self._inflight)
        if not batch:
            return False
        self._write(batch)
        with self._lock:
            self._inflight = []
        return True

    def _write(self, batch: list[dict[str, Any]]) -> None:
        try:
            with self.engine.begin() as connection:
                inserted = insert_predictions(connection, batch)
        except Exception as error:
            if _is_transient(error):
                raise
            inserted = self._write_one_by_one(batch, error)
        self.stats.inserted += inserted
        self.stats.duplicates += len(batch) - inserted
        if self._on_batch is not None:
            self._on_batch(inserted, len(batch) - inserted)

    def _write_one_by_one(self, batch: list[dict[str, Any]], error: BaseException) -> int:
        """A batch the database refused: find the rows it refuses and set them aside."""
        log.error("store_batch_refused", error=type(error).__name__, rows=len(batch))
        inserted = 0
        for record in batch:
            try:
                with self.engine.begin() as connection:
                    inserted += insert_predictions(connection, [record])
            except Exception as row_error:
                if _is_transient(row_error):
                    raise
                self._reject(record, row_error)
        return inserted

    def _reject(self, record: Mapping[str, Any], error: BaseException) -> None:
        self.stats.rejected += 1
        line = json.dumps({"error": str(error).splitlines()[0][:300], "record": record}, default=str)
        with (self.spill_dir / REJECTED_FILE).open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    # --- spill files ---

    def _spill_files(self, *, include_current: bool = False) -> list[Path]:
        files = sorted(self.spill_dir.glob(REPLAY_GLOB))
        current = self.spill_dir / SPILL_FILE
        if include_current and current.exists():
            files.append(current)
        return files

    def _spill(self, records: Sequence[Mapping[str, Any]], *, sync: bool = False) -> None:
        """Append rows to the spill file (caller holds the lock). The receive path does not fsync: the
        rows it would protect against a machine crash are no safer in the memory queue either; shutdown
        does."""
        with (self.spill_dir / SPILL_FILE).open("a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record, default=str) + "\n" for record in records)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        self._spilled_rows += len(records)
        self.stats.spilled += len(records)

    def _replay_one(self) -> bool:
        """Write one spill file to the database and delete it; False when there is none."""
        with self._lock:
            current = self.spill_dir / SPILL_FILE
            if current.exists():
                current.rename(self.spill_dir / f"replay-{time.time_ns()}.jsonl")
            files = self._spill_files()
        if not files:
            return False
        path = files[0]
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for start in range(0, len(rows), self.batch_rows):
            self._write(rows[start : start + self.batch_rows])
        path.unlink()
        with self._lock:
            self._spilled_rows = max(self._spilled_rows - len(rows), 0)
        self.stats.replayed += len(rows)
        log.info("store_spill_replayed", rows=len(rows), file=path.name)
        return True


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())
