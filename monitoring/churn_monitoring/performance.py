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
from sqlalchemy import Engine, Float, Integer, case, cast, func, select

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


def realised_from_counts(
    n: int, positives: int, tp: float, fp: float, fn: float, roc_auc: float | None
) -> Realised:
    return Realised(
        n=n,
        positives=positives,
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        roc_auc=roc_auc,
    )


def realised_metrics(
    churned: npt.NDArray[np.bool_], predicted: npt.NDArray[np.bool_], probabilities: npt.NDArray[np.float64]
) -> Realised:
    return realised_from_counts(
        len(churned),
        int(churned.sum()),
        float(np.sum(churned & predicted)),
        float(np.sum(~churned & predicted)),
        float(np.sum(churned & ~predicted)),
        roc_auc(churned, probabilities),
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


# Realised ROC AUC is computed from a histogram of probabilities per label, summed in the database: the
# refresh then holds at most 2 x (AUC_BINS + 1) counts per version whatever the number of labels in the
# window (it used to fetch every labelled row each minute: memory and time grew with the labels). Pairs of
# a churner and a stayer in the same bin count as ties (a half), so the error is at most half the share of
# such pairs: below 1e-3 for probabilities spread over [0, 1] (tests/monitoring/performance).
AUC_BINS = 10_000


def roc_auc_from_histogram(
    positives: npt.NDArray[np.int64], negatives: npt.NDArray[np.int64]
) -> float | None:
    """ROC AUC from counts of churners and stayers per ascending probability bin; None with one class."""
    total_positives, total_negatives = int(positives.sum()), int(negatives.sum())
    if total_positives == 0 or total_negatives == 0:
        return None
    negatives_below = np.cumsum(negatives) - negatives
    wins = float(np.sum(positives * (negatives_below + 0.5 * negatives)))
    return wins / (total_positives * total_negatives)


def live_performance(
    engine: Engine, *, window_days: float, now: datetime | None = None
) -> list[VersionPerformance]:
    """Realised and estimated performance of every model version seen in the window, every sum done by
    the database (memory bounded whatever the window holds)."""
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
    labelled = labels.join(
        predictions,
        (labels.c.event_id == predictions.c.event_id) & (labels.c.row_index == predictions.c.row_index),
    )
    observed_in_window = (labels.c.observed_at >= since, labels.c.observed_at <= moment)
    churned, predicted = labels.c.churned, predictions.c.prediction
    counts_query = (
        select(
            predictions.c.model_version,
            func.count(),
            func.sum(case((churned, 1), else_=0)),
            func.sum(case((churned & predicted, 1), else_=0)),
            func.sum(case((~churned & predicted, 1), else_=0)),
            func.sum(case((churned & ~predicted, 1), else_=0)),
        )
        .select_from(labelled)
        .where(*observed_in_window)
        .group_by(predictions.c.model_version)
    )
    # CAST rounds in PostgreSQL and truncates in SQLite: either way one bin per probability interval.
    probability_bin = cast(probability * AUC_BINS, Integer)
    histogram_query = (
        select(predictions.c.model_version, probability_bin, churned, func.count())
        .select_from(labelled)
        .where(*observed_in_window)
        .group_by(predictions.c.model_version, probability_bin, churned)
    )
    with engine.connect() as connection:
        estimates = {
            str(version): cbpe(float(tp or 0.0), float(fp or 0.0), float(fn or 0.0), int(n))
            for version, n, tp, fp, fn in connection.execute(estimate_query)
        }
        counts = connection.execute(counts_query).all()
        histograms: dict[str, npt.NDArray[np.int64]] = {}
        for version, bin_index, is_churned, count in connection.execute(histogram_query):
            histogram = histograms.setdefault(str(version), np.zeros((2, AUC_BINS + 1), dtype=np.int64))
            histogram[int(bool(is_churned)), min(max(int(bin_index), 0), AUC_BINS)] += int(count)
    realised = {}
    for version, n, positives, tp, fp, fn in counts:
        stayers, churners = histograms[str(version)]
        realised[str(version)] = realised_from_counts(
            int(n),
            int(positives or 0),
            float(tp or 0),
            float(fp or 0),
            float(fn or 0),
            roc_auc_from_histogram(churners, stayers),
        )
    return [
        VersionPerformance(model_version=v, realised=realised.get(v), estimated=estimates.get(v))
        for v in sorted(set(estimates) | set(realised))
    ]
