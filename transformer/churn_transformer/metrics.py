"""Prometheus metrics of the transformer, served on `/metrics` beside KServe's own.

With `--workers N` (N > 1) each uvicorn worker is its own process, and `/metrics`, answered by any one of
them, must add up all of them: prometheus-client then runs in multiprocess mode (PROMETHEUS_MULTIPROC_DIR,
set by the entry point before anything imports prometheus_client). A single worker keeps the ordinary
in-memory registry: multiprocess values cost an mmap write and a getpid() system call per update, about
5 % of the transformer's CPU per request (measured with py-spy).

Every series carries `model_version`: each transformer process serves one model version, and the canary
analysis compares canary and stable series from Prometheus (`churn_predictions_total`,
`churn_prediction_duration_seconds`, `churn_inference_responses_total`, `churn_probability`,
`churn_actions_total`). The version is known at start, so every label set is closed: `prediction`,
`risk_level` and `action` come from the contract's bands and the retention playbook, `protocol` and `code`
are the small sets below.

`churn_inference_responses_total{protocol, code, model_version}` counts every answer of the inference endpoints (v1
`:predict`, v2 `/infer`) by status class, 5xx included: the transformer's own error ratio (alert
ChurnServing5xxRatioHigh). Health, readiness, metadata and `/metrics` are not inference and are not counted,
so probes and scrapes cannot dilute the ratio. Both labels are closed sets (no paths, no exact codes), and
the children the ratio needs exist from the start at 0: a series that appears only at its first increment
loses that increment to `rate()`, and a 5xx numerator would have no series until the first failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter as Tally
from collections.abc import Sequence
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PROTOCOLS = ("v1", "v2")  # plus "other": a :predict or /infer path under neither prefix (a 404)
STATUS_CLASSES = ("2xx", "4xx", "5xx")  # plus "1xx"/"3xx", which the inference routes never answer
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# 0.05, 0.10, ..., 1.0: the predicted churn probability of every answered customer, per model version.
PROBABILITY_BUCKETS = tuple(round(0.05 * step, 2) for step in range(1, 21))


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def prepare_multiprocess_dir() -> Path:
    """Point PROMETHEUS_MULTIPROC_DIR at an empty directory (a fresh one unless the environment names one).

    Must run before prometheus_client is imported. Files left by an earlier run would add that run's
    counts to ours, so a named directory is emptied (prometheus-client's documented practice).
    """
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="churn-transformer-metrics-"))
        os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def remove_multiprocess_dir(directory: Path) -> None:
    if directory.name.startswith("churn-transformer-metrics-"):
        shutil.rmtree(directory, ignore_errors=True)


class Metrics:
    """The transformer's metrics for the one model version this process serves."""

    def __init__(self, model_version: str) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.model_version = model_version
        self.predictions = Counter(
            "churn_predictions_total",
            "Customers scored, by prediction, risk level and model version",
            ["prediction", "risk_level", "model_version"],
        )
        self.duration = Histogram(
            "churn_prediction_duration_seconds",
            "End-to-end time of an answered inference request in the transformer (body in to answer out)",
            ["model_version"],
            buckets=DURATION_BUCKETS,
        )
        self.probability = Histogram(
            "churn_probability",
            "Predicted churn probability of every answered customer, by model version",
            ["model_version"],
            buckets=PROBABILITY_BUCKETS,
        )
        self.actions = Counter(
            "churn_actions_total",
            "Recommended actions answered, by action (the playbook's closed set) and model version",
            ["action", "model_version"],
        )
        self.model_info = Gauge(
            "churn_model_info",
            "The model version this transformer serves (value 1)",
            ["version"],
            multiprocess_mode="max",
        )
        self.invalid = Counter(
            "churn_invalid_requests_total", "Requests refused with a 4xx, by reason", ["reason"]
        )
        self.responses = Counter(
            "churn_inference_responses_total",
            "Answers of the inference endpoints (health and /metrics excluded), by protocol, status class "
            "and model version",
            ["protocol", "code", "model_version"],
        )
        for protocol in PROTOCOLS:
            for code in STATUS_CLASSES:
                self.responses.labels(protocol, code, model_version)
        self._duration = self.duration.labels(model_version)
        self._probability = self.probability.labels(model_version)
        self.model_info.labels(model_version).set(1)

    def record_response(self, protocol: str, status: int, elapsed_s: float) -> None:
        """One answer of an inference endpoint; the latency of answered (200) requests only."""
        self.responses.labels(protocol, status_class(status), self.model_version).inc()
        if status == 200:
            self._duration.observe(elapsed_s)

    def record_answers(
        self,
        probabilities: Sequence[float],
        predictions: Sequence[bool],
        risk_levels: Sequence[str],
        actions: Sequence[str],
    ) -> None:
        """Every customer of one answer: prediction and risk level, action, probability."""
        version = self.model_version
        for (prediction, risk), count in Tally(zip(predictions, risk_levels, strict=True)).items():
            self.predictions.labels("churn" if prediction else "no_churn", risk, version).inc(count)
        for action, count in Tally(actions).items():
            self.actions.labels(action, version).inc(count)
        for probability in probabilities:
            self._probability.observe(probability)


def status_class(status: int) -> str:
    """The `code` label: 2xx for 200..299 and so on; a status outside 100..599 (none is sent) is a 5xx."""
    return f"{status // 100}xx" if 100 <= status <= 599 else "5xx"


_metrics: list[Metrics] = []  # this process's one Metrics, made by start_metrics


def start_metrics(model_version: str) -> Metrics:
    """Register the metrics of the model version this process serves (once per process; the model does it
    when it is built, in every worker process)."""
    if not _metrics:
        _metrics.append(Metrics(model_version))
    elif _metrics[0].model_version != model_version:
        raise RuntimeError(
            f"this process serves model version {_metrics[0].model_version}, not {model_version}"
        )
    return _metrics[0]


def get_metrics() -> Metrics:
    if not _metrics:
        raise RuntimeError(
            "metrics are not started: start_metrics(model_version) runs when the model is built"
        )
    return _metrics[0]


def render_metrics(accept: str | None) -> tuple[bytes, str]:
    """All worker processes' metrics (ours and KServe's), in the format the scraper asked for."""
    from prometheus_client import REGISTRY, CollectorRegistry, exposition, multiprocess

    registry = REGISTRY
    if multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    encoder, content_type = exposition.choose_encoder(accept or "")
    return encoder(registry), content_type
