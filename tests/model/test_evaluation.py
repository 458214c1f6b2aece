"""Threshold choice and metrics against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from churn_model.evaluation import (
    RetentionEconomics,
    choose_threshold,
    classification_metrics,
    expected_calibration_error,
)


def _synthetic(rng: np.random.Generator, n: int = 2000):
    probabilities = rng.beta(2, 5, n)
    churned = rng.random(n) < probabilities
    return churned, probabilities


def test_f1_threshold_matches_brute_force(rng):
    churned, probabilities = _synthetic(rng, 400)
    threshold, score = choose_threshold(churned, probabilities, "f1")
    brute = max(np.unique(probabilities), key=lambda t: f1_score(churned, probabilities >= t))
    assert threshold == pytest.approx(brute)
    assert score == pytest.approx(f1_score(churned, probabilities >= brute))


def test_value_threshold_matches_brute_force_profit(rng):
    churned, probabilities = _synthetic(rng)
    economics = RetentionEconomics(offer_cost=20.0, customer_value=500.0, save_rate=0.3)
    threshold, score = choose_threshold(churned, probabilities, "value", economics)
    profits = {t: economics.profit(churned, probabilities >= t) for t in np.unique(probabilities)}
    best = max(profits.values())
    assert score == pytest.approx(best)
    assert economics.profit(churned, probabilities >= threshold) == pytest.approx(best)


def test_costlier_offers_raise_the_value_threshold(rng):
    churned, probabilities = _synthetic(rng)
    cheap, _ = choose_threshold(churned, probabilities, "value", RetentionEconomics(5.0, 500.0))
    dear, _ = choose_threshold(churned, probabilities, "value", RetentionEconomics(100.0, 500.0))
    assert dear > cheap


def test_value_objective_needs_economics(rng):
    churned, probabilities = _synthetic(rng)
    with pytest.raises(ValueError, match="offer cost"):
        choose_threshold(churned, probabilities, "value")


def test_calibration_error_is_small_when_calibrated_and_large_when_not(rng):
    churned, probabilities = _synthetic(rng, 50_000)
    assert expected_calibration_error(churned, probabilities) < 0.01
    assert expected_calibration_error(churned, np.clip(probabilities * 1.6, 0, 1)) > 0.1


def test_metrics_include_confusion_matrix_at_threshold(rng):
    churned, probabilities = _synthetic(rng)
    metrics = classification_metrics(churned, probabilities, 0.4)
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    predicted = probabilities >= 0.4
    assert tp == int((predicted & churned).sum())
    assert fp == int((predicted & ~churned).sum())
    assert tn + fp + fn + tp == len(churned)
    assert metrics["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
