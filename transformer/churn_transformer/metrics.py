"""Prometheus metrics of the transformer, served on `/metrics` beside KServe's own.

With `--workers N` (N > 1) each uvicorn worker is its own process, and `/metrics`, answered by any one of
them, must add up all of them: prometheus-client then runs in multiprocess mode (PROMETHEUS_MULTIPROC_DIR,
set by the entry point before anything imports prometheus_client). A single worker keeps the ordinary
in-memory registry: multiprocess values cost an mmap write and a getpid() system call per update, about
5 % of the transformer's CPU per request (measured with py-spy).

`churn_inference_responses_total{protocol, code}` counts every answer of the inference endpoints (v1
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
from functools import lru_cache
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PROTOCOLS = ("v1", "v2")  # plus "other": a :predict or /infer path under neither prefix (a 404)
STATUS_CLASSES = ("2xx", "4xx", "5xx")  # plus "1xx"/"3xx", which the inference routes never answer
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


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
    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.predictions = Counter(
            "churn_predictions_total",
            "Customers scored, by prediction and risk level",
            ["prediction", "risk_level"],
        )
        self.duration = Histogram(
            "churn_prediction_duration_seconds",
            "End-to-end time of an inference request in the transformer (body in to answer out)",
            buckets=DURATION_BUCKETS,
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
            "Answers of the inference endpoints (health and /metrics excluded), by protocol and status class",
            ["protocol", "code"],
        )
        for protocol in PROTOCOLS:
            for code in STATUS_CLASSES:
                self.responses.labels(protocol, code)

    def record_predictions(self, predictions: Sequence[bool], risk_levels: Sequence[str]) -> None:
        counts = Tally(zip(predictions, risk_levels, strict=True))
        for (prediction, risk), count in counts.items():
            self.predictions.labels("churn" if prediction else "no_churn", risk).inc(count)


def status_class(status: int) -> str:
    """The `code` label: 2xx for 200..299 and so on; a status outside 100..599 (none is sent) is a 5xx."""
    return f"{status // 100}xx" if 100 <= status <= 599 else "5xx"


@lru_cache(maxsize=1)
def get_metrics() -> Metrics:
    return Metrics()


def render_metrics(accept: str | None) -> tuple[bytes, str]:
    """All worker processes' metrics (ours and KServe's), in the format the scraper asked for."""
    from prometheus_client import REGISTRY, CollectorRegistry, exposition, multiprocess

    registry = REGISTRY
    if multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    encoder, content_type = exposition.choose_encoder(accept or "")
    return encoder(registry), content_type
