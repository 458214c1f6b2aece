"""alibi-detect (the default backend, run by .venv-drift with numpy 1.26) and scipy (run here, numpy 2)
reach the same verdicts on the same windows, field by field, with statistics that agree to float32
precision: alibi-detect keeps statistics and p-values in float32, so p-values agree to ~1e-7 absolute and
statistics to ~1e-6 relative, and p-values below ~1e-38 come back from alibi-detect as 0.
"""

from __future__ import annotations

import pytest

from churn_monitoring.drift.detector import DriftDetector
from tests.monitoring.drift.conftest import SHIFTS

VERDICTS = ("significant", "material", "drift_detected")


def _assert_agree(alibi: dict, scipy: dict) -> None:
    assert alibi["backend"] == "alibi"
    assert scipy["backend"] == "scipy"
    assert alibi["dataset_drift"] == scipy["dataset_drift"]
    assert alibi["drifted"] == scipy["drifted"]
    pairs = [
        *zip(alibi["features"], scipy["features"], strict=True),
        (alibi["prediction"], scipy["prediction"]),
    ]
    for a, s in pairs:
        assert a["feature"] == s["feature"]
        assert a["test"] == s["test"]
        for verdict in VERDICTS:
            assert a[verdict] == s[verdict], (a["feature"], verdict)
        assert a["threshold"] == pytest.approx(s["threshold"], rel=1e-12)
        assert a["effect_size"] == pytest.approx(s["effect_size"], rel=1e-9, abs=1e-12)
        assert a["statistic"] == pytest.approx(s["statistic"], rel=1e-5, abs=1e-6), a["feature"]
        assert a["p_value"] == pytest.approx(s["p_value"], rel=1e-4, abs=1e-7), a["feature"]


def _scipy_report(artefact_dir, scenario, **options) -> dict:
    detector = DriftDetector.from_artefact(artefact_dir, backend="scipy", **options)
    return detector.test(scenario.columns, scenario.probabilities).to_dict()


def test_backends_agree_on_resampled_reference(alibi_reports, scipy_detector, drift_scenarios):
    scenario = drift_scenarios["none"]
    scipy = scipy_detector.test(scenario.columns, scenario.probabilities).to_dict()

    _assert_agree(alibi_reports["none"], scipy)
    assert alibi_reports["none"]["drifted"] == []


def test_backends_agree_on_monthly_charges_shift(alibi_reports, scipy_detector, drift_scenarios):
    scenario = drift_scenarios["monthly-charges"]
    scipy = scipy_detector.test(scenario.columns, scenario.probabilities).to_dict()

    _assert_agree(alibi_reports["monthly-charges"], scipy)
    assert alibi_reports["monthly-charges"]["drifted"] == ["MonthlyCharges"]


def test_backends_agree_on_contract_shift(alibi_reports, scipy_detector, drift_scenarios):
    scenario = drift_scenarios["contract"]
    scipy = scipy_detector.test(scenario.columns, scenario.probabilities).to_dict()

    _assert_agree(alibi_reports["contract"], scipy)
    assert alibi_reports["contract"]["drifted"] == ["Contract"]


def test_backends_agree_on_contract_shift_under_fdr(alibi_reports, artefact_dir, drift_scenarios):
    scipy = _scipy_report(artefact_dir, drift_scenarios["contract"], correction="fdr")

    assert alibi_reports["contract-fdr"]["settings"]["correction"] == "fdr"
    _assert_agree(alibi_reports["contract-fdr"], scipy)
    assert alibi_reports["contract-fdr"]["drifted"] == ["Contract"]


def test_every_scenario_ran_on_the_alibi_backend(alibi_reports):
    assert set(SHIFTS) <= alibi_reports.keys()
    assert {r["backend"] for r in alibi_reports.values()} == {"alibi"}
