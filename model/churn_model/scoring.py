"""`churnops score`: batch scoring of a customer CSV, streamed chunk by chunk with flat memory.

Each chunk goes through the same contract, encoder, reason codes and decision rules as the transformer,
so a customer gets the same probability, prediction, risk level and action from either path. Columns are
validated and encoded with vectorised pyarrow/numpy kernels; the model predicts one chunk at a time.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Full, Queue

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from threadpoolctl import threadpool_limits

from churn_core.artefact import load_model
from churn_core.contract import Encoder, FeatureContract
from churn_core.data import CHUNK_BYTES, CustomerChunk, CustomerReader
from churn_core.decision import DecisionMaker, Decisions
from churn_core.explain import Explainer

OUTPUT_COLUMNS = ("customer_id", "churn_probability", "churn_prediction", "risk_level", "recommended_action")
OUTPUT_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("churn_probability", pa.float64()),
        ("churn_prediction", pa.bool_()),
        ("risk_level", pa.string()),
        ("recommended_action", pa.string()),
    ]
)


@dataclass(frozen=True)
class ScoreSummary:
    rows: int
    seconds: float
    predicted_churners: int
    risk_counts: dict[str, int]
    model_version: str

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def _texts(indices: np.ndarray, table: np.ndarray) -> pa.Array:
    """Strings by index into a small table, built by Arrow (no per-row Python objects)."""
    dictionary = pa.DictionaryArray.from_arrays(pa.array(indices, type=pa.int32()), pa.array(table.tolist()))
    return dictionary.cast(pa.string())


def _put_unless_stopped(
    queue: Queue[CustomerChunk | BaseException | None], item: CustomerChunk, stopped: threading.Event
) -> bool:
    """Put `item`, waiting for room, unless the consumer stops first (then False)."""
    while not stopped.is_set():
        try:
            queue.put(item, timeout=0.1)
        except Full:
            continue
        return True
    return False


def _read_ahead(chunks: Iterator[CustomerChunk], depth: int = 2) -> Iterator[CustomerChunk]:
    """Parse and validate the next chunks in a background thread while the current one is scored.

    pyarrow's CSV parsing and compute kernels release the GIL, so reading, predicting (one OpenMP
    thread) and writing (another background thread) overlap on the machine's cores.
    """
    queue: Queue[CustomerChunk | BaseException | None] = Queue(maxsize=depth)
    stopped = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                if not _put_unless_stopped(queue, chunk, stopped):
                    return
        except BaseException as error:  # handed to the consumer, which re-raises it
            queue.put(error)
        else:
            queue.put(None)

    thread = threading.Thread(target=produce, name="score-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = queue.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stopped.set()
        thread.join()


class BatchScorer:
    """Scores validated chunks with one loaded model artefact."""

    def __init__(self, artefact: Path) -> None:
        self.contract = FeatureContract.load(artefact)
        self.model = load_model(artefact)
        self.encoder = Encoder(self.contract)
        self.explainer = Explainer(self.contract)
        self.decisions = DecisionMaker(self.contract)

    def _score_chunk(self, chunk: CustomerChunk) -> tuple[pa.Table, Decisions]:
        probabilities = self.model.predict_proba(self.encoder.encode(chunk.batch))[:, 1]
        contributions = self.explainer.contributions(chunk.batch)
        top = self.explainer.top_indices(contributions)
        decided = self.decisions.decide(chunk.batch, probabilities, contributions, top)
        table = pa.table(
            [
                chunk.ids,
                pa.array(probabilities, type=pa.float64()),
                pa.array(decided.predictions, type=pa.bool_()),
                _texts(decided.bands, decided.level_texts),
                _texts(decided.action_codes, decided.action_texts),
            ],
            schema=OUTPUT_SCHEMA,
        )
        return table, decided

    def score_file(
        self,
        source: Path,
        destination: Path,
        block_size: int = CHUNK_BYTES,
        on_chunk: Callable[[int], None] | None = None,
    ) -> ScoreSummary:
        started = time.perf_counter()
        risk_counts = {band.level: 0 for band in self.contract.risk_bands}
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(destination.name + ".partial")
        try:
            rows, churners = self._score_into(source, partial, block_size, risk_counts, on_chunk)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        # Only a completely scored file takes the destination's name.
        partial.replace(destination)
        return ScoreSummary(
            rows=rows,
            seconds=time.perf_counter() - started,
            predicted_churners=churners,
            risk_counts=risk_counts,
            model_version=self.contract.model.version,
        )

    def _score_into(
        self,
        source: Path,
        partial: Path,
        block_size: int,
        risk_counts: dict[str, int],
        on_chunk: Callable[[int], None] | None,
    ) -> tuple[int, int]:
        reader = CustomerReader(self.contract, require_target=False)
        rows = 0
        churners = 0
        with (
            pacsv.CSVWriter(partial, OUTPUT_SCHEMA) as writer,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-writer") as writing,
            threadpool_limits(1),
        ):
            pending: deque[Future[None]] = deque()
            for chunk in _read_ahead(reader.chunks(source, block_size=block_size)):
                table, decided = self._score_chunk(chunk)
                pending.append(writing.submit(writer.write_table, table))
                while len(pending) > 2:
                    pending.popleft().result()
                rows += len(chunk.batch)
                churners += int(decided.predictions.sum())
                counts = np.bincount(decided.bands, minlength=len(decided.level_texts))
                for level, count in zip(decided.level_texts, counts, strict=True):
                    risk_counts[str(level)] += int(count)
                if on_chunk is not None:
                    on_chunk(len(chunk.batch))
            while pending:
                pending.popleft().result()
        return rows, churners
