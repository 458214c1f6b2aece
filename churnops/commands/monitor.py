"""`churnops monitor drift / drift-scenario / serve / db upgrade`: drift verdicts and the detector service."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from churnops.artefacts import registered_artefact

app = typer.Typer(
    name="monitor", help="Drift detection, prediction store and live performance.", no_args_is_help=True
)
db_app = typer.Typer(name="db", help="The prediction store's schema.", no_args_is_help=True)
app.add_typer(db_app)


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (CHURNOPS_DETECTOR_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (CHURNOPS_DETECTOR_PORT)")] = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="serving artefact (CHURNOPS_DETECTOR_MODEL_DIR)")
    ] = None,
) -> None:
    """Run the drift detector: KServe payload logs in, prediction store, drift, feedback, live F1."""
    from churn_monitoring.service.main import serve as serve_detector

    serve_detector(host, port, model_dir)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the prediction store's tables (the service also does this when it starts)."""
    from churn_monitoring.settings import get_settings
    from churn_monitoring.store.database import (
        create_store_engine,
        current_revision,
        database_url,
        upgrade,
    )

    engine = create_store_engine(database_url(get_settings()))
    upgrade(engine)
    typer.echo(f"prediction store at revision {current_revision(engine)}")
    engine.dispose()


@app.command("drift")
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
        str | None,
        typer.Option("--backend", help="alibi or scipy (default: CHURNOPS_DETECTOR_DRIFT_BACKEND)"),
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
    """Test a customer CSV for drift against the model's reference sample; exit 0 whatever it finds.

    The default backend, alibi-detect, lives in the detector's environment (numpy<2): when it is not
    importable here, the test runs there (CHURNOPS_STACK_DETECTOR_PYTHON, as `churnops serve` runs the
    detector), with the same output and exit code.
    """
    from churn_monitoring.drift.command import (
        DriftCommandError,
        backend_importable,
        configured_backend,
        print_error,
        run_drift,
    )

    try:
        directory = _artefact(artefact, model_version)
        chosen = configured_backend(backend)
        if not backend_importable(chosen):
            options = DriftOptions(output_format, html, png, predictions, score)
            raise typer.Exit(code=_drift_in_detector_environment(current, directory, chosen, options))
        run_drift(
            current,
            artefact=directory,
            backend=chosen,
            predictions=predictions,
            score=score,
            output_format=output_format,
            html=html,
            png=png,
        )
    except DriftCommandError as error:
        print_error(error)
        raise typer.Exit(code=1) from error


@dataclass(frozen=True)
class DriftOptions:
    """The options of `monitor drift` passed on unchanged to `python -m churn_monitoring.drift`."""

    output_format: str
    html: Path | None
    png: Path | None
    predictions: Path | None
    score: bool

    def argv(self) -> list[str]:
        argv = ["--format", self.output_format]
        for flag, path in (("--html", self.html), ("--png", self.png), ("--predictions", self.predictions)):
            if path is not None:
                argv += [flag, str(path.resolve())]
        return [*argv, "--score"] if self.score else argv


def detector_python() -> Path:
    """The detector environment's interpreter: CHURNOPS_STACK_DETECTOR_PYTHON (default .venv-drift/bin/python),
    relative to the working directory, else to the project that holds this package (an editable install)."""
    from churnops.settings import get_stack_settings

    python = get_stack_settings().detector_python
    if python.is_absolute() or python.exists():
        return python
    project = Path(__file__).resolve().parents[2]
    return project / python if (project / python).exists() else python


def _drift_in_detector_environment(current: Path, artefact: Path, backend: str, options: DriftOptions) -> int:
    """Run the drift test with the detector environment's Python; its output streams through unchanged."""
    import os
    import subprocess
    import sys

    from churn_monitoring.drift.command import DriftCommandError

    python = detector_python()
    if not python.exists():
        raise DriftCommandError(
            f"the {backend} drift backend needs alibi-detect, which lives in the detector's environment, "
            f"and {python} does not exist: run `make install` (or set CHURNOPS_STACK_DETECTOR_PYTHON), or "
            "pass --backend scipy"
        )
    argv = [str(python), "-m", "churn_monitoring.drift", "--current", str(current.resolve())]
    argv += ["--artefact", str(artefact.resolve()), "--backend", backend, *options.argv()]
    # alibi-detect imports transformers, which warns at import that no deep-learning framework is
    # installed (transformers/__init__.py, `logger.warning_advice`): true, and not what the user asked.
    env = {"TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", **os.environ}
    sys.stdout.flush()
    return subprocess.run(argv, env=env, check=False).returncode


@app.command("drift-scenario")
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
            "--data", help="Telco CSV (else CHURNOPS_MODEL_DATA, ./data/, ../shared/data/)", dir_okay=False
        ),
    ] = None,
) -> None:
    """Write a documented drift scenario (a reference-like resample, optionally one shifted field)."""
    from churn_core.data import DataNotFoundError, resolve_data_path
    from churn_model.settings import get_settings
    from churn_monitoring.drift.command import DriftCommandError, console, print_error, run_scenario

    try:
        source = resolve_data_path(data, get_settings())
        path = run_scenario(shift, output, data=source, rows=rows, seed=seed)
    except DataNotFoundError as error:
        print_error(error)
        raise typer.Exit(code=1) from error
    except DriftCommandError as error:
        print_error(error)
        raise typer.Exit(code=1) from error
    console.print(f"wrote {path} ({rows} customers, shift: {shift})")


def _artefact(artefact: Path | None, model_version: str | None) -> Path:
    """`--artefact DIR` as given, else the registered version's exported artefact (exported on first use)."""
    from churn_monitoring.drift.command import DriftCommandError

    if artefact is not None and model_version is not None:
        raise DriftCommandError("pass either --artefact or --model-version, not both")
    if artefact is not None:
        return artefact
    from churn_model.registry import RegistryError

    try:
        return registered_artefact(model_version or "champion")
    except RegistryError as error:
        raise DriftCommandError(str(error)) from error
