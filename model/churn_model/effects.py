"""Training-time summaries of the fitted model: reason-code tables and feature importance.

Reason codes use centred partial dependence on the log-odds scale (Friedman's partial dependence, as in
`sklearn.inspection.partial_dependence`, computed here on raw customer fields rather than encoded columns
because one field drives several columns: a category's one-hot block, a number and its log). The effect
of a value is the model's mean log-odds over a background sample with that field set to the value, minus
the average of that curve over the data, so that an average customer's contributions are about zero.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import roc_auc_score

from churn_core.contract import (
    CategoryEffect,
    CategoryField,
    CustomerBatch,
    EffectSpec,
    Encoder,
    FeatureContract,
    FloatArray,
    NumberEffect,
)

Predict = Callable[[FloatArray], FloatArray]
GRID_QUANTILES = np.linspace(0.0, 1.0, 21)


def _logit(probabilities: FloatArray) -> FloatArray:
    clipped = np.clip(probabilities, 1e-9, 1.0 - 1e-9)
    return np.asarray(np.log(clipped / (1.0 - clipped)))


def _with_category(batch: CustomerBatch, column: int, code: int) -> CustomerBatch:
    categories = batch.categories.copy()
    categories[:, column] = code
    return CustomerBatch(categories=categories, numbers=batch.numbers)


def _with_number(batch: CustomerBatch, column: int, value: float) -> CustomerBatch:
    numbers = batch.numbers.copy()
    numbers[:, column] = value
    return CustomerBatch(categories=batch.categories, numbers=numbers)


def reason_code_tables(
    contract: FeatureContract, predict: Predict, background: CustomerBatch
) -> tuple[EffectSpec, ...]:
    """One effect table per contract field, from partial dependence over `background`."""
    encoder = Encoder(contract)
    category_column = {f.name: i for i, f in enumerate(contract.category_fields)}
    number_column = {f.name: i for i, f in enumerate(contract.number_fields)}
    effects: list[EffectSpec] = []
    for spec in contract.fields:
        if isinstance(spec, CategoryField):
            column = category_column[spec.name]
            curve = np.array(
                [
                    _logit(predict(encoder.encode(_with_category(background, column, code)))).mean()
                    for code in range(len(spec.values))
                ]
            )
            # Centre on the data's own mix of values.
            frequency = np.bincount(background.categories[:, column], minlength=len(spec.values))
            curve -= float(np.dot(curve, frequency) / frequency.sum())
            effects.append(
                CategoryEffect(
                    field=spec.name,
                    effects={v: round(float(e), 6) for v, e in zip(spec.values, curve, strict=True)},
                )
            )
        else:
            column = number_column[spec.name]
            observed = background.numbers[:, column]
            grid = (
                np.asarray(spec.values, dtype=np.float64)
                if spec.values is not None
                else np.unique(np.quantile(observed, GRID_QUANTILES))
            )
            curve = np.array(
                [_logit(predict(encoder.encode(_with_number(background, column, v)))).mean() for v in grid]
            )
            curve -= float(np.interp(observed, grid, curve).mean())
            effects.append(
                NumberEffect(
                    field=spec.name,
                    grid=tuple(round(float(g), 6) for g in grid),
                    effects=tuple(round(float(e), 6) for e in curve),
                )
            )
    return tuple(effects)


def permutation_importance(
    contract: FeatureContract,
    predict: Predict,
    batch: CustomerBatch,
    churned: np.ndarray,
    seed: int,
    repeats: int = 5,
) -> dict[str, float]:
    """Mean drop in ROC AUC when one raw field is shuffled (all its encoded columns move together)."""
    encoder = Encoder(contract)
    rng = np.random.default_rng(seed)
    baseline = float(roc_auc_score(churned, predict(encoder.encode(batch))))
    category_column = {f.name: i for i, f in enumerate(contract.category_fields)}
    number_column = {f.name: i for i, f in enumerate(contract.number_fields)}
    importance: dict[str, float] = {}
    for spec in contract.fields:
        drops = []
        for _ in range(repeats):
            order = rng.permutation(len(batch))
            if spec.name in category_column:
                categories = batch.categories.copy()
                categories[:, category_column[spec.name]] = categories[order, category_column[spec.name]]
                shuffled = CustomerBatch(categories=categories, numbers=batch.numbers)
            else:
                numbers = batch.numbers.copy()
                numbers[:, number_column[spec.name]] = numbers[order, number_column[spec.name]]
                shuffled = CustomerBatch(categories=batch.categories, numbers=numbers)
            drops.append(baseline - float(roc_auc_score(churned, predict(encoder.encode(shuffled)))))
        importance[spec.name] = round(float(np.mean(drops)), 6)
    return dict(sorted(importance.items(), key=lambda item: item[1], reverse=True))
