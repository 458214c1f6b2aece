"""The drift verdicts on the Telco data: no false alarm on reference-like customers, exactly the shifted
field on a one-field shift, and never a crash on values the reference has not seen.

Windows come with the trained model's probabilities: prediction drift is reported as a verdict of its own
and is not part of `dataset_drift` nor of "flags that field alone", which is about the 19 fields.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from scipy.stats import false_discovery_control

from churn_core.contract import Encoder
from churn_monitoring.drift import scenarios
from churn_monitoring.drift.backends import DriftBackendError, corrected_threshold
from churn_monitoring.drift.detector import PREDICTION_FEATURE, DriftDetector
from tests.monitoring.drift.conftest import SEED, WINDOW_ROWS


def _names(report):
    return [f.feature for f in report.drifted()]


def test_resampled_reference_flags_nothing(scipy_detector, drift_scenarios):
    scenario = drift_scenarios["none"]
    report = scipy_detector.test(scenario.columns, scenario.probabilities)

    assert report.window_size == WINDOW_ROWS
    assert _names(report) == []
    assert report.dataset_drift is False
    assert not any(f.significant for f in report.features)
    assert report.prediction is not None
    assert report.prediction.drift_detected is False


def test_monthly_charges_shift_flags_only_monthly_charges(scipy_detector, drift_scenarios):
    scenario = drift_scenarios["monthly-charges"]
    report = scipy_detector.test(scenario.columns, scenario.probabilities)

    assert _names(report) == ["MonthlyCharges"]
    assert report.dataset_drift is True
    shifted = report.feature("MonthlyCharges")
    assert shifted.test == "ks"
    assert shifted.effect_metric == "wasserstein_rel"
    # x1.15: a 15 % level shift (less the window's own sampling difference from the reference)
    assert shifted.effect_size == pytest.approx(0.15, abs=0.025)
    assert shifted.effect_size > 2 * shifted.floor
    # Only the column was scaled: the correlated TotalCharges did not move and is not flagged.
    assert report.feature("TotalCharges").significant is False


def test_contract_shift_flags_only_contract(scipy_detector, drift_scenarios):
    scenario = drift_scenarios["contract"]
    share = np.mean(np.asarray(scenario.columns["Contract"]) == "Month-to-month")
    report = scipy_detector.test(scenario.columns, scenario.probabilities)

    assert share == pytest.approx(0.75, abs=0.001)
    assert _names(report) == ["Contract"]
    shifted = report.feature("Contract")
    assert shifted.test == "chi2"
    assert shifted.effect_metric == "tvd"
    # 55 % -> 75 % month-to-month: a fifth of the customers changed contract.
    assert shifted.effect_size == pytest.approx(0.20, abs=0.01)


def test_null_windows_flag_nothing_and_category_mixes_stay_under_half_the_floor(
    scipy_detector, telco_columns
):
    """Ten more reference-like windows: nothing drifts, no field is even significant, and no category mix
    moves by half the floor (the numbers' floor is about materiality: a skewed TotalCharges moves its
    Wasserstein distance near 0.03 by sampling alone, and only its KS test tells that from a real shift)."""
    largest = {}
    for seed in range(100, 110):
        report = scipy_detector.test(scenarios.resample(telco_columns, WINDOW_ROWS, seed))
        assert report.dataset_drift is False
        assert not any(f.significant for f in report.features)
        for item in report.features:
            if item.effect_metric == "tvd":
                largest[item.feature] = max(largest.get(item.feature, 0.0), item.effect_size / item.floor)

    assert max(largest.values()) < 0.5, largest


def test_small_shift_in_a_large_window_is_significant_but_not_material(scipy_detector, telco_columns):
    """Why the floor exists: 20,000 customers paying 2 % more is a real, detectable change below the 3 %
    floor."""
    window = scenarios.scale_field(scenarios.resample(telco_columns, 20_000, SEED), "MonthlyCharges", 1.02)
    report = scipy_detector.test(window)

    item = report.feature("MonthlyCharges")
    assert item.significant is True
    assert item.material is False
    assert item.drift_detected is False
    assert report.dataset_drift is False


def test_unseen_category_is_counted_not_fatal(scipy_detector, drift_scenarios):
    window = {name: list(values[:400]) for name, values in drift_scenarios["none"].columns.items()}
    window["InternetService"][:30] = ["Fiber to the home"] * 30
    window["PaymentMethod"][:5] = [None] * 5
    window["SeniorCitizen"][:3] = [2] * 3

    report = scipy_detector.test(window)

    assert report.feature("InternetService").unseen_categories == {"Fiber to the home": 30}
    assert report.feature("PaymentMethod").unseen_categories == {"(missing)": 5}
    assert report.feature("SeniorCitizen").unseen_categories == {"2": 3}
    # 30 of 400 customers with a service the model never saw is material; 3 seniors aged "2" are not.
    assert report.feature("InternetService").drift_detected is True
    assert report.feature("SeniorCitizen").drift_detected is False
    assert report.feature("gender").unseen_categories == {}
    json.dumps(report.to_dict(), allow_nan=False)


def test_missing_numbers_are_left_out_and_counted(scipy_detector, drift_scenarios):
    window = {name: list(values[:400]) for name, values in drift_scenarios["none"].columns.items()}
    window["MonthlyCharges"][:3] = [None, "n/a", float("nan")]

    report = scipy_detector.test(window)

    assert report.window_size == 400
    assert report.rows_dropped == 3
    assert report.feature("MonthlyCharges").missing == 3
    assert report.dataset_drift is False


def test_prediction_drift_is_a_separate_verdict(
    scipy_detector, drift_scenarios, trained_model, churn_probabilities
):
    """Inputs like the reference, outputs of a very different population: the prediction drifts while
    no field does and `dataset_drift` stays false."""
    inputs = drift_scenarios["none"].columns
    everyone_monthly = scenarios.raise_share(inputs, "Contract", "Month-to-month", 1.0, SEED)
    encoder = Encoder(trained_model.contract)
    records = [
        dict(zip(everyone_monthly, row, strict=True)) for row in zip(*everyone_monthly.values(), strict=True)
    ]
    probabilities = churn_probabilities(encoder.batch_from_records(records))

    report = scipy_detector.test(inputs, probabilities)

    assert report.prediction is not None
    assert report.prediction.feature == PREDICTION_FEATURE
    assert report.prediction.drift_detected is True
    assert report.prediction.threshold == report.p_value
    assert report.dataset_drift is False
    assert report.to_dict()["prediction_drift"] is True


def test_report_is_json_ready_with_the_agreed_fields(scipy_detector, drift_scenarios):
    scenario = drift_scenarios["monthly-charges"]
    document = json.loads(json.dumps(scipy_detector.test(scenario.columns, scenario.probabilities).to_dict()))

    assert document["dataset_drift"] is True
    assert document["drifted"] == ["MonthlyCharges"]
    assert document["backend"] == "scipy"
    assert len(document["features"]) == 19
    for item in [*document["features"], document["prediction"]]:
        assert {
            "feature",
            "test",
            "statistic",
            "p_value",
            "threshold",
            "effect_size",
            "effect_metric",
            "significant",
            "material",
            "drift_detected",
            "unseen_categories",
        } <= item.keys()


def test_closed_number_sets_are_tested_as_categories(scipy_detector, drift_scenarios):
    report = scipy_detector.test(drift_scenarios["none"].columns)

    assert report.feature("SeniorCitizen").test == "chi2"
    assert {f.feature for f in report.features if f.test == "ks"} == {
        "tenure",
        "MonthlyCharges",
        "TotalCharges",
    }


def test_empty_window_is_rejected(scipy_detector, trained_model):
    with pytest.raises(ValueError, match="no complete customers"):
        scipy_detector.test({name: [] for name in trained_model.contract.field_names})


def test_window_without_a_contract_field_is_rejected(scipy_detector, drift_scenarios):
    window = dict(drift_scenarios["none"].columns)
    del window["tenure"]
    with pytest.raises(ValueError, match="tenure"):
        scipy_detector.test(window)


@pytest.mark.parametrize("seed", range(5))
def test_fdr_threshold_matches_benjamini_hochberg(seed):
    p_values = np.random.default_rng(seed).uniform(0, 0.02, 19) ** 1.5
    threshold = corrected_threshold(p_values, 0.05, "fdr")

    expected = false_discovery_control(p_values, method="bh") <= 0.05
    assert np.array_equal(p_values < threshold, expected)


def test_bonferroni_threshold_divides_by_the_number_of_fields():
    assert corrected_threshold(np.full(19, 0.5), 0.05, "bonferroni") == pytest.approx(0.05 / 19)


@pytest.mark.skipif(importlib.util.find_spec("alibi_detect") is not None, reason="alibi-detect is installed")
def test_alibi_backend_without_alibi_detect_names_the_scipy_alternative(artefact_dir):
    with pytest.raises(DriftBackendError, match="CHURNOPS_DETECTOR_DRIFT_BACKEND=scipy"):
        DriftDetector.from_artefact(artefact_dir, backend="alibi")


def test_unknown_backend_and_correction_are_rejected(artefact_dir):
    with pytest.raises(DriftBackendError, match="backend"):
        DriftDetector.from_artefact(artefact_dir, backend="evidently")
    with pytest.raises(DriftBackendError, match="correction"):
        DriftDetector.from_artefact(artefact_dir, backend="scipy", correction="holm")
