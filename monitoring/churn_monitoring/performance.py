"""Live performance per model version over a rolling window: realised from the labels fed back, and
estimated before they arrive from the calibrated probabilities.

The estimate is confidence-based performance estimation (CBPE, as in NannyML): when probabilities are
calibrated, a customer predicted to churn with probability p is a true positive with probability p and a
false positive with probability 1 - p; one predicted to stay is a false negative with probability p. Summing
gives expected TP, FP and FN over the window, and so expected precision, recall and F1, without a single
label. It holds only while calibration holds (no concept drift), which is why the realised F1 is shown beside
it: the two drifting apart is itself a signal. NannyML itself is not used: it needs pandas and its own
chunking, for three sums an SQL query computes in the database.

Realised metrics count each labelled prediction once (labels observed in the window); the estimate covers
every prediction made in the window.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Engine, Float, case, cast, func, select

from churn_monitoring.store.schema import labels, predictions


@dataclass(frozen=True)
class Realised:
    n: int
    positives: int
    f1: float
    precision: float
    recall: float
    roc_auc: float | None


@dataclass(frozen=True)
class Estimated:
    n: int
    f1: float | None
    precision: float | None
    recall: float | None
    expected_positives: float


@dataclass(frozen=True)
class VersionPerformance:
    model_version: str
    realised: Realised | None
    estimated: Estimated | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "realised": asdict(self.realised) if self.realised else None,
            "estimated": asdict(self.estimated) if self.estimated else None,
        }


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def roc_auc(churned: npt.NDArray[np.bool_], probabilities: npt.NDArray[np.float64]) -> float | None:
    """Mann-Whitney form of the ROC AUC (mid-ranks for ties); None when only one class is present."""
    from scipy.stats import rankdata

    positives = int(churned.sum())
    negatives = len(churned) - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(probabilities)
    return float((ranks[churned].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def realised_metrics(
    churned: npt.NDArray[np.bool_], predicted: npt.NDArray[np.bool_], probabilities: npt.NDArray[np.float64]
) -> Realised:
    tp = float(np.sum(churned & predicted))
    fp = float(np.sum(~churned & predicted))
    fn = float(np.sum(churned & ~predicted))
    return Realised(
        n=len(churned),
        positives=int(churned.sum()),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        roc_auc=roc_auc(churned, probabilities),
    )


def cbpe(expected_tp: float, expected_fp: float, expected_fn: float, n: int) -> Estimated:
    """Expected precision, recall and F1 from expected confusion counts."""
    if n == 0:
        return Estimated(n=0, f1=None, precision=None, recall=None, expected_positives=0.0)
    return Estimated(
        n=n,
        f1=_ratio(2 * expected_tp, 2 * expected_tp + expected_fp + expected_fn),
        precision=_ratio(expected_tp, expected_tp + expected_fp),
        recall=_ratio(expected_tp, expected_tp + expected_fn),
        expected_positives=expected_tp + expected_fn,
    )


def cbpe_from_probabilities(probabilities: npt.NDArray[np.float64], threshold: float) -> Estimated:
    """CBPE on arrays (for reports and tests; the service lets the database sum)."""
    predicted = probabilities >= threshold
    return cbpe(
        float(probabilities[predicted].sum()),
        float((1.0 - probabilities[predicted]).sum()),
        float(probabilities[~predicted].sum()),
        len(probabilities),
    )


def live_performance(
    engine: Engine, *, window_days: float, now: datetime | None = None
) -> list[VersionPerformance]:
    """Realised and estimated performance of every model version seen in the window."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    since = moment - timedelta(days=window_days)
    probability = cast(predictions.c.probability, Float)
    estimate_query = (
        select(
            predictions.c.model_version,
            func.count(),
            func.sum(case((predictions.c.prediction, probability), else_=0.0)),
            func.sum(case((predictions.c.prediction, 1.0 - probability), else_=0.0)),
            func.sum(case((predictions.c.prediction, 0.0), else_=probability)),
        )
        .where(predictions.c.predicted_at >= since, predictions.c.predicted_at <= moment)
        .group_by(predictions.c.model_version)
    )
    labelled_query = (
        select(
            predictions.c.model_version, predictions.c.probability, predictions.c.prediction, labels.c.churned
        )
        .join(
            labels,
            (labels.c.event_id == predictions.c.event_id) & (labels.c.row_index == predictions.c.row_index),
        )
        .where(labels.c.observed_at >= since, labels.c.observed_at <= moment)
    )
    with engine.connect() as connection:
        estimates = {
            str(version): cbpe(float(tp or 0.0), float(fp or 0.0), float(fn or 0.0), int(n))
            for version, n, tp, fp, fn in connection.execute(estimate_query)
        }
        rows = connection.execute(labelled_query).all()
    by_version: dict[str, list[tuple[float, bool, bool]]] = {}
    for version, prob, predicted, churned in rows:
        by_version.setdefault(str(version), []).append((float(prob), bool(predicted), bool(churned)))
    realised = {}
    for version, values in by_version.items():
        array = np.array(values, dtype=np.float64)
        realised[version] = realised_metrics(array[:, 2] > 0.5, array[:, 1] > 0.5, array[:, 0])
    return [
        VersionPerformance(model_version=v, realised=realised.get(v), estimated=estimates.get(v))
        for v in sorted(set(estimates) | set(realised))
    ]
