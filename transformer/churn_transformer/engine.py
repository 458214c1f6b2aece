"""Scoring validated customers: encode, one predictor call, reason codes, decisions — per micro-batch.

Concurrent requests are scored together. While a predictor call is in flight, arriving requests queue; when
a call slot frees, everything queued (up to `batch_max_rows` customers) goes in one call, and encoding,
reason codes and decisions run once over the combined batch. At low load a request goes alone and waits
for nothing; under load the predictor's fixed cost per call (≈2 ms of MLServer plus ≈1.5 ms of
scikit-learn validation for our ensemble, whatever the rows) and numpy's per-operation overhead are shared
by every request in the call. Every step is row-wise, so a customer's answer does not depend on which
other customers share the call (the equality tests send batches of 1,000 and single customers).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from churn_core.contract import CustomerBatch, Encoder, FeatureContract, FloatArray
from churn_core.decision import DecisionMaker
from churn_core.explain import Explainer
from churn_transformer.predictor import PredictorClient


class FactorFormatter:
    """Top factors as answer dicts — what `Explainer.factors` + `Factor.as_dict` give, built per rank and
    field with numpy rather than one object per factor (1,000 customers: 2.9 ms instead of 3.7 ms), and
    with integer fields as integers (tenure 1, not 1.0). A test holds it equal to the explainer's."""

    def __init__(self, contract: FeatureContract) -> None:
        self.names = list(contract.field_names)
        category_column = {f.name: i for i, f in enumerate(contract.category_fields)}
        number_column = {f.name: i for i, f in enumerate(contract.number_fields)}
        self._sources: list[tuple[str, int, npt.NDArray[np.object_] | None, bool]] = []
        for spec in contract.fields:
            if spec.name in category_column:
                values = np.asarray(spec.values, dtype=object) if spec.kind == "category" else None
                self._sources.append(("category", category_column[spec.name], values, False))
            else:
                integer = getattr(spec, "kind", "") == "integer"
                self._sources.append(("number", number_column[spec.name], None, integer))

    def format(
        self, batch: CustomerBatch, contributions: FloatArray, top: npt.NDArray[np.int64]
    ) -> list[list[dict[str, Any]]]:
        ranks = top.shape[1]
        values = np.empty(top.shape, dtype=object)
        for rank in range(ranks):
            column = top[:, rank]
            for field in np.unique(column).tolist():
                kind, source, table, integer = self._sources[field]
                hit = column == field
                if kind == "category":
                    assert table is not None
                    values[hit, rank] = table[batch.categories[hit, source]]
                else:
                    numbers = batch.numbers[hit, source]
                    values[hit, rank] = numbers.astype(np.int64).tolist() if integer else numbers.tolist()
        chosen = np.take_along_axis(contributions, top, axis=1).tolist()
        names = [[self.names[i] for i in row] for row in top.tolist()]
        return [
            [
                {"feature": name, "value": value, "contribution": round(contribution, 4)}
                for name, value, contribution in zip(row_names, row_values, row_contributions, strict=True)
            ]
            for row_names, row_values, row_contributions in zip(names, values.tolist(), chosen, strict=True)
        ]


@dataclass(frozen=True)
class Scored:
    """The answer for the customers of one request, in request order."""

    probabilities: FloatArray
    predictions: npt.NDArray[np.bool_]
    risk_levels: list[str]
    actions: list[str]
    factors: list[list[dict[str, Any]]]

    def __len__(self) -> int:
        return len(self.probabilities)


@dataclass
class _Job:
    batch: CustomerBatch
    future: asyncio.Future[Scored]


class Scorer:
    """Per worker process: owns the predictor client and the micro-batching loop (started lazily)."""

    def __init__(
        self,
        contract: FeatureContract,
        client: PredictorClient,
        *,
        max_rows: int,
        wait_s: float,
        concurrency: int,
    ) -> None:
        self.contract = contract
        self.encoder = Encoder(contract)
        self.explainer = Explainer(contract)
        self.decisions = DecisionMaker(contract)
        self.formatter = FactorFormatter(contract)
        self.client = client
        self.max_rows = max_rows
        self.wait_s = wait_s
        self.concurrency = concurrency
        self._queue: deque[_Job] = deque()
        self._wakeup: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()

    def score_now(self, batch: CustomerBatch, probabilities: FloatArray) -> Scored:
        """Reason codes and decisions for customers whose probabilities are known (no predictor call)."""
        contributions = self.explainer.contributions(batch)
        top = self.explainer.top_indices(contributions)
        decided = self.decisions.decide(batch, probabilities, contributions, top)
        return Scored(
            probabilities=probabilities,
            predictions=decided.predictions,
            risk_levels=[str(level) for level in decided.risk_levels],
            actions=[str(action) for action in decided.actions],
            factors=self.formatter.format(batch, contributions, top),
        )

    async def score(self, batch: CustomerBatch) -> Scored:
        if self._loop_task is None or self._loop_task.done():
            self._wakeup = asyncio.Event()
            self._slots = asyncio.Semaphore(self.concurrency)
            self._loop_task = asyncio.create_task(self._dispatch(), name="churn-micro-batcher")
        assert self._wakeup is not None
        future: asyncio.Future[Scored] = asyncio.get_running_loop().create_future()
        self._queue.append(_Job(batch, future))
        self._wakeup.set()
        return await future

    async def _dispatch(self) -> None:
        assert self._wakeup is not None
        assert self._slots is not None
        while True:
            await self._wakeup.wait()
            await self._slots.acquire()
            if self.wait_s > 0 and sum(len(job.batch) for job in self._queue) < self.max_rows:
                await asyncio.sleep(self.wait_s)
            jobs = self._take()
            if not self._queue:
                self._wakeup.clear()
            if not jobs:
                self._slots.release()
                continue
            task = asyncio.create_task(self._call(jobs))
            self._calls.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._calls.discard(task)
        assert self._slots is not None
        self._slots.release()

    def _take(self) -> list[_Job]:
        jobs: list[_Job] = []
        rows = 0
        while self._queue:
            job = self._queue[0]
            if job.future.done():  # the client went away while its request waited
                self._queue.popleft()
                continue
            if jobs and rows + len(job.batch) > self.max_rows:
                break
            jobs.append(self._queue.popleft())
            rows += len(job.batch)
        return jobs

    async def _call(self, jobs: list[_Job]) -> None:
        try:
            if len(jobs) == 1:
                batch = jobs[0].batch
            else:
                batch = CustomerBatch(
                    categories=np.concatenate([job.batch.categories for job in jobs]),
                    numbers=np.concatenate([job.batch.numbers for job in jobs]),
                )
            probabilities = await self.client.predict_proba(self.encoder.encode(batch))
            scored = self.score_now(batch, probabilities)
        except Exception as error:
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        start = 0
        for job in jobs:
            end = start + len(job.batch)
            if not job.future.done():
                job.future.set_result(
                    Scored(
                        probabilities=scored.probabilities[start:end],
                        predictions=scored.predictions[start:end],
                        risk_levels=scored.risk_levels[start:end],
                        actions=scored.actions[start:end],
                        factors=scored.factors[start:end],
                    )
                )
            start = end

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
        await self.client.close()
