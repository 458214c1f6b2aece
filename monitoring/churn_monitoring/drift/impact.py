"""Model-aware severity: what one field's shift does to the model's output.

A drifted field matters in proportion to how much it moves what the business sees: the predicted churn
rate, the share of customers in the High / Very High risk bands (the ones who get a call) and the model's
expected F1. This module estimates those changes per field by re-scoring the reference customers with that
field's current distribution swapped in, everything else about each customer kept.

Why not the model itself: the detector runs where alibi-detect runs (numpy 1.26) and the model was pickled
by scikit-learn on numpy 2, so `model.joblib` does not load there (docs/monitoring/drift.md). The contract
carries an additive summary of the model instead, the reason-code tables of `churn_core.explain`: for every
field, its centred partial dependence on the log-odds scale. Each reference customer keeps the model's own
log-odds (the probabilities stored with the reference sample), and only the swapped field's term changes:
    logit p'_i = logit p_i - effect_f(x_i) + effect_f(x'_i).
That is exact for an additive model and a first-order estimate for the boosted trees' interactions; the
drift benchmark (scripts/bench_drift.py) measures the error against scoring the shifted windows.

How a distribution is swapped in, without inventing changes that did not happen (an unchanged field has an
impact of exactly zero):
- numbers: quantile mapping. The reference customer at rank r takes the current value at the same quantile,
  which is the monotone (optimal-transport) coupling of the two distributions: x 1.05 in the window is
  x 1.05 for every reference customer.
- categories: the coupling that moves the fewest customers (its mass is the total variation distance). A
  customer of a category whose share fell keeps it with probability q/p, else moves to one of the categories
  whose share rose, in proportion to the rise. The expectation over these moves is computed exactly (one
  weight per customer and category), so the estimate has no Monte Carlo noise.
A category the contract does not know (an unseen value) has no table entry: its effect is taken as zero,
the average customer's.

Hand-written: no library estimates a shift's effect on a model's output from a partial-dependence summary
(NannyML's CBPE, used in `churn_monitoring.performance`, estimates performance from probabilities one has;
here the probabilities of a population that has not been scored are what is missing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from churn_core.contract import CategoryEffect, FeatureContract, NumberEffect

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
HIGH_RISK_LEVEL = "High"
LOGIT_CLIP = 1e-9


@dataclass(frozen=True)
class Outlook:
    """The model's output over a population of customers."""

    churn_rate: float  # mean predicted churn probability
    high_risk_share: float  # share of customers in the High or Very High band
    estimated_f1: float | None  # CBPE: F1 expected from calibrated probabilities at the model threshold

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


@dataclass(frozen=True)
class Impact:
    """Change of the model's output (window or estimate minus reference), in shares of customers and F1."""

    churn_rate: float
    high_risk_share: float
    estimated_f1: float | None

    @classmethod
    def between(cls, before: Outlook, after: Outlook) -> Impact:
        f1 = (
            None
            if before.estimated_f1 is None or after.estimated_f1 is None
            else after.estimated_f1 - before.estimated_f1
        )
        return cls(after.churn_rate - before.churn_rate, after.high_risk_share - before.high_risk_share, f1)

    def crosses(self, rate_threshold: float, f1_drop: float) -> bool:
        """Whether this change is worth paging for: the churn rate or the high-risk share moves by at least
        `rate_threshold` (either way: a falling predicted churn rate also means the input changed under the
        model), or the estimated F1 falls by at least `f1_drop`."""
        moved = max(abs(self.churn_rate), abs(self.high_risk_share)) >= rate_threshold
        return moved or (self.estimated_f1 is not None and -self.estimated_f1 >= f1_drop)

    @property
    def size(self) -> float:
        """One number to rank by: the larger of the two share changes."""
        return max(abs(self.churn_rate), abs(self.high_risk_share))

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


def _sigmoid(logits: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float64)


def _logit(probabilities: FloatArray) -> FloatArray:
    clipped = np.clip(probabilities, LOGIT_CLIP, 1.0 - LOGIT_CLIP)
    return np.asarray(np.log(clipped / (1.0 - clipped)), dtype=np.float64)


def high_risk_cut(contract: FeatureContract) -> float:
    """Lowest probability of the High band (0.5 with the default bands); the last band's when there is no
    band called High."""
    bands = contract.risk_bands
    levels = [band.level for band in bands]
    index = levels.index(HIGH_RISK_LEVEL) if HIGH_RISK_LEVEL in levels else len(bands) - 1
    if index == 0:
        return 0.0
    upper = bands[index - 1].upper
    return 1.0 if upper is None else float(upper)


def outlook(probabilities: FloatArray, weights: FloatArray, *, threshold: float, high_cut: float) -> Outlook:
    """Churn rate, high-risk share and CBPE F1 of customers (rows) with alternative outcomes (columns),
    each outcome weighted; every row's weights sum to 1."""
    from churn_monitoring.performance import cbpe

    rows = probabilities.shape[0]
    predicted = probabilities >= threshold
    expected_tp = float(np.sum(weights * probabilities * predicted))
    expected_fp = float(np.sum(weights * (1.0 - probabilities) * predicted))
    expected_fn = float(np.sum(weights * probabilities * ~predicted))
    return Outlook(
        churn_rate=float(np.sum(weights * probabilities)) / rows,
        high_risk_share=float(np.sum(weights * (probabilities >= high_cut))) / rows,
        estimated_f1=cbpe(expected_tp, expected_fp, expected_fn, rows).f1,
    )


def minimal_move_weights(
    reference_codes: IntArray, reference_shares: FloatArray, current_shares: FloatArray
) -> FloatArray:
    """(customers, categories) probabilities of each reference customer's category under the coupling of
    the two share vectors that moves the fewest customers (see the module docstring)."""
    size = len(reference_shares)
    with np.errstate(divide="ignore", invalid="ignore"):
        stay = np.where(reference_shares > 0, np.minimum(1.0, current_shares / reference_shares), 1.0)
    gain = np.maximum(current_shares - reference_shares, 0.0)
    destination = gain / gain.sum() if gain.sum() > 0 else np.zeros(size)
    weights = (1.0 - stay[reference_codes])[:, None] * destination[None, :]
    weights[np.arange(len(reference_codes)), reference_codes] += stay[reference_codes]
    return np.asarray(weights, dtype=np.float64)


def quantile_mapped(reference: FloatArray, current: FloatArray) -> FloatArray:
    """Each reference value replaced by the current value at the same quantile (ordinal ranks, so a tied
    block of reference values spreads over the current quantiles it covers). The step quantile function
    ("inverted_cdf") keeps values to those the window has, and maps a sample onto itself exactly."""
    order = np.argsort(reference, kind="stable")
    ranks = np.empty(len(reference), dtype=np.float64)
    ranks[order] = np.arange(len(reference), dtype=np.float64)
    quantiles = (ranks + 0.5) / len(reference)
    return np.asarray(np.quantile(current, quantiles, method="inverted_cdf"), dtype=np.float64)


class ImpactModel:
    """The reference customers' log-odds and each field's effect table, to re-score swapped fields.

    Columns are the detector's encoded reference matrix: category fields (and closed number sets) as codes
    into `labels[field]`, numbers as values.
    """

    def __init__(
        self,
        contract: FeatureContract,
        reference: FloatArray,
        categorical: Sequence[int],
        labels: Mapping[str, Sequence[str]],
        probabilities: FloatArray,
    ) -> None:
        effects = {effect.field: effect for effect in contract.effects}
        missing = [name for name in contract.field_names if name not in effects]
        if missing:
            raise ValueError(f"the contract has no effect table for {', '.join(missing)}")
        if len(probabilities) != reference.shape[0]:
            raise ValueError(
                f"{len(probabilities)} reference probabilities for {reference.shape[0]} reference rows"
            )
        self.threshold = contract.model.threshold
        self.high_cut = high_risk_cut(contract)
        self._reference = reference
        self._categorical = frozenset(categorical)
        self._fields = contract.fields
        self._effects = effects
        self._probabilities = probabilities
        self._logits = _logit(probabilities)
        self.baseline = self._outlook(probabilities[:, None], np.ones((len(probabilities), 1)))
        self._terms = [self._term(j, reference[:, j], labels) for j in range(len(self._fields))]
        self._labels = labels

    def _outlook(self, probabilities: FloatArray, weights: FloatArray) -> Outlook:
        return outlook(probabilities, weights, threshold=self.threshold, high_cut=self.high_cut)

    def code_effects(self, name: str, labels: Sequence[str]) -> FloatArray:
        """Effect of each category code of a field; values the table does not know count as zero."""
        effect = self._effects[name]
        if isinstance(effect, CategoryEffect):
            return np.array([effect.effects.get(label, 0.0) for label in labels], dtype=np.float64)
        assert isinstance(effect, NumberEffect)
        values = []
        for label in labels:
            try:
                values.append(float(np.interp(float(label), effect.grid, effect.effects)))
            except ValueError:
                values.append(0.0)
        return np.asarray(values, dtype=np.float64)

    def _number_effects(self, name: str, values: FloatArray) -> FloatArray:
        effect = self._effects[name]
        assert isinstance(effect, NumberEffect)
        return np.asarray(np.interp(values, effect.grid, effect.effects), dtype=np.float64)

    def _term(self, j: int, column: FloatArray, labels: Mapping[str, Sequence[str]]) -> FloatArray:
        """Each reference customer's effect-table term for field j."""
        name = self._fields[j].name
        if j in self._categorical:
            return self.code_effects(name, labels[name])[column.astype(np.int64)]
        return self._number_effects(name, column)

    def feature(self, j: int, current: FloatArray, labels: Sequence[str] = ()) -> Impact:
        """Estimated change of the model's output when field j takes its distribution in `current` (codes
        into `labels` for categories, which may extend the reference's labels with unseen ones)."""
        name = self._fields[j].name
        base = self._logits - self._terms[j]
        if j in self._categorical:
            size = len(labels)
            codes = self._reference[:, j].astype(np.int64)
            reference_shares = np.bincount(codes, minlength=size) / len(codes)
            current_shares = np.bincount(current.astype(np.int64), minlength=size) / max(len(current), 1)
            weights = minimal_move_weights(codes, reference_shares, current_shares)
            probabilities = _sigmoid(base[:, None] + self.code_effects(name, labels)[None, :])
        else:
            swapped = quantile_mapped(self._reference[:, j], current)
            probabilities = _sigmoid(base + self._number_effects(name, swapped))[:, None]
            weights = np.ones_like(probabilities)
        return Impact.between(self.baseline, self._outlook(probabilities, weights))

    def observed(self, probabilities: FloatArray) -> Impact:
        """The change measured on a window that was scored: its output minus the reference's."""
        current = self._outlook(probabilities[:, None], np.ones((len(probabilities), 1)))
        return Impact.between(self.baseline, current)

    def window_outlook(self, probabilities: FloatArray) -> Outlook:
        return self._outlook(probabilities[:, None], np.ones((len(probabilities), 1)))
