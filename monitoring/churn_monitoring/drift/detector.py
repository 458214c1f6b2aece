"""Drift of a window of live customers against the reference sample in the model artefact.

Each of the 19 contract fields gets a two-sample test (Kolmogorov–Smirnov for numbers, chi-square for
categories and for closed integer sets such as SeniorCitizen), corrected for testing 19 fields at once, and
an effect size. A field drifts only when its difference is both significant and material: significance
says that something changed (the correction keeps quiet windows quiet whatever their size), the effect
size says whether it changed by enough to act on (with tens of thousands of customers a test detects a 1 %
price rise). The floors are set per kind of field, on quantities that read the same at every window size:
- categories: total variation distance, the share of customers that would have to change category to turn
  one mix into the other (a ten-point rise of month-to-month contracts is 0.10);
- numbers: Wasserstein distance over the reference's mean absolute value, the relative level shift (a
  5 % price rise is 0.05 for every customer's bill, and so for the whole distribution).

Every field also gets its estimated effect on the model's output (`impact.ImpactModel`): what the shift
does to the predicted churn rate, the High / Very High share and the CBPE-estimated F1. A drifted field
whose impact crosses the impact threshold is severity "impact" (page); one below it is "harmless" (log).

The predicted probability, when given, is tested the same way but is a verdict of its own: a drift of the
model's output is a different finding from a drift of its inputs (it may follow from one, or from several
small ones), so it is not part of the 19-field family nor of `dataset_drift`. Its impact is measured, not
estimated: the window's own probabilities against the reference's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from churn_core.contract import CategoryField, FeatureContract, NumberField
from churn_monitoring.drift.backends import Backend, FloatArray, make_backend
from churn_monitoring.drift.impact import Impact, ImpactModel, Outlook

if TYPE_CHECKING:
    from churn_monitoring.settings import DetectorSettings

PREDICTION_FEATURE = "churn_probability"
# A category value that is absent (None) is counted, like any value outside the reference, under this name.
MISSING_LABEL = "(missing)"
Severity = Literal["none", "harmless", "impact"]
SEVERITIES: tuple[Severity, ...] = ("none", "harmless", "impact")


@dataclass(frozen=True)
class FeatureDrift:
    """The verdict on one field (or on the predicted probability, feature "churn_probability").

    The detector service exports `effect_size` as `churn_feature_drift_score{feature}` (the quantity the
    floor is set on, comparable across window sizes, unlike the statistic and the p-value), `impact` as
    `churn_feature_drift_impact{feature,measure}` and `severity` as `churn_feature_drift_severity{feature}`.
    """

    feature: str
    test: str  # "ks" | "chi2"
    statistic: float
    p_value: float
    threshold: float
    effect_size: float
    effect_metric: str  # "tvd" | "wasserstein_rel"
    significant: bool
    material: bool
    drift_detected: bool
    unseen_categories: dict[str, int] = field(default_factory=dict)
    floor: float = 0.0  # the effect-size floor `material` was judged against
    missing: int = 0  # window values that were not finite numbers (their rows were left out)
    # Estimated (fields) or measured (the prediction) change of the model's output; None when the artefact
    # has no effect tables or reference probabilities.
    impact: Impact | None = None
    severity: Severity = "none"  # "impact": drifted and crosses the impact threshold (or impact unknown)

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["impact"] = None if self.impact is None else self.impact.to_dict()
        return document


@dataclass(frozen=True)
class DriftReport:
    features: list[FeatureDrift]
    prediction: FeatureDrift | None
    dataset_drift: bool  # any field drifted; the prediction verdict is separate
    window_size: int
    model_version: str
    backend: str  # "alibi" | "scipy"
    p_value: float = 0.01  # family-wise significance before correction
    correction: str = "bonferroni"
    category_floor: float = 0.05
    number_floor: float = 0.03
    impact_threshold: float = 0.005
    impact_f1_drop: float = 0.02
    reference_size: int = 0
    rows_dropped: int = 0  # window rows with a missing number, left out of every test
    baseline: Outlook | None = None  # the model's output on the reference customers
    observed: Outlook | None = None  # ... and on the window, when it came with probabilities

    def drifted(self) -> list[FeatureDrift]:
        """Drifted fields, the largest estimated impact first (unknown impact first of all)."""
        return sorted(
            (f for f in self.features if f.drift_detected),
            key=lambda f: -(float("inf") if f.impact is None else f.impact.size),
        )

    @property
    def severity(self) -> Severity:
        """The window's: the most severe of its fields and its prediction."""
        items = [*self.features, *([self.prediction] if self.prediction is not None else [])]
        return max((f.severity for f in items), key=SEVERITIES.index, default="none")

    @property
    def observed_impact(self) -> Impact | None:
        if self.baseline is None or self.observed is None:
            return None
        return Impact.between(self.baseline, self.observed)

    def feature(self, name: str) -> FeatureDrift:
        for item in self.features:
            if item.feature == name:
                return item
        if self.prediction is not None and name == self.prediction.feature:
            return self.prediction
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, impact first: severity, the window's measured change, the drifted fields by impact."""
        observed = self.observed_impact
        return {
            "severity": self.severity,
            "impact": None if observed is None else observed.to_dict(),
            "drifted": [f.feature for f in self.drifted()],
            "drifted_impact": {
                f.feature: None if f.impact is None else f.impact.to_dict() for f in self.drifted()
            },
            "dataset_drift": self.dataset_drift,
            "prediction_drift": None if self.prediction is None else self.prediction.drift_detected,
            "model_version": self.model_version,
            "backend": self.backend,
            "window_size": self.window_size,
            "reference_size": self.reference_size,
            "rows_dropped": self.rows_dropped,
            "reference_outlook": None if self.baseline is None else self.baseline.to_dict(),
            "window_outlook": None if self.observed is None else self.observed.to_dict(),
            "settings": {
                "p_value": self.p_value,
                "correction": self.correction,
                "category_floor": self.category_floor,
                "number_floor": self.number_floor,
                "impact_threshold": self.impact_threshold,
                "impact_f1_drop": self.impact_f1_drop,
            },
            "features": [f.to_dict() for f in self.features],
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
        }


@dataclass(frozen=True)
class FeatureSample:
    """Reference and window values of one field as the tests see them, for reports and plots.

    Numbers: the values. Categories: integer codes into `labels` (contract values first, then values the
    reference or window added); `reference_counts`/`current_counts` count each label.
    """

    name: str
    kind: str  # "number" | "category"
    reference: FloatArray
    current: FloatArray
    labels: tuple[str, ...] = ()

    @property
    def reference_counts(self) -> np.ndarray:
        return np.bincount(self.reference.astype(np.int64), minlength=len(self.labels))

    @property
    def current_counts(self) -> np.ndarray:
        return np.bincount(self.current.astype(np.int64), minlength=len(self.labels))


@dataclass(frozen=True)
class _Window:
    matrix: FloatArray
    probabilities: FloatArray | None
    extra_labels: dict[str, tuple[str, ...]]
    unseen: dict[str, dict[str, int]]
    missing: dict[str, int]
    size: int


@dataclass(frozen=True)
class _Column:
    """One category column encoded: codes into the field's labels, labels it added, values it counted."""

    codes: FloatArray
    new_labels: tuple[str, ...]
    counts: Counter[str]
    index: dict[str, int]


def _category_label(spec: CategoryField | NumberField, value: Any) -> str:
    """How a category value is compared: the contract's string, or the integer of a closed number set."""
    if value is None:
        return MISSING_LABEL
    if isinstance(spec, CategoryField):
        return value if isinstance(value, str) else str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(int(number)) if number.is_integer() else str(number)


def _factorize(values: Sequence[Any]) -> tuple[list[Any], np.ndarray]:
    """Distinct values and each value's position among them; numpy's C sort when the column has one
    type (the usual case), a dict when it mixes types (None, numbers among strings)."""
    array = np.asarray(values) if len(values) else np.asarray([], dtype=str)
    if array.ndim == 1 and array.dtype.kind in "USbiuf":
        distinct, inverse = np.unique(array, return_inverse=True)
        return distinct.tolist(), np.asarray(inverse, dtype=np.intp).reshape(-1)
    positions: dict[Any, int] = {}
    inverse_list = [
        positions.setdefault(v if v is None or isinstance(v, str | int | float) else str(v), len(positions))
        for v in values
    ]
    return list(positions), np.asarray(inverse_list, dtype=np.intp)


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _numbers(values: Sequence[Any]) -> FloatArray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        array = np.array([_to_float(v) for v in values], dtype=np.float64)
    return np.where(np.isfinite(array), array, np.nan).reshape(-1)


def total_variation(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Half the L1 distance between the two category mixes: the share of customers that would have to change
    category to turn one into the other, and the largest difference in share of any set of categories."""
    p = reference_counts / max(reference_counts.sum(), 1)
    q = current_counts / max(current_counts.sum(), 1)
    return float(0.5 * np.abs(q - p).sum())


def relative_wasserstein(reference: FloatArray, current: FloatArray, scale: float) -> float:
    """Earth mover's distance in units of the reference's mean absolute value: for a rescaling of a
    positive quantity by (1 + s) it is exactly |s|, whatever the distribution's shape or spread."""
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(reference, current)) / scale


def options_from_settings(settings: DetectorSettings) -> dict[str, Any]:
    """Keyword arguments of `DriftDetector` as configured through CHURNOPS_DETECTOR_DRIFT_*."""
    return {
        "backend": settings.drift_backend,
        "p_value": settings.drift_p_value,
        "correction": settings.drift_correction,
        "category_floor": settings.drift_category_floor,
        "number_floor": settings.drift_number_floor,
        "impact_threshold": settings.drift_impact_threshold,
        "impact_f1_drop": settings.drift_impact_f1_drop,
    }


def _severity(drifted: bool, impact: Impact | None, threshold: float, f1_drop: float) -> Severity:
    if not drifted:
        return "none"
    # A drift whose effect cannot be estimated pages: unknown is not harmless.
    if impact is None or impact.crosses(threshold, f1_drop):
        return "impact"
    return "harmless"


class DriftDetector:
    """Holds the encoded reference, a backend and the impact model; `test` is cheap (milliseconds to tens
    of milliseconds) and thread-safe."""

    def __init__(
        self,
        contract: FeatureContract,
        reference: Mapping[str, Sequence[Any]],
        reference_probabilities: Sequence[float] | None,
        *,
        backend: str = "alibi",
        p_value: float = 0.01,
        correction: str = "bonferroni",
        category_floor: float = 0.05,
        number_floor: float = 0.03,
        impact_threshold: float = 0.005,
        impact_f1_drop: float = 0.02,
    ) -> None:
        if not 0.0 < p_value < 1.0:
            raise ValueError(f"p_value must be in (0, 1), not {p_value}")
        self.contract = contract
        self.p_value = p_value
        self.correction = correction
        self.category_floor = category_floor
        self.number_floor = number_floor
        self.impact_threshold = impact_threshold
        self.impact_f1_drop = impact_f1_drop
        self.fields: tuple[CategoryField | NumberField, ...] = contract.fields
        # Closed integer sets (SeniorCitizen: 0/1) are categories to the tests: a KS test of a 0/1 column
        # would only restate the chi-square test, less exactly.
        self._categorical = tuple(
            i
            for i, spec in enumerate(self.fields)
            if isinstance(spec, CategoryField) or spec.values is not None
        )
        self._labels = {
            self.fields[i].name: self._reference_labels(self.fields[i], reference) for i in self._categorical
        }
        window = self._encode(reference, reference_probabilities, {}, source="reference")
        if window.size == 0 or window.matrix.shape[0] == 0:
            raise ValueError("the reference has no complete rows")
        self._reference = window.matrix
        self._reference_codes = {
            self.fields[j].name: frozenset(np.unique(window.matrix[:, j]).astype(int).tolist())
            for j in self._categorical
        }
        self._scales = {
            self.fields[j].name: self._scale(window.matrix[:, j])
            for j in range(len(self.fields))
            if j not in self._categorical
        }
        self._reference_probabilities = window.probabilities
        if self._reference_probabilities is not None:
            self._scales[PREDICTION_FEATURE] = self._scale(self._reference_probabilities)
        self.impact_model = self._impact_model(reference_probabilities, window)
        self.backend: Backend = make_backend(
            backend,
            self._reference,
            self._categorical,
            self._reference_probabilities,
            alpha=p_value,
            correction=correction,
        )
        self.backend_name = backend

    @classmethod
    def from_artefact(cls, directory: Path, **options: Any) -> DriftDetector:
        """The detector of one exported model version: its contract and its `reference.json.gz`."""
        from churn_core.artefact import load_reference

        contract = FeatureContract.load(directory)
        document = load_reference(directory)
        return cls(contract, document["fields"], document.get("probabilities"), **options)

    @property
    def model_version(self) -> str:
        return self.contract.model.version

    @property
    def reference_size(self) -> int:
        return int(self._reference.shape[0])

    @property
    def has_reference_probabilities(self) -> bool:
        return self._reference_probabilities is not None

    @staticmethod
    def _scale(values: FloatArray) -> float:
        """Mean absolute value (1 when it is 0): the unit of a relative shift."""
        scale = float(np.mean(np.abs(values))) if values.size else 0.0
        return scale if scale > 0 else 1.0

    @staticmethod
    def _column(data: Mapping[str, Sequence[Any]], name: str, source: str) -> Sequence[Any]:
        try:
            return data[name]
        except KeyError:
            raise ValueError(f"the {source} has no column {name!r}") from None

    def _reference_labels(
        self, spec: CategoryField | NumberField, reference: Mapping[str, Sequence[Any]]
    ) -> tuple[str, ...]:
        """The contract's values first (their codes index the effect tables), then any the reference adds."""
        known = spec.values if isinstance(spec, CategoryField) else tuple(str(v) for v in spec.values or ())
        seen = {_category_label(spec, v) for v in self._column(reference, spec.name, "reference")}
        return tuple(known) + tuple(sorted(seen - set(known)))

    def _impact_model(self, raw_probabilities: Sequence[float] | None, window: _Window) -> ImpactModel | None:
        """The impact model, when the artefact allows one: effect tables in the contract and a probability
        for every reference customer (re-scoring needs each customer's own log-odds)."""
        if raw_probabilities is None or window.probabilities is None or not self.contract.effects:
            return None
        if window.size != window.matrix.shape[0] or len(window.probabilities) != window.size:
            return None
        return ImpactModel(
            self.contract, self._reference, self._categorical, self._labels, window.probabilities
        )

    def _encode_category(self, spec: CategoryField | NumberField, values: Sequence[Any], n: int) -> _Column:
        index = {label: code for code, label in enumerate(self._labels[spec.name])}
        distinct, inverse = _factorize(values)
        distinct_labels = [_category_label(spec, v) for v in distinct]
        counts: Counter[str] = Counter()
        for label, count in zip(distinct_labels, np.bincount(inverse, minlength=len(distinct)), strict=True):
            counts[label] += int(count)
        new = tuple(sorted(label for label in counts if label not in index))
        for label in new:
            index[label] = len(index)
        codes = np.array([index[label] for label in distinct_labels], dtype=np.float64)
        return _Column(codes[inverse] if n else codes[:0], new, counts, index)

    def _encode(
        self,
        data: Mapping[str, Sequence[Any]],
        probabilities: Sequence[float] | None,
        reference_codes: Mapping[str, frozenset[int]],
        *,
        source: str,
    ) -> _Window:
        columns = [self._column(data, spec.name, source) for spec in self.fields]
        lengths = {len(c) for c in columns}
        if len(lengths) > 1:
            raise ValueError(f"the {source}'s columns differ in length: {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        matrix = np.empty((n, len(self.fields)), dtype=np.float64)
        extra_labels: dict[str, tuple[str, ...]] = {}
        unseen: dict[str, dict[str, int]] = {}
        missing: dict[str, int] = {}
        for j, (spec, values) in enumerate(zip(self.fields, columns, strict=True)):
            if j not in self._categorical:
                matrix[:, j] = _numbers(values)
                missing[spec.name] = int(np.isnan(matrix[:, j]).sum())
                continue
            column = self._encode_category(spec, values, n)
            matrix[:, j] = column.codes
            if column.new_labels:
                extra_labels[spec.name] = column.new_labels
            if reference_codes:
                known = reference_codes[spec.name]
                here = {label: c for label, c in column.counts.items() if column.index[label] not in known}
                if here:
                    unseen[spec.name] = dict(sorted(here.items()))
        complete = ~np.isnan(matrix).any(axis=1)
        probability_array = None
        if probabilities is not None:
            probability_array = _numbers(probabilities)
            if len(probability_array) != n:
                raise ValueError(f"{len(probability_array)} probabilities for a {source} of {n} customers")
            missing[PREDICTION_FEATURE] = int(np.isnan(probability_array).sum())
            probability_array = probability_array[complete & ~np.isnan(probability_array)]
        return _Window(
            matrix=matrix[complete],
            probabilities=probability_array,
            extra_labels=extra_labels,
            unseen=unseen,
            missing=missing,
            size=n,
        )

    def _window(self, current: Mapping[str, Sequence[Any]], probabilities: Sequence[float] | None) -> _Window:
        window = self._encode(current, probabilities, self._reference_codes, source="window")
        if window.matrix.shape[0] == 0:
            raise ValueError("the window has no complete customers to test")
        return window

    def _all_labels(self, name: str, window: _Window) -> tuple[str, ...]:
        return self._labels[name] + window.extra_labels.get(name, ())

    def samples(
        self, current: Mapping[str, Sequence[Any]], probabilities: Sequence[float] | None = None
    ) -> dict[str, FeatureSample]:
        """Reference and window values per field (and of the probability), as tested; for plots."""
        window = self._window(current, probabilities)
        samples: dict[str, FeatureSample] = {}
        for j, spec in enumerate(self.fields):
            categorical = j in self._categorical
            samples[spec.name] = FeatureSample(
                name=spec.name,
                kind="category" if categorical else "number",
                reference=self._reference[:, j],
                current=window.matrix[:, j],
                labels=self._all_labels(spec.name, window) if categorical else (),
            )
        if window.probabilities is not None and self._reference_probabilities is not None:
            samples[PREDICTION_FEATURE] = FeatureSample(
                name=PREDICTION_FEATURE,
                kind="number",
                reference=self._reference_probabilities,
                current=window.probabilities,
            )
        return samples

    def test(
        self, current: Mapping[str, Sequence[Any]], probabilities: Sequence[float] | None = None
    ) -> DriftReport:
        """Test one window (columns of raw values keyed by contract field; extra columns are ignored).

        Category values outside the reference are counted in `unseen_categories` and take part in the
        chi-square test and the effect size as categories of their own. Rows with a missing or non-numeric
        number are left out of every test (`rows_dropped`); an empty window is a ValueError.
        """
        window = self._window(current, probabilities)
        statistics, p_values, threshold = self.backend.features(window.matrix)
        features = [
            self._field_verdict(j, window, float(statistics[j]), float(p_values[j]), threshold)
            for j in range(len(self.fields))
        ]
        prediction = self._prediction_verdict(window)
        has_probabilities = window.probabilities is not None and window.probabilities.size > 0
        return DriftReport(
            features=features,
            prediction=prediction,
            dataset_drift=any(f.drift_detected for f in features),
            window_size=window.size,
            model_version=self.model_version,
            backend=self.backend_name,
            p_value=self.p_value,
            correction=self.correction,
            category_floor=self.category_floor,
            number_floor=self.number_floor,
            impact_threshold=self.impact_threshold,
            impact_f1_drop=self.impact_f1_drop,
            reference_size=self.reference_size,
            rows_dropped=window.size - int(window.matrix.shape[0]),
            baseline=None if self.impact_model is None else self.impact_model.baseline,
            observed=(
                self.impact_model.window_outlook(window.probabilities)
                if self.impact_model is not None and has_probabilities and window.probabilities is not None
                else None
            ),
        )

    def _field_verdict(
        self, j: int, window: _Window, statistic: float, p_value: float, threshold: float
    ) -> FeatureDrift:
        spec = self.fields[j]
        current = window.matrix[:, j]
        labels: tuple[str, ...] = ()
        if j in self._categorical:
            labels = self._all_labels(spec.name, window)
            effect = total_variation(
                np.bincount(self._reference[:, j].astype(np.int64), minlength=len(labels)),
                np.bincount(current.astype(np.int64), minlength=len(labels)),
            )
            test, metric, floor = "chi2", "tvd", self.category_floor
        else:
            effect = relative_wasserstein(self._reference[:, j], current, self._scales[spec.name])
            test, metric, floor = "ks", "wasserstein_rel", self.number_floor
        impact = None if self.impact_model is None else self.impact_model.feature(j, current, labels)
        return self._verdict(
            spec.name,
            test,
            statistic,
            p_value,
            threshold,
            effect,
            metric,
            floor,
            impact=impact,
            unseen=window.unseen.get(spec.name, {}),
            missing=window.missing.get(spec.name, 0),
        )

    def _prediction_verdict(self, window: _Window) -> FeatureDrift | None:
        current = window.probabilities
        if current is None or not current.size or self._reference_probabilities is None:
            return None
        statistic, p_value = self.backend.prediction(current)
        effect = relative_wasserstein(
            self._reference_probabilities, current, self._scales[PREDICTION_FEATURE]
        )
        return self._verdict(
            PREDICTION_FEATURE,
            "ks",
            statistic,
            p_value,
            self.p_value,  # a single test of its own: no family to correct for
            effect,
            "wasserstein_rel",
            self.number_floor,
            impact=None if self.impact_model is None else self.impact_model.observed(current),
            unseen={},
            missing=window.missing.get(PREDICTION_FEATURE, 0),
        )

    def _verdict(
        self,
        feature: str,
        test: str,
        statistic: float,
        p_value: float,
        threshold: float,
        effect: float,
        metric: str,
        floor: float,
        *,
        impact: Impact | None,
        unseen: dict[str, int],
        missing: int,
    ) -> FeatureDrift:
        significant = p_value < threshold
        material = effect >= floor
        drifted = significant and material
        return FeatureDrift(
            feature=feature,
            test=test,
            statistic=statistic,
            p_value=p_value,
            threshold=threshold,
            effect_size=effect,
            effect_metric=metric,
            significant=significant,
            material=material,
            drift_detected=drifted,
            unseen_categories=unseen,
            floor=floor,
            missing=missing,
            impact=impact,
            severity=_severity(drifted, impact, self.impact_threshold, self.impact_f1_drop),
        )
