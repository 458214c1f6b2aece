"""Commands of the monitoring side (`churnops monitor ...`, `churnops feedback`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from churn_monitoring.commands import db_app, feedback, serve

monitor_app = typer.Typer(
    help="Drift detection, prediction store and live performance.", no_args_is_help=True
)


def register_monitoring_commands(app: typer.Typer) -> None:
    """Top-level monitoring commands (feedback)."""
    app.command("feedback")(feedback)


def _register_service_commands() -> None:
    """`churnops monitor serve` and `churnops monitor db ...` (the detector service and its store)."""
    monitor_app.command("serve")(serve)
    monitor_app.add_typer(db_app, name="db")


_register_service_commands()


# --- drift detection (churn_monitoring.drift): `churnops monitor drift`, `churnops monitor drift-scenario` ---


def drift_command(
    current: Annotated[
        Path,
        typer.Option(
            "--current", help="Customers CSV (Telco columns, Churn optional)", exists=True, dir_okay=False
        ),
    ],
    output_format: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report", dir_okay=False)
    ] = None,
    png: Annotated[
        Path | None,
        typer.Option("--png", help="Also write a PNG grid of the most drifted fields", dir_okay=False),
    ] = None,
    model_version: Annotated[
        str | None, typer.Option("--model-version", help="Registered version or alias (default: champion)")
    ] = None,
    artefact: Annotated[
        Path | None,
        typer.Option("--artefact", help="Exported serving artefact instead of the registry", file_okay=False),
    ] = None,
    backend: Annotated[
        str | None, typer.Option("--backend", help="alibi or scipy (default: CHURNOPS_DRIFT_BACKEND)")
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            "--predictions",
            help="CSV with a churn_probability per customer in --current's order (`churnops score` output)",
            dir_okay=False,
        ),
    ] = None,
    score: Annotated[
        bool, typer.Option("--score", help="Score the customers with the artefact's model (needs it to load)")
    ] = False,
) -> None:
    """Test a customer CSV for drift against the model's reference sample; exit 0 whatever it finds."""
    from churn_monitoring.drift.command import DriftCommandError, print_error, run_drift

    try:
        run_drift(
            current,
            artefact=artefact,
            model_version=model_version,
            backend=backend,
            predictions=predictions,
            score=score,
            output_format=output_format,
            html=html,
            png=png,
        )
    except DriftCommandError as error:
        print_error(error)
        raise typer.Exit(code=1) from error


def drift_scenario_command(
    output: Annotated[Path, typer.Option("--output", help="Customers CSV to write", dir_okay=False)],
    shift: Annotated[
        str, typer.Option("--shift", help="none, monthly-charges (x1.15) or contract (month-to-month 75 %)")
    ] = "monthly-charges",
    rows: Annotated[int, typer.Option("--rows", help="Customers to draw from the Telco data", min=1)] = 5000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the resample")] = 7,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="Telco CSV (else CHURNOPS_DATA, ./data/, ../shared/data/)", dir_okay=False
        ),
    ] = None,
) -> None:
    """Write a documented drift scenario (a reference-like resample, optionally one shifted field)."""
    from churn_monitoring.drift.command import DriftCommandError, console, print_error, run_scenario

    try:
        path = run_scenario(shift, output, data=data, rows=rows, seed=seed)
    except DriftCommandError as error:
        print_error(error)
        raise typer.Exit(code=1) from error
    console.print(f"wrote {path} ({rows} customers, shift: {shift})")


def _register_drift_commands() -> None:
    monitor_app.command("drift")(drift_command)
    monitor_app.command("drift-scenario")(drift_scenario_command)


_register_drift_commands()
