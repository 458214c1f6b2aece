"""What `churnops monitor drift` and `churnops monitor drift-scenario` do, given an artefact directory and
files (the CLI resolves registry versions and data paths before calling in)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from churn_monitoring.drift.detector import DriftDetector, DriftReport, FeatureDrift

console = Console(stderr=True)


class DriftCommandError(RuntimeError):
    """A problem the user can fix (bad file, unknown version, missing library): one line, exit 1."""


def print_error(error: Exception) -> None:
    # Unwrapped: a message naming a file, line or value must survive copy and paste whatever the width.
    console.print(f"[red]error:[/red] {escape(str(error))}", soft_wrap=True)


def verified_artefact(artefact: Path) -> Path:
    """The artefact directory, once every file matches its manifest checksum."""
    from churn_core.artefact import ArtefactError, verify_artefact

    try:
        verify_artefact(artefact)
    except ArtefactError as error:
        raise DriftCommandError(str(error)) from error
    return artefact


def read_predictions(path: Path, rows: int) -> list[float]:
    """`churn_probability` of every customer, in the order of the customers file (`churnops score` output)."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "churn_probability" not in reader.fieldnames:
            raise DriftCommandError(f"{path}: no churn_probability column")
        try:
            values = [float(row["churn_probability"]) for row in reader]
        except ValueError as error:
            raise DriftCommandError(f"{path}: {error}") from error
    if len(values) != rows:
        raise DriftCommandError(f"{path}: {len(values)} probabilities for {rows} customers")
    return values


@dataclass(frozen=True)
class DriftOutputs:
    """Where a drift run writes: the report on stdout as `table` or `json`, optional HTML and PNG files."""

    output_format: str = "table"
    html: Path | None = None
    png: Path | None = None


def run_drift(
    current: Path,
    *,
    artefact: Path,
    backend: str | None = None,
    predictions: Path | None = None,
    score: bool = False,
    output_format: str = "table",
    html: Path | None = None,
    png: Path | None = None,
) -> DriftReport:
    """Test a customers file against the artefact's reference, in this process: the backend must be
    importable here (`backend_importable`; the CLI runs the alibi backend in the detector's environment
    otherwise, through `python -m churn_monitoring.drift`)."""
    if output_format not in ("table", "json"):
        raise DriftCommandError(f"--format must be table or json, not {output_format!r}")
    if predictions is not None and score:
        raise DriftCommandError("pass either --predictions or --score, not both")
    directory = verified_artefact(artefact)
    detector = _detector(directory, backend)
    window, batch = _window(detector, current)
    probabilities: list[float] | None = None
    if predictions is not None:
        probabilities = read_predictions(predictions, len(batch))
    elif score:
        probabilities = _score(directory, detector, batch)
    report = _test(detector, window, probabilities)
    _write(report, detector, window, probabilities, DriftOutputs(output_format, html, png))
    return report


def backend_importable(backend: str) -> bool:
    """Whether `backend` can run in this interpreter (alibi needs alibi-detect, numpy<2)."""
    import importlib.util

    return backend != "alibi" or importlib.util.find_spec("alibi_detect") is not None


def configured_backend(backend: str | None) -> str:
    from churn_monitoring.settings import get_settings

    return backend or get_settings().drift_backend


def _detector(directory: Path, backend: str | None) -> DriftDetector:
    from churn_monitoring.drift.backends import DriftBackendError
    from churn_monitoring.drift.detector import options_from_settings
    from churn_monitoring.settings import get_settings

    options = options_from_settings(get_settings())
    if backend is not None:
        options["backend"] = backend
    try:
        return DriftDetector.from_artefact(directory, **options)
    except DriftBackendError as error:
        raise DriftCommandError(str(error)) from error


def _window(detector: DriftDetector, current: Path) -> tuple[dict[str, list[Any]], Any]:
    """The customers file in the detector's columnar form, and the batch it was read as."""
    from churn_core.artefact import reference_columns
    from churn_core.data import CustomerReader, DataValidationError

    try:
        customers = CustomerReader(detector.contract, require_target=False).read_all(current)
    except DataValidationError as error:
        raise DriftCommandError(str(error)) from error
    return reference_columns(detector.contract, customers.batch), customers.batch


def _test(
    detector: DriftDetector, window: dict[str, list[Any]], probabilities: list[float] | None
) -> DriftReport:
    from churn_monitoring.drift.backends import DriftBackendError

    try:
        return detector.test(window, probabilities)
    except (ValueError, DriftBackendError) as error:
        raise DriftCommandError(str(error)) from error


def _write(
    report: DriftReport,
    detector: DriftDetector,
    window: dict[str, list[Any]],
    probabilities: list[float] | None,
    outputs: DriftOutputs,
) -> None:
    if outputs.output_format == "json":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report)
    if outputs.html is None and outputs.png is None:
        return
    from churn_monitoring.drift.report import write_html, write_summary_png

    samples = detector.samples(window, probabilities)
    if outputs.html is not None:
        console.print(f"wrote {write_html(report, samples, outputs.html)}")
    if outputs.png is not None:
        console.print(f"wrote {write_summary_png(report, samples, outputs.png)}")


def _score(directory: Path, detector: DriftDetector, batch: Any) -> list[float]:
    from churn_core.contract import Encoder

    try:
        from churn_core.artefact import load_model

        model = load_model(directory)
    except (ImportError, ValueError, ModuleNotFoundError) as error:
        raise DriftCommandError(
            f"--score needs the model to load here ({error}); score with `churnops score` where it does "
            "and pass --predictions"
        ) from error
    rows = Encoder(detector.contract).encode(batch)
    return [float(p) for p in model.predict_proba(rows)[:, 1]]


SEVERITY_STYLE = {"impact": "bold red", "harmless": "yellow", "none": "green"}


def _verdict_cell(item: FeatureDrift) -> str:
    if item.drift_detected:
        return "[bold red]DRIFT[/bold red]" if item.severity == "impact" else "[yellow]drift[/yellow]"
    if item.significant:
        return "not material"
    if item.material:
        return "not significant"
    return "-"


def _caption(report: DriftReport) -> str:
    features = report.features
    threshold = features[0].threshold if features else report.p_value
    return (
        f"{report.window_size} customers vs {report.reference_size} reference; significant: p < "
        f"{threshold:.3g} ({report.correction}, {report.p_value:g} over {len(features)} fields; "
        f"prediction: p < {report.p_value:g}); material: TVD >= {report.category_floor:g}, "
        f"W/mean >= {report.number_floor:g}; DRIFT (pages): moves churn rate or High/Very High share by "
        f">= {100 * report.impact_threshold:g} pts or est. F1 by <= -{report.impact_f1_drop:g}"
    )


def print_report(report: DriftReport) -> None:
    """The verdict table, most severe first: impact on the model's output, then the statistics."""
    from churn_monitoring.drift.report import f1_change, headline, points, ranked

    table = Table(
        title=f"drift of churn model v{escape(report.model_version)} ({report.backend} backend)",
        caption=_caption(report),
    )
    table.add_column("feature", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("Δ churn rate", justify="right", no_wrap=True)
    table.add_column("Δ High+", justify="right", no_wrap=True)
    table.add_column("Δ est. F1", justify="right", no_wrap=True)
    table.add_column("test")
    table.add_column("p-value", justify="right")
    table.add_column("effect", justify="right", no_wrap=True)
    items = ranked(report)
    unseen = any(item.unseen_categories for item in items)
    if unseen:
        table.add_column("unseen")
    for item in items:
        impact = item.impact
        row = [
            escape(item.feature),
            _verdict_cell(item),
            points(impact.churn_rate if impact else None),
            points(impact.high_risk_share if impact else None),
            f1_change(impact.estimated_f1 if impact else None),
            item.test,
            f"{item.p_value:.3g}",
            f"{item.effect_size:.4f} {'TVD' if item.effect_metric == 'tvd' else 'W/mean'}",
        ]
        if unseen:
            row.append(escape(", ".join(f"{k}: {v}" for k, v in item.unseen_categories.items())))
        table.add_row(*row)
    out = Console()
    style = SEVERITY_STYLE[report.severity]
    out.print(f"severity: [{style}]{report.severity}[/{style}] — {escape(headline(report))}", soft_wrap=True)
    out.print(table)
    drifted = ", ".join(f.feature for f in report.drifted())
    out.print(f"dataset drift: {'[bold red]yes[/bold red] (' + escape(drifted) + ')' if drifted else 'no'}")
    if report.prediction is not None:
        out.print(
            f"prediction drift: {'[bold red]yes[/bold red]' if report.prediction.drift_detected else 'no'}"
        )


def run_scenario(shift: str, output: Path, *, data: Path, rows: int, seed: int) -> Path:
    """A Telco-shaped customers CSV for one of the documented drift scenarios, resampled from `data`."""
    from churn_core.contract import telco_contract
    from churn_core.data import DataValidationError
    from churn_monitoring.drift import scenarios

    contract = telco_contract()
    try:
        columns = scenarios.read_customers(contract, data)
        window = scenarios.scenario(columns, shift, rows=rows, seed=seed)
    except (DataValidationError, ValueError) as error:
        raise DriftCommandError(str(error)) from error
    return scenarios.write_customers(contract, window, output)
