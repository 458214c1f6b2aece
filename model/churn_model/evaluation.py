"""Metrics of a churn model and the choice of its decision threshold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from churn_core.contract import FloatArray

BoolArray = npt.NDArray[np.bool_]
Objective = Literal["f1", "value"]


@dataclass(frozen=True)
class RetentionEconomics:
    """What a retention offer costs and earns: the 'value' threshold objective maximises its profit.

    A targeted customer costs `offer_cost`; a targeted churner is kept with probability `save_rate` and is
    then worth `customer_value`.
    """

    offer_cost: float
    customer_value: float
    save_rate: float = 0.5

    def profit(self, churned: BoolArray, targeted: BoolArray) -> float:
        kept = float(np.sum(churned & targeted)) * self.save_rate * self.customer_value
        return kept - float(np.sum(targeted)) * self.offer_cost


def expected_calibration_error(churned: BoolArray, probabilities: FloatArray, bins: int = 10) -> float:
    """ECE over equal-count bins: mean |observed rate - mean probability|, weighted by bin size."""
    order = np.argsort(probabilities, kind="stable")
    error = 0.0
    for part in np.array_split(order, bins):
        if len(part):
            error += len(part) * abs(float(churned[part].mean()) - float(probabilities[part].mean()))
    return error / len(probabilities)


def candidate_thresholds(probabilities: FloatArray) -> FloatArray:
    """Every distinct predicted probability: the only places where any metric can change."""
    return np.unique(probabilities)


def choose_threshold(
    churned: BoolArray,
    probabilities: FloatArray,
    objective: Objective = "f1",
    economics: RetentionEconomics | None = None,
) -> tuple[float, float]:
    """Threshold maximising the objective on held-out (validation) predictions; returns (threshold, score).

    Computed for all candidate thresholds at once from cumulative counts over the probabilities sorted in
    decreasing order (O(n log n)), instead of re-scoring the data for each candidate.
    """
    order = np.argsort(-probabilities, kind="stable")
    sorted_p = probabilities[order]
    sorted_y = churned[order].astype(np.float64)
    # Candidates are distinct values; at a candidate t we target every p >= t: the last index of each run.
    last_of_run = np.flatnonzero(np.r_[sorted_p[1:] != sorted_p[:-1], True])
    true_positives = np.cumsum(sorted_y)[last_of_run]
    targeted = last_of_run + 1.0
    if objective == "f1":
        positives = float(sorted_y.sum())
        scores = 2.0 * true_positives / (targeted + positives)
    else:
        if economics is None:
            raise ValueError("the 'value' objective needs offer cost and customer value")
        scores = (
            true_positives * economics.save_rate * economics.customer_value - targeted * economics.offer_cost
        )
    best = int(np.argmax(scores))
    return float(sorted_p[last_of_run[best]]), float(scores[best])


def classification_metrics(
    churned: BoolArray, probabilities: FloatArray, threshold: float
) -> dict[str, float | list[list[int]]]:
    """Ranking, threshold and probability-quality metrics of one prediction set."""
    predicted = probabilities >= threshold
    clipped = np.clip(probabilities, 1e-15, 1 - 1e-15)
    matrix = confusion_matrix(churned, predicted, labels=[False, True])
    return {
        "roc_auc": float(roc_auc_score(churned, probabilities)),
        "pr_auc": float(average_precision_score(churned, probabilities)),
        "f1": float(f1_score(churned, predicted, zero_division=0.0)),
        "precision": float(precision_score(churned, predicted, zero_division=0.0)),
        "recall": float(recall_score(churned, predicted, zero_division=0.0)),
        "brier": float(brier_score_loss(churned, probabilities)),
        "log_loss": float(log_loss(churned, clipped, labels=[False, True])),
        "calibration_error": expected_calibration_error(churned, probabilities),
        "threshold": float(threshold),
        "n": len(churned),
        "positives": int(np.sum(churned)),
        "confusion_matrix": matrix.astype(int).tolist(),
    }


SCALAR_METRICS = (
    "roc_auc",
    "pr_auc",
    "f1",
    "precision",
    "recall",
    "brier",
    "log_loss",
    "calibration_error",
    "threshold",
)


def summarise_folds(folds: list[dict[str, float | list[list[int]]]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over cross-validation folds for each scalar metric."""
    summary: dict[str, dict[str, float]] = {}
    for name in SCALAR_METRICS:
        values = np.array([float(fold[name]) for fold in folds])  # type: ignore[arg-type]
        summary[name] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        }
    return summary
