"""Commands of the training side: train, models, export, promote, rollback, report, score."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from churnops.artefacts import registered_artefact
from churnops.commands.common import DataOption, console, fail

app = typer.Typer()


class RichProgress:
    """Adapts the training pipeline's progress reports to a rich progress bar."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None

    def step(self, description: str, total: int | None = None) -> None:
        if self.task is not None:
            task = self.progress.tasks[-1]
            self.progress.update(self.task, completed=task.total or 1, total=task.total or 1)
        self.task = self.progress.add_task(description, total=total)

    def advance(self) -> None:
        self.progress.advance(self.task)

    def finish(self) -> None:
        if self.task is not None:
            task = self.progress.tasks[-1]
            self.progress.update(self.task, completed=task.total or 1, total=task.total or 1)


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    )


@app.command("train")
def train_command(
    data: DataOption = None,
    objective: Annotated[str, typer.Option(help="Threshold objective: f1 or value")] = "f1",
    offer_cost: Annotated[float | None, typer.Option(help="Cost of one retention offer")] = None,
    customer_value: Annotated[float | None, typer.Option(help="Value of keeping a churner")] = None,
    save_rate: Annotated[float, typer.Option(help="Share of targeted churners an offer keeps")] = 0.5,
    cv_repeats: Annotated[int, typer.Option(help="Repeats of stratified 5-fold CV (0: skip)")] = 3,
    seed: Annotated[int | None, typer.Option(help="Random seed (default CHURNOPS_MODEL_SEED or 42)")] = None,
    if_missing: Annotated[bool, typer.Option("--if-missing", help="Do nothing if a version exists")] = False,
) -> None:
    """Train, evaluate (test split + repeated CV), register in MLflow and export the serving artefact."""
    from churn_core.data import DataNotFoundError, DataValidationError
    from churn_model.evaluation import RetentionEconomics
    from churn_model.pipeline import train
    from churn_model.registry import Registry
    from churn_model.settings import get_settings
    from churn_model.training import TrainingConfig

    settings = get_settings()
    if if_missing and Registry(settings).has_versions():
        console.print(f"{settings.registered_name} already has registered versions; not training")
        return
    economics = None
    if objective == "value" or offer_cost is not None or customer_value is not None:
        if offer_cost is None or customer_value is None:
            raise fail("the value objective needs both --offer-cost and --customer-value")
        economics = RetentionEconomics(offer_cost, customer_value, save_rate)
        objective = "value"
    elif objective != "f1":
        raise fail("--objective must be f1 or value")
    config = TrainingConfig(
        seed=settings.seed if seed is None else seed,
        objective="value" if economics else "f1",
        economics=economics,
        cv_repeats=cv_repeats,
    )
    try:
        with _progress() as bar:
            reporter = RichProgress(bar)
            result = train(settings, config, data, reporter)
            reporter.finish()
    except (DataValidationError, DataNotFoundError) as error:
        raise fail(str(error)) from error
    _print_training_summary(result.metrics)
    role = "champion" if result.became_champion else "challenger"
    console.print(
        f"registered {settings.registered_name} version {result.version} as {role}; "
        f"artefact {result.artefact} ({result.metrics['train_seconds']:.1f} s)"
    )
    typer.echo(result.version)


def _print_training_summary(metrics: dict[str, Any]) -> None:
    table = Table(title="churn model quality")
    table.add_column("metric")
    table.add_column("test split", justify="right")
    if "cv" in metrics:
        table.add_column("repeated CV (mean ± sd)", justify="right")
    for name in ("roc_auc", "pr_auc", "f1", "precision", "recall", "brier", "log_loss", "calibration_error"):
        row = [name, f"{metrics['test'][name]:.4f}"]
        if "cv" in metrics:
            stats = metrics["cv"]["summary"][name]
            row.append(f"{stats['mean']:.4f} ± {stats['std']:.4f}")
        table.add_row(*row)
    if "cv" in metrics:
        table.add_row("calibration_error (pooled)", "", f"{metrics['cv']['calibration_error_pooled']:.4f}")
    table.add_row("threshold", f"{metrics['threshold']['value']:.4f}", "")
    console.print(table)


@app.command("models")
def models_command() -> None:
    """List registered versions with aliases and test metrics."""
    from churn_model.registry import Registry
    from churn_model.settings import get_settings

    registry = Registry(get_settings())
    table = Table(title=registry.name)
    for column in ("version", "aliases", "test ROC AUC", "test F1", "threshold", "run"):
        table.add_column(column)
    for info in registry.versions():
        table.add_row(
            info.version,
            ", ".join(info.aliases),
            f"{info.metrics.get('test_roc_auc', float('nan')):.4f}",
            f"{info.metrics.get('test_f1', float('nan')):.4f}",
            f"{info.metrics.get('test_threshold', float('nan')):.4f}",
            info.run_id,
        )
    Console().print(table)


@app.command("export")
def export_command(
    version: Annotated[str, typer.Argument(help="Version number or alias (champion, challenger)")],
    directory: Annotated[
        Path,
        typer.Argument(
            help="A new or empty directory, or an earlier export (replaced); anything else is refused",
            file_okay=False,
        ),
    ],
) -> None:
    """Reproduce a registered version's serving artefact (what KServe's storageUri points at)."""
    import hashlib

    from churn_core.artefact import MANIFEST_FILE
    from churn_model.pipeline import export_version
    from churn_model.registry import Registry, RegistryError
    from churn_model.settings import get_settings

    try:
        path = export_version(Registry(get_settings()), version, directory)
    except RegistryError as error:
        raise fail(str(error)) from error
    digest = hashlib.sha256((path / MANIFEST_FILE).read_bytes()).hexdigest()
    console.print(f"exported to {path}; {MANIFEST_FILE} sha256 {digest} (the predictor's pin)")


@app.command("promote")
def promote_command(version: Annotated[str, typer.Argument(help="Version to make champion")]) -> None:
    """Point the `champion` alias at VERSION (the previous champion is kept for rollback)."""
    from churn_model.registry import Registry, RegistryError
    from churn_model.settings import get_settings

    registry = Registry(get_settings())
    try:
        previous = registry.promote(version)
    except RegistryError as error:
        raise fail(str(error)) from error
    console.print(f"champion: {previous} -> {registry.resolve('champion').version}")


@app.command("rollback")
def rollback_command() -> None:
    """Return `champion` to the version it pointed at before the last promotion."""
    from churn_model.registry import Registry, RegistryError
    from churn_model.settings import get_settings

    try:
        current, target = Registry(get_settings()).rollback()
    except RegistryError as error:
        raise fail(str(error)) from error
    console.print(f"champion: {current} -> {target}")


def _estimate_rows(path: Path, sample_bytes: int = 1 << 16) -> int:
    """Rows in a CSV estimated from the size of its first lines: a progress total without a full pass."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        sample = handle.read(sample_bytes)
    lines = max(sample.count(b"\n") - 1, 1)
    return max(int(size / (len(sample) / (lines + 1))) - 1, 1)


@app.command("score")
def score_command(
    input_file: Annotated[
        Path, typer.Option("--input", help="Customers CSV (no Churn needed)", dir_okay=False)
    ],
    output: Annotated[Path, typer.Option("--output", help="Scores CSV to write", dir_okay=False)],
    model_version: Annotated[
        str | None, typer.Option("--model-version", help="Version or alias (default: champion)")
    ] = None,
    artefact: Annotated[
        Path | None, typer.Option("--artefact", help="Serving artefact directory instead of the registry")
    ] = None,
) -> None:
    """Score a customer file in streamed chunks: id, probability, prediction, risk level, action."""
    from churn_core.data import DataValidationError
    from churn_model.registry import RegistryError
    from churn_model.scoring import BatchScorer

    try:
        directory = artefact or registered_artefact(model_version)
        scorer = BatchScorer(directory)
        estimated_rows = _estimate_rows(input_file)
        with _progress() as bar:
            task = bar.add_task(f"scoring {input_file.name}", total=estimated_rows)

            def advance(rows: int) -> None:
                bar.advance(task, rows)

            summary = scorer.score_file(input_file, output, on_chunk=advance)
            bar.update(task, total=summary.rows, completed=summary.rows)
    except (DataValidationError, RegistryError, FileNotFoundError) as error:
        raise fail(str(error)) from error
    console.print(
        f"scored {summary.rows:,} customers with model version {summary.model_version} in "
        f"{summary.seconds:.2f} s ({summary.rows_per_second:,.0f} rows/s); predicted churners: "
        f"{summary.predicted_churners:,}; risk: "
        + ", ".join(f"{level} {count:,}" for level, count in summary.risk_counts.items())
    )


@app.command("report")
def report_command(
    version: Annotated[str | None, typer.Argument(help="Version or alias (default: champion)")] = None,
    output: Annotated[Path | None, typer.Option(help="HTML file (default reports/model-v<N>.html)")] = None,
    png: Annotated[Path | None, typer.Option(help="Also write the figure grid as a PNG")] = None,
    artefact: Annotated[
        Path | None, typer.Option("--artefact", help="Serving artefact directory instead of the registry")
    ] = None,
) -> None:
    """Write a self-contained HTML model report: ROC, PR, calibration, confusion matrix, F1 vs threshold."""
    from churn_core.contract import FeatureContract
    from churn_model.registry import RegistryError
    from churn_model.report import render_report

    try:
        directory = artefact or registered_artefact(version)
    except RegistryError as error:
        raise fail(str(error)) from error
    document, image = render_report(directory)
    target = output or Path("reports") / f"model-v{FeatureContract.load(directory).model.version}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(document, encoding="utf-8")
    if png is not None:
        png.parent.mkdir(parents=True, exist_ok=True)
        png.write_bytes(image)
    console.print(f"wrote {target}" + (f" and {png}" if png else ""))


def dumps(document: Any) -> str:
    return json.dumps(document, indent=2)
