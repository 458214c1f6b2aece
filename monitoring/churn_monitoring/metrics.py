"""Prometheus metrics of the detector service, in a registry of their own per service instance (tests run
several instances in one process; the default global registry would collide)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
            "Effect size of the last window's drift test per feature (PSI or scaled Wasserstein)",
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

    def watch_store(
        self, backlog: Callable[[], float], spilled: Callable[[], float], up: Callable[[], float]
    ) -> None:
        self.store_backlog.set_function(backlog)
        self.store_spilled.set_function(spilled)
        self.store_up.set_function(up)
