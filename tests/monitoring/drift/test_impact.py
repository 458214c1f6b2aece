"""Model-aware severity: each field's estimated effect on the model's output, checked against the model
itself, and the routing it drives (impact pages, harmless is only logged)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from churn_core.artefact import load_reference
from churn_core.contract import FeatureContract
from churn_monitoring.drift import scenarios
from churn_monitoring.drift.detector import DriftDetector
from churn_monitoring.drift.impact import high_risk_cut, minimal_move_weights, quantile_mapped
from tests.monitoring.drift.conftest import SEED, WINDOW_ROWS

# The estimate re-scores through the contract's additive log-odds tables; the boosted trees' interactions
# are what it misses. Over the benchmark's 60 month-to-month windows it stayed within 0.41 points of scoring.
MONTH_TO_MONTH_TOLERANCE = 0.005


def test_fewest_moves_coupling_reaches_the_current_shares_and_moves_only_the_difference():
    codes = np.array([0] * 50 + [1] * 30 + [2] * 20)
    weights = minimal_move_weights(codes, np.array([0.5, 0.3, 0.2]), np.array([0.6, 0.2, 0.2]))

    assert weights.sum(axis=1) == pytest.approx(np.ones(100))
    assert weights.mean(axis=0) == pytest.approx([0.6, 0.2, 0.2])
    # A third of category 1 moves to category 0; nobody else moves.
    assert weights[50] == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert weights[0] == pytest.approx([1.0, 0.0, 0.0])
    assert weights[99] == pytest.approx([0.0, 0.0, 1.0])


def test_quantile_mapping_is_the_identity_on_the_same_sample_and_carries_a_rescaling():
    values = np.random.default_rng(3).gamma(2.0, 30.0, 1000)

    assert np.array_equal(quantile_mapped(values, values), values)
    assert quantile_mapped(values, values * 1.05) == pytest.approx(values * 1.05)


def test_unchanged_fields_have_no_impact(scipy_detector):
    model = scipy_detector.impact_model
    assert model is not None
    reference = scipy_detector._reference
    for j, spec in enumerate(scipy_detector.fields):
        labels = scipy_detector._labels.get(spec.name, ())
        impact = model.feature(j, reference[:, j], labels)
        assert impact.churn_rate == pytest.approx(0.0, abs=1e-12), spec.name
        assert impact.high_risk_share == pytest.approx(0.0, abs=1e-12), spec.name


def test_month_to_month_estimate_is_within_tolerance_of_scoring_the_window(
    scipy_detector, telco_columns, trained_model, churn_probabilities
):
    """Ten more points of month-to-month customers: the detector's estimated rise of the predicted churn
    rate against the model scoring the same customers before and after the relabelling."""
    from churn_core.contract import Encoder

    encoder = Encoder(trained_model.contract)

    def score(window):
        records = [dict(zip(window, row, strict=True)) for row in zip(*window.values(), strict=True)]
        return np.asarray(churn_probabilities(encoder.batch_from_records(records)))

    base = scenarios.resample(telco_columns, WINDOW_ROWS, SEED)
    base = {name: base[name] for name in trained_model.contract.field_names}
    shifted = scenarios.move_share(base, "Contract", "Month-to-month", 0.10, SEED)
    probabilities = score(shifted)

    report = scipy_detector.test(shifted, probabilities)

    contract = report.feature("Contract")
    assert report.drifted()[0] is contract
    assert contract.impact is not None
    measured = float(probabilities.mean() - score(base).mean())
    assert measured > 0.005  # the shift is worth estimating: the model's output rises
    assert contract.impact.churn_rate == pytest.approx(measured, abs=MONTH_TO_MONTH_TOLERANCE)
    assert contract.impact.estimated_f1 is not None


def test_drift_pages_only_when_it_moves_the_model(artefact_dir, drift_scenarios):
    scenario = drift_scenarios["contract"]  # 55 % -> 75 % month-to-month
    paging = DriftDetector.from_artefact(artefact_dir, backend="scipy", impact_threshold=0.005)
    lenient = DriftDetector.from_artefact(
        artefact_dir, backend="scipy", impact_threshold=0.5, impact_f1_drop=0.5
    )

    impact = paging.test(scenario.columns).feature("Contract")
    harmless = lenient.test(scenario.columns)

    assert impact.drift_detected is True
    assert impact.severity == "impact"
    assert harmless.feature("Contract").drift_detected is True
    assert harmless.feature("Contract").severity == "harmless"
    assert harmless.severity == "harmless"
    assert harmless.feature("gender").severity == "none"


def test_json_report_leads_with_severity_and_impact(scipy_detector, drift_scenarios, artefact_dir):
    scenario = drift_scenarios["contract"]
    document = json.loads(json.dumps(scipy_detector.test(scenario.columns, scenario.probabilities).to_dict()))

    assert list(document)[:4] == ["severity", "impact", "drifted", "drifted_impact"]
    assert document["severity"] == "impact"
    assert document["drifted"] == ["Contract"]
    assert document["drifted_impact"]["Contract"]["churn_rate"] > 0.005
    # The window was scored: its measured change is there too, and agrees in sign.
    assert document["impact"]["churn_rate"] > 0.005
    assert document["reference_outlook"]["churn_rate"] == pytest.approx(
        float(np.mean(load_reference(artefact_dir)["probabilities"])), abs=1e-9
    )


def test_drift_of_unknown_impact_pages(artefact_dir, drift_scenarios):
    """An artefact without reference probabilities cannot be re-scored: a drift then pages, since unknown
    is not harmless."""
    contract = FeatureContract.load(artefact_dir)
    document = load_reference(artefact_dir)
    detector = DriftDetector(contract, document["fields"], None, backend="scipy")

    report = detector.test(drift_scenarios["contract"].columns)

    assert detector.impact_model is None
    assert report.feature("Contract").impact is None
    assert report.feature("Contract").severity == "impact"
    assert report.baseline is None


def test_high_risk_starts_at_the_high_band(trained_model):
    assert high_risk_cut(trained_model.contract) == 0.5
