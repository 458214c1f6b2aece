"""A local stand-in for the Istio ingress in front of the churn service: Envoy's ext_authz HTTP filter as
our mesh config declares it (manifests/istio/mesh-config-extension-provider.yaml), then routing.

For each request the mesh would check (/v1/*, /v2/* but not /v2/health/* or */ready; /feedback*):
1. ask the authorizer `<method> <authorizer>/check<path>` with the `authorization` and `x-api-key`
   headers and no body, within `timeout` (0.5 s);
2. authorizer 200: forward upstream with `x-churnops-key-id` from the check answer (replacing any value the
   client sent) and return the upstream answer plus the `x-ratelimit-*` headers of the check;
3. authorizer 401/403/429: return its status and body with the headers `headersToDownstreamOnDeny` lists;
4. authorizer unreachable, timed out or 5xx: 503 (`failOpen: false`, `statusOnError: "503"`).
/feedback* goes to the detector, everything else to the transformer.

Why hand-written: no Envoy binary can be installed here (not packaged for this machine), and the load and
fault scenarios only need this check-then-forward contract, which is short. It is a test harness, not a
product component: in the cluster Envoy does this.

    python scripts/load/gateway.py --port 8070 --authorizer http://127.0.0.1:8000 \
        --serving http://127.0.0.1:8080 --detector http://127.0.0.1:8095
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from churn_core.errors import error_body

CHECKED = re.compile(r"^/(?:v1|v2)/")
UNCHECKED = re.compile(r"^/v2/health/|/ready$")
FEEDBACK = re.compile(r"^(?:/v1|/v2)?/feedback(?:/|$)")
CHECK_HEADERS = ("authorization", "x-api-key")
UPSTREAM_ON_ALLOW = ("x-churnops-key-id",)
DOWNSTREAM_ON_ALLOW = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
DOWNSTREAM_ON_DENY = ("content-type", "retry-after", "www-authenticate", *DOWNSTREAM_ON_ALLOW)
HOP_BY_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"}
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def needs_check(path: str) -> bool:
    return bool(FEEDBACK.match(path)) or (bool(CHECKED.match(path)) and not UNCHECKED.search(path))


class Gateway:
    """The check-then-forward of one request. aiohttp's client, not httpx's: two calls per request, and
    httpx's measured 3-4 ms of CPU per call would make this stand-in the bottleneck it must not be."""

    def __init__(self, authorizer: str, serving: str, detector: str, check_timeout_s: float) -> None:
        self.authorizer, self.serving, self.detector = authorizer, serving, detector
        self.check_timeout = aiohttp.ClientTimeout(total=check_timeout_s)
        self.session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512), timeout=aiohttp.ClientTimeout(total=30.0)
        )
        try:
            yield
        finally:
            await self.session.close()

    async def check(
        self, request: Request, path: str
    ) -> tuple[Response | None, dict[str, str], dict[str, str]]:
        """(denial or None, headers for upstream, headers for the client) as Envoy's ext_authz gives them."""
        assert self.session is not None
        headers = {k: request.headers[k] for k in CHECK_HEADERS if k in request.headers}
        try:
            async with self.session.request(
                request.method, f"{self.authorizer}/check{path}", headers=headers, timeout=self.check_timeout
            ) as answer:
                body = await answer.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            return _error(f"authorizer unreachable: {type(error).__name__}"), {}, {}
        if answer.status >= 500:
            return _error(f"authorizer answered {answer.status}"), {}, {}
        if answer.status != 200:
            denied = {k: answer.headers[k] for k in DOWNSTREAM_ON_DENY if k in answer.headers}
            return Response(body, status_code=answer.status, headers=denied), {}, {}
        upstream = {k: answer.headers[k] for k in UPSTREAM_ON_ALLOW if k in answer.headers}
        downstream = {k: answer.headers[k] for k in DOWNSTREAM_ON_ALLOW if k in answer.headers}
        return None, upstream, downstream

    async def route(self, request: Request) -> Response:
        assert self.session is not None
        path = request.url.path
        upstream_headers: dict[str, str] = {}
        downstream_headers: dict[str, str] = {}
        if needs_check(path):
            denial, upstream_headers, downstream_headers = await self.check(request, path)
            if denial is not None:
                return denial
        base = self.detector if FEEDBACK.match(path) else self.serving
        headers = {
            k: v for k, v in request.headers.items() if k not in HOP_BY_HOP and k not in UPSTREAM_ON_ALLOW
        }
        headers.update(upstream_headers)
        try:
            async with self.session.request(
                request.method, base + path, params=list(request.query_params.multi_items()),
                data=await request.body(), headers=headers,
            ) as answer:  # fmt: skip
                body = await answer.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            return _error(f"upstream unavailable: {type(error).__name__}")  # Envoy's 503 UF/URX
        passed = {k.lower(): v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        return Response(body, status_code=answer.status, headers={**passed, **downstream_headers})


def create_app(authorizer: str, serving: str, detector: str, check_timeout_s: float = 0.5) -> Starlette:
    gateway = Gateway(authorizer, serving, detector, check_timeout_s)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/gateway/healthz", healthz, methods=["GET"]),
            Route("/{path:path}", gateway.route, methods=METHODS),
        ],
        lifespan=gateway.lifespan,
    )


def _error(message: str) -> Response:
    return JSONResponse(error_body("gateway_unavailable", message), status_code=503)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--authorizer", required=True, help="authorizer base URL")
    parser.add_argument("--serving", required=True, help="transformer base URL")
    parser.add_argument("--detector", required=True, help="detector base URL (feedback)")
    parser.add_argument("--check-timeout", type=float, default=0.5, help="ext_authz timeout, seconds")
    args = parser.parse_args()
    app = create_app(args.authorizer, args.serving, args.detector, args.check_timeout)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
