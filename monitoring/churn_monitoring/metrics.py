"""Prometheus metrics of the detector service, in a registry of their own per service instance (tests run
several instances in one process; the default global registry would collide)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from churn_monitoring.drift.detector import DriftReport
    from churn_monitoring.drift.impact import Impact

# --- drift severity (churn_monitoring.drift) ---
# Gauge values of `churn_feature_drift_severity` / `churn_drift_severity`; the PrometheusRule pages on 2.
SEVERITY_VALUES = {"none": 0.0, "harmless": 1.0, "impact": 2.0}
IMPACT_MEASURES = ("churn_rate", "high_risk_share", "estimated_f1")


class DetectorMetrics:
    """Every series the detector exports; names are what the PrometheusRule and the dashboard query."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events = Counter(
            "churn_payload_events",
            "KServe payload-log events received, by CloudEvent type and outcome",
            ["type", "outcome"],
            registry=r,
        )
        self.joins = Counter(
            "churn_payload_joins",
            "Request/response pairs by outcome (joined, mismatch, expired, evicted)",
            ["outcome"],
            registry=r,
        )
        self.pending = Gauge(
            "churn_payload_pending_halves", "Event halves waiting for their pair", registry=r
        )
        self.logged = Counter(
            "churn_logged_predictions",
            "Customers of joined calls (logged predictions), by model version and risk level",
            ["model_version", "risk_level"],
            registry=r,
        )
        self.requests = Counter(
            "churn_detector_http_requests",
            "HTTP requests the detector answered, by route and status class",
            ["route", "code"],
            registry=r,
        )
        self.drift_score = Gauge(
            "churn_feature_drift_score",
            "Effect size of the last window's drift test per feature (total variation distance or "
            "Wasserstein distance over the reference mean)",
            ["feature"],
            registry=r,
        )
        self.drift_p_value = Gauge(
            "churn_feature_drift_p_value",
            "p-value of the last window's test per feature",
            ["feature"],
            registry=r,
        )
        self.drift_detected = Gauge(
            "churn_feature_drift_detected",
            "1 when the last window drifted on this feature (significant and material)",
            ["feature"],
            registry=r,
        )
        self.prediction_drift_score = Gauge(
            "churn_prediction_drift_score", "Effect size of the last window's prediction drift", registry=r
        )
        self.prediction_drift_detected = Gauge(
            "churn_prediction_drift_detected", "1 when the last window's predictions drifted", registry=r
        )
        self.dataset_drift = Gauge(
            "churn_dataset_drift", "1 when the last window drifted as a whole", registry=r
        )
        # --- drift impact and severity (owned with churn_monitoring.drift) ---
        self.drift_impact = Gauge(
            "churn_feature_drift_impact",
            "Estimated change of the model's output caused by this feature's shift in the last window "
            "(measure: churn_rate and high_risk_share in shares of customers, estimated_f1 in F1)",
            ["feature", "measure"],
            registry=r,
        )
        self.drift_severity = Gauge(
            "churn_feature_drift_severity",
            "0 no drift, 1 drift that does not move the model's output past the impact threshold (logged), "
            "2 drift that does (paged)",
            ["feature"],
            registry=r,
        )
        self.window_impact = Gauge(
            "churn_drift_observed_impact",
            "The last scored window's model output minus the reference's, by measure",
            ["measure"],
            registry=r,
        )
        self.window_severity = Gauge(
            "churn_drift_severity",
            "Severity of the last window: the most severe of its features and its prediction (0, 1, 2)",
            registry=r,
        )
        self.windows = Counter(
            "churn_drift_windows",
            "Windows tested, by outcome (drift, no_drift, error)",
            ["outcome"],
            registry=r,
        )
        self.window_size = Gauge("churn_drift_window_size", "Customers in the last tested window", registry=r)
        self.window_buffer = Gauge("churn_drift_window_buffered", "Customers in the open window", registry=r)
        self.drift_duration = Histogram(
            "churn_drift_test_duration_seconds",
            "Time of one window's drift test",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.store_backlog = Gauge(
            "churn_store_backlog_rows",
            "Logged predictions received but not yet stored (memory queue and spill files)",
            registry=r,
        )
        self.store_spilled = Gauge("churn_store_spilled_rows", "Rows waiting in spill files", registry=r)
        self.store_up = Gauge("churn_store_up", "1 while the prediction store accepts writes", registry=r)
        self.store_rows = Counter(
            "churn_store_rows",
            "Rows written to the store, by outcome (inserted, duplicate)",
            ["outcome"],
            registry=r,
        )
        self.feedback = Counter(
            "churn_feedback_labels",
            "Labels received, by outcome (matched, unknown_customer, outside_horizon)",
            ["outcome"],
            registry=r,
        )
        self.f1 = Gauge(
            "churn_model_f1_score", "Realised F1 over the rolling window", ["model_version"], registry=r
        )
        self.precision = Gauge(
            "churn_model_precision",
            "Realised precision over the rolling window",
            ["model_version"],
            registry=r,
        )
        self.recall = Gauge(
            "churn_model_recall", "Realised recall over the rolling window", ["model_version"], registry=r
        )
        self.roc_auc = Gauge(
            "churn_model_roc_auc", "Realised ROC AUC over the rolling window", ["model_version"], registry=r
        )
        self.labelled = Gauge(
            "churn_model_labelled_predictions",
            "Labelled predictions in the rolling window (n behind the realised metrics)",
            ["model_version"],
            registry=r,
        )
        self.estimated_f1 = Gauge(
            "churn_model_estimated_f1_score",
            "F1 estimated from calibrated probabilities (CBPE) over the rolling window",
            ["model_version"],
            registry=r,
        )
        self.window_predictions = Gauge(
            "churn_model_window_predictions",
            "Predictions in the rolling window (n behind the estimated metrics)",
            ["model_version"],
            registry=r,
        )
        self.alerts = Counter(
            "churn_alerts",
            "Slack alerts by kind and outcome (sent, suppressed, failed)",
            ["kind", "outcome"],
            registry=r,
        )

        self._add_boundary_metrics(r)

    def _add_boundary_metrics(self, r: CollectorRegistry) -> None:
        """What the detector refuses, drops and holds in bytes (its side of the security boundary)."""
        self.refusals = Counter(
            "churn_detector_refusals",
            "4xx/5xx answers of the detector, by route and stable error code (the error body's `code`)",
            ["route", "code"],
            registry=r,
        )
        self.unpaired = Counter(
            "churn_payload_unpaired_halves",
            "Event halves dropped without their other half, by CloudEvent type and reason (expired, "
            "evicted, shutdown); a response expiring unpaired is a call whose request never arrived",
            ["type", "reason"],
            registry=r,
        )
        self.pending_bytes = Gauge(
            "churn_payload_pending_bytes", "Estimated bytes held by halves waiting for a join", registry=r
        )
        self.inflight_bytes = Gauge(
            "churn_detector_inflight_bytes", "Bytes of request bodies reserved for reading now", registry=r
        )
        self.store_dropped = Counter(
            "churn_store_dropped_rows",
            "Logged predictions dropped before reaching the store, by reason (spill_full, "
            "rejected_spill_full, corrupt_spill_line)",
            ["reason"],
            registry=r,
        )
        self.store_queue_bytes = Gauge(
            "churn_store_queue_bytes", "Bytes of rows queued in memory for the store", registry=r
        )
        self.store_spill_bytes = Gauge(
            "churn_store_spill_bytes", "Bytes on disk in the spill directory", registry=r
        )
        self.store_spill_max_bytes = Gauge(
            "churn_store_spill_max_bytes",
            "Bound of the spill directory (CHURNOPS_DETECTOR_STORE_SPILL_MAX_BYTES)",
            registry=r,
        )
        self.spilled_at_start = Gauge(
            "churn_store_spilled_rows_at_start",
            "Rows a previous process left in the spill directory, found (and replayed) at start",
            registry=r,
        )
        self.start_time = Gauge(
            "churn_detector_start_time_seconds", "When this detector process started (Unix time)", registry=r
        )

    def _set_impact(self, feature: str, impact: Impact | None) -> None:
        for measure in IMPACT_MEASURES:
            value = None if impact is None else getattr(impact, measure)
            # NaN, not a stale value, when unknown: a gauge left at the last window's figure would lie.
            self.drift_impact.labels(feature, measure).set(float("nan") if value is None else value)

    def export_drift(self, report: DriftReport) -> None:
        """Every drift series of one tested window."""
        for feature in report.features:
            self.drift_score.labels(feature.feature).set(feature.effect_size)
            self.drift_p_value.labels(feature.feature).set(feature.p_value)
            self.drift_detected.labels(feature.feature).set(1.0 if feature.drift_detected else 0.0)
            self.drift_severity.labels(feature.feature).set(SEVERITY_VALUES[feature.severity])
            self._set_impact(feature.feature, feature.impact)
        if report.prediction is not None:
            self.prediction_drift_score.set(report.prediction.effect_size)
            self.prediction_drift_detected.set(1.0 if report.prediction.drift_detected else 0.0)
        observed = report.observed_impact
        for measure in IMPACT_MEASURES:
            value = None if observed is None else getattr(observed, measure)
            self.window_impact.labels(measure).set(float("nan") if value is None else value)
        self.window_severity.set(SEVERITY_VALUES[report.severity])
        self.dataset_drift.set(1.0 if report.dataset_drift else 0.0)
        self.window_size.set(report.window_size)

    def watch_store(
        self, backlog: Callable[[], float], spilled: Callable[[], float], up: Callable[[], float]
    ) -> None:
        self.store_backlog.set_function(backlog)
        self.store_spilled.set_function(spilled)
        self.store_up.set_function(up)
