"""Writing logged predictions to the store off the receive path, without losing or duplicating any.

The receiving handler only appends rows, serialised to JSON lines at once, to an in-memory queue bounded
in rows and in bytes (`submit`); one writer thread drains it in batches. When the database is unreachable
the thread backs off and retries, the queue fills, and rows past its bound go to the spill directory on
disk instead (`store.spill`, bounded in bytes too: rows past that bound are dropped and counted, which
the `ChurnPredictionsDropped` alert watches). Once the database answers again the spill files are
replayed a line at a time, then the queue. Every insert skips rows whose (event_id, row_index) is already
stored, so a batch retried after a commit whose answer was lost, or a spill file replayed twice, is stored
once. Rows the database refuses for what they are (not for being unreachable) go to `rejected.jsonl` so
that one bad row cannot block the queue; a spill line that is not a row (a torn write) is skipped and
counted. On shutdown whatever could not be written is spilled, and the next start replays it.

A library queue (Celery, a broker) would add a service to run; the work here is one thread and a file.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import structlog
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from churn_monitoring.store.database import insert_predictions, upgrade
from churn_monitoring.store.spill import REJECTED_FILE, SpillDirectory, read_lines

log = structlog.get_logger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
    ConnectionError,
    OSError,
)
DROP_REASONS = ("spill_full", "rejected_spill_full", "corrupt_spill_line")


@dataclass
class WriterStats:
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    spilled: int = 0
    replayed: int = 0
    failures: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, TRANSIENT_ERRORS)


def encode(record: Mapping[str, Any]) -> bytes:
    """A row as one JSON line, as the queue and the spill files hold it."""
    return orjson.dumps(record, default=str) + b"\n"


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
        memory_bytes: int = 32 << 20,
        spill_max_bytes: int = 512 << 20,
        retry_max_seconds: float = 5.0,
        migrate: bool = True,
        on_batch: Callable[[int, int], None] | None = None,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.spill_dir = spill_dir
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.memory_rows = memory_rows
        self.memory_bytes = memory_bytes
        self.retry_max = retry_max_seconds
        self.stats = WriterStats()
        self.healthy = False
        self.schema_ready = not migrate
        self._on_batch = on_batch
        self._on_drop = on_drop
        self._queue: deque[bytes] = deque()
        self._inflight: list[bytes] = []
        self._held_bytes = 0  # of the queue and the batch in flight
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff = 0.0
        self._spill = SpillDirectory(spill_dir, spill_max_bytes)
        self._replay_at: tuple[Path, int] | None = None  # file being replayed and the offset reached

    # --- receive side (event loop) ---

    def submit(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Queue rows for writing; never waits for the database. Past the memory bound rows are spilled."""
        if not records:
            return
        lines = [encode(record) for record in records]
        with self._lock:
            taken = 0
            rows_room = self.memory_rows - len(self._queue) - len(self._inflight)
            while taken < len(lines) and taken < rows_room:
                if self._held_bytes + len(lines[taken]) > self.memory_bytes:
                    break
                self._held_bytes += len(lines[taken])
                taken += 1
            self._queue.extend(lines[:taken])
            if taken < len(lines):
                self._spill_lines(lines[taken:])
            self._wake.notify()

    @property
    def backlog(self) -> int:
        """Rows received but not yet stored: queued, in the batch being written, and spilled to disk."""
        with self._lock:
            return len(self._queue) + len(self._inflight) + self._spill.rows

    @property
    def spilled_rows(self) -> int:
        with self._lock:
            return self._spill.rows

    @property
    def spill_bytes(self) -> int:
        with self._lock:
            return self._spill.bytes

    @property
    def memory_bytes_held(self) -> int:
        with self._lock:
            return self._held_bytes

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
            self._held_bytes = 0
            if leftover:
                self._spill_lines(leftover, sync=True)
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
                self._work_once()
            except Exception as error:
                self._failed(error)

    def _work_once(self) -> None:
        if not self.schema_ready:
            upgrade(self.engine)
            self.schema_ready = True
            self._succeeded()
            log.info("store_schema_ready")
        if self._replay_one() or self._write_queue():
            self._succeeded()

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
        self._write([orjson.loads(line) for line in batch])
        with self._lock:
            self._inflight = []
            self._held_bytes -= sum(len(line) for line in batch)
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
        line = encode({"error": str(error).splitlines()[0][:300], "record": record})
        with self._lock:
            if not self._spill.append([line], name=REJECTED_FILE):
                self._dropped("rejected_spill_full", 1)

    # --- spill files ---

    def _spill_lines(self, lines: Sequence[bytes], *, sync: bool = False) -> None:
        """Append rows to the spill file (caller holds the lock); rows past its bound are dropped."""
        written = self._spill.append(lines, sync=sync)
        self.stats.spilled += written
        if written < len(lines):
            self._dropped("spill_full", len(lines) - written)

    def _dropped(self, reason: str, rows: int) -> None:
        self.stats.dropped[reason] += rows
        log.error("store_rows_dropped", reason=reason, rows=rows, spill_bytes=self._spill.bytes)
        if self._on_drop is not None:
            self._on_drop(reason, rows)

    def _replay_one(self) -> bool:
        """Replay one spill file to the database, a batch at a time, and delete it; False when there is
        none. A failure mid-file propagates (the database went away) and the next call resumes at the
        last batch written."""
        with self._lock:
            path = self._replay_at[0] if self._replay_at else self._spill.next_replay()
        if path is None:
            return False
        offset = self._replay_at[1] if self._replay_at and self._replay_at[0] == path else 0
        replayed = 0
        batch: list[dict[str, Any]] = []
        for line in read_lines(path, offset):
            record = self._decode(line.data)
            if record is not None:
                batch.append(record)
            if len(batch) >= self.batch_rows:
                replayed += self._replay_batch(batch, path, line.end)
                batch = []
        replayed += self._replay_batch(batch, path, None)
        with self._lock:
            self._spill.finished(path)
            self._replay_at = None
        log.info("store_spill_replayed", rows=replayed, file=path.name)
        return True

    def _replay_batch(self, batch: list[dict[str, Any]], path: Path, end: int | None) -> int:
        if batch:
            self._write(batch)
        with self._lock:
            self._spill.rows = max(self._spill.rows - len(batch), 0)
            self._replay_at = (path, end) if end is not None else None
        self.stats.replayed += len(batch)
        return len(batch)

    def _decode(self, data: bytes | None) -> dict[str, Any] | None:
        try:
            record = orjson.loads(data) if data is not None else None
        except orjson.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            return record
        with self._lock:
            self._spill.rows = max(self._spill.rows - 1, 0)
            self._dropped("corrupt_spill_line", 1)
        return None
