"""The Envoy ext_authz HTTP service.

Envoy (Istio `envoyExtAuthzHttp` provider) sends every request the CUSTOM AuthorizationPolicy selects to
`<check_prefix><original path>`, with the original method, no body and the headers listed in
`includeRequestHeadersInCheck`. A 200 lets the request through (with the headers named in
`headersToUpstreamOnAllow` copied onto it); any other status goes back to the client with our body and the
headers named in `headersToDownstreamOnDeny`. A 5xx would count as "authorizer failed" in Envoy (denied or
let through by the mesh's `failOpen`, not by us), so this service answers 200/401/403/429 only.

Our own endpoints (`/healthz`, `/readyz`, `/metrics`) live outside the check prefix.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from churn_authorizer.breaker import CircuitBreaker, CircuitState
from churn_authorizer.keys import KeysFile
from churn_authorizer.limiter import RateDecision, RateLimiter, RateLimiterUnavailableError, redis_client
from churn_authorizer.metrics import Metrics
from churn_authorizer.policy import Open, normalize_path, required_scope
from churn_authorizer.scopes import Scope
from churn_authorizer.settings import AuthorizerSettings, get_settings
from churn_core.errors import error_body

WWW_AUTHENTICATE = 'Bearer realm="churnops"'

log = structlog.get_logger("churn_authorizer")


@dataclass(frozen=True)
class Decision:
    """An answer to one check. `outcome` is also the `code` of a denial's body and the metrics label."""

    status: int
    outcome: str
    scope: Scope | None
    key_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    message: str | None = None  # body of a denial


def presented_key(headers: Mapping[str, str]) -> str | None:
    """`Authorization: Bearer <key>`, else `X-API-Key: <key>`."""
    scheme, _, value = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    api_key = headers.get("x-api-key", "").strip()
    return api_key or None


def _rate_headers(decision: RateDecision) -> dict[str, str]:
    return {
        "x-ratelimit-limit": str(decision.limit),
        "x-ratelimit-remaining": str(decision.remaining),
        "x-ratelimit-reset": str(math.ceil(decision.reset_after_s)),
    }


UNKNOWN_PATH = Decision(
    403,
    "unknown_path",
    None,
    message="this path and method are not served through the API gateway",
)


class Authorizer:
    """The decision, apart from HTTP plumbing: path → scope, key → entry, entry → rate budget."""

    def __init__(
        self, settings: AuthorizerSettings, keys: KeysFile, limiter: RateLimiter, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.limiter = limiter
        self.metrics = metrics

    def refresh_keys(self, *, force: bool = False) -> None:
        result = self.keys.refresh(force=force)
        if result == "reloaded":
            self.metrics.keys_reloads.labels("reloaded").inc()
            self.metrics.keys_loaded.set(len(self.keys.store))
            self.metrics.keys_failing.set(0)
            log.info("keys_loaded", path=str(self.keys.path), keys=len(self.keys.store))
        elif result == "failed":
            self.metrics.keys_reloads.labels("failed").inc()
            self.metrics.keys_failing.set(1)
            log.error("keys_load_failed", reason=self.keys.last_error, keeping=len(self.keys.store))

    async def decide(self, method: str, path: str, headers: Mapping[str, str]) -> Decision:
        needs = required_scope(method, path)
        if needs is None:
            return UNKNOWN_PATH
        if isinstance(needs, Open):
            return Decision(200, "open", None)
        scope = needs
        self.refresh_keys()
        key = presented_key(headers)
        if key is None:
            return Decision(
                401,
                "unauthenticated",
                scope,
                headers={"www-authenticate": WWW_AUTHENTICATE},
                message="missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            )
        entry = self.keys.store.verify(key)
        if entry is None:
            return Decision(
                401,
                "invalid_api_key",
                scope,
                headers={"www-authenticate": f'{WWW_AUTHENTICATE}, error="invalid_token"'},
                message="unknown or revoked API key",
            )
        if not entry.allows(scope):
            return Decision(403, "forbidden", scope, entry.id, message=f"this key lacks the '{scope}' scope")
        return await self._charge(scope, entry.id, entry.rate_limit or self.settings.rate_limit)

    async def _charge(self, scope: Scope, key_id: str, limit: int) -> Decision:
        try:
            rate = await self.limiter.hit(key_id, limit)
        except RateLimiterUnavailableError as exc:
            return self._limiter_down(exc, scope, key_id)
        if not rate.allowed:
            return Decision(
                429,
                "rate_limited",
                scope,
                key_id,
                headers={"retry-after": rate.retry_after_header, **_rate_headers(rate)},
                message=f"rate limit of {limit} requests per {self.settings.rate_period_s:g} s exceeded",
            )
        headers_out = {self.settings.key_id_header: key_id, **_rate_headers(rate)}
        return Decision(200, "allowed", scope, key_id, headers=headers_out)

    def _limiter_down(self, exc: RateLimiterUnavailableError, scope: Scope, key_id: str) -> Decision:
        """Redis unavailable: the key is valid and in scope; `redis_failure_mode` decides this request."""
        mode = self.settings.redis_failure_mode
        if exc.__cause__ is not None:  # a real failure or timeout, not a call the open circuit skipped
            self.metrics.redis_errors.labels(type(exc.__cause__).__name__).inc()
            log.warning("redis_unavailable", error=str(exc), failure_mode=mode)
        if mode == "open":
            reason = "redis_error" if exc.__cause__ is not None else "circuit_open"
            self.metrics.limiter_bypassed.labels(reason).inc()
            return Decision(
                200, "allowed_unlimited", scope, key_id, headers={self.settings.key_id_header: key_id}
            )
        return Decision(
            429,
            "limiter_unavailable",
            scope,
            key_id,
            headers={"retry-after": str(self.settings.fail_closed_retry_after_s)},
            message="rate limiter unavailable, retry later",
        )


class _AnyMethod:
    """An ASGI app, so that starlette.routing.Route routes every method to it (starlette/routing.py: a
    function endpoint gets `methods=["GET"]` by default, an ASGI app none)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _breaker(settings: AuthorizerSettings, metrics: Metrics) -> CircuitBreaker:
    def changed(previous: CircuitState, state: CircuitState) -> None:
        metrics.set_circuit_state(state.value)
        if state is CircuitState.OPEN:
            metrics.circuit_opened.inc()
        log.warning("redis_circuit", previous=previous.value, state=state.value)

    return CircuitBreaker(
        failures=settings.redis_breaker_failures,
        failure_ratio=settings.redis_breaker_failure_ratio,
        min_calls=settings.redis_breaker_min_calls,
        window_s=settings.redis_breaker_window_s,
        open_s=settings.redis_retry_interval_s,
        on_change=changed,
    )


def create_app(settings: AuthorizerSettings | None = None) -> Starlette:
    settings = settings or get_settings()
    metrics = Metrics()
    keys = KeysFile(settings.keys_file, settings.keys_reload_interval_s)
    redis = redis_client(settings.redis_url.get_secret_value(), settings.redis_timeout_s)
    limiter = RateLimiter(
        redis,
        prefix=settings.redis_prefix,
        period_s=settings.rate_period_s,
        breaker=_breaker(settings, metrics),
    )
    authorizer = Authorizer(settings, keys, limiter, metrics)
    prefix_len = len(settings.check_prefix)

    async def check(request: Request) -> Response:
        started = time.perf_counter()
        # The RAW path, as Envoy sent it (uvicorn's `path` is already percent-decoded): policy.normalize_path
        # decodes it exactly once, as the server behind the mesh will.
        raw = request.scope.get("raw_path") or request.scope["path"].encode()
        path = raw.decode("latin-1")[prefix_len:] or "/"
        try:
            decision = await authorizer.decide(request.method, path, request.headers)
        except Exception:  # a bug must deny, not turn into a 5xx that the mesh may fail open on
            log.exception("check_failed", method=request.method, path=normalize_path(path))
            decision = Decision(403, "error", None, message="authorizer error")
        elapsed = time.perf_counter() - started
        scope_label = decision.scope.value if decision.scope else "none"
        metrics.decisions.labels(decision.outcome, scope_label).inc()
        metrics.latency.labels(decision.outcome).observe(elapsed)
        if decision.key_id is not None:
            metrics.key_decisions.labels(decision.key_id, decision.outcome).inc()
        # Never the key, the Authorization header or the query string (which might carry anything).
        log.log(
            logging.INFO if decision.status != 200 else logging.DEBUG,
            "authz_decision",
            outcome=decision.outcome,
            status=decision.status,
            scope=scope_label,
            key_id=decision.key_id,
            method=request.method,
            path=normalize_path(path),
            duration_ms=round(elapsed * 1000, 3),
        )
        if decision.status == 200:
            return Response(status_code=200, headers=decision.headers)
        body = error_body(decision.outcome, decision.message or decision.outcome)
        return JSONResponse(body, status_code=decision.status, headers=decision.headers)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        """Ready once a keys file has loaded (zero keys is a valid state); Redis does not gate readiness:
        its outage is handled by redis_failure_mode, and unready pods would only turn it into 503s."""
        authorizer.refresh_keys()
        if not keys.loaded:
            message = f"no keys file loaded: {keys.last_error}"
            return JSONResponse(error_body("keys_not_loaded", message), status_code=503)
        return JSONResponse({"status": "ready", "keys": len(keys.store)})

    async def metrics_endpoint(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        authorizer.refresh_keys(force=True)
        log.info(
            "authorizer_started",
            check_prefix=settings.check_prefix,
            redis_failure_mode=settings.redis_failure_mode,
            rate_limit=settings.rate_limit,
            rate_period_s=settings.rate_period_s,
        )
        try:
            yield
        finally:
            await redis.aclose()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        # Every method: Envoy forwards the client's, whatever it is (TRACE, PROPFIND, ...), and each must get
        # our answer. Starlette limits a function endpoint to GET unless told; an ASGI app is not limited.
        Route(settings.check_prefix + "/{path:path}", _AnyMethod(request_response(check))),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.authorizer = authorizer
    return app
