"""Drift of a window of live customers against the reference sample in the model artefact.

Each of the 19 contract fields gets a two-sample test (Kolmogorov–Smirnov for numbers, chi-square for
categories and for closed integer sets such as SeniorCitizen), corrected for testing 19 fields at once, and
an effect size. A field drifts only when its difference is both significant and material: with thousands
of rows a test detects shifts far too small to matter (and the reference is a finite sample of a
population that itself moves a little), so significance alone raises false alarms on large windows. The
effect-size floors (PSI for categories, Wasserstein distance in reference standard deviations for
numbers) say how large a shift has to be before anyone should act on it.

The predicted probability, when given, is tested the same way but is a verdict of its own: a drift of the
model's output is a different finding from a drift of its inputs (it may follow from one, or from several
small ones), so it is not part of the 19-field family nor of `dataset_drift`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from churn_core.contract import CategoryField, FeatureContract, NumberField
from churn_monitoring.drift.backends import Backend, FloatArray, make_backend

if TYPE_CHECKING:
    from churn_monitoring.settings import DetectorSettings

PREDICTION_FEATURE = "churn_probability"
# Proportions below this count as this in PSI: a category absent from one side (an unseen value) must give
# a large but finite effect.
PSI_EPSILON = 1e-4
# A category value that is absent (None) is counted, like any value outside the reference, under this name.
MISSING_LABEL = "(missing)"


@dataclass(frozen=True)
class FeatureDrift:
    """The verdict on one field (or on the predicted probability, feature "churn_probability").

    The detector service exports `effect_size` as `churn_feature_drift_score{feature}` (the quantity the
    floor is set on, comparable across window sizes, unlike the statistic and the p-value) and
    `drift_detected` as `churn_feature_drift_detected{feature}`.
    """

    feature: str
    test: str  # "ks" | "chi2"
    statistic: float
    p_value: float
    threshold: float
    effect_size: float
    effect_metric: str  # "psi" | "wasserstein_norm"
    significant: bool
    material: bool
    drift_detected: bool
    unseen_categories: dict[str, int] = field(default_factory=dict)
    floor: float = 0.0  # the effect-size floor `material` was judged against
    missing: int = 0  # window values that were not finite numbers (their rows were left out)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DriftReport:
    features: list[FeatureDrift]
    prediction: FeatureDrift | None
    dataset_drift: bool  # any field drifted; the prediction verdict is separate
    window_size: int
    model_version: str
    backend: str  # "alibi" | "scipy"
    p_value: float = 0.05  # family-wise significance before correction
    correction: str = "bonferroni"
    psi_floor: float = 0.1
    wasserstein_floor: float = 0.1
    reference_size: int = 0
    rows_dropped: int = 0  # window rows with a missing number, left out of every test

    def drifted(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.drift_detected]

    def feature(self, name: str) -> FeatureDrift:
        for item in self.features:
            if item.feature == name:
                return item
        if self.prediction is not None and name == self.prediction.feature:
            return self.prediction
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "backend": self.backend,
            "window_size": self.window_size,
            "reference_size": self.reference_size,
            "rows_dropped": self.rows_dropped,
            "dataset_drift": self.dataset_drift,
            "drifted": [f.feature for f in self.drifted()],
            "prediction_drift": None if self.prediction is None else self.prediction.drift_detected,
            "settings": {
                "p_value": self.p_value,
                "correction": self.correction,
                "psi_floor": self.psi_floor,
                "wasserstein_floor": self.wasserstein_floor,
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


def psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Population stability index over the same categories."""
    p = np.maximum(reference_counts / max(reference_counts.sum(), 1), PSI_EPSILON)
    q = np.maximum(current_counts / max(current_counts.sum(), 1), PSI_EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def normalised_wasserstein(reference: FloatArray, current: FloatArray, scale: float) -> float:
    """Earth mover's distance in units of the reference standard deviation."""
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(reference, current)) / scale


def options_from_settings(settings: DetectorSettings) -> dict[str, Any]:
    """Keyword arguments of `DriftDetector` as configured through CHURNOPS_DETECTOR_DRIFT_*."""
    return {
        "backend": settings.drift_backend,
        "p_value": settings.drift_p_value,
        "correction": settings.drift_correction,
        "psi_floor": settings.drift_psi_floor,
        "wasserstein_floor": settings.drift_wasserstein_floor,
    }


class DriftDetector:
    """Holds the encoded reference and a backend; `test` is cheap (milliseconds) and thread-safe."""

    def __init__(
        self,
        contract: FeatureContract,
        reference: Mapping[str, Sequence[Any]],
        reference_probabilities: Sequence[float] | None,
        *,
        backend: str = "alibi",
        p_value: float = 0.05,
        correction: str = "bonferroni",
        psi_floor: float = 0.1,
        wasserstein_floor: float = 0.1,
    ) -> None:
        if not 0.0 < p_value < 1.0:
            raise ValueError(f"p_value must be in (0, 1), not {p_value}")
        self.contract = contract
        self.p_value = p_value
        self.correction = correction
        self.psi_floor = psi_floor
        self.wasserstein_floor = wasserstein_floor
        self.fields: tuple[CategoryField | NumberField, ...] = contract.fields
        # Closed integer sets (SeniorCitizen: 0/1) are categories to the tests: a KS test of a 0/1 column
        # would only restate the chi-square test, less exactly.
        self._categorical = tuple(
            i
            for i, spec in enumerate(self.fields)
            if isinstance(spec, CategoryField) or spec.values is not None
        )
        self._labels: dict[str, tuple[str, ...]] = {}
        for index in self._categorical:
            spec = self.fields[index]
            known = (
                spec.values if isinstance(spec, CategoryField) else tuple(str(v) for v in spec.values or ())
            )
            seen = {_category_label(spec, v) for v in self._column(reference, spec.name, "reference")}
            self._labels[spec.name] = tuple(known) + tuple(sorted(seen - set(known)))
        window = self._encode(reference, None, {}, source="reference")
        if window.size == 0:
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
        self._reference_probabilities = (
            None if reference_probabilities is None else _numbers(reference_probabilities)
        )
        if self._reference_probabilities is not None:
            self._reference_probabilities = self._reference_probabilities[
                np.isfinite(self._reference_probabilities)
            ]
            self._scales[PREDICTION_FEATURE] = self._scale(self._reference_probabilities)
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
        std = float(np.std(values))
        return std if std > 0 else 1.0

    @staticmethod
    def _column(data: Mapping[str, Sequence[Any]], name: str, source: str) -> Sequence[Any]:
        try:
            return data[name]
        except KeyError:
            raise ValueError(f"the {source} has no column {name!r}") from None

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
            if j in self._categorical:
                labels = self._labels[spec.name]
                index = {label: code for code, label in enumerate(labels)}
                distinct, inverse = _factorize(values)
                distinct_labels = [_category_label(spec, v) for v in distinct]
                counts: Counter[str] = Counter()
                for label, count in zip(
                    distinct_labels, np.bincount(inverse, minlength=len(distinct)), strict=True
                ):
                    counts[label] += int(count)
                new = tuple(sorted(label for label in counts if label not in index))
                for label in new:
                    index[label] = len(index)
                if new:
                    extra_labels[spec.name] = new
                codes = np.array([index[label] for label in distinct_labels], dtype=np.float64)
                matrix[:, j] = codes[inverse] if n else codes[:0]
                if reference_codes:
                    known = reference_codes[spec.name]
                    unseen_here = {label: c for label, c in counts.items() if index[label] not in known}
                    if unseen_here:
                        unseen[spec.name] = dict(sorted(unseen_here.items()))
            else:
                matrix[:, j] = _numbers(values)
                missing[spec.name] = int(np.isnan(matrix[:, j]).sum())
        probability_array = None
        if probabilities is not None:
            probability_array = _numbers(probabilities)
            if len(probability_array) != n:
                raise ValueError(f"{len(probability_array)} probabilities for a window of {n} customers")
        complete = ~np.isnan(matrix).any(axis=1)
        if probability_array is not None:
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
                labels=self._labels[spec.name] + window.extra_labels.get(spec.name, ())
                if categorical
                else (),
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
        chi-square test and the PSI as categories of their own. Rows with a missing or non-numeric number
        are left out of every test (`rows_dropped`); an empty window is a ValueError.
        """
        window = self._window(current, probabilities)
        statistics, p_values, threshold = self.backend.features(window.matrix)
        features = []
        for j, spec in enumerate(self.fields):
            if j in self._categorical:
                size = len(self._labels[spec.name]) + len(window.extra_labels.get(spec.name, ()))
                effect = psi(
                    np.bincount(self._reference[:, j].astype(np.int64), minlength=size),
                    np.bincount(window.matrix[:, j].astype(np.int64), minlength=size),
                )
                test, metric, floor = "chi2", "psi", self.psi_floor
            else:
                effect = normalised_wasserstein(
                    self._reference[:, j], window.matrix[:, j], self._scales[spec.name]
                )
                test, metric, floor = "ks", "wasserstein_norm", self.wasserstein_floor
            features.append(
                self._verdict(
                    spec.name,
                    test,
                    float(statistics[j]),
                    float(p_values[j]),
                    threshold,
                    effect,
                    metric,
                    floor,
                    unseen=window.unseen.get(spec.name, {}),
                    missing=window.missing.get(spec.name, 0),
                )
            )
        prediction = None
        if (
            window.probabilities is not None
            and window.probabilities.size
            and self.has_reference_probabilities
        ):
            assert self._reference_probabilities is not None
            statistic, p_value = self.backend.prediction(window.probabilities)
            effect = normalised_wasserstein(
                self._reference_probabilities, window.probabilities, self._scales[PREDICTION_FEATURE]
            )
            prediction = self._verdict(
                PREDICTION_FEATURE,
                "ks",
                statistic,
                p_value,
                self.p_value,  # a single test of its own: no family to correct for
                effect,
                "wasserstein_norm",
                self.wasserstein_floor,
                unseen={},
                missing=window.missing.get(PREDICTION_FEATURE, 0),
            )
        return DriftReport(
            features=features,
            prediction=prediction,
            dataset_drift=any(f.drift_detected for f in features),
            window_size=window.size,
            model_version=self.model_version,
            backend=self.backend_name,
            p_value=self.p_value,
            correction=self.correction,
            psi_floor=self.psi_floor,
            wasserstein_floor=self.wasserstein_floor,
            reference_size=self.reference_size,
            rows_dropped=window.size - int(window.matrix.shape[0]),
        )

    @staticmethod
    def _verdict(
        feature: str,
        test: str,
        statistic: float,
        p_value: float,
        threshold: float,
        effect: float,
        metric: str,
        floor: float,
        *,
        unseen: dict[str, int],
        missing: int,
    ) -> FeatureDrift:
        significant = p_value < threshold
        material = effect >= floor
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
            drift_detected=significant and material,
            unseen_categories=unseen,
            floor=floor,
            missing=missing,
        )
