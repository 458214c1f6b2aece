"""Drift benchmark: how often the detector flags shifts of stated sizes, per window size, beside Evidently.

Windows are resampled (with replacement, fixed seeds) from all 7,043 Telco customers, then shifted:
  none              the resample itself (false alarms: any field flagged)
  tenure x0.9       every tenure 10 % shorter (rounded to whole months)
  MonthlyCharges x1.05   a 5 % price rise (TotalCharges untouched)
  Contract +10 pts  each non-month-to-month customer relabelled month-to-month with the chance that raises
                    the expected share by ten points (55 % -> 65 %); likewise
  PaymentMethod +10 pts (electronic check 34 % -> 44 %), InternetService +10 pts (fibre 44 % -> 54 %).
A shift case counts a window as detected when the shifted field is flagged. Each window is also scored by
the model, before and after the shift, to compare the detector's estimated effect on the predicted churn
rate with the change measured by scoring (the `est` and `meas` columns, in points).

Evidently (its default DataDriftPreset: per-column tests chosen by type and window size, its own
thresholds) runs the very same windows in a separate environment, `.venv-evidently` (`make evidently`);
it is never a dependency of ChurnOps. Without that environment its columns read "-".

    .venv/bin/python scripts/bench_drift.py                      # 20 windows per cell, ~30-40 minutes
    .venv/bin/python scripts/bench_drift.py --windows 3 --sizes 500   # a smoke run
    .venv/bin/python scripts/bench_drift.py --cases "no change" --windows 200 --fields-only --skip-evidently
                                                                 # false alarms over many quiet windows
    make bench-drift                                             # + Evidently and the chart

Prints one table (rates per case and window size), the wall time, and writes --json / --chart if asked.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "telco-customer-churn.csv"
EVIDENTLY_PYTHON = REPO / ".venv-evidently" / "bin" / "python"
SIZES = (500, 2000, 5000)

Columns = dict[str, list[Any]]


@dataclass(frozen=True)
class Case:
    name: str
    feature: str | None  # the shifted field; None for the no-change case
    shift: Callable[[Columns, int], Columns]


def cases() -> list[Case]:
    from churn_monitoring.drift import scenarios

    return [
        Case("no change", None, lambda w, s: w),
        Case("tenure x0.9", "tenure", lambda w, s: scenarios.scale_field(w, "tenure", 0.9, decimals=0)),
        Case(
            "MonthlyCharges x1.05",
            "MonthlyCharges",
            lambda w, s: scenarios.scale_field(w, "MonthlyCharges", 1.05),
        ),
        Case(
            "Contract month-to-month +10 pts",
            "Contract",
            lambda w, s: scenarios.move_share(w, "Contract", "Month-to-month", 0.10, s),
        ),
        Case(
            "PaymentMethod electronic check +10 pts",
            "PaymentMethod",
            lambda w, s: scenarios.move_share(w, "PaymentMethod", "Electronic check", 0.10, s),
        ),
        Case(
            "InternetService fibre +10 pts",
            "InternetService",
            lambda w, s: scenarios.move_share(w, "InternetService", "Fiber optic", 0.10, s),
        ),
    ]


@dataclass
class Cell:
    case: Case
    size: int
    flagged: list[bool] = field(default_factory=list)  # any field (no change) / the shifted field
    paged: list[bool] = field(default_factory=list)  # severity "impact"
    others: list[int] = field(default_factory=list)  # fields flagged besides the shifted one
    estimated: list[float] = field(default_factory=list)  # the shifted field's estimated Δ churn rate
    measured: list[float] = field(default_factory=list)  # Δ mean probability from scoring
    evidently: list[bool] = field(default_factory=list)
    windows: list[dict[str, Any]] = field(default_factory=list)  # for the Evidently run

    @staticmethod
    def rate(values: list[bool]) -> str:
        return f"{100 * sum(values) / len(values):3.0f} % ({sum(values)}/{len(values)})" if values else "-"


def train_artefact(data: Path, home: Path) -> Path:
    from churn_model.pipeline import train
    from churn_model.settings import ModelSettings
    from churn_model.training import TrainingConfig

    print(f"training a model into {home} (no artefact given) ...", flush=True)
    return train(ModelSettings(home=home, data=data), TrainingConfig(cv_repeats=0), data).artefact


class Scorer:
    def __init__(self, artefact: Path) -> None:
        from churn_core.artefact import load_model
        from churn_core.contract import Encoder, FeatureContract

        self.contract = FeatureContract.load(artefact)
        self.model = load_model(artefact)
        self.encoder = Encoder(self.contract)

    def __call__(self, window: Columns) -> np.ndarray:
        from churn_model.training import predict_churn

        names = list(window)
        records = [dict(zip(names, row, strict=True)) for row in zip(*window.values(), strict=True)]
        rows = self.encoder.encode(self.encoder.batch_from_records(records))
        return np.asarray(predict_churn(self.model, rows), dtype=np.float64)


def run_churnops(
    cell: Cell, columns: Columns, detector: Any, score: Scorer | None, windows: int, seed: int
) -> None:
    """`windows` windows of one cell through the detector; `score` None tests the fields only (no model
    scoring: a quick run of many no-change windows for the false-alarm rate)."""
    size = len(next(iter(columns.values())))
    for i in range(windows):
        window_seed = seed + 1000 * cell.size + i
        picked = np.random.default_rng(window_seed).integers(0, size, cell.size)
        base = {name: [values[j] for j in picked] for name, values in columns.items()}
        shifted = cell.case.shift(base, window_seed)
        probabilities = None if score is None else score(shifted)
        report = detector.test(shifted, probabilities)
        names = {f.feature for f in report.drifted()}
        feature = cell.case.feature
        cell.flagged.append(bool(names) if feature is None else feature in names)
        cell.paged.append(report.severity == "impact")
        cell.others.append(len(names - {feature}))
        if feature is not None:
            impact = report.feature(feature).impact
            cell.estimated.append(float("nan") if impact is None else impact.churn_rate)
            if score is not None and probabilities is not None:
                cell.measured.append(float(probabilities.mean() - score(base).mean()))
            cell.windows.append({"rows": picked.tolist(), "column": feature, "values": shifted[feature]})
        else:
            cell.windows.append({"rows": picked.tolist()})


EVIDENTLY_RUNNER = r"""
import json, sys
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset

reference = pd.read_json(sys.argv[1], orient="columns")
population = pd.read_json(sys.argv[2], orient="columns")
for line in sys.stdin:
    window = json.loads(line)
    current = population.iloc[window["rows"]].reset_index(drop=True)
    if "column" in window:
        current[window["column"]] = window["values"]
    snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
    drifted = []
    for metric in snapshot.dict()["metrics"]:
        name = metric.get("metric_name", "")
        config = metric.get("config", {})
        if name.startswith("ValueDrift") and isinstance(metric.get("value"), (int, float)):
            column, method = config.get("column"), config.get("method", "")
            threshold, value = config.get("threshold"), metric["value"]
            # p-value tests drift below the threshold, distances above it (Evidently's own convention).
            is_p_value = "p_value" in method.lower() or "p-value" in method.lower()
            if (value < threshold) if is_p_value else (value >= threshold):
                drifted.append(column)
    print(json.dumps(drifted), flush=True)
"""


def run_evidently(cells: list[Cell], reference: Columns, columns: Columns, python: Path) -> str | None:
    """Every window of every cell through Evidently's default preset in its own environment."""
    if not python.exists():
        return f"{python} not found (make evidently)"
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        (work / "runner.py").write_text(EVIDENTLY_RUNNER, encoding="utf-8")
        (work / "reference.json").write_text(json.dumps(reference), encoding="utf-8")
        (work / "population.json").write_text(json.dumps(columns), encoding="utf-8")
        lines = "".join(json.dumps(w) + "\n" for cell in cells for w in cell.windows)
        result = subprocess.run(
            [
                str(python),
                str(work / "runner.py"),
                str(work / "reference.json"),
                str(work / "population.json"),
            ],
            input=lines,
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        return f"Evidently failed: {result.stderr[-2000:]}"
    answers = iter(json.loads(line) for line in result.stdout.splitlines())
    for cell in cells:
        for window in cell.windows:
            drifted = set(next(answers))
            cell.evidently.append(bool(drifted) if "column" not in window else window["column"] in drifted)
    return None


def print_table(cells: list[Cell]) -> None:
    header = (
        f"{'case':<40} {'n':>5}  {'ChurnOps':>15}  {'Evidently':>15}  {'paged':>15}  "
        f"{'est Δrate':>9} {'meas Δrate':>10} {'|est-meas| max':>14}"
    )
    print(header)
    print("-" * len(header))
    for cell in cells:
        est = np.array(cell.estimated)
        meas = np.array(cell.measured)
        figures = (
            f"{100 * np.nanmean(est):+8.2f}  {100 * meas.mean():+9.2f}  {100 * np.nanmax(np.abs(est - meas)):13.2f}"
            if len(est) and len(meas) == len(est)
            else ""
        )
        print(
            f"{cell.case.name:<40} {cell.size:>5}  {Cell.rate(cell.flagged):>15}  "
            f"{Cell.rate(cell.evidently):>15}  {Cell.rate(cell.paged):>15}  {figures}"
        )
    print(
        "ChurnOps/Evidently: share of windows with the shifted field flagged (no change: any field flagged); "
        "paged: severity impact; Δrate in points of predicted churn rate (est: the detector's estimate for "
        "the shifted field; meas: scoring the window before and after the shift)."
    )


def draw_chart(cells: list[Cell], path: Path) -> None:
    from matplotlib.figure import Figure

    shifted = [c for c in cells if c.case.feature is not None]
    names = list(dict.fromkeys(c.case.name for c in shifted))
    sizes = sorted({c.size for c in shifted})
    figure = Figure(figsize=(11, 4.2))
    axes = figure.subplots(1, len(sizes), sharey=True, squeeze=False)[0]
    for ax, size in zip(axes, sizes, strict=True):
        here = {c.case.name: c for c in shifted if c.size == size}
        positions = np.arange(len(names))
        ours = [100 * np.mean(here[n].flagged) for n in names]
        theirs = [100 * np.mean(here[n].evidently) if here[n].evidently else 0 for n in names]
        ax.barh(positions + 0.2, ours, 0.4, color="#4c72b0", label="ChurnOps")
        ax.barh(positions - 0.2, theirs, 0.4, color="#dd8452", label="Evidently (default preset)")
        ax.set_yticks(positions)
        ax.set_yticklabels(names, fontsize=8)
        ax.set_xlim(0, 100)
        ax.set_title(f"{size} customers per window", fontsize=10)
        ax.set_xlabel("windows with the shifted field flagged (%)", fontsize=8)
    axes[0].invert_yaxis()
    axes[-1].legend(fontsize=8, loc="lower right")
    nulls = [c for c in cells if c.case.feature is None]
    note = ", ".join(f"n={c.size}: {sum(c.flagged)}/{len(c.flagged)}" for c in nulls)
    figure.suptitle(
        f"Drift detection rate by shift and window size (false alarms without a shift: {note})", fontsize=10
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--artefact", type=Path, help="serving artefact directory (default: train one)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--windows", type=int, default=20, help="windows per case and size (>= 20 for goals)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--seed", type=int, default=20_000)
    parser.add_argument("--backend", default="scipy", choices=("scipy", "alibi"))
    parser.add_argument("--evidently-python", type=Path, default=EVIDENTLY_PYTHON)
    parser.add_argument("--cases", help="only the cases whose name contains one of these (comma-separated)")
    parser.add_argument("--skip-evidently", action="store_true", help="ChurnOps only")
    parser.add_argument(
        "--fields-only", action="store_true", help="no model scoring (no prediction verdict, no Δrate check)"
    )
    parser.add_argument("--json", type=Path, help="write every cell's figures here")
    parser.add_argument("--chart", type=Path, help="write the detection-rate chart (PNG) here")
    args = parser.parse_args()

    from churn_core.artefact import load_reference
    from churn_core.contract import FeatureContract
    from churn_monitoring.drift import scenarios
    from churn_monitoring.drift.detector import DriftDetector, options_from_settings
    from churn_monitoring.settings import DetectorSettings

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as home:
        artefact = args.artefact or train_artefact(args.data, Path(home))
        contract = FeatureContract.load(artefact)
        columns = scenarios.read_customers(contract, args.data)
        options = {**options_from_settings(DetectorSettings()), "backend": args.backend}
        detector = DriftDetector.from_artefact(artefact, **options)
        score = Scorer(artefact)
        reference = load_reference(artefact)["fields"]
        print(
            f"model v{contract.model.version}; {len(columns['tenure'])} customers; reference {detector.reference_size}; "
            f"settings {options}; {args.windows} windows per cell",
            flush=True,
        )
        wanted = [w.strip() for w in args.cases.split(",")] if args.cases else None
        selected = [c for c in cases() if wanted is None or any(w in c.name for w in wanted)]
        cells = [Cell(case, int(size)) for case in selected for size in args.sizes.split(",")]
        for cell in cells:
            run_churnops(
                cell, columns, detector, None if args.fields_only else score, args.windows, args.seed
            )
            print(f"  {cell.case.name:<40} n={cell.size:<5} ChurnOps {Cell.rate(cell.flagged)}", flush=True)
        churnops_seconds = time.perf_counter() - started
        problem = (
            "skipped (--skip-evidently)"
            if args.skip_evidently
            else run_evidently(cells, reference, columns, args.evidently_python)
        )
    if problem:
        print(f"Evidently: {problem}", file=sys.stderr)
    print()
    print_table(cells)
    total = time.perf_counter() - started
    print(
        f"wall time {total:.0f} s (ChurnOps and scoring {churnops_seconds:.0f} s, Evidently {total - churnops_seconds:.0f} s)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "case": c.case.name,
                        "n": c.size,
                        "churnops": c.flagged,
                        "evidently": c.evidently,
                        "paged": c.paged,
                        "other_fields_flagged": c.others,
                        "estimated_churn_rate": c.estimated,
                        "measured_churn_rate": c.measured,
                    }
                    for c in cells
                ],
                indent=1,
            ),
            encoding="utf-8",
        )
    if args.chart and any(c.case.feature for c in cells):
        draw_chart(cells, args.chart)
        print(f"wrote {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
