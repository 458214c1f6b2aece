"""Commands of the serving side (`churnops serve`, `churnops transformer`)."""

from __future__ import annotations

import typer


def register_serving_commands(app: typer.Typer) -> None:
    """Top-level serving commands."""
