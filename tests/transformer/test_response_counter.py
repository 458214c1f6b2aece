"""churn_inference_responses_total: one count per inference answer, by protocol and status class, added up
over worker processes; health probes, metadata and scrapes are not counted (they would dilute the 5xx
ratio of alert ChurnServing5xxRatioHigh)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.transformer.conftest import transformer_behind_proxy, v2_request

pytestmark = pytest.mark.integration

COUNTER = "churn_inference_responses_total"


def _responses(url: str) -> dict[tuple[str, str], float]:
    """(protocol, code) -> count, from one scrape (a new connection: either worker may answer it)."""
    text = httpx.get(f"{url}/metrics", headers={"connection": "close"}, timeout=10).text
    return {
        (sample.labels["protocol"], sample.labels["code"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == COUNTER
    }


def test_answers_are_counted_once_by_protocol_and_status_class_across_workers(
    artefact_dir, predictor, customers, tmp_path
):
    with transformer_behind_proxy(
        artefact_dir,
        predictor,
        tmp_path / "transformer.log",
        workers=2,  # multiprocess mode: any worker's /metrics must report both workers' answers
        env={"CHURNOPS_TRANSFORMER_PREDICTOR_TIMEOUT_S": "2"},
    ) as (served, proxy):
        customer = customers[0]
        scored = {"instances": [customer]}
        refused: dict[str, Any] = {"instances": [{**customer, "Contract": "Weekly"}]}
        # A new connection per request: the kernel spreads them over both workers.
        with httpx.Client(base_url=served.url, timeout=30, headers={"connection": "close"}) as http:
            # Every (protocol, code) child the ratios need exists from the start, at 0.
            assert _responses(served.url) == {
                (protocol, code): 0.0 for protocol in ("v1", "v2") for code in ("2xx", "4xx", "5xx")
            }
            for _ in range(5):
                assert http.post("/v1/models/churn:predict", json=scored).status_code == 200
            for _ in range(3):
                assert http.post("/v2/models/churn/infer", json=v2_request([customer])).status_code == 200
            for _ in range(4):
                assert http.post("/v1/models/churn:predict", json=refused).status_code == 400
            assert http.post("/v2/models/churn/infer", json={"inputs": "none"}).status_code == 400
            # An inference-shaped path of no protocol: "other", never the path itself as a label.
            assert http.post("/not/a/route/infer", json={}).status_code == 404
            for _ in range(5):  # not inference: neither counted nor in the ratio's denominator
                assert http.get("/v2/health/live").status_code == 200
                assert http.get("/v2/health/ready").status_code == 200
                assert http.get("/v2/models/churn").status_code == 200
                assert http.get("/metrics").status_code == 200
            proxy.cut()  # the predictor is unreachable: inference answers 503
            for _ in range(2):
                assert http.post("/v1/models/churn:predict", json=scored).status_code == 503
            assert http.post("/v2/models/churn/infer", json=v2_request([customer])).status_code == 503
        expected = {
            ("v1", "2xx"): 5.0,
            ("v1", "4xx"): 4.0,
            ("v1", "5xx"): 2.0,
            ("v2", "2xx"): 3.0,
            ("v2", "4xx"): 1.0,
            ("v2", "5xx"): 1.0,
            ("other", "4xx"): 1.0,
        }
        for _ in range(6):  # whichever worker answers the scrape, it reports every worker's answers
            assert _responses(served.url) == expected
