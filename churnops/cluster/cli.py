"""Commands of the cluster side (`churnops rollout ...`, `churnops manifests ...`, `churnops schemas ...`)."""

from __future__ import annotations

import typer


def register_cluster_commands(app: typer.Typer) -> None:
    """Top-level cluster commands."""
