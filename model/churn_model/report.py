"""`churnops report`: a self-contained HTML report of one model version, drawn from its artefact alone.

Everything needed (test-split predictions, metrics, CV summary, importance, threshold) travels in the
serving artefact, so a report can be rebuilt for any registered version without the training data.
Figures are matplotlib PNGs inlined as base64: one file to mail, archive or attach to a review.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from churn_core.artefact import METRICS_FILE, TEST_PREDICTIONS_FILE
from churn_core.contract import FeatureContract
from churn_model.evaluation import RetentionEconomics

METRIC_LABELS = {
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC (average precision)",
    "f1": "F1",
    "precision": "Precision",
    "recall": "Recall",
    "brier": "Brier score",
    "log_loss": "Log loss",
    "calibration_error": "Calibration error (ECE, 10 equal-count bins)",
}


def _figure_grid(
    churned: np.ndarray, probabilities: np.ndarray, metrics: dict[str, Any], threshold: float
) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    figure, axes = plt.subplots(2, 3, figsize=(15, 9.5))
    (roc_axis, pr_axis, calibration_axis), (confusion_axis, threshold_axis, importance_axis) = axes

    false_positive, true_positive, _ = roc_curve(churned, probabilities)
    roc_axis.plot(false_positive, true_positive, color="#1f77b4")
    roc_axis.plot([0, 1], [0, 1], linestyle=":", color="grey")
    roc_axis.set(title=f"ROC (AUC {metrics['roc_auc']:.3f})", xlabel="false positive rate", ylabel="recall")

    precision, recall, _ = precision_recall_curve(churned, probabilities)
    pr_axis.plot(recall, precision, color="#1f77b4")
    pr_axis.axhline(churned.mean(), linestyle=":", color="grey", label="churn rate")
    pr_axis.set(title=f"Precision-recall (AP {metrics['pr_auc']:.3f})", xlabel="recall", ylabel="precision")
    pr_axis.legend(loc="upper right")

    order = np.argsort(probabilities)
    bins = np.array_split(order, 10)
    predicted = [probabilities[b].mean() for b in bins]
    observed = [churned[b].mean() for b in bins]
    calibration_axis.plot([0, 1], [0, 1], linestyle=":", color="grey")
    calibration_axis.plot(predicted, observed, marker="o", color="#1f77b4")
    calibration_axis.set(
        title=f"Calibration (ECE {metrics['calibration_error']:.3f})",
        xlabel="mean predicted probability (decile)",
        ylabel="observed churn rate",
    )

    matrix = np.array(metrics["confusion_matrix"])
    confusion_axis.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        dark = count > matrix.max() / 2
        confusion_axis.text(
            column, row, str(count), ha="center", va="center", fontsize=14, color="white" if dark else "black"
        )
    confusion_axis.set(
        title=f"Confusion matrix at threshold {threshold:.3f}",
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["stays", "churns"],
        yticklabels=["stayed", "churned"],
        xlabel="predicted",
        ylabel="actual",
    )

    grid = np.linspace(0.02, 0.9, 89)
    positives = churned.sum()
    f1 = []
    for cut in grid:
        flagged = probabilities >= cut
        true_hits = np.sum(flagged & churned)
        f1.append(2 * true_hits / (flagged.sum() + positives) if flagged.sum() + positives else 0.0)
    threshold_axis.plot(grid, f1, label="F1", color="#1f77b4")
    economics = metrics.get("economics")
    if economics:
        terms = RetentionEconomics(**economics)
        value = [terms.profit(churned, probabilities >= cut) for cut in grid]
        value_axis = threshold_axis.twinx()
        value_axis.plot(grid, value, color="#2ca02c", label="retention value")
        value_axis.set_ylabel("retention value")
    threshold_axis.axvline(threshold, color="#d62728", linestyle="--", label="chosen threshold")
    threshold_axis.set(title="F1 against threshold (test split)", xlabel="threshold", ylabel="F1")
    threshold_axis.legend(loc="lower center")

    importance = metrics.get("feature_importance", {})
    names = list(importance)[:12][::-1]
    importance_axis.barh(names, [importance[n] for n in names], color="#1f77b4")
    importance_axis.set(title="Permutation importance (drop in ROC AUC)", xlabel="AUC drop")

    figure.tight_layout()
    return figure


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def _metrics_table(metrics: dict[str, Any]) -> str:
    cv = metrics.get("cv", {}).get("summary")
    header = "<tr><th>metric</th><th>test split</th><th>validation (out-of-fold)</th>"
    header += "<th>repeated CV mean ± sd</th></tr>" if cv else "</tr>"
    rows = []
    for key, label in METRIC_LABELS.items():
        cells = [label, f"{metrics['test'][key]:.4f}", f"{metrics['validation'][key]:.4f}"]
        if cv:
            cells.append(f"{cv[key]['mean']:.4f} ± {cv[key]['std']:.4f}")
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return f"<table>{header}{''.join(rows)}</table>"


def render_report(artefact: Path) -> tuple[str, bytes]:
    """HTML report and the PNG of its figure grid for one serving artefact."""
    contract = FeatureContract.load(artefact)
    metrics = json.loads((artefact / METRICS_FILE).read_text(encoding="utf-8"))
    predictions = json.loads((artefact / TEST_PREDICTIONS_FILE).read_text(encoding="utf-8"))
    churned = np.array(predictions["churned"], dtype=bool)
    probabilities = np.array(predictions["probabilities"], dtype=np.float64)
    threshold = contract.model.threshold
    png = _png(
        _figure_grid(
            churned,
            probabilities,
            metrics["test"]
            | {
                "feature_importance": metrics.get("feature_importance", {}),
                "economics": metrics.get("threshold", {}).get("economics"),
            },
            threshold,
        )
    )
    cv = metrics.get("cv")
    cv_note = (
        f"<p>Repeated stratified {cv['folds']}-fold cross-validation ×{cv['repeats']}, threshold chosen inside "
        f"each training fold; calibration error pooled over each repeat's out-of-fold predictions: "
        f"{cv['calibration_error_pooled']:.4f}.</p>"
        if cv
        else "<p>No repeated cross-validation was run for this version.</p>"
    )
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>ChurnOps model report — {html.escape(contract.model.name)} v{html.escape(contract.model.version)}</title>
<style>
 body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1400px; color: #222; }}
 table {{ border-collapse: collapse; margin: 1rem 0; }}
 td, th {{ border: 1px solid #ccc; padding: 0.3rem 0.7rem; text-align: right; }}
 td:first-child, th:first-child {{ text-align: left; }}
 img {{ max-width: 100%; }}
</style></head><body>
<h1>{html.escape(contract.model.name)} version {html.escape(contract.model.version)}</h1>
<p>Decision threshold <b>{threshold:.4f}</b> (objective: {html.escape(contract.model.threshold_objective)},
chosen on validation predictions only). Test split: {metrics["test"]["n"]} customers,
{metrics["test"]["positives"]} churners, never used for fitting or for the threshold.
Training took {metrics.get("train_seconds", float("nan")):.1f} s.</p>
{_metrics_table(metrics)}
{cv_note}
<img alt="ROC, precision-recall, calibration, confusion matrix, F1 against threshold, importance"
 src="data:image/png;base64,{base64.b64encode(png).decode()}">
</body></html>
"""
    return body, png
