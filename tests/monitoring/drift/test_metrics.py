"""The drift series the PrometheusRule pages on: severity and impact per feature, the window's measured
change and its severity."""

from __future__ import annotations

import math

from prometheus_client import generate_latest

from churn_monitoring.metrics import DetectorMetrics
from tests.monitoring.drift.test_alerts import _report


def _value(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} not exported")


def test_export_gives_severity_and_impact_per_feature_and_window():
    metrics = DetectorMetrics()
    metrics.export_drift(_report())
    text = generate_latest(metrics.registry).decode()

    assert _value(text, 'churn_feature_drift_severity{feature="InternetService"}') == 2.0
    assert _value(text, 'churn_feature_drift_impact{feature="InternetService",measure="churn_rate"}') == 0.031
    assert _value(text, 'churn_drift_observed_impact{measure="churn_rate"}') == 0.301 - 0.266
    assert _value(text, "churn_drift_severity") == 2.0


def test_unknown_impact_is_nan_not_a_stale_figure():
    from dataclasses import replace

    metrics = DetectorMetrics()
    metrics.export_drift(_report())
    report = _report()
    report = replace(report, features=[replace(f, impact=None) for f in report.features], observed=None)
    metrics.export_drift(report)
    text = generate_latest(metrics.registry).decode()

    assert math.isnan(_value(text, 'churn_feature_drift_impact{feature="tenure",measure="churn_rate"}'))
    assert math.isnan(_value(text, 'churn_drift_observed_impact{measure="churn_rate"}'))
