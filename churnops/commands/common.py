"""What every command module shares: the stderr console and the one way a command fails."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

# soft_wrap: a message naming a file, line or value must survive copy and paste whatever the width.
console = Console(stderr=True, soft_wrap=True)

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data", help="Telco CSV (else CHURNOPS_MODEL_DATA, ./data/, ../shared/data/)", dir_okay=False
    ),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `error: message` on stderr and return the Exit to raise (unwrapped: the console soft-wraps)."""
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=code)
