"""`churnops evaluate VERSION --against champion`: shadow evaluation on the prediction store's labels."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from churnops.commands.common import console, fail

app = typer.Typer()

ROWS = (
    ("ROC AUC", "roc_auc"),
    ("F1 (own threshold)", "f1"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("Brier score", "brier"),
    ("calibration error (ECE)", "calibration_error"),
    ("threshold", "threshold"),
)


def _database_url(database: str | None) -> str:
    """--database, else the detector's own setting (CHURNOPS_DETECTOR_DATABASE_URL, else its SQLite)."""
    if database:
        return database
    from churn_monitoring.settings import get_settings
    from churn_monitoring.store.database import database_url

    return database_url(get_settings())


def _table(record: dict[str, object]) -> Table:
    table = Table(title=f"version {record['version']} against version {record['against']}")
    for column in ("", f"version {record['version']}", f"version {record['against']}", "difference"):
        table.add_column(column, justify="right" if column else "left")
    new, old = record["challenger"], record["champion"]
    assert isinstance(new, dict)
    assert isinstance(old, dict)
    for label, key in ROWS:
        if key in new:
            table.add_row(label, f"{new[key]:.4f}", f"{old[key]:.4f}", f"{new[key] - old[key]:+.4f}")
    return table


@app.command("evaluate")
def evaluate_command(
    version: Annotated[str, typer.Argument(help="Version (number or alias) to evaluate")],
    against: Annotated[str, typer.Option("--against", help="Version or alias to compare with")] = "champion",
    database: Annotated[
        str | None,
        typer.Option(
            "--database",
            help="SQLAlchemy URL of the prediction store (default: the detector's CHURNOPS_DETECTOR_DATABASE_URL)",
        ),
    ] = None,
    overlay: Annotated[
        str | None, typer.Option("--overlay", help="Environment whose canary-analysis.yaml holds the margins")
    ] = None,
    max_customers: Annotated[
        int, typer.Option("--max-customers", min=1, help="Newest labelled customers read at most")
    ] = 200_000,
) -> None:
    """Score the store's labelled customers with both versions; compare; keep the result in the registry."""
    from churn_model.registry import Registry, RegistryError
    from churn_model.settings import get_settings as model_settings
    from churnops.cluster.canary.config import ANALYSIS_FILE, AnalysisConfigError, load_config
    from churnops.cluster.canary.shadow import evaluate_versions, shadow_verdict
    from churnops.cluster.render import RenderError, overlay_dir
    from churnops.cluster.settings import get_settings

    settings = get_settings()
    registry = Registry(model_settings())
    try:
        limits = load_config(
            overlay_dir(settings, overlay or settings.rollout_overlay) / ANALYSIS_FILE
        ).shadow
        with tempfile.TemporaryDirectory(prefix="churnops-evaluate-") as scratch:
            comparison = evaluate_versions(
                registry,
                version,
                against,
                _database_url(database),
                max_customers=max_customers,
                work_dir=Path(scratch),
            )
    except (RegistryError, RenderError, AnalysisConfigError) as error:
        raise fail(str(error)) from error
    record = comparison.as_record()
    registry.record_evaluation(comparison.version, record)
    console.print(
        f"{comparison.customers} labelled customers ({comparison.left_out} unreadable by a contract)"
    )
    if comparison.challenger:
        console.print(_table(record))
        changed = comparison.risk_level_changed
        if not math.isnan(changed):
            console.print(f"risk level changes for {changed:.1%} of the customers")
    verdict, reasons = shadow_verdict(record, limits)
    console.print(f"verdict: {verdict}" + (f" ({'; '.join(reasons)})" if reasons else ""), highlight=False)
    console.print(f"recorded on version {comparison.version} in the registry (tag shadow_evaluation)")
    if verdict == "loses":
        raise typer.Exit(code=1)
