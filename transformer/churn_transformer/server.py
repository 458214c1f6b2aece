"""KServe's ModelServer, adjusted where the transformer needs more than it offers.

- Binds `CHURNOPS_TRANSFORMER_HOST` (KServe's REST server always binds 0.0.0.0; locally we serve on 127.0.0.1 only).
- `/v2/health/ready` is true only when every model is healthy (contract loaded, predictor answering for our
  version): KServe's own predictor health check cannot be used with MLServer (see README).
- A pure ASGI middleware on the inference routes: takes or makes `X-Request-ID` (and returns it), times the
  request end to end, writes one JSON log line, counts metrics (every answer by protocol and status class,
  in churn_inference_responses_total), and feeds the local payload logger.
- Error handlers turn bad input into 400s that name the field and the reason, an unreachable predictor
  into a 503 with a clear message, and never put a stack trace in a response.
- `/metrics` aggregates every worker process (prometheus-client multiprocess mode).
The REST server classes are subclassed rather than patched because KServe pickles them into its worker
processes (`--workers N`): the subclasses' overrides run there too.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from socket import socket
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from kserve import ModelServer
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.rest.multiprocess.server import RESTServerMultiProcess
from kserve.protocol.rest.server import RESTServer
from timing_asgi import TimingMiddleware  # type: ignore[import-untyped]

from churn_core.logging import configure_logging
from churn_transformer import context
from churn_transformer.metrics import get_metrics, render_metrics
from churn_transformer.payload_logger import EventSource, PayloadLogger
from churn_transformer.predictor import PredictorUnavailableError
from churn_transformer.routes import inference_routes
from churn_transformer.settings import TransformerSettings
from churn_transformer.validation import InvalidRequestError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

request_log = structlog.get_logger("churn_transformer.request")
server_log = structlog.get_logger("churn_transformer.server")

REQUEST_ID_HEADER = b"x-request-id"
MAX_REQUEST_ID = 128
LIBRARY_LOGGERS = ("kserve", "kserve.trace", "uvicorn", "uvicorn.error", "uvicorn.access")


def configure_process_logging(level: str) -> None:
    """JSON lines for everything, KServe and uvicorn included (KServe's dictConfig gives them own text
    handlers, in every worker process). uvicorn's access log is dropped: the request log line replaces it."""
    configure_logging(level)
    logging.captureWarnings(True)  # warnings become JSON log lines too
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.handlers[:] = []
        library.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)


def tune_garbage_collector() -> None:
    """Move everything loaded at start (kserve, FastAPI, pydantic, numpy...) out of the collector's view
    and collect the young generation less often: full collections over those objects were the long
    pauses behind the p99 latency (measured; README, benchmark)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _inference_protocol(scope: Scope) -> str | None:
    """The `protocol` label of an inference request, None for anything else (health, readiness, model
    metadata, /metrics), which the middleware passes through uncounted and unlogged. A :predict or /infer
    path outside /v1/ or /v2/ is "other" (it gets a 404): the label stays a closed set whatever the path."""
    if scope.get("method") != "POST":
        return None
    path: str = scope.get("path", "")
    if path.endswith(":predict"):
        return "v1" if path.startswith("/v1/") else "other"
    if path.endswith("/infer"):
        return "v2" if path.startswith("/v2/") else "other"
    return None


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for key, value in headers:
        if key == REQUEST_ID_HEADER:
            text = value.decode("latin-1").strip()
            if 0 < len(text) <= MAX_REQUEST_ID and text.isprintable():
                return text
    return uuid.uuid4().hex


class RequestMiddleware:
    """Request id, end-to-end timing, the request log line, metrics and payload events (inference only)."""

    def __init__(self, app: ASGIApp, payload_logger: PayloadLogger | None = None) -> None:
        self.app = app
        self.payload_logger = payload_logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        protocol = _inference_protocol(scope) if scope["type"] == "http" else None
        if protocol is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
        request_id = _request_id(headers)
        sent_content_type = next((v for k, v in headers if k == b"content-type"), b"").decode("latin-1")
        headers = [(k, v) for k, v in headers if k != REQUEST_ID_HEADER]
        headers.append((REQUEST_ID_HEADER, request_id.encode()))
        scope["headers"] = headers
        record = context.RequestRecord(request_id=request_id)
        token = context.CURRENT.set(record)
        status = 500
        request_body: list[bytes] = []
        response_body: list[bytes] = []
        capture = self.payload_logger is not None

        async def receive_wrapper() -> Message:
            message = await receive()
            if capture and message["type"] == "http.request":
                request_body.append(message.get("body", b""))
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
            elif capture and message["type"] == "http.response.body":
                response_body.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive_wrapper if capture else receive, send_wrapper)
        finally:
            context.CURRENT.reset(token)
            elapsed = time.perf_counter() - started
            self._account(scope, record, protocol, status, elapsed)
            if self.payload_logger is not None:
                request_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
                self.payload_logger.submit(
                    PayloadLogger.event_id(request_headers),
                    b"".join(request_body),
                    sent_content_type,
                    status,
                    b"".join(response_body),
                )

    @staticmethod
    def _account(
        scope: Scope, record: context.RequestRecord, protocol: str, status: int, elapsed: float
    ) -> None:
        metrics = get_metrics()
        # Once per answer, here where the status is final: exception handlers inside this middleware have
        # turned errors into 4xx/503; an exception escaping it stays status 500, which Starlette's outermost
        # handler (_internal) then answers.
        metrics.record_response(protocol, status, elapsed)
        if 400 <= status < 500:
            metrics.invalid.labels(record.reason or f"http_{status}").inc()
        fields: dict[str, Any] = {
            "request_id": record.request_id,
            "path": scope.get("path"),
            "status": status,
            "protocol": record.protocol,
            "batch_size": record.batch_size,
            "latency_ms": round(elapsed * 1000, 3),
            "model_version": record.model_version,
        }
        if record.customers:
            fields["customers"] = record.customers
        if record.reason:
            fields["reason"] = record.reason
        if record.error:
            fields["error"] = record.error
        if status >= 500:
            request_log.error("inference request failed", **fields)
        else:
            request_log.info("inference request", **fields)


def _json(status: int, content: dict[str, Any]) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def _reject(status: int, reason: str | None, message: str) -> Response:
    record = context.current()
    if record is not None:
        record.reason = reason
        record.error = message
    content: dict[str, Any] = {"error": message}
    if reason:
        content["reason"] = reason
    return _json(status, content)


async def _rejected(_: Request, error: Exception) -> Response:
    assert isinstance(error, InvalidRequestError)
    return _reject(400, error.reason, error.message)


async def _invalid_input(_: Request, error: Exception) -> Response:
    text = str(error)
    if text.startswith("Unrecognized request format:"):
        return _reject(400, "malformed_json", "body is not valid JSON:" + text.split(":", 1)[1])
    return _reject(400, "malformed_request", text)


async def _malformed_body(_: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    problems = list(error.errors())
    if any(p.get("type") == "json_invalid" for p in problems):
        detail = problems[0].get("ctx", {}).get("error", "")
        return _reject(400, "malformed_json", f"body is not valid JSON: {detail}".rstrip(": "))
    parts = []
    # The v2 route declares its body as `InferenceRequest | bytes`: drop the bytes alternative's complaint.
    for problem in [p for p in problems if "bytes" not in p.get("loc", ())][:5]:
        location = ".".join(
            str(part) for part in problem.get("loc", ()) if part not in ("body", "InferenceRequest")
        )
        parts.append(f"{location or 'body'}: {problem.get('msg', 'invalid')}")
    return _reject(400, "malformed_request", "; ".join(parts) or "malformed v2 inference request")


async def _predictor_unavailable(_: Request, error: Exception) -> Response:
    server_log.warning("predictor unavailable", error=str(error))
    return _reject(503, None, f"the churn model is temporarily unavailable: {error}")


async def _not_ready(_: Request, error: Exception) -> Response:
    return _reject(503, None, f"{error} The predictor is not answering; retry shortly.")


async def _not_found(_: Request, error: Exception) -> Response:
    return _reject(404, "unknown_model", str(error))


async def _internal(request: Request, error: Exception) -> Response:
    record = context.current()
    server_log.exception("unhandled error", path=request.url.path)
    request_id = record.request_id if record is not None else request.headers.get("x-request-id", "")
    return _json(500, {"error": f"internal error; request id {request_id}".rstrip()})


class ChurnDataPlane(DataPlane):  # type: ignore[misc]
    async def ready(self) -> bool:
        models = list(self.model_registry.get_models().values())
        if not models:
            return False
        return all(await asyncio.gather(*(model.healthy() for model in models)))


class ChurnRESTServer(RESTServer):  # type: ignore[misc]
    def __init__(self, *args: Any, settings: TransformerSettings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings
        self.config.host = settings.host

    def create_application(self) -> None:
        from kserve.model_server import app

        self._add_routes(app)
        super().create_application()
        # KServe's TimingMiddleware formats a debug log line (and calls getrusage) on every request; our
        # request log line and churn_prediction_duration_seconds carry the same facts.
        app.user_middleware[:] = [m for m in app.user_middleware if m.cls is not TimingMiddleware]
        app.add_middleware(RequestMiddleware, payload_logger=self._payload_logger())
        app.add_exception_handler(InvalidRequestError, _rejected)
        app.add_exception_handler(InvalidInput, _invalid_input)
        app.add_exception_handler(RequestValidationError, _malformed_body)
        app.add_exception_handler(PredictorUnavailableError, _predictor_unavailable)
        app.add_exception_handler(ModelNotReady, _not_ready)
        app.add_exception_handler(ServerNotReady, _not_ready)
        app.add_exception_handler(ModelNotFound, _not_found)
        app.add_exception_handler(Exception, _internal)

    def _add_routes(self, app: FastAPI) -> None:
        async def metrics(request: Request) -> Response:
            body, content_type = render_metrics(request.headers.get("accept"))
            return Response(content=body, headers={"content-type": content_type})

        # Ahead of KServe's routes for the same paths: /metrics aggregating every worker (KServe's reads
        # one process's registry) and the lean inference routes (routes.py).
        app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
        app.router.routes[0:0] = inference_routes(self.dataplane)

    def _payload_logger(self) -> PayloadLogger | None:
        s = self.settings
        if not s.payload_logger_url:
            return None
        return PayloadLogger(
            EventSource(
                url=s.payload_logger_url,
                source=s.payload_logger_source,
                inference_service=s.inference_service,
                namespace=s.namespace,
                component=s.component,
                endpoint=s.endpoint,
            ),
            queue_size=s.payload_logger_queue,
        )

    def run(self, sockets: list[socket] | None = None) -> None:
        """Entry of a worker process (`--workers N`): KServe configured text logging there; redo ours."""
        configure_process_logging(self.settings.log_level)
        tune_garbage_collector()
        super().run(sockets=sockets)


class ChurnRESTServerMultiProcess(RESTServerMultiProcess):  # type: ignore[misc]
    def __init__(self, *args: Any, settings: TransformerSettings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        base: Any = self.__dict__["_rest_server"]
        self._rest_server: RESTServer = ChurnRESTServer(
            base.config.app,
            base.dataplane,
            base.model_repository_extension,
            base.config.port,
            access_log_format=base.access_log_format,
            workers=base.config.workers,
            grace_period=base.config.timeout_graceful_shutdown,
            event_loop=base.config.loop,
            timeout_keep_alive=base.config.timeout_keep_alive,
            settings=settings,
        )


class ChurnModelServer(ModelServer):  # type: ignore[misc]
    def __init__(self, settings: TransformerSettings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.dataplane = ChurnDataPlane(model_registry=self.registered_models)
        configure_process_logging(settings.log_level)

    def start(self, models: list[Any]) -> None:
        """ModelServer.start with our REST server classes (KServe's binds 0.0.0.0 and knows no host)."""
        from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
        from kserve.model_server import args as kserve_args
        from kserve.protocol.grpc.server import GRPCServer

        self._register_and_check_atleast_one_model_is_ready(models)
        common: dict[str, Any] = {
            "access_log_format": self.access_log_format,
            "workers": self.workers,
            "grace_period": self.grace_period,
            "event_loop": self.event_loop,
            "timeout_keep_alive": self.timeout_keep_alive,
            "settings": self.settings,
        }
        app = FASTAPI_APP_IMPORT_STRING
        if self.workers > 1:
            self._rest_multiprocess_server = ChurnRESTServerMultiProcess(
                app, self.dataplane, self.model_repository_extension, self.http_port, **common
            )
            self.servers.append(self._rest_multiprocess_server.start())
        else:
            self._rest_server = ChurnRESTServer(
                app, self.dataplane, self.model_repository_extension, self.http_port, **common
            )
            self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            self._grpc_server = GRPCServer(
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs=vars(kserve_args),
                grace_period=self.grace_period,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        # The start-up check ran its own event loop; serve on a fresh one that setup_event_loop configures.
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.setup_event_loop()
        self.register_signal_handler()
        tune_garbage_collector()
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()
