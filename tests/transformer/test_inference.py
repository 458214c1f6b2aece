"""The transformer -> predictor path over real processes: answers, equality, errors, health, telemetry."""

from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from churn_core.artefact import load_model
from churn_core.contract import Encoder, FeatureContract
from tests.support.services import wait_until
from tests.transformer.conftest import EventSink, v2_outputs, v2_request

pytestmark = pytest.mark.integration

BATCH = 1000
# Spelt out, not churn_core.decision.ANSWER_FIELDS: the API's fields are checked against the contract
# as written here, so dropping one from the shared tuple fails this test.
ANSWER_FIELDS = {
    "customerID",
    "churn_probability",
    "churn_prediction",
    "risk_level",
    "recommended_action",
    "top_factors",
    "model_version",
}


def _without_id(customer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in customer.items() if k != "customerID"}


def _expected_probabilities(artefact: Path, customers: list[dict[str, Any]]) -> np.ndarray:
    contract = FeatureContract.load(artefact)
    encoder = Encoder(contract)
    batch = encoder.batch_from_records([_without_id(c) for c in customers])
    return np.asarray(load_model(artefact).predict_proba(encoder.encode(batch))[:, 1])


# ---- answers ---------------------------------------------------------------------------------------------


def test_infer_v2_probability_equals_the_registered_model_on_every_customer(client, customers, artefact_dir):
    expected = _expected_probabilities(artefact_dir, customers)
    got: list[float] = []
    ids: list[str] = []
    for start in range(0, len(customers), BATCH):
        response = client.post("/v2/models/churn/infer", json=v2_request(customers[start : start + BATCH]))
        assert response.status_code == 200, response.text
        outputs = v2_outputs(response.json())
        got += outputs["churn_probability"]
        ids += outputs["customer_id"]
    assert ids == [c["customerID"] for c in customers]
    difference = np.abs(np.asarray(got) - expected)
    # Raw FP64 over gRPC and orjson's shortest round-trip floats lose nothing (measured: 0.0 here). The
    # tolerance only allows the ensemble's BLAS sums to round differently for another batch shape.
    assert difference.max() <= 1e-9, f"max |difference| {difference.max()}"


def test_predict_v1_answers_equal_batch_scoring(client, customers, artefact_dir, telco_csv, tmp_path):
    from churn_model.scoring import BatchScorer

    scored_file = tmp_path / "scores.csv"
    BatchScorer(artefact_dir).score_file(telco_csv, scored_file)
    with scored_file.open(newline="", encoding="utf-8") as handle:
        batch_scores = {row["customer_id"]: row for row in csv.DictReader(handle)}
    answers: list[dict[str, Any]] = []
    for start in range(0, len(customers), BATCH):
        response = client.post(
            "/v1/models/churn:predict", json={"instances": customers[start : start + BATCH]}
        )
        assert response.status_code == 200, response.text
        answers += response.json()["predictions"]
    assert len(answers) == len(customers) == len(batch_scores)
    for customer, answer in zip(customers, answers, strict=True):
        expected = batch_scores[customer["customerID"]]
        assert answer["customerID"] == customer["customerID"]
        assert abs(answer["churn_probability"] - float(expected["churn_probability"])) <= 1e-12
        assert answer["churn_prediction"] == (expected["churn_prediction"] == "true")
        assert answer["risk_level"] == expected["risk_level"]
        assert answer["recommended_action"] == expected["recommended_action"]


def test_v1_answer_has_every_field_and_three_raising_factors(client, customers, trained_model):
    customer = customers[0]
    response = client.post("/v1/models/churn:predict", json={"instances": [customer]})
    assert response.status_code == 200
    (answer,) = response.json()["predictions"]
    assert set(answer) == ANSWER_FIELDS
    assert answer["model_version"] == trained_model.version
    assert answer["churn_prediction"] == (
        answer["churn_probability"] >= trained_model.contract.model.threshold
    )
    factors = answer["top_factors"]
    assert len(factors) == 3
    assert [f["contribution"] for f in factors] == sorted((f["contribution"] for f in factors), reverse=True)
    for factor in factors:
        assert factor["feature"] in trained_model.contract.field_names
        sent = customer[factor["feature"]]
        assert factor["value"] == (sent if isinstance(sent, str) else float(sent))


def test_v1_and_v2_give_the_same_answer_in_request_order(client, customers):
    chosen = [customers[5], customers[1], customers[3000]]
    v1 = client.post("/v1/models/churn:predict", json={"instances": chosen}).json()["predictions"]
    v2 = v2_outputs(client.post("/v2/models/churn/infer", json=v2_request(chosen)).json())
    assert [a["customerID"] for a in v1] == v2["customer_id"] == [c["customerID"] for c in chosen]
    assert [a["churn_probability"] for a in v1] == v2["churn_probability"]
    assert [a["churn_prediction"] for a in v1] == v2["churn_prediction"]
    assert [a["risk_level"] for a in v1] == v2["risk_level"]
    assert [a["recommended_action"] for a in v1] == v2["recommended_action"]
    assert [a["top_factors"] for a in v1] == [json.loads(text) for text in v2["top_factors"]]


def test_v2_answer_is_one_tensor_per_field(client, customers, trained_model):
    response = client.post("/v2/models/churn/infer", json=v2_request([_without_id(customers[2])], id="abc"))
    assert response.status_code == 200
    document = response.json()
    assert document["model_name"] == "churn"
    assert document["model_version"] == trained_model.version
    assert document["id"] == "abc"
    datatypes = {o["name"]: (o["datatype"], o["shape"]) for o in document["outputs"]}
    assert datatypes == {
        "churn_probability": ("FP64", [1]),
        "churn_prediction": ("BOOL", [1]),
        "risk_level": ("BYTES", [1]),
        "recommended_action": ("BYTES", [1]),
        "top_factors": ("BYTES", [1]),
        "model_version": ("BYTES", [1]),
    }  # no customer_id output: the request sent no customerID


def test_v2_returns_only_the_requested_outputs(client, customers):
    body = v2_request(customers[:2], outputs=[{"name": "risk_level"}, {"name": "churn_probability"}])
    outputs = client.post("/v2/models/churn/infer", json=body).json()["outputs"]
    assert [o["name"] for o in outputs] == ["risk_level", "churn_probability"]


def test_concurrent_single_customer_requests_each_get_their_own_answer(transformer, customers, artefact_dir):
    import asyncio

    chosen = customers[:64]
    expected = _expected_probabilities(artefact_dir, chosen)

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=transformer.url, timeout=30) as http:
            return await asyncio.gather(
                *(http.post("/v1/models/churn:predict", json={"instances": [c]}) for c in chosen)
            )

    responses = asyncio.run(send_all())
    for customer, response, probability in zip(chosen, responses, expected, strict=True):
        (answer,) = response.json()["predictions"]
        assert answer["customerID"] == customer["customerID"]
        # Concurrent requests share predictor calls in varying combinations; the ensemble's BLAS dot
        # products may then sum in another order: equal to the last bits (~1e-17), not always bit for bit.
        assert answer["churn_probability"] == pytest.approx(probability, abs=1e-12)


# ---- bad input: 4xx naming field and reason, never a 5xx ------------------------------------------------


def _mutated(customer: dict[str, Any], **changes: Any) -> dict[str, Any]:
    changed = dict(customer)
    for key, value in changes.items():
        if value is _DROP:
            changed.pop(key)
        else:
            changed[key] = value
    return changed


_DROP = object()

V1_CASES = [
    ("unknown_contract_value", {"Contract": "Weekly"}, "unknown_value", ["Contract", "Weekly"]),
    ("missing_field", {"tenure": _DROP}, "missing_field", ["tenure"]),
    ("extra_field", {"favouriteColour": "blue"}, "extra_field", ["favouriteColour"]),
    ("tenure_as_text", {"tenure": "12"}, "wrong_type", ["tenure"]),
    ("fractional_tenure", {"tenure": 1.5}, "wrong_type", ["tenure"]),
    ("senior_citizen_bool", {"SeniorCitizen": True}, "wrong_type", ["SeniorCitizen"]),
    ("senior_citizen_two", {"SeniorCitizen": 2}, "out_of_range", ["SeniorCitizen"]),
    ("charges_as_text", {"MonthlyCharges": "29.85"}, "wrong_type", ["MonthlyCharges"]),
    ("negative_tenure", {"tenure": -1}, "out_of_range", ["tenure"]),
    ("negative_monthly_charges", {"MonthlyCharges": -0.01}, "out_of_range", ["MonthlyCharges"]),
    ("negative_total_charges", {"TotalCharges": -5.0}, "out_of_range", ["TotalCharges"]),
    ("category_as_number", {"gender": 1}, "unknown_value", ["gender"]),
    ("null_field", {"Partner": None}, "unknown_value", ["Partner"]),
]


@pytest.mark.parametrize(
    ("changes", "reason", "mentions"), [c[1:] for c in V1_CASES], ids=[c[0] for c in V1_CASES]
)
def test_predict_v1_rejects_bad_customer(client, customers, changes, reason, mentions):
    response = client.post(
        "/v1/models/churn:predict", json={"instances": [customers[0], _mutated(customers[1], **changes)]}
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == reason
    assert "instances[1]" in body["error"]
    for word in mentions:
        assert word in body["error"]


@pytest.mark.parametrize(
    ("changes", "reason", "mentions"), [c[1:] for c in V1_CASES], ids=[c[0] for c in V1_CASES]
)
def test_infer_v2_rejects_bad_customer(client, customers, changes, reason, mentions):
    response = client.post("/v2/models/churn/infer", json=v2_request([_mutated(customers[1], **changes)]))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == reason
    for word in mentions:
        assert word in body["error"]


def test_infer_rejects_unknown_contract_value(client, customers):
    for path, body in (
        ("/v1/models/churn:predict", {"instances": [_mutated(customers[0], Contract="Weekly")]}),
        ("/v2/models/churn/infer", v2_request([_mutated(customers[0], Contract="Weekly")])),
    ):
        response = client.post(path, json=body)
        assert response.status_code == 400
        assert response.json()["code"] == "unknown_value"
        assert "Contract" in response.json()["error"]
        assert "'Weekly'" in response.json()["error"]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_rejected_naming_the_field(client, customers, token):
    v1 = json.dumps({"instances": [customers[0]]}).replace(
        '"MonthlyCharges": 29.85', f'"MonthlyCharges": {token}'
    )
    assert token in v1
    response = client.post(
        "/v1/models/churn:predict", content=v1, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "not_finite"
    assert "MonthlyCharges" in response.json()["error"]
    body = v2_request([customers[0]])
    text = json.dumps(body).replace("[29.85]", f"[{token}]")
    assert token in text
    response = client.post(
        "/v2/models/churn/infer", content=text, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "not_finite"
    assert "MonthlyCharges" in response.json()["error"]


@pytest.mark.parametrize("path", ["/v1/models/churn:predict", "/v2/models/churn/infer"])
@pytest.mark.parametrize("body", [b'{"instances": [', b"", b"\xff\xfe", b"{'single': 'quotes'}"])
def test_malformed_json_is_a_400(client, path, body):
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_json"


def test_empty_batch_is_rejected(client, customers):
    response = client.post("/v1/models/churn:predict", json={"instances": []})
    assert (response.status_code, response.json()["code"]) == (400, "empty_batch")
    empty = v2_request([customers[0]])
    for tensor in empty["inputs"]:
        tensor["shape"], tensor["data"] = [0], []
    response = client.post("/v2/models/churn/infer", json=empty)
    assert (response.status_code, response.json()["code"]) == (400, "empty_batch")


def test_batch_over_the_maximum_is_rejected(client, customers):
    too_many = (customers * 2)[:1001]
    response = client.post("/v1/models/churn:predict", json={"instances": too_many})
    assert (response.status_code, response.json()["code"]) == (400, "batch_too_large")
    assert "1000" in response.json()["error"]
    response = client.post("/v2/models/churn/infer", json=v2_request(too_many))
    assert (response.status_code, response.json()["code"]) == (400, "batch_too_large")


def test_exactly_the_maximum_batch_is_served(client, customers):
    response = client.post("/v2/models/churn/infer", json=v2_request(customers[:1000]))
    assert response.status_code == 200
    assert len(v2_outputs(response.json())["churn_probability"]) == 1000
    # v1 spends the most JSON values per customer (a key and a value per field): still under the bound.
    response = client.post("/v1/models/churn:predict", json={"instances": customers[:1000]})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1000


def _v2_with(customers: list[dict[str, Any]], field: str, **tensor: Any) -> dict[str, Any]:
    body = v2_request(customers)
    for item in body["inputs"]:
        if item["name"] == field:
            item.update(tensor)
    return body


def test_infer_v2_rejects_tensor_problems(client, customers):
    two = customers[:2]
    cases = [
        (_v2_with(two, "tenure", datatype="FP64"), "wrong_datatype", "tenure"),
        (_v2_with(two, "Contract", datatype="INT64"), "wrong_datatype", "Contract"),
        (_v2_with(two, "MonthlyCharges", datatype="FP32"), "wrong_datatype", "MonthlyCharges"),
        (_v2_with(two, "tenure", shape=[3], data=[1, 2, 3]), "shape_mismatch", "tenure"),
        (_v2_with(two, "tenure", shape=[2], data=[1]), "shape_mismatch", "tenure"),
        (_v2_with(two, "tenure", shape=[1, 2]), "shape_mismatch", "tenure"),
        (_v2_with(two, "gender", name="sex"), "extra_field", "sex"),
        (
            {"inputs": [t for t in v2_request(two)["inputs"] if t["name"] != "PaymentMethod"]},
            "missing_field",
            "PaymentMethod",
        ),
        ({"inputs": [*v2_request(two)["inputs"], v2_request(two)["inputs"][1]]}, "duplicate_input", "gender"),
        ({"inputs": "gender"}, "malformed_request", "inputs"),
        ({"inputs": [{"name": "gender"}]}, "malformed_request", "gender"),
        ([1, 2], "malformed_request", "JSON object"),
        (v2_request(two, outputs=[{"name": "shoe_size"}]), "unknown_output", "shoe_size"),
        (v2_request(two, colour="blue"), "extra_field", "colour"),
    ]
    for body, reason, mention in cases:
        response = client.post("/v2/models/churn/infer", json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["code"] == reason, response.text
        assert mention in response.json()["error"], response.text


def test_v2_accepts_nested_column_tensors(client, customers):
    body = v2_request(customers[:2])
    for tensor in body["inputs"]:
        tensor["shape"] = [2, 1]
        tensor["data"] = [[value] for value in tensor["data"]]
    assert client.post("/v2/models/churn/infer", json=body).status_code == 200


def test_unknown_model_is_a_404(client, customers):
    response = client.post("/v1/models/wine:predict", json={"instances": [customers[0]]})
    assert response.status_code == 404
    assert "wine" in response.json()["error"]


# ---- health, request ids, metrics, logs ------------------------------------------------------------------


def test_health_endpoints_report_ready(client):
    assert client.get("/v2/health/live").status_code == 200
    ready = client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    model = client.get("/v2/models/churn/ready")
    assert model.status_code == 200
    assert model.json()["ready"] is True


def test_request_id_is_taken_from_the_request_and_returned(client, customers, transformer):
    response = client.post(
        "/v1/models/churn:predict",
        json={"instances": [customers[7]]},
        headers={"X-Request-ID": "req-test-0042"},
    )
    assert response.headers["x-request-id"] == "req-test-0042"
    made = client.post("/v2/models/churn/infer", json=v2_request([customers[7]]))
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    rejected = client.post(
        "/v1/models/churn:predict", json={"instances": []}, headers={"X-Request-ID": "req-bad-1"}
    )
    assert rejected.headers["x-request-id"] == "req-bad-1"
    wait_until(
        lambda: any(
            line.get("request_id") == made.headers["x-request-id"] for line in transformer.log_lines()
        ),
        10,
        "the request's log line",
    )


def test_request_log_lines_are_json_with_the_request_facts_and_no_secrets(client, customers, transformer):
    secret, api_key = "Bearer s3cr3t-t0ken-value", "k3y-abcdef-123456"
    response = client.post(
        "/v1/models/churn:predict",
        json={"instances": customers[10:13]},
        headers={"X-Request-ID": "req-log-check", "Authorization": secret, "X-API-Key": api_key},
    )
    assert response.status_code == 200
    wait_until(
        lambda: any(line.get("request_id") == "req-log-check" for line in transformer.log_lines()),
        10,
        "log line",
    )
    (line,) = [entry for entry in transformer.log_lines() if entry.get("request_id") == "req-log-check"]
    assert line["protocol"] == "v1"
    assert line["batch_size"] == 3
    assert line["status"] == 200
    assert line["latency_ms"] > 0
    assert line["model_version"] == response.json()["predictions"][0]["model_version"]
    assert [c["risk_level"] for c in line["customers"]] == [
        p["risk_level"] for p in response.json()["predictions"]
    ]
    assert [c["prediction"] for c in line["customers"]] == [
        p["churn_prediction"] for p in response.json()["predictions"]
    ]
    text = transformer.log_file.read_text(encoding="utf-8")
    assert "s3cr3t-t0ken-value" not in text
    assert api_key not in text
    for raw in text.splitlines():
        if raw.strip():
            json.loads(raw)  # every line is JSON


def _value(text: str, name: str, **labels: str) -> float:
    """The value of the sample `name` whose labels include `labels` (0.0 when there is none)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return 0.0


def test_metrics_add_up_across_worker_processes(transformer, customers, trained_model):
    customer = customers[0]
    version = trained_model.version

    def scrape() -> str:
        return httpx.get(f"{transformer.url}/metrics", headers={"connection": "close"}).text

    before = scrape()
    answers = []
    for _ in range(30):  # a new connection each time: the kernel spreads them over both workers
        response = httpx.post(
            f"{transformer.url}/v1/models/churn:predict",
            json={"instances": [customer]},
            headers={"connection": "close"},
        )
        answers.append(response.json()["predictions"][0])
    for _ in range(4):
        httpx.post(
            f"{transformer.url}/v1/models/churn:predict",
            json={"instances": [_mutated(customer, Contract="Weekly")]},
            headers={"connection": "close"},
        )
    predicted = {
        "prediction": "churn" if answers[0]["churn_prediction"] else "no_churn",
        "risk_level": answers[0]["risk_level"],
        "model_version": version,
    }
    scrapes = [scrape() for _ in range(6)]
    for after in scrapes:  # whichever worker answers the scrape, it reports every worker's counts
        name = "churn_predictions_total"
        assert _value(after, name, **predicted) - _value(before, name, **predicted) == 30
        invalid = {"reason": "unknown_value"}
        name = "churn_invalid_requests_total"
        assert _value(after, name, **invalid) - _value(before, name, **invalid) == 4
        count = "churn_prediction_duration_seconds_count"
        assert (
            _value(after, count, model_version=version) - _value(before, count, model_version=version) >= 30
        )
        assert _value(after, "churn_model_info", version=version) == 1.0
        for code, answered in (("2xx", 30), ("4xx", 4), ("5xx", 0)):  # the scrapes themselves not counted
            labels = {"code": code, "protocol": "v1", "model_version": version}
            name = "churn_inference_responses_total"
            assert _value(after, name, **labels) - _value(before, name, **labels) == answered
        assert "request_predict_seconds_count" in after  # KServe's own metrics are still there


def _events_of(event_sink: EventSink, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Both events of the request whose body was `body` (found by the request event, then its ce-id)."""
    with event_sink.lock:
        request = next((h for h, payload in event_sink.events if payload == body), None)
    return [] if request is None else event_sink.with_id(request["ce-id"])


def test_payload_logger_posts_cloudevents_like_the_kserve_agent(client, customers, event_sink):
    body = json.dumps({"instances": [customers[3]]}).encode()
    response = client.post(
        "/v1/models/churn:predict",
        content=body,
        headers={"content-type": "application/json", "ce-id": "evt-0001"},
    )
    assert response.status_code == 200
    wait_until(lambda: len(_events_of(event_sink, body)) == 2, 10, "request and response events")
    events = {headers["ce-type"]: (headers, payload) for headers, payload in _events_of(event_sink, body)}
    assert set(events) == {
        "org.kubeflow.serving.inference.request",
        "org.kubeflow.serving.inference.response",
    }
    for headers, _ in events.values():
        assert headers["ce-id"] != "evt-0001"  # made by the transformer, never the client's
        assert headers["ce-specversion"] == "1.0"
        assert headers["ce-source"] == "http://localhost:9081/"
        assert headers["ce-inferenceservicename"] == "churn"
        assert headers["ce-namespace"] == "default"
        assert headers["ce-component"] == "transformer"
        assert headers["ce-endpoint"] == "default"
        assert headers["content-type"] == "application/json"
        assert "ce-time" in headers
        assert "authorization" not in headers
    assert events["org.kubeflow.serving.inference.request"][1] == body
    assert json.loads(events["org.kubeflow.serving.inference.response"][1]) == response.json()
    assert {headers["ce-id"] for headers, _ in events.values()} == {response.headers["x-event-id"]}


def test_payload_logger_sends_no_response_event_for_a_rejected_request(client, customers, event_sink):
    body = json.dumps({"instances": [_mutated(customers[3], tenure=-4)]}).encode()
    response = client.post(
        "/v1/models/churn:predict", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    wait_until(lambda: len(_events_of(event_sink, body)) >= 1, 10, "the request event")
    time.sleep(0.5)
    assert [h["ce-type"] for h, _ in _events_of(event_sink, body)] == [
        "org.kubeflow.serving.inference.request"
    ]


def test_payload_logger_makes_one_new_id_per_request_whatever_the_client_sends(client, customers, event_sink):
    bodies = []
    for index in range(2):  # the same ce-id twice: two events pairs with ids of their own
        body = (
            json.dumps({"instances": [customers[4 + index]]}).replace('"instances"', '"instances" ').encode()
        )
        response = client.post(
            "/v1/models/churn:predict",
            content=body,
            headers={"content-type": "application/json", "ce-id": "reused"},
        )
        assert response.status_code == 200
        bodies.append(body)
    for body in bodies:
        wait_until(lambda body=body: len(_events_of(event_sink, body)) == 2, 10, "both events with one id")
    ids = {_events_of(event_sink, body)[0][0]["ce-id"] for body in bodies}
    assert len(ids) == 2
    for event_id in ids:
        assert re.fullmatch(r"[0-9a-f-]{36}", event_id)
    assert event_sink.with_id("reused") == []


def test_payload_logger_posts_nothing_for_a_body_refused_before_reading(transformer, event_sink):
    before = len(event_sink.events)
    response = httpx.post(
        f"{transformer.url}/v2/models/churn/infer",
        content=b"x" * (4 * 1024 * 1024 + 1),
        headers={"content-type": "application/json"},
    )
    assert (response.status_code, response.json()["code"]) == (413, "payload_too_large")
    time.sleep(0.5)
    assert not any(len(body) > 4 * 1024 * 1024 for _, body in event_sink.events[before:])
