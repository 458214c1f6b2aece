"""Drift reports for people: a self-contained HTML page and a PNG grid of the most drifted fields.

Both lead with what a drift does to the model's output (the change of the predicted churn rate, of the
High / Very High share and of the estimated F1) and rank fields by it: a significant shift that moves no
decision is listed, but after the one that does.

The HTML carries its plots as inline base64 PNGs and its style inline, so it can be mailed, attached to a
ticket or archived as one file. matplotlib draws through `Figure` objects (no pyplot, no global state), so
reports can be rendered from worker threads of the detector service.
"""

from __future__ import annotations

import base64
import html
import io
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from churn_monitoring.drift.detector import DriftReport, FeatureDrift, FeatureSample
from churn_monitoring.drift.impact import Impact

REFERENCE_COLOUR = "#4c72b0"
CURRENT_COLOUR = "#dd8452"
DRIFT_COLOUR = "#c0392b"
MAX_BINS = 40


def ranked(report: DriftReport) -> list[FeatureDrift]:
    """Fields (and the prediction) most worth a look first: by severity, then by their effect on the model's
    output, then by effect size relative to the floor."""
    items = list(report.features) + ([report.prediction] if report.prediction is not None else [])
    order = {"impact": 0, "harmless": 1, "none": 2}
    return sorted(
        items,
        key=lambda f: (
            order[f.severity],
            not f.significant,
            -(f.impact.size if f.impact is not None else 0.0),
            -(f.effect_size / f.floor if f.floor else 0.0),
        ),
    )


def points(value: float | None) -> str:
    """A change in shares of customers as signed percentage points ("+1.2 pts")."""
    return "n/a" if value is None else f"{100 * value:+.1f} pts"


def f1_change(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def impact_text(impact: Impact | None) -> str:
    """One line: predicted churn rate, High/Very High share and estimated F1 changes."""
    if impact is None:
        return "impact unknown (no effect tables or reference probabilities in the artefact)"
    return (
        f"churn rate {points(impact.churn_rate)}, High/Very High {points(impact.high_risk_share)}, "
        f"est. F1 {f1_change(impact.estimated_f1)}"
    )


def headline(report: DriftReport) -> str:
    """The report's first line: severity and what the drift does to the model's output."""
    drifted = report.drifted()
    observed = report.observed_impact
    measured = f"; measured on the window: {impact_text(observed)}" if observed is not None else ""
    if report.severity == "none":
        return f"No drift{measured}"
    lead = "Drift that moves the model's output" if report.severity == "impact" else "Harmless drift"
    parts = [f"{f.feature} ({impact_text(f.impact)})" for f in drifted]
    if report.prediction is not None and report.prediction.drift_detected:
        parts.append("the predicted churn probability")
    return f"{lead}: {'; '.join(parts)}{measured}"


def _verdict_text(item: FeatureDrift) -> str:
    if item.drift_detected:
        return "DRIFT, moves the model" if item.severity == "impact" else "drift, harmless"
    if item.significant:
        return "significant, not material"
    if item.material:
        return "material, not significant"
    return "no drift"


def _title(item: FeatureDrift) -> str:
    name = "KS" if item.test == "ks" else "χ²"
    metric = "TVD" if item.effect_metric == "tvd" else "W/mean"
    impact = f"\nimpact: {impact_text(item.impact)}" if item.drift_detected else ""
    return (
        f"{item.feature}: {_verdict_text(item)}\n"
        f"{name} p={item.p_value:.2g} (drift: <{item.threshold:.2g}), "
        f"{metric}={item.effect_size:.3f} (drift: ≥{item.floor:g}){impact}"
    )


def _plot_numbers(axes: Any, sample: FeatureSample, ecdf: Any | None = None) -> None:
    combined = np.concatenate([sample.reference, sample.current])
    edges = np.histogram_bin_edges(combined, bins="auto")
    if len(edges) > MAX_BINS + 1:
        edges = np.linspace(combined.min(), combined.max(), MAX_BINS + 1)
    for values, colour, label in (
        (sample.reference, REFERENCE_COLOUR, f"reference (n={len(sample.reference)})"),
        (sample.current, CURRENT_COLOUR, f"current (n={len(sample.current)})"),
    ):
        axes.hist(values, bins=edges, density=True, histtype="stepfilled", alpha=0.35, color=colour)
        axes.hist(values, bins=edges, density=True, histtype="step", linewidth=1.4, color=colour, label=label)
    axes.set_ylabel("density")
    axes.legend(fontsize=7, loc="best")
    if ecdf is not None:
        for values, colour in ((sample.reference, REFERENCE_COLOUR), (sample.current, CURRENT_COLOUR)):
            ordered = np.sort(values)
            ecdf.step(ordered, np.arange(1, len(ordered) + 1) / len(ordered), where="post", color=colour)
        ecdf.set_ylabel("cumulative share")
        ecdf.set_title("ECDF (KS statistic: largest vertical gap)", fontsize=8)


def _plot_categories(axes: Any, sample: FeatureSample, unseen: Mapping[str, int]) -> None:
    reference = sample.reference_counts / max(len(sample.reference), 1)
    current = sample.current_counts / max(len(sample.current), 1)
    positions = np.arange(len(sample.labels))
    width = 0.4
    axes.bar(positions - width / 2, reference, width, color=REFERENCE_COLOUR, label="reference")
    bars = axes.bar(positions + width / 2, current, width, color=CURRENT_COLOUR, label="current")
    for bar, label in zip(bars, sample.labels, strict=True):
        if label in unseen:
            bar.set_hatch("//")
            bar.set_edgecolor(DRIFT_COLOUR)
    names = [f"{label}\n(unseen)" if label in unseen else label for label in sample.labels]
    axes.set_xticks(positions)
    axes.set_xticklabels(names, fontsize=7, rotation=15 if len(names) > 3 else 0)
    axes.set_ylabel("share of customers")
    axes.legend(fontsize=7, loc="best")


def _draw(axes: Any, item: FeatureDrift, sample: FeatureSample, ecdf: Any | None = None) -> None:
    if sample.kind == "number":
        _plot_numbers(axes, sample, ecdf)
    else:
        _plot_categories(axes, sample, item.unseen_categories)
    axes.set_title(_title(item), fontsize=9, color=DRIFT_COLOUR if item.drift_detected else "black")


def _png(figure: Any, dpi: int) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def feature_png(item: FeatureDrift, sample: FeatureSample, dpi: int = 80) -> bytes:
    from matplotlib.figure import Figure

    if sample.kind == "number":
        figure = Figure(figsize=(10, 3.2))
        left, right = figure.subplots(1, 2)
        _draw(left, item, sample, ecdf=right)
    else:
        figure = Figure(figsize=(6, 3.2))
        _draw(figure.subplots(), item, sample)
    figure.tight_layout()
    return _png(figure, dpi)


def summary_png(
    report: DriftReport, samples: Mapping[str, FeatureSample], top: int = 6, dpi: int = 100
) -> bytes:
    """A grid of the `top` fields most worth a look (the README picture)."""
    from matplotlib.figure import Figure

    items = [f for f in ranked(report) if f.feature in samples][:top]
    columns = min(3, len(items))
    rows = -(-len(items) // columns)
    figure = Figure(figsize=(4.6 * columns, 3.4 * rows))
    grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for axes, item in zip(grid, items, strict=False):
        _draw(axes, item, samples[item.feature])
    for axes in grid[len(items) :]:
        axes.set_visible(False)
    figure.suptitle(
        f"churn model v{report.model_version}: {report.window_size} customers vs {report.reference_size} "
        f"reference ({report.backend} backend)\n" + "\n".join(textwrap.wrap(headline(report), 150)),
        fontsize=11,
    )
    figure.tight_layout()
    return _png(figure, dpi)


def _row(item: FeatureDrift) -> str:
    unseen = ", ".join(f"{html.escape(k)}: {v}" for k, v in item.unseen_categories.items())
    css = "drift" if item.drift_detected else ("significant" if item.significant else "")
    impact = item.impact
    cells = [
        f'<a href="#f-{html.escape(item.feature)}">{html.escape(item.feature)}</a>',
        f"<b>{_verdict_text(item)}</b>",
        points(impact.churn_rate if impact else None),
        points(impact.high_risk_share if impact else None),
        f1_change(impact.estimated_f1 if impact else None),
        item.test,
        f"{item.statistic:.4g}",
        f"{item.p_value:.3g}",
        f"{item.threshold:.3g}",
        f"{item.effect_size:.4f} ({item.effect_metric})",
        f"{item.floor:g}",
        unseen,
    ]
    return f'<tr class="{css}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, td:nth-child(2), td:nth-child(6), td:last-child { text-align: left; }
tr.drift { background: #fbe3e1; } .verdict.harmless { color: #8a6d3b; } tr.significant { background: #fdf6e3; }
.verdict { font-size: 1.2em; font-weight: bold; } .verdict.drift { color: #c0392b; }
section { margin-top: 2em; } img { max-width: 100%; }
"""


HEADERS = (
    "feature",
    "verdict",
    "Δ churn rate",
    "Δ High/Very High",
    "Δ est. F1",
    "test",
    "statistic",
    "p-value",
    "threshold",
    "effect size",
    "floor",
    "unseen categories",
)


def _outlook_text(report: DriftReport) -> str:
    if report.baseline is None:
        return ""
    base = report.baseline
    text = (
        f"Reference: predicted churn rate {100 * base.churn_rate:.1f} %, High/Very High "
        f"{100 * base.high_risk_share:.1f} %"
    )
    if report.observed is not None:
        text += (
            f"; this window: {100 * report.observed.churn_rate:.1f} %, "
            f"{100 * report.observed.high_risk_share:.1f} %"
        )
    return (
        f"<p>{text}. Field impacts are estimates: the reference re-scored with that field's window "
        "distribution swapped in (effect tables of the contract).</p>"
    )


def _sections(items: list[FeatureDrift], samples: Mapping[str, FeatureSample]) -> str:
    sections = []
    for item in items:
        sample = samples.get(item.feature)
        if sample is None:
            continue
        image = base64.b64encode(feature_png(item, sample)).decode("ascii")
        sections.append(
            f'<section id="f-{html.escape(item.feature)}"><h3>{html.escape(item.feature)}</h3>'
            f'<img alt="{html.escape(item.feature)}: reference vs current" src="data:image/png;base64,{image}">'
            "</section>"
        )
    return "".join(sections)


def render_html(
    report: DriftReport, samples: Mapping[str, FeatureSample], title: str = "Drift report"
) -> str:
    items = ranked(report)
    severity = report.severity
    verdict_class = {"impact": " drift", "harmless": " harmless", "none": ""}[severity]
    prediction = ""
    if report.prediction is not None:
        prediction = f"<p>Prediction (churn probability): <b>{_verdict_text(report.prediction)}</b></p>"
    header = "<tr>" + "".join(f"<th>{h}</th>" for h in HEADERS) + "</tr>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{html.escape(title)}: churn model v{html.escape(report.model_version)}</h1>
<p class="verdict{verdict_class}">{html.escape(headline(report))}</p>
{_outlook_text(report)}
{prediction}
<p>{report.window_size} customers ({report.rows_dropped} left out for missing numbers) against
{report.reference_size} reference customers; {html.escape(report.backend)} backend, {report.correction}
correction at p &lt; {report.p_value:g}; a field drifts when significant and its effect reaches the floor
(total variation distance ≥ {report.category_floor:g} for categories, Wasserstein distance ≥
{report.number_floor:g} of the reference mean for numbers); a drift pages when it moves the predicted churn
rate or the High/Very High share by ≥ {100 * report.impact_threshold:g} points or lowers the estimated F1 by
≥ {report.impact_f1_drop:g}.</p>
<table>{header}{"".join(_row(item) for item in items)}</table>
{_sections(items, samples)}
</body></html>
"""


def write_html(report: DriftReport, samples: Mapping[str, FeatureSample], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report, samples), encoding="utf-8")
    return path


def write_summary_png(
    report: DriftReport, samples: Mapping[str, FeatureSample], path: Path, top: int = 6
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(summary_png(report, samples, top=top))
    return path
