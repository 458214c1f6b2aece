"""A local stand-in for the Istio ingress in front of the churn service: Envoy's ext_authz HTTP filter as
our mesh config declares it (manifests/istio/mesh-config-extension-provider.yaml, authorization-policy.yaml),
then routing.

For every request, whatever its method:
1. normalize the RAW path as the mesh does (`pathNormalization: DECODE_AND_MERGE_SLASHES`): `%2F`/`%5C`
   decoded, percent-encoded unreserved characters decoded, `\\` as `/`, dot segments resolved (RFC 3986),
   `//` merged; `%00` refused with 400. The normalized path is what is checked AND what goes upstream;
2. deny by default: every path is checked except the exact health paths of the CUSTOM policies' `notPaths`
   (HEALTH); `/events` too, as nothing entering through the ingress has the churn pods' mesh identity
   that alone may post it (the authorizer refuses it: 403 unknown_path);
3. ask the authorizer `<method> <authorizer>/check<path>` with the `authorization` and `x-api-key`
   headers and no body, within `timeout` (0.5 s);
4. authorizer 200: forward upstream with `x-churnops-key-id` from the check answer (replacing any value the
   client sent) and return the upstream answer plus the `x-ratelimit-*` headers of the check;
5. authorizer 401/403/429: return its status and body with the headers `headersToDownstreamOnDeny` lists;
6. authorizer unreachable, timed out or 5xx: 503 (`failOpen: false`, `statusOnError: "503"`).
The detector's client paths (/feedback, /performance, /reports/...) go to the detector, everything else to
the transformer.

Why hand-written: no Envoy binary can be installed here (not packaged for this machine), and the load and
fault scenarios only need this check-then-forward contract, which is short. It is a test harness, not a
product component: in the cluster Envoy does this. Unlike Envoy it reads a request body whole before
forwarding it (a chunked body goes upstream with a Content-Length): body-size attacks are sent to the
services directly (tests/security/test_attack_suite.py).

    python scripts/load/gateway.py --port 8070 --authorizer http://127.0.0.1:8000 \
        --serving http://127.0.0.1:8080 --detector http://127.0.0.1:8095
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote, unquote

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Receive, Scope, Send
from yarl import URL

from churn_core.errors import error_body

# The CUSTOM policies' notPaths (manifests/istio/authorization-policy.yaml): the churn pods', the detector's
# health paths. Exact matches only, as there.
HEALTH = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/v2/models/churn/ready"})
DETECTOR = re.compile(r"^/(?:feedback|performance|reports)(?:/|$)")
_ESCAPED_SLASH = re.compile(r"%(?:2[fF]|5[cC])")
# Percent-encoded characters RFC 3986 calls unreserved (ALPHA, DIGIT, - . _ ~): Envoy's normalize_path
# decodes these and leaves every other escape as it is.
_UNRESERVED = re.compile(r"%(2[dDeE]|3[0-9]|4[1-9a-fA-F]|5[0-9aA]|5[fF]|6[1-9a-fA-F]|7[0-9aA]|7[eE])")
_SAFE = "/%:@!$&'()*+,;=-._~"
CHECK_HEADERS = ("authorization", "x-api-key")
UPSTREAM_ON_ALLOW = ("x-churnops-key-id",)
DOWNSTREAM_ON_ALLOW = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
DOWNSTREAM_ON_DENY = ("content-type", "retry-after", "www-authenticate", *DOWNSTREAM_ON_ALLOW)
HOP_BY_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"}


class RejectedPathError(ValueError):
    """A path the proxy refuses before any policy (Envoy answers 400)."""


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 on an absolute path."""
    output: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    tail = "/" if path.rsplit("/", 1)[-1] in {".", ".."} else ""
    return "/" + "/".join(output) + tail if output else "/"


def normalize(raw: str) -> str:
    """The path as the mesh checks and forwards it (DECODE_AND_MERGE_SLASHES), still percent-encoded."""
    if "%00" in raw or "\x00" in raw:
        raise RejectedPathError("NUL in path")
    path = _ESCAPED_SLASH.sub(lambda m: unquote(m.group(0)), raw)
    path = _UNRESERVED.sub(lambda m: unquote(m.group(0)), path).replace("\\", "/")
    if not path.startswith("/"):
        path = "/" + path
    return re.sub(r"/{2,}", "/", _remove_dot_segments(path))


def needs_check(path: str) -> bool:
    """Deny by default: everything but the exact health paths (`path` normalized)."""
    return path not in HEALTH


class _AnyMethod:
    """An ASGI app, so that Starlette routes every method to it (TRACE, PROPFIND, ...), as Envoy does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


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
                request.method,
                URL(f"{self.authorizer}/check{path}", encoded=True),
                headers=headers,
                timeout=self.check_timeout,
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
        raw = (request.scope.get("raw_path") or request.scope["path"].encode()).decode("latin-1")
        try:
            path = quote(normalize(raw.split("?", 1)[0]), safe=_SAFE)
        except RejectedPathError:
            return Response("Bad Request", status_code=400, media_type="text/plain")
        upstream_headers: dict[str, str] = {}
        downstream_headers: dict[str, str] = {}
        if needs_check(path):
            denial, upstream_headers, downstream_headers = await self.check(request, path)
            if denial is not None:
                return denial
        base = self.detector if DETECTOR.match(path) else self.serving
        query = request.scope.get("query_string", b"").decode("latin-1")
        target = URL(base + path + (f"?{quote(query, safe=_SAFE + '?')}" if query else ""), encoded=True)
        headers = {
            k: v for k, v in request.headers.items() if k not in HOP_BY_HOP and k not in UPSTREAM_ON_ALLOW
        }
        headers.update(upstream_headers)
        try:
            async with self.session.request(
                request.method, target, data=await request.body(), headers=headers
            ) as answer:
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
            Route("/{path:path}", _AnyMethod(request_response(gateway.route))),
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
