"""Prometheus metrics of the transformer, served on `/metrics` beside KServe's own.

With `--workers N` (N > 1) each uvicorn worker is its own process, and `/metrics`, answered by any one of
them, must add up all of them: prometheus-client then runs in multiprocess mode (PROMETHEUS_MULTIPROC_DIR,
set by the entry point before anything imports prometheus_client). A single worker keeps the ordinary
in-memory registry: multiprocess values cost an mmap write and a getpid() system call per update, about
5 % of the transformer's CPU per request (measured with py-spy).
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

    def record_predictions(self, predictions: Sequence[bool], risk_levels: Sequence[str]) -> None:
        counts = Tally(zip(predictions, risk_levels, strict=True))
        for (prediction, risk), count in counts.items():
            self.predictions.labels("churn" if prediction else "no_churn", risk).inc(count)


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
