"""The two statistical backends: the same per-feature tests and the same multiple-testing correction.

`alibi` runs alibi-detect's `TabularDrift` (Kolmogorov–Smirnov for numbers, chi-square for categories,
Bonferroni or FDR) and `KSDrift` for the predicted probability, as the design asks. alibi-detect 0.13 is
licensed under the Business Source License 1.1 and pins numpy<2, so it is imported here and only here,
when the backend is built. `scipy` runs the very calls alibi-detect makes (`scipy.stats.ks_2samp` with
`method="asymp"`, `scipy.stats.chi2_contingency` on the union of reference and current categories) and
the same correction, for users who cannot accept that licence; both reach the same verdicts.

Inputs are matrices already encoded by the detector: one float column per contract field, category fields
as integer codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Correction = Literal["bonferroni", "fdr"]
BACKENDS = ("alibi", "scipy")
CORRECTIONS: tuple[Correction, ...] = ("bonferroni", "fdr")


class DriftBackendError(RuntimeError):
    """The requested backend cannot run here (alibi-detect not installed) or was asked something invalid."""


class Backend(Protocol):
    name: str

    def features(self, current: FloatArray) -> tuple[FloatArray, FloatArray, float]:
        """Per-feature (statistics, p-values) and the per-feature significance after correction."""
        ...

    def prediction(self, current: FloatArray) -> tuple[float, float]:
        """KS (statistic, p-value) of the predicted probabilities against the reference ones."""
        ...


def corrected_threshold(p_values: FloatArray, alpha: float, correction: str) -> float:
    """The p-value below which a feature is significant, with the family-wise correction applied.

    Bonferroni: alpha / m. FDR (Benjamini–Hochberg): q·k/m for the largest k with p_(k) < q·k/m, or q/m when
    no p-value passes (then none is significant). Exactly what alibi-detect's batch-level decision uses,
    so both backends flag the same features; a handful of lines, not worth a statsmodels dependency.
    """
    m = len(p_values)
    if m == 0:
        return alpha
    if correction == "bonferroni":
        return alpha / m
    if correction == "fdr":
        levels = alpha * np.arange(1, m + 1) / m
        below = np.flatnonzero(np.sort(p_values) < levels)
        return float(levels[below.max()]) if below.size else float(levels[0])
    raise DriftBackendError(f"correction must be one of {list(CORRECTIONS)}, not {correction!r}")


class ScipyBackend:
    """KS and chi-square from scipy, called exactly as alibi-detect 0.13's TabularDrift calls them."""

    name = "scipy"

    def __init__(
        self,
        reference: FloatArray,
        categorical: Sequence[int],
        reference_probabilities: FloatArray | None,
        *,
        alpha: float,
        correction: str,
    ) -> None:
        corrected_threshold(np.ones(1), alpha, correction)  # validates the correction name
        self.reference = reference
        self.categorical = frozenset(categorical)
        self.reference_probabilities = reference_probabilities
        self.alpha = alpha
        self.correction = correction
        self._categories = {j: np.unique(reference[:, j]) for j in self.categorical}

    def features(self, current: FloatArray) -> tuple[FloatArray, FloatArray, float]:
        from scipy.stats import chi2_contingency, ks_2samp

        width = self.reference.shape[1]
        statistics = np.zeros(width, dtype=np.float64)
        p_values = np.zeros(width, dtype=np.float64)
        for j in range(width):
            if j in self.categorical:
                categories = np.union1d(self._categories[j], np.unique(current[:, j]))
                table = np.vstack(
                    [
                        (self.reference[:, j][:, None] == categories).sum(axis=0),
                        (current[:, j][:, None] == categories).sum(axis=0),
                    ]
                )
                result = chi2_contingency(table)
                statistics[j], p_values[j] = result[0], result[1]
            else:
                result = ks_2samp(self.reference[:, j], current[:, j], method="asymp")
                statistics[j], p_values[j] = result.statistic, result.pvalue
        return statistics, p_values, corrected_threshold(p_values, self.alpha, self.correction)

    def prediction(self, current: FloatArray) -> tuple[float, float]:
        from scipy.stats import ks_2samp

        if self.reference_probabilities is None:
            raise DriftBackendError("the reference has no probabilities to compare predictions with")
        result = ks_2samp(self.reference_probabilities, current, method="asymp")
        return float(result.statistic), float(result.pvalue)


class AlibiBackend:
    """alibi-detect's TabularDrift over all contract fields, KSDrift over the predicted probability."""

    name = "alibi"

    def __init__(
        self,
        reference: FloatArray,
        categorical: Sequence[int],
        reference_probabilities: FloatArray | None,
        *,
        alpha: float,
        correction: str,
    ) -> None:
        corrected_threshold(np.ones(1), alpha, correction)
        try:
            from alibi_detect.cd import KSDrift, TabularDrift
        except ImportError as error:
            raise DriftBackendError(
                "the alibi drift backend needs alibi-detect (pip install 'churnops[alibi]', licensed under "
                "the Business Source License 1.1); set CHURNOPS_DETECTOR_DRIFT_BACKEND=scipy to run the same tests "
                "without it"
            ) from error
        # Dict[int, None]: alibi-detect takes each category field's values from the reference and, at
        # test time, counts over the union with the window's values, so unseen codes are tested, not lost.
        self._features = TabularDrift(
            reference,
            p_val=alpha,
            categories_per_feature=dict.fromkeys(categorical),
            x_ref_preprocessed=True,
            correction=correction,
        )
        self._prediction: Any = None
        if reference_probabilities is not None:
            self._prediction = KSDrift(reference_probabilities[:, None], p_val=alpha, x_ref_preprocessed=True)

    def features(self, current: FloatArray) -> tuple[FloatArray, FloatArray, float]:
        data = self._features.predict(current, drift_type="batch", return_p_val=True, return_distance=True)[
            "data"
        ]
        threshold = data["threshold"]
        # FDR with nothing significant returns the whole ladder q·i/m; its first rung is q/m (see above).
        threshold = float(np.min(threshold)) if np.ndim(threshold) else float(threshold)
        return (
            np.asarray(data["distance"], dtype=np.float64),
            np.asarray(data["p_val"], dtype=np.float64),
            threshold,
        )

    def prediction(self, current: FloatArray) -> tuple[float, float]:
        if self._prediction is None:
            raise DriftBackendError("the reference has no probabilities to compare predictions with")
        data = self._prediction.predict(current[:, None], return_p_val=True, return_distance=True)["data"]
        return float(np.asarray(data["distance"]).ravel()[0]), float(np.asarray(data["p_val"]).ravel()[0])


def make_backend(
    name: str,
    reference: FloatArray,
    categorical: Sequence[int],
    reference_probabilities: FloatArray | None,
    *,
    alpha: float,
    correction: str,
) -> Backend:
    if name == "alibi":
        return AlibiBackend(
            reference, categorical, reference_probabilities, alpha=alpha, correction=correction
        )
    if name == "scipy":
        return ScipyBackend(
            reference, categorical, reference_probabilities, alpha=alpha, correction=correction
        )
    raise DriftBackendError(f"drift backend must be one of {list(BACKENDS)}, not {name!r}")
