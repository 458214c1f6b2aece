"""Every 4xx/5xx of the detector in the one error body, `{"error": ..., "code": ...}` (churn_core.errors),
including the answers FastAPI and Starlette make themselves: unknown path (404), wrong method (405), a
request their validation refuses (422) and an exception nobody caught (500).

The codes are a closed set a client (and the attack suite) can branch on; `code` is also the `reason`
label of `churn_detector_refusals_total`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from churn_core.errors import error_body, quoted
from churn_monitoring.events import EventError
from churn_monitoring.feedback import FeedbackError
from churn_monitoring.service.limits import Refusal

log = structlog.get_logger(__name__)

FRAMEWORK_CODES = {404: "not_found", 405: "method_not_allowed", 422: "invalid_request"}
ROUTES = ("/events", "/feedback", "/performance", "/metrics", "/healthz", "/readyz", "/reports")


def route_label(path: str) -> str:
    """The route a path belongs to, from a closed set (a metric label: never the path itself)."""
    if path == "/":
        return "/events"
    for route in ROUTES:
        if path == route or path.startswith(route + "/"):
            return route
    return "other"


def problem(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The one error body, counted in `churn_detector_refusals_total{route, code}`."""
    refusals = getattr(request.app.state, "refusals", None)
    if refusals is not None:
        refusals.labels(route_label(request.url.path), code).inc()
    return JSONResponse(status_code=status, content=error_body(code, message), headers=headers)


def _framework(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    code = FRAMEWORK_CODES.get(error.status_code, f"http_{error.status_code}")
    if error.status_code == 404:
        message = f"no route {quoted(request.url.path)}"
    elif error.status_code == 405:
        message = f"{request.method} is not allowed on {quoted(request.url.path)}"
    else:
        message = str(error.detail)
    return problem(request, error.status_code, code, message, headers=error.headers)


def _validation(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    problems = [
        f"{'.'.join(str(part) for part in item.get('loc', ()))}: {item.get('msg', 'invalid')}"
        for item in error.errors()[:20]
    ]
    return problem(request, 422, "invalid_request", "; ".join(problems) or "invalid request")


def _refusal(request: Request, error: Exception) -> Response:
    assert isinstance(error, Refusal)
    headers = {"retry-after": str(error.retry_after)} if error.retry_after is not None else None
    return problem(request, error.status, error.code, error.message, headers)


def _event(request: Request, error: Exception) -> Response:
    assert isinstance(error, EventError)
    return problem(request, error.status, error.code, str(error))


def _feedback(request: Request, error: Exception) -> Response:
    assert isinstance(error, FeedbackError)
    return problem(request, 422, "invalid_labels", "; ".join(error.problems[:20]))


def _unexpected(request: Request, error: Exception) -> Response:
    # The exception itself goes to the log (Starlette's ServerErrorMiddleware re-raises it to uvicorn);
    # the client learns nothing about our internals.
    log.error("unhandled_error", path=quoted(request.url.path), error=type(error).__name__)
    return problem(request, 500, "internal_error", "the detector failed on this request; it is logged")


HANDLERS: dict[type[Exception], Callable[[Request, Exception], Response]] = {
    StarletteHTTPException: _framework,
    RequestValidationError: _validation,
    Refusal: _refusal,
    EventError: _event,
    FeedbackError: _feedback,
    Exception: _unexpected,
}


def install_error_handlers(app: FastAPI) -> None:
    for exception, handler in HANDLERS.items():
        app.add_exception_handler(exception, handler)
