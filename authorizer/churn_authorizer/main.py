"""The authorizer process: `python -m churn_authorizer serve|healthcheck` (the image's entry point).

Plain argparse rather than the `churnops` CLI, so that the image holds the authorizer and the base layer
only.
"""

from __future__ import annotations

import argparse
import sys
import urllib.request
from collections.abc import Sequence


def serve(host: str | None = None, port: int | None = None) -> None:
    """Serve the ext_authz HTTP service: one process, scale with replicas."""
    import uvicorn

    from churn_authorizer.app import create_app
    from churn_authorizer.settings import get_settings
    from churn_core.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,  # keep configure_logging's JSON handler
        access_log=False,  # uvicorn's access line carries the query string; we log our own decision line
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=settings.keep_alive_timeout_s,
    )


def healthcheck(port: int | None = None) -> int:
    """0 when the local authorizer answers /healthz (the image's HEALTHCHECK; no curl in slim)."""
    from churn_authorizer.settings import get_settings

    url = f"http://127.0.0.1:{port or get_settings().port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            healthy = response.status == 200
    except OSError:
        healthy = False
    if not healthy:
        print(f"unhealthy: {url}", file=sys.stderr)
    return 0 if healthy else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="churn_authorizer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve the ext_authz HTTP service")
    serve_parser.add_argument("--host", default=None, help="bind address [CHURNOPS_AUTHORIZER_HOST]")
    serve_parser.add_argument("--port", type=int, default=None, help="port [CHURNOPS_AUTHORIZER_PORT]")
    check_parser = commands.add_parser("healthcheck", help="exit 0 when /healthz answers")
    check_parser.add_argument("--port", type=int, default=None, help="port [CHURNOPS_AUTHORIZER_PORT]")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.host, args.port)
        return 0
    return healthcheck(args.port)
