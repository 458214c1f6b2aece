"""Metrics per model version: what the automated canary analysis compares between canary and stable.

Each transformer process serves one model version, so every series of the answers carries `model_version`;
the shared transformer runs two workers, so each scrape must add up both of them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

# Family names as the parser gives them (a counter's family has no `_total`).
PER_VERSION = (
    "churn_predictions",
    "churn_prediction_duration_seconds",
    "churn_inference_responses",
    "churn_probability",
    "churn_actions",
)


def _families(url: str) -> dict[str, Any]:
    text = httpx.get(f"{url}/metrics", headers={"connection": "close"}, timeout=10).text
    return {family.name: family for family in text_string_to_metric_families(text)}


def _value(families: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    return sum(
        s.value for s in families[family].samples if s.name == sample and labels.items() <= s.labels.items()
    )


def test_every_answer_series_carries_the_model_version(transformer, customers, trained_model):
    # A batch, then a single customer: the labels sets exist however the answers are sent.
    with httpx.Client(base_url=transformer.url, timeout=30) as http:
        assert http.post("/v1/models/churn:predict", json={"instances": customers[:3]}).status_code == 200
    families = _families(transformer.url)
    for name in PER_VERSION:
        samples = [s for s in families[name].samples if not s.name.endswith("_created")]
        assert samples, name
        assert {s.labels.get("model_version") for s in samples} == {trained_model.version}, name
    assert set(families["churn_actions"].samples[0].labels) == {"action", "model_version"}


def test_probability_histogram_and_actions_count_every_answered_customer(
    transformer, customers, trained_model
):
    version = trained_model.version
    chosen = customers[100:140]
    before = _families(transformer.url)
    with httpx.Client(base_url=transformer.url, timeout=30, headers={"connection": "close"}) as http:
        answers = []
        for start in range(0, len(chosen), 8):  # several requests: both workers answer some
            response = http.post("/v1/models/churn:predict", json={"instances": chosen[start : start + 8]})
            assert response.status_code == 200
            answers += response.json()["predictions"]
    after = _families(transformer.url)

    def grew(family: str, sample: str, **labels: str) -> float:
        return _value(after, family, sample, **labels) - _value(before, family, sample, **labels)

    probabilities = [a["churn_probability"] for a in answers]
    assert grew("churn_probability", "churn_probability_count", model_version=version) == len(answers)
    assert grew("churn_probability", "churn_probability_sum", model_version=version) == pytest.approx(
        sum(probabilities)
    )
    for bound in ("0.05", "0.3", "0.5", "0.7", "1.0"):
        expected = sum(p <= float(bound) for p in probabilities)
        assert (
            grew("churn_probability", "churn_probability_bucket", model_version=version, le=bound) == expected
        )
    for action, count in Counter(a["recommended_action"] for a in answers).items():
        assert grew("churn_actions", "churn_actions_total", action=action, model_version=version) == count
    assert grew("churn_actions", "churn_actions_total", model_version=version) == len(answers)
