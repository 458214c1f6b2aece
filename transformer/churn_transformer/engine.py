"""Scoring validated customers: encode, one predictor call, reason codes, decisions — per micro-batch.

Concurrent requests are scored together. While a predictor call is in flight, arriving requests queue; when
a call slot frees, everything queued (up to `batch_max_rows` customers) goes in one call, and encoding,
reason codes and decisions run once over the combined batch. At low load a request goes alone and waits
for nothing; under load the predictor's fixed cost per call (≈2 ms of MLServer plus ≈1.5 ms of
scikit-learn validation for our ensemble, whatever the rows) and numpy's per-operation overhead are shared
by every request in the call. Every step is row-wise, so a customer's answer does not depend on which
other customers share the call (the equality tests send batches of 1,000 and single customers).

The predictor hop is here too: a gRPC v2 client (KServe's protos, see internals.py) that sends the encoded
rows as one raw little-endian FP64 tensor and reads `predict_proba` back the same way, so no float goes
through JSON. Every call names the model version of the transformer's artefact: a predictor serving any
other version answers "not found", which becomes a 503 instead of an answer from the wrong model. Errors
answered to clients never name the predictor's address (the log line does).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from churn_core.contract import CustomerBatch, Encoder, FeatureContract, FloatArray
from churn_core.decision import DecisionMaker
from churn_core.explain import Explainer
from churn_transformer.internals import pb, pb_services

# ---- the predictor hop: gRPC v2 ------------------------------------------------------------------------------

PROBA_OUTPUT = "predict_proba"
INPUT_NAME = "input-0"


class PredictorUnavailableError(RuntimeError):
    """The predictor could not answer (down, timed out, wrong model version): HTTP 503. The message is
    what the client reads (no address); `detail` is for the log line."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


class StartupError(RuntimeError):
    """The transformer must not start: the message says why (printed, exit code 2)."""


@dataclass(frozen=True)
class PredictorTarget:
    host: str  # host:port
    model_name: str
    model_version: str
    timeout_s: float


def grpc_address(host: str) -> str:
    """KServe passes `--predictor_host` without a port (Knative and raw Services listen on 80); gRPC would
    default to 443. Same rule as KServe's own InferenceGRPCClient."""
    return host if ":" in host.rsplit("]", 1)[-1] else f"{host}:80"


def _check_proba(values: FloatArray, rows: int) -> FloatArray:
    if values.shape != (rows, 2):
        raise PredictorUnavailableError(
            "the churn model answered in an unexpected shape",
            f"predictor returned predict_proba of shape {values.shape}, expected ({rows}, 2)",
        )
    return np.ascontiguousarray(values[:, 1])


class GrpcPredictor:
    """gRPC v2 client on one long-lived HTTP/2 channel (created lazily in the worker's event loop)."""

    def __init__(self, target: PredictorTarget) -> None:
        self.target = target
        self._channel: Any = None
        self._stub: Any = None

    def _connect(self) -> Any:
        if self._stub is None:
            import grpc

            self._channel = grpc.aio.insecure_channel(
                grpc_address(self.target.host),
                options=[
                    ("grpc.max_send_message_length", -1),
                    ("grpc.max_receive_message_length", -1),
                    ("grpc.enable_retries", 0),
                    ("grpc.keepalive_time_ms", 30_000),
                    # Reconnect soon after a predictor restart (gRPC's default backoff grows to 120 s).
                    ("grpc.initial_reconnect_backoff_ms", 200),
                    ("grpc.min_reconnect_backoff_ms", 200),
                    ("grpc.max_reconnect_backoff_ms", 2000),
                ],
            )
            self._stub = pb_services.GRPCInferenceServiceStub(self._channel)
        return self._stub

    async def predict_proba(self, rows: FloatArray) -> FloatArray:
        import grpc

        stub = self._connect()
        request = pb.ModelInferRequest(
            model_name=self.target.model_name,
            model_version=self.target.model_version,
            inputs=[
                pb.ModelInferRequest.InferInputTensor(name=INPUT_NAME, datatype="FP64", shape=rows.shape)
            ],
            outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=PROBA_OUTPUT)],
            raw_input_contents=[np.ascontiguousarray(rows, dtype="<f8").tobytes()],
        )
        try:
            response = await stub.ModelInfer(request, timeout=self.target.timeout_s)
        except grpc.aio.AioRpcError as error:
            raise _grpc_failure(error, self.target) from None
        if response.model_version and response.model_version != self.target.model_version:
            raise PredictorUnavailableError(
                "the churn model is being replaced; retry shortly",
                f"predictor answered with model version {response.model_version}, "
                f"the transformer serves {self.target.model_version}",
            )
        for index, output in enumerate(response.outputs):
            if output.name == PROBA_OUTPUT:
                if response.raw_output_contents:
                    values = np.frombuffer(response.raw_output_contents[index], dtype="<f8")
                else:
                    values = np.asarray(output.contents.fp64_contents, dtype=np.float64)
                return _check_proba(values.reshape(tuple(output.shape)), len(rows))
        raise PredictorUnavailableError(
            "the churn model answered without probabilities", "predictor response has no predict_proba output"
        )

    async def ready(self) -> bool:
        import grpc

        stub = self._connect()
        try:
            answer = await stub.ModelReady(
                pb.ModelReadyRequest(name=self.target.model_name, version=self.target.model_version),
                timeout=min(self.target.timeout_s, 2.0),
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(answer.ready)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None


def _grpc_failure(error: Any, target: PredictorTarget) -> PredictorUnavailableError:
    import grpc

    where = f"predictor at {target.host}"
    details = error.details() or ""
    if "not found" in details.lower() and target.model_version in details:
        return PredictorUnavailableError(
            "the churn model is being replaced; retry shortly",
            f"{where} does not serve {target.model_name} version {target.model_version}",
        )
    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return PredictorUnavailableError(
            f"the churn model did not answer within {target.timeout_s:g} s; retry shortly",
            f"{where} did not answer within {target.timeout_s:g} s",
        )
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        return PredictorUnavailableError(
            "the churn model is temporarily unavailable; retry shortly", f"{where} is unavailable"
        )
    return PredictorUnavailableError(
        "the churn model is temporarily unavailable; retry shortly", f"{where} failed: {error.code().name}"
    )


def wait_for_predictor(target: PredictorTarget, timeout_s: float) -> None:
    """Block until the predictor serves the artefact's model version; refuse a version mismatch.

    The predictor may still be loading when the transformer starts (collocated containers start together), so
    "not reachable" and "model not loaded yet" are waited out. A predictor that has the model loaded but
    not at our version is a mismatch and fails at once. Synchronous: runs before the server's event loop.
    """

    async def probe() -> tuple[bool, bool]:
        versioned = GrpcPredictor(target)
        unversioned = GrpcPredictor(PredictorTarget(target.host, target.model_name, "", 2.0))
        try:
            return await versioned.ready(), await unversioned.ready()
        finally:
            await versioned.close()
            await unversioned.close()

    deadline = time.monotonic() + timeout_s
    while True:
        ours, any_version = asyncio.run(probe())
        if ours:
            return
        if any_version:
            raise StartupError(
                f"model version mismatch: the predictor at {target.host} serves model "
                f"{target.model_name!r} but not version {target.model_version!r}, the version in the "
                "transformer's artefact. Both must load the same artefact (storageUri); refusing to start."
            )
        if time.monotonic() >= deadline:
            raise StartupError(
                f"predictor at {target.host} (grpc-v2) did not serve model {target.model_name!r} "
                f"version {target.model_version!r} within {timeout_s:g} s; refusing to start"
            )
        time.sleep(0.5)


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
        client: GrpcPredictor,
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
            self._fail(jobs, error)
            return
        except asyncio.CancelledError:
            # This call was cancelled (shutdown, a cancelled gRPC call): every request in it still gets
            # an answer, a 503, rather than waiting forever on its future.
            self._fail(jobs, PredictorUnavailableError("the churn model call was cancelled; retry shortly"))
            raise
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

    @staticmethod
    def _fail(jobs: list[_Job], error: BaseException) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(error)

    async def close(self) -> None:
        """Stop batching: calls in flight finish or fail, queued requests get a 503."""
        if self._loop_task is not None:
            self._loop_task.cancel()
        if self._calls:
            _, late = await asyncio.wait(set(self._calls), timeout=self.client.target.timeout_s)
            for call in late:  # its requests get a 503 (see _call)
                call.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self._fail(list(self._queue), PredictorUnavailableError("the transformer is shutting down; retry"))
        self._queue.clear()
        await self.client.close()
