"""`churnops authorizer serve / healthcheck`: the Istio external authorizer (ext_authz HTTP service).

The image runs the same functions through `python -m churn_authorizer`, without this CLI.
"""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    name="authorizer", help="The Istio external authorizer (ext_authz HTTP service).", no_args_is_help=True
)


@app.command("serve")
def serve(
    host: Annotated[
        str | None, typer.Option(help="Bind address [default: CHURNOPS_AUTHORIZER_HOST].")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: CHURNOPS_AUTHORIZER_PORT].")] = None,
) -> None:
    """Serve the ext_authz HTTP service: one process, scale with replicas."""
    from churn_authorizer.main import serve as serve_authorizer

    serve_authorizer(host=host, port=port)


@app.command("healthcheck")
def healthcheck(
    port: Annotated[int | None, typer.Option(help="Port [default: CHURNOPS_AUTHORIZER_PORT].")] = None,
) -> None:
    """Exit 0 when the local authorizer answers /healthz."""
    from churn_authorizer.main import healthcheck as check

    raise typer.Exit(check(port))
