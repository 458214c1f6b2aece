"""The transformer's HTTP server: one ASGI app, served by uvicorn, read top to bottom.

A v2 request's whole path: `TransformerApp.__call__` opens the request's record (telemetry.py) and routes
(Starlette's Router) to `v2_infer`, which finds the model (404 `unknown_model`), reads the body within
`max_body_bytes` (413 `payload_too_large`, before reading when Content-Length says so, else while
reading), decodes it (validation.py: depth before parsing, then v2 tensors), and calls the `kserve.Model`
(model.py: preprocess validates → predict checks the predictor and scores in a micro-batch (engine.py) →
postprocess). The answer is written as JSON; any exception becomes one error answer in `error_response`:
`churn_core.errors.error_body(code, message)`, never a stack trace, never the predictor's address. Then
`telemetry.finish_request` counts it, logs it and posts its payload-log events.

Routes: v1 `:predict` and v2 `/infer` (inference), `/v2/health/live`, `/v2/health/ready`,
`/v2/models/{name}[/ready]`, `/v1/models/{name}`, `/metrics` (every worker process's). No model
repository routes (`/v2/repository/...` is a 404 like any unknown path; a known path with the wrong
method is a 405). Shutdown (uvicorn, on SIGTERM): no new connections, requests in flight answered (up to
`drain_timeout_s`), then the micro-batcher and the payload logger's queue are flushed.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route, Router

from churn_core.errors import bounded, error_json, quoted
from churn_core.jsonshape import JsonLimits
from churn_core.logging import configure_logging
from churn_transformer import telemetry
from churn_transformer.engine import PredictorUnavailableError
from churn_transformer.internals import InferResponse
from churn_transformer.model import ChurnTransformer
from churn_transformer.settings import TransformerSettings
from churn_transformer.validation import InvalidRequestError, decode_json, decode_v2

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = "application/json"
log = structlog.get_logger("churn_transformer.server")
LIBRARY_LOGGERS = ("kserve", "kserve.trace", "uvicorn", "uvicorn.error", "uvicorn.access")


class Refusal(Exception):  # noqa: N818 - not our error: the client gets its 4xx
    """A request refused for what it is (not its customers): `status` and stable `code`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def inference_protocol(scope: Scope) -> str | None:
    """The `protocol` label of an inference request, None for anything else (health, readiness, model
    metadata, /metrics), which passes uncounted and unlogged. A :predict or /infer path outside /v1/ or
    /v2/ is "other" (it gets a 404): the label stays a closed set whatever the path."""
    if scope["method"] != "POST":
        return None
    path: str = scope["path"]
    if path.endswith(":predict"):
        return "v1" if path.startswith("/v1/") else "other"
    if path.endswith("/infer"):
        return "v2" if path.startswith("/v2/") else "other"
    return None


def json_response(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type=JSON)


def error_response(error: Exception, record: telemetry.RequestRecord | None) -> Response:
    """The one error answer of every failure: `{"error": message, "code": code}`."""
    headers: dict[str, str] = {}
    if isinstance(error, (InvalidRequestError, Refusal)):
        status, code, message = error.status, error.code, error.message
    elif isinstance(error, HTTPException) and error.status_code == 405:
        status, code, message = 405, "method_not_allowed", "this path does not take that method"
        headers = dict(error.headers or {})
    elif isinstance(error, HTTPException):
        status, code, message = 404, "not_found", "no such path"
    elif isinstance(error, PredictorUnavailableError):
        log.warning("predictor unavailable", error=error.detail)
        status, code, message = 503, "predictor_unavailable", str(error)
    elif isinstance(error, ClientDisconnect):
        status, code, message = 400, "client_disconnected", "the client went away while sending the body"
    else:
        log.error("unhandled error", exc_info=error)
        request_id = record.request_id if record is not None else ""
        status, code, message = 500, "internal_error", f"internal error; request id {request_id}".rstrip()
    if record is not None:  # the request's log line: as bounded as the answer
        record.code, record.error = code, bounded(message)
    return Response(error_json(code, message), status_code=status, media_type=JSON, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes: before reading when Content-Length says so, else as
    soon as the bytes read pass it (a chunked body is never held beyond the cap)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Refusal(413, "payload_too_large", f"the body has {int(declared)} bytes; at most {limit}")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise Refusal(413, "payload_too_large", f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    record = telemetry.current()
    if record is not None:  # read whole: the payload logger may post it
        record.body = body
        record.content_type = request.headers.get("content-type", "")
    return body


def encode_v2(response: InferResponse) -> dict[str, Any]:
    return {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "outputs": [
            {"name": o.name, "shape": o.shape, "datatype": o.datatype, "data": o.data}
            for o in response.outputs
        ],
    }


class TransformerApp:
    """The ASGI app: routes, the per-request record, error answers, start and drain."""

    def __init__(self, model: ChurnTransformer, settings: TransformerSettings) -> None:
        self.model = model
        self.settings = settings
        self.json_limits = JsonLimits(settings.max_json_depth, settings.max_json_values)
        self.events = payload_logger(settings)
        self.router = Router(
            routes=[
                Route("/v2/models/{model_name}/infer", self.v2_infer, methods=["POST"]),
                Route("/v1/models/{model_name}:predict", self.v1_predict, methods=["POST"]),
                Route("/v2/health/live", self.live, methods=["GET"]),
                Route("/v2/health/ready", self.server_ready, methods=["GET"]),
                Route("/v2/models/{model_name}/ready", self.model_ready, methods=["GET"]),
                Route("/v2/models/{model_name}", self.model_metadata, methods=["GET"]),
                Route("/v1/models/{model_name}", self.model_ready, methods=["GET"]),
                Route("/metrics", self.metrics, methods=["GET"]),
            ],
            redirect_slashes=False,  # `/infer/` is an unknown path (404), not a redirect
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        scope["app"] = self  # Starlette's router then raises HTTPException for 404 / 405
        request_id = telemetry.request_id_from(scope["headers"])
        protocol = inference_protocol(scope)
        record = telemetry.RequestRecord(request_id, scope["path"], protocol) if protocol else None
        token = telemetry.CURRENT.set(record)
        status = 500
        answer: list[bytes] = []

        async def send_answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                extra = [(b"x-request-id", request_id.encode("latin-1"))]
                if record is not None and self.events is not None:  # the payload events' ce-id
                    extra.append((b"x-event-id", record.event_id.encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            elif record is not None and self.events is not None:
                answer.append(message.get("body", b""))
            await send(message)

        try:
            try:
                await self.router(scope, receive, send_answer)
            except Exception as error:
                await error_response(error, record)(scope, receive, send_answer)
        finally:
            telemetry.CURRENT.reset(token)
            if record is not None:
                telemetry.finish_request(record, status, b"".join(answer), self.events)

    # ---- inference -------------------------------------------------------------------------------------

    def _model(self, request: Request) -> ChurnTransformer:
        name = request.path_params["model_name"]
        if name != self.model.name:
            raise Refusal(
                404,
                "unknown_model",
                f"model {quoted(name)} is not served here; the model is {self.model.name!r}",
            )
        return self.model

    async def v2_infer(self, request: Request) -> Response:
        model = self._model(request)
        body = await read_body(request, self.settings.max_body_bytes)
        v2 = decode_v2(body, request.headers, model.name, self.json_limits)
        answer, _ = await model(v2, headers={"x-request-id": request.headers.get("x-request-id", "")})
        return Response(orjson.dumps(encode_v2(answer)), media_type=JSON)

    async def v1_predict(self, request: Request) -> Response:
        model = self._model(request)
        body = await read_body(request, self.settings.max_body_bytes)
        document = decode_json(body, self.json_limits)
        answer, _ = await model(document, headers={"x-request-id": request.headers.get("x-request-id", "")})
        return Response(orjson.dumps(answer), media_type=JSON)

    # ---- health, metadata, metrics ----------------------------------------------------------------------

    async def live(self, _: Request) -> Response:
        return json_response({"live": True})

    async def server_ready(self, _: Request) -> Response:
        ready = await self.model.healthy()
        return json_response({"ready": ready}, 200 if ready else 503)

    async def model_ready(self, request: Request) -> Response:
        model = self._model(request)
        ready = await model.healthy()
        return json_response({"name": model.name, "ready": ready}, 200 if ready else 503)

    async def model_metadata(self, request: Request) -> Response:
        model = self._model(request)
        return json_response(
            {
                "name": model.name,
                "versions": [model.version],
                "platform": "",
                "inputs": model.get_input_types(),
                "outputs": model.get_output_types(),
            }
        )

    async def metrics(self, request: Request) -> Response:
        body, content_type = telemetry.render_metrics(request.headers.get("accept"))
        return Response(body, headers={"content-type": content_type})

    # ---- start and drain ----------------------------------------------------------------------------------

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.events is not None:
                    self.events.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # uvicorn has answered the requests in flight (or given up after drain_timeout_s).
                await self.model.scorer.close()
                if self.events is not None:
                    await self.events.close(self.settings.drain_timeout_s)
                log.info(
                    "transformer drained", payload_events_dropped=self.events.dropped if self.events else 0
                )
                await send({"type": "lifespan.shutdown.complete"})
                return


def payload_logger(settings: TransformerSettings) -> telemetry.PayloadLogger | None:
    if not settings.payload_logger_url:
        return None
    return telemetry.PayloadLogger(
        telemetry.EventSource(
            url=settings.payload_logger_url,
            source=settings.payload_logger_source,
            inference_service=settings.inference_service,
            namespace=settings.namespace,
            component=settings.component,
            endpoint=settings.endpoint,
        ),
        workers=settings.payload_logger_workers,
        max_events=settings.payload_logger_queue,
        max_bytes=settings.payload_logger_max_bytes,
        retry_s=settings.payload_logger_retry_s,
    )


# ---- process set-up ---------------------------------------------------------------------------------------


def configure_process_logging(level: str) -> None:
    """JSON lines for everything, KServe and uvicorn included. uvicorn's access log is off: the request
    log line replaces it."""
    configure_logging(level)
    logging.captureWarnings(True)  # warnings become JSON log lines too
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.handlers[:] = []
        library.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    for chatty in ("httpx", "httpcore"):  # a line per payload-log post otherwise
        logging.getLogger(chatty).setLevel(logging.WARNING)


def tune_garbage_collector() -> None:
    """Move everything loaded at start (kserve, pydantic, numpy...) out of the collector's view and collect
    the young generation less often: full collections over those objects were the long pauses behind the
    p99 latency (measured; README, benchmark)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def worker_app() -> TransformerApp:
    """uvicorn's app factory in each worker process (`--workers N`): the main process has passed the
    start-up gate (main.py) and put the model name and predictor host into the environment."""
    settings = TransformerSettings()
    configure_process_logging(settings.log_level)
    assert settings.predictor_host is not None
    model = ChurnTransformer(settings.model_name, settings, settings.predictor_host)
    model.mark_ready()
    app = TransformerApp(model, settings)
    tune_garbage_collector()
    return app
