"""What one side (canary or stable) did in one window, read from Prometheus' HTTP API.

Both sides are queried with the same evaluation time and range, so they are compared over the same
window. Counters go through `increase()` (Prometheus handles counter resets: a pod that restarts, or
scales away, inside the window), then `sum by` the label compared: the pods of one revision add up.

The series (transformer, one version per process; detector gauges), each filtered by the side's selector:
- `churn_inference_responses_total{protocol, code}`  answers by status class
- `churn_prediction_duration_seconds_bucket{le}`     end-to-end request time in the transformer
- `churn_probability_bucket{le}`                     churn probability per customer (buckets 0.05 .. 1.0)
- `churn_predictions_total{prediction, risk_level}`  customers by risk level
- `churn_actions_total{action}`                      customers by recommended action
- `churn_model_f1_score`, `churn_model_labelled_predictions` (detector)  live F1 and its n
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx


class PrometheusError(RuntimeError):
    """Prometheus did not answer a query (unreachable, or an error in the query); names the query."""


@dataclass(frozen=True)
class Window:
    """[end - seconds, end], as unix time."""

    end: float
    seconds: int

    @property
    def start(self) -> float:
        return self.end - self.seconds


@dataclass(frozen=True)
class SideSample:
    """One side's counts over one window (zeros when it served nothing)."""

    responses: Mapping[str, float] = field(default_factory=dict)  # status class -> answers
    latency_quantile_s: float = math.nan
    probability_buckets: Mapping[float, float] = field(default_factory=dict)  # le -> cumulative count
    risk_levels: Mapping[str, float] = field(default_factory=dict)
    actions: Mapping[str, float] = field(default_factory=dict)
    f1: float = math.nan
    labelled: float = 0.0

    @property
    def requests(self) -> float:
        return sum(self.responses.values())

    def ratio(self, status_class: str) -> float:
        return self.responses.get(status_class, 0.0) / self.requests if self.requests > 0 else math.nan

    @property
    def predictions(self) -> float:
        return sum(self.risk_levels.values())


def metric(name: str, selector: str) -> str:
    return f"{name}{{{selector}}}" if selector.strip() else name


class PrometheusSource:
    """Instant queries against one Prometheus (`/api/v1/query` with an evaluation time)."""

    def __init__(self, url: str, timeout_s: float = 30.0, client: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/")
        self.client = client or httpx.Client(timeout=timeout_s)

    def query(self, expr: str, at: float) -> list[tuple[dict[str, str], float]]:
        try:
            response = self.client.get(
                f"{self.url}/api/v1/query", params={"query": expr, "time": f"{at:.3f}"}
            )
            body: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise PrometheusError(f"{self.url}: {expr}: {error}") from error
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"{self.url}: {expr}: {body.get('error', response.status_code)}")
        return [(item["metric"], float(item["value"][1])) for item in body["data"]["result"]]

    def _by(self, expr: str, label: str, at: float) -> dict[str, float]:
        return {
            labels.get(label, ""): value for labels, value in self.query(expr, at) if not math.isnan(value)
        }

    def _scalar(self, expr: str, at: float) -> float:
        values = [value for _, value in self.query(expr, at)]
        return values[0] if values else math.nan

    def serving_sample(self, selector: str, window: Window, quantile: float) -> SideSample:
        """Answers, latency, probabilities, risk levels and actions of one side over the window."""
        w = f"[{window.seconds}s]"

        def increase(name: str, by: str) -> str:
            return f"sum by ({by}) (increase({metric(name, selector)}{w}))"

        buckets = self._by(increase("churn_probability_bucket", "le"), "le", window.end)
        return SideSample(
            responses=self._by(increase("churn_inference_responses_total", "code"), "code", window.end),
            latency_quantile_s=self._scalar(
                f"histogram_quantile({quantile}, {increase('churn_prediction_duration_seconds_bucket', 'le')})",
                window.end,
            ),
            probability_buckets={float(le): count for le, count in buckets.items()},
            risk_levels=self._by(increase("churn_predictions_total", "risk_level"), "risk_level", window.end),
            actions=self._by(increase("churn_actions_total", "action"), "action", window.end),
        )

    def performance(self, selector: str, at: float) -> tuple[float, float]:
        """(live F1, labelled predictions behind it) of one side, from the detector's gauges."""
        f1 = self._scalar(f"max({metric('churn_model_f1_score', selector)})", at)
        labelled = self._scalar(f"max({metric('churn_model_labelled_predictions', selector)})", at)
        return f1, 0.0 if math.isnan(labelled) else labelled

    def sample(self, serving: str, performance: str, window: Window, quantile: float) -> SideSample:
        served = self.serving_sample(serving, window, quantile)
        f1, labelled = self.performance(performance, window.end)
        return SideSample(
            responses=served.responses,
            latency_quantile_s=served.latency_quantile_s,
            probability_buckets=served.probability_buckets,
            risk_levels=served.risk_levels,
            actions=served.actions,
            f1=f1,
            labelled=labelled,
        )
