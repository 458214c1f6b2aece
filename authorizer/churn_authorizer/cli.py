"""Commands of the API-key authorizer (`churnops keys ...`)."""

from __future__ import annotations

import typer

keys_app = typer.Typer(help="API keys for the Istio external authorizer.", no_args_is_help=True)
