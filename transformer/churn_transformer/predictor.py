"""The hop to the predictor (MLServer's sklearn runtime, Open Inference Protocol v2).

Two clients with one interface: gRPC v2 (default) sends the encoded rows as one raw little-endian FP64
tensor and reads `predict_proba` back the same way, so no float goes through JSON; REST v2 is kept for
predictors reachable over HTTP only. Every call names the model version the transformer's artefact
carries: a predictor serving any other version answers "not found", which the transformer turns into a
503 instead of an answer from the wrong model.

The clients talk to the predictor directly (grpc.aio / httpx) rather than through kserve.Model.predict:
that path would build an InferRequest per call and, over REST, JSON-encode 47 floats per customer.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from churn_core.contract import FloatArray

PROBA_OUTPUT = "predict_proba"
INPUT_NAME = "input-0"


class PredictorUnavailableError(RuntimeError):
    """The predictor could not answer (down, timed out, wrong model version): HTTP 503."""


class PredictorVersionMismatchError(PredictorUnavailableError):
    """The predictor serves the model under a version other than the transformer's artefact."""


@dataclass(frozen=True)
class PredictorTarget:
    host: str  # host:port
    model_name: str
    model_version: str
    timeout_s: float


class PredictorClient(Protocol):
    target: PredictorTarget

    async def predict_proba(self, rows: FloatArray) -> FloatArray: ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...


def _check_proba(values: FloatArray, rows: int) -> FloatArray:
    if values.shape != (rows, 2):
        raise PredictorUnavailableError(
            f"predictor returned predict_proba of shape {values.shape}, expected ({rows}, 2)"
        )
    return np.ascontiguousarray(values[:, 1])


def grpc_address(host: str) -> str:
    """KServe passes `--predictor_host` without a port (Knative and raw Services listen on 80); gRPC would
    default to 443. Same rule as KServe's own InferenceGRPCClient."""
    return host if ":" in host.rsplit("]", 1)[-1] else f"{host}:80"


class GrpcPredictor:
    """gRPC v2 client on one long-lived HTTP/2 channel (created lazily in the worker's event loop)."""

    def __init__(self, target: PredictorTarget) -> None:
        self.target = target
        self._channel: Any = None
        self._stub: Any = None

    def _connect(self) -> Any:
        if self._stub is None:
            import grpc
            from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as services

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
            self._stub = services.GRPCInferenceServiceStub(self._channel)
        return self._stub

    async def predict_proba(self, rows: FloatArray) -> FloatArray:
        import grpc
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

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
            raise PredictorVersionMismatchError(
                f"predictor answered with model version {response.model_version}, "
                f"the transformer serves {self.target.model_version}"
            )
        for index, output in enumerate(response.outputs):
            if output.name == PROBA_OUTPUT:
                if response.raw_output_contents:
                    values = np.frombuffer(response.raw_output_contents[index], dtype="<f8")
                else:
                    values = np.asarray(output.contents.fp64_contents, dtype=np.float64)
                return _check_proba(values.reshape(tuple(output.shape)), len(rows))
        raise PredictorUnavailableError("predictor response has no predict_proba output")

    async def ready(self) -> bool:
        import grpc
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

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

    details = error.details() or ""
    if "not found" in details.lower() and target.model_version in details:
        return PredictorVersionMismatchError(
            f"predictor at {target.host} does not serve {target.model_name} version {target.model_version}"
        )
    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return PredictorUnavailableError(
            f"predictor at {target.host} did not answer within {target.timeout_s:g} s"
        )
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        return PredictorUnavailableError(f"predictor at {target.host} is unavailable")
    return PredictorUnavailableError(f"predictor at {target.host} failed: {error.code().name}")


class RestPredictor:
    """REST v2 client with a keep-alive connection pool."""

    def __init__(self, target: PredictorTarget) -> None:
        self.target = target
        self._client: Any = None
        base = f"/v2/models/{target.model_name}"
        if target.model_version:
            base += f"/versions/{target.model_version}"
        self._infer_path = f"{base}/infer"
        self._ready_path = f"{base}/ready"

    def _connect(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                base_url=f"http://{self.target.host}",
                timeout=self.target.timeout_s,
                limits=httpx.Limits(max_keepalive_connections=8),
            )
        return self._client

    async def predict_proba(self, rows: FloatArray) -> FloatArray:
        import httpx
        import orjson

        body = orjson.dumps(
            {
                "inputs": [
                    {"name": INPUT_NAME, "datatype": "FP64", "shape": list(rows.shape), "data": rows.ravel()}
                ],
                "outputs": [{"name": PROBA_OUTPUT}],
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        try:
            response = await self._connect().post(
                self._infer_path, content=body, headers={"content-type": "application/json"}
            )
        except httpx.TimeoutException:
            raise PredictorUnavailableError(
                f"predictor at {self.target.host} did not answer within {self.target.timeout_s:g} s"
            ) from None
        except httpx.HTTPError as error:
            raise PredictorUnavailableError(
                f"predictor at {self.target.host} is unavailable ({error})"
            ) from None
        if response.status_code == 404:
            raise PredictorVersionMismatchError(
                f"predictor at {self.target.host} does not serve {self.target.model_name} "
                f"version {self.target.model_version}"
            )
        if response.status_code != 200:
            raise PredictorUnavailableError(
                f"predictor at {self.target.host} answered HTTP {response.status_code}"
            )
        document = orjson.loads(response.content)
        for output in document.get("outputs", []):
            if output.get("name") == PROBA_OUTPUT:
                values = np.asarray(output["data"], dtype=np.float64).reshape(output["shape"])
                return _check_proba(values, len(rows))
        raise PredictorUnavailableError("predictor response has no predict_proba output")

    async def ready(self) -> bool:
        import httpx

        try:
            response = await self._connect().get(self._ready_path, timeout=min(self.target.timeout_s, 2.0))
        except httpx.HTTPError:
            return False
        return bool(response.status_code == 200)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def make_client(protocol: str, target: PredictorTarget) -> PredictorClient:
    if protocol == "grpc-v2":
        return GrpcPredictor(target)
    return RestPredictor(target)


# ---- start-up check (synchronous: it runs before the server's event loop exists) -------------------------


class StartupError(RuntimeError):
    """The transformer must not start: the message says why (printed, exit code 2)."""


def wait_for_predictor(protocol: str, target: PredictorTarget, timeout_s: float) -> None:
    """Block until the predictor serves the artefact's model version; refuse a version mismatch.

    The predictor may still be loading when the transformer starts (collocated containers start together), so
    "not reachable" and "model not loaded yet" are waited out. A predictor that has the model loaded but
    not at our version is a mismatch and fails at once.
    """

    async def probe() -> tuple[bool, bool]:
        versioned = make_client(protocol, target)
        unversioned = make_client(protocol, PredictorTarget(target.host, target.model_name, "", 2.0))
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
                f"predictor at {target.host} ({protocol}) did not serve model {target.model_name!r} "
                f"version {target.model_version!r} within {timeout_s:g} s; refusing to start"
            )
        time.sleep(0.5)
