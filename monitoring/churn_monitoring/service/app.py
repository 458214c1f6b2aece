"""HTTP face of the detector service (FastAPI): payload-log events in, feedback in, metrics, performance
and drift reports out.

Routes:
- `POST /` and `POST /events`: KServe payload-log CloudEvents (InferenceService `logger.url`); 200 when
  accepted (KServe's agent logs anything else as an error), 4xx naming the problem otherwise.
- `POST /feedback`: labels `{customer_id, churned, observed_at}` (one, a list, or `{"labels": [...]}`).
- `GET /performance`: realised and estimated (CBPE) live performance per model version.
- `GET /reports/drift` (list), `/reports/drift/latest`, `/reports/drift/{id}` (HTML), `.../{id}.json`.
- `GET /metrics` (Prometheus), `GET /healthz` (liveness), `GET /readyz` (readiness).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from churn_monitoring.events import EventError
from churn_monitoring.feedback import FeedbackError, parse_labels
from churn_monitoring.metrics import DetectorMetrics
from churn_monitoring.service.core import DetectorService, StoredReport
from churn_monitoring.settings import DetectorSettings

ROUTES = ("/events", "/feedback", "/performance", "/metrics", "/healthz", "/readyz", "/reports")


def _problem(status: int, message: str | list[str]) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


def _route_label(path: str) -> str:
    if path == "/":
        return "/events"
    for route in ROUTES:
        if path == route or path.startswith(route + "/"):
            return route
    return "other"


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
            self.metrics.requests.labels(_route_label(scope["path"]), f"{status // 100}xx").inc()


def create_app(settings: DetectorSettings, *, service: DetectorService | None = None) -> FastAPI:
    """The ASGI app; `service` lets tests hand in one built with a stub detector or another engine."""
    # httpx logs every request's URL at INFO; the Slack webhook URL is a secret, so only its warnings pass.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    detector = service or DetectorService(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await detector.start()
        try:
            yield
        finally:
            await detector.stop()

    app = FastAPI(title="ChurnOps drift detector", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.detector = detector

    app.add_middleware(RequestCounter, metrics=detector.metrics)

    async def receive(request: Request) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_event_bytes:
            return _problem(413, f"event body of {length} bytes is larger than {settings.max_event_bytes}")
        body = await request.body()
        if len(body) > settings.max_event_bytes:
            return _problem(413, f"event body is larger than {settings.max_event_bytes} bytes")
        try:
            result = await detector.receive(request.headers, body)
        except EventError as error:
            return _problem(error.status, str(error))
        return JSONResponse({"status": result.status, "rows": result.rows})

    app.add_api_route("/", receive, methods=["POST"], include_in_schema=False)
    app.add_api_route("/events", receive, methods=["POST"])

    @app.post("/feedback")
    async def feedback(request: Request) -> Response:
        try:
            document = json.loads(await request.body())
        except ValueError as error:
            return _problem(400, f"body is not valid JSON: {error}")
        try:
            labels = parse_labels(document)
        except FeedbackError as error:
            return _problem(422, error.problems)
        try:
            result = await detector.feedback(labels)
        except Exception as error:
            return _problem(503, f"prediction store unavailable ({type(error).__name__}); send again later")
        return JSONResponse(result.to_dict())

    @app.get("/performance")
    async def performance() -> Response:
        try:
            items = await detector.refresh_performance()
        except Exception as error:
            return _problem(503, f"prediction store unavailable ({type(error).__name__})")
        return JSONResponse(
            {
                "window_days": settings.performance_window_days,
                "f1_threshold": settings.performance_f1_threshold,
                "min_labels": settings.performance_min_labels,
                "computed_at": detector.performance_at.isoformat() if detector.performance_at else None,
                "models": [item.to_dict() for item in items],
            }
        )

    @app.get("/reports/drift")
    async def list_reports() -> Response:
        return JSONResponse(
            [
                {
                    "id": r.id,
                    "window": r.window.number,
                    "created_at": r.created_at.isoformat(),
                    "dataset_drift": bool(r.report.dataset_drift),
                    "drifted": [f.feature for f in r.report.drifted()],
                    "url": detector.report_url(r.id),
                }
                for r in reversed(detector.reports.values())
            ]
        )

    def _find(report_id: str) -> StoredReport | None:
        if report_id == "latest":
            return next(reversed(detector.reports.values()), None)
        return detector.reports.get(int(report_id)) if report_id.isdigit() else None

    @app.get("/reports/drift/{report_id}")
    async def report(report_id: str) -> Response:
        as_json = report_id.endswith(".json")
        found = _find(report_id.removesuffix(".json"))
        if found is None:
            return _problem(404, f"no drift report {report_id!r} (reports are kept in memory, last {100})")
        if as_json:
            return JSONResponse(found.to_dict())
        return HTMLResponse(await detector.report_html(found))

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
        body: dict[str, Any] = {
            "ready": detector.started,
            "drift_detector": detector.detector is not None,
            "drift_detector_error": detector.detector_error,
            "store": {
                "up": detector.writer.healthy,
                "schema_ready": detector.writer.schema_ready,
                "backlog_rows": detector.writer.backlog,
                "spilled_rows": detector.writer.spilled_rows,
            },
            "pending_halves": len(detector.join),
            "window_buffered": len(detector.windows),
        }
        return JSONResponse(body, status_code=200 if detector.started else 503)

    return app
