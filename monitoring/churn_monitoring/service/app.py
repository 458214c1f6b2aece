"""HTTP face of the detector service (FastAPI): payload-log events in, feedback in, metrics, performance
and drift reports out.

Routes:
- `POST /` and `POST /events`: KServe payload-log CloudEvents (InferenceService `logger.url`); 200 when
  accepted (KServe's agent logs anything else as an error), 4xx naming the problem otherwise.
- `POST /feedback`: labels `{customer_id, churned, observed_at}` (one, a list, or `{"labels": [...]}`).
- `GET /performance`: realised and estimated (CBPE) live performance per model version.
- `GET /reports/drift` (list), `/reports/drift/latest`, `/reports/drift/{id}` (HTML), `.../{id}.json`.
- `GET /metrics` (Prometheus), `GET /healthz` (liveness), `GET /readyz` (readiness).

In the cluster the mesh decides who may call what (manifests/istio): `/events` only the churn pods,
`/feedback` and `/reports/*` through the authorizer (scopes `feedback` and `admin`). This app bounds what
any caller can make it hold: bodies counted while read (`service.limits`), JSON shape checked before
parsing, one error body for every refusal (`service.errors`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from churn_core.errors import quoted
from churn_monitoring.feedback import parse_labels
from churn_monitoring.metrics import DetectorMetrics
from churn_monitoring.service.core import MAX_REPORTS, DetectorService, StoredReport
from churn_monitoring.service.errors import install_error_handlers, route_label
from churn_monitoring.service.limits import ByteBudget, Refusal, check_json_shape, declared_length, read_body
from churn_monitoring.settings import DetectorSettings

REPORT_ID = re.compile(r"(latest|[0-9]{1,9})(\.json)?")


class RequestCounter:
    """Counts answers by route and status class (plain ASGI: Starlette's BaseHTTPMiddleware costs a task
    and a stream per request, a third of this service's time per event)."""

    def __init__(self, app: ASGIApp, metrics: DetectorMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            self.metrics.requests.labels(route_label(scope["path"]), f"{status // 100}xx").inc()


def _lifespan(detector: DetectorService) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await detector.start()
        try:
            yield
        finally:
            await detector.stop()

    return lifespan


def create_app(settings: DetectorSettings, *, service: DetectorService | None = None) -> FastAPI:
    """The ASGI app; `service` lets tests hand in one built with a stub detector or another engine."""
    # httpx logs every request's URL at INFO; the Slack webhook URL is a secret, so only its warnings pass.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    detector = service or DetectorService(settings)
    budget = ByteBudget(settings.inflight_max_bytes, settings.inflight_wait_seconds)
    detector.metrics.inflight_bytes.set_function(lambda: float(budget.used))
    app = FastAPI(
        title="ChurnOps drift detector",
        lifespan=_lifespan(detector),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.detector = detector
    app.state.refusals = detector.metrics.refusals
    install_error_handlers(app)
    app.add_middleware(RequestCounter, metrics=detector.metrics)
    _event_routes(app, detector, settings, budget)
    _feedback_routes(app, detector, settings, budget)
    _report_routes(app, detector)
    _status_routes(app, detector, settings)
    return app


def _reservation(request: Request, cap: int) -> int:
    """Bytes a request reserves before its body is read: what it declares, else the route's cap."""
    declared = declared_length(request)
    return cap if declared is None else min(declared, cap)


def _event_routes(
    app: FastAPI, detector: DetectorService, settings: DetectorSettings, budget: ByteBudget
) -> None:
    async def receive(request: Request) -> Response:
        async with budget.reserve(_reservation(request, settings.max_event_bytes)):
            body = await read_body(request, settings.max_event_bytes, "event body")
            result = await detector.receive(request.headers, body)
        return JSONResponse({"status": result.status, "rows": result.rows})

    app.add_api_route("/", receive, methods=["POST"], include_in_schema=False)
    app.add_api_route("/events", receive, methods=["POST"])


def _json_document(body: bytes, settings: DetectorSettings, what: str) -> Any:
    check_json_shape(body, max_depth=settings.max_json_depth, max_values=settings.max_json_values, what=what)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise Refusal(400, "invalid_json", f"{what} is not valid JSON: {error}") from error


def _feedback_routes(
    app: FastAPI, detector: DetectorService, settings: DetectorSettings, budget: ByteBudget
) -> None:
    @app.post("/feedback")
    async def feedback(request: Request) -> Response:
        async with budget.reserve(_reservation(request, settings.max_feedback_bytes)):
            body = await read_body(request, settings.max_feedback_bytes, "feedback body")
            labels = parse_labels(_json_document(body, settings, "body"))
        try:
            result = await detector.feedback(labels)
        except Exception as error:
            raise Refusal(
                503,
                "store_unavailable",
                f"prediction store unavailable ({type(error).__name__}); send again later",
                retry_after=30,
            ) from error
        return JSONResponse(result.to_dict())

    @app.get("/performance")
    async def performance() -> Response:
        try:
            items = await detector.refresh_performance()
        except Exception as error:
            raise Refusal(
                503, "store_unavailable", f"prediction store unavailable ({type(error).__name__})"
            ) from error
        return JSONResponse(
            {
                "window_days": settings.performance_window_days,
                "f1_threshold": settings.performance_f1_threshold,
                "min_labels": settings.performance_min_labels,
                "computed_at": detector.performance_at.isoformat() if detector.performance_at else None,
                "models": [item.to_dict() for item in items],
            }
        )


def _report_summary(detector: DetectorService, report: StoredReport) -> dict[str, Any]:
    return {
        "id": report.id,
        "window": report.window.number,
        "created_at": report.created_at.isoformat(),
        "dataset_drift": bool(report.report.dataset_drift),
        "drifted": [f.feature for f in report.report.drifted()],
        "url": detector.report_url(report.id),
    }


def _find_report(detector: DetectorService, report_id: str) -> StoredReport | None:
    if report_id == "latest":
        return next(reversed(detector.reports.values()), None)
    return detector.reports.get(int(report_id))


def _report_routes(app: FastAPI, detector: DetectorService) -> None:
    @app.get("/reports/drift")
    async def list_reports() -> Response:
        return JSONResponse([_report_summary(detector, r) for r in reversed(detector.reports.values())])

    @app.get("/reports/drift/{report_id}")
    async def report(report_id: str) -> Response:
        # Matched here, not by a typed path parameter: anything else (`²`, 5,000 digits) is a plain 404.
        match = REPORT_ID.fullmatch(report_id)
        found = _find_report(detector, match.group(1)) if match else None
        if match is None or found is None:
            raise Refusal(
                404,
                "report_not_found",
                f"no drift report {quoted(report_id)}: ids are 'latest' or a number, '.json' for JSON "
                f"(the last {MAX_REPORTS} are kept in memory)",
            )
        if match.group(2):
            return JSONResponse(found.to_dict())
        return HTMLResponse(await detector.report_html(found))


def _status_routes(app: FastAPI, detector: DetectorService, settings: DetectorSettings) -> None:
    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(detector.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        # Ready means events can be taken: a database outage does not make the service unready (rows are
        # kept and written later), so it is reported here but does not fail the probe.
        if not detector.started:
            raise Refusal(503, "not_ready", "the detector is starting or stopping")
        body: dict[str, Any] = {
            "ready": detector.started,
            "drift_detector": detector.detector is not None,
            "drift_detector_error": detector.detector_error,
            "store": {
                "up": detector.writer.healthy,
                "schema_ready": detector.writer.schema_ready,
                "backlog_rows": detector.writer.backlog,
                "spilled_rows": detector.writer.spilled_rows,
                "spill_bytes": detector.writer.spill_bytes,
                "spill_max_bytes": settings.store_spill_max_bytes,
            },
            "pending_halves": len(detector.join),
            "pending_bytes": detector.join.bytes,
            "window_buffered": len(detector.windows),
        }
        return JSONResponse(body)
