"""Commands of the monitoring side (`churnops monitor ...`, `churnops feedback`)."""

from __future__ import annotations

import typer

monitor_app = typer.Typer(help="Drift detection, prediction store and live performance.", no_args_is_help=True)


def register_monitoring_commands(app: typer.Typer) -> None:
    """Top-level monitoring commands (feedback)."""
