"""The detector's side of the security boundary, one hole per test: what an outsider or a pod inside the
cluster could send, and the bounded, coded refusal it gets instead of memory, a 5xx or lost rows."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from churn_monitoring.service.app import create_app
from churn_monitoring.service.core import DetectorService
from churn_monitoring.settings import DetectorSettings
from churn_monitoring.store.schema import predictions
from tests.monitoring.detector_support import (
    REQUEST_TYPE,
    RESPONSE_TYPE,
    Scorer,
    kserve_headers,
    metric_value,
    post_call,
    v1_request,
    v1_response,
)
from tests.support.customers import sample_customers

KIB = 1024


@pytest.fixture(scope="module")
def scorer(artefact_dir):
    return Scorer(artefact_dir)


def make_client(tmp_path, artefact_dir, **overrides):
    settings = DetectorSettings(
        home=tmp_path,
        model_dir=artefact_dir,
        drift_backend="scipy",
        store_flush_seconds=0.05,
        **overrides,
    )
    service = DetectorService(settings, load_detector=False)
    return TestClient(create_app(settings, service=service))


@pytest.fixture
def client(tmp_path, artefact_dir):
    with make_client(
        tmp_path, artefact_dir, max_event_bytes=256 * KIB, max_feedback_bytes=64 * KIB
    ) as test_client:
        yield test_client


def assert_error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code"}, body
    assert body["code"] == code, body
    assert len(body["error"]) <= 2000
    return body["error"]


def chunks(total: int, size: int = 16 * KIB):
    """A body sent chunked (no Content-Length): generator content."""
    sent = 0
    while sent < total:
        part = min(size, total - sent)
        sent += part
        yield b" " * part


def stored(home):
    engine = create_engine(f"sqlite:///{home / 'monitoring.db'}")
    with engine.connect() as connection:
        rows = connection.execute(select(predictions)).all()
    engine.dispose()
    return rows


# --- bodies counted while read ---------------------------------------------------------------------------


def test_chunked_event_over_the_cap_is_refused_while_reading(client):
    response = client.post("/events", content=chunks(300 * KIB), headers=kserve_headers("big", REQUEST_TYPE))
    message = assert_error(response, 413, "payload_too_large")
    assert str(256 * KIB) in message


def test_declared_event_over_the_cap_is_refused_before_reading(client):
    body = b" " * (300 * KIB)
    response = client.post("/", content=body, headers=kserve_headers("big", REQUEST_TYPE))
    assert "of 307200 bytes" in assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize("chunked", [False, True])
def test_feedback_over_its_cap_is_refused_with_413(client, chunked):
    body = json.dumps([{"customer_id": f"C{i:08d}", "churned": True} for i in range(2000)]).encode()
    assert len(body) > 64 * KIB
    content = chunks(len(body)) if chunked else body
    response = client.post("/feedback", content=content, headers={"content-type": "application/json"})
    assert_error(response, 413, "payload_too_large")


# --- JSON shape before parsing ----------------------------------------------------------------------------


def test_deeply_nested_event_is_refused_with_400(client):
    body = b'{"instances": ' + b"[" * 40 + b"]" * 40 + b"}"
    response = client.post("/", content=body, headers=kserve_headers("deep", REQUEST_TYPE))
    assert "41 levels" in assert_error(response, 400, "json_too_deep")


def test_nesting_hidden_in_structured_data_base64_is_refused(client):
    data = b"[" * 100 + b"]" * 100
    envelope = {
        "specversion": "1.0",
        "id": "s-deep",
        "type": REQUEST_TYPE,
        "source": "http://localhost:9081/",
        "data_base64": base64.b64encode(data).decode(),
    }
    response = client.post(
        "/", content=json.dumps(envelope), headers={"content-type": "application/cloudevents+json"}
    )
    assert_error(response, 400, "json_too_deep")


def test_deep_feedback_is_refused_with_400(client):
    body = b"[" * 5000 + b"]" * 5000
    response = client.post("/feedback", content=body, headers={"content-type": "application/json"})
    assert_error(response, 400, "json_too_deep")


def test_event_of_too_many_values_is_refused_before_parsing(tmp_path, artefact_dir):
    with make_client(tmp_path, artefact_dir, max_json_values=1000) as test_client:
        body = b'{"instances": [' + b",".join([b"[]"] * 2000) + b"]}"
        response = test_client.post("/", content=body, headers=kserve_headers("wide", REQUEST_TYPE))
        assert_error(response, 413, "json_too_many_values")


# --- never a 5xx for a path or a method -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/reports/drift/²", "/reports/drift/" + "9" * 5000, "/reports/drift/-1", "/reports/drift/1.json.json"],
)
def test_malformed_report_id_is_a_404_not_a_500(client, path):
    response = client.get(path)
    assert_error(response, 404, "report_not_found")


def test_framework_answers_use_the_one_error_body(client):
    assert_error(client.get("/no/such/route"), 404, "not_found")
    assert_error(client.get("/events"), 405, "method_not_allowed")
    assert_error(client.delete("/feedback"), 405, "method_not_allowed")
    assert client.get("/openapi.json").status_code == 404
    metrics = client.get("/metrics").text
    for route in ("/events", "/feedback"):
        labels = {"route": route, "code": "method_not_allowed"}
        assert metric_value(metrics, "churn_detector_refusals_total", labels) == 1.0
    assert metric_value(metrics, "churn_detector_http_requests_total", {"code": "5xx"}) is None


def test_label_with_control_characters_is_a_422_not_a_store_error(client):
    response = client.post("/feedback", json={"customer_id": "7590\x00VHVEG", "churned": True})
    assert "labels[0].customer_id" in assert_error(response, 422, "invalid_labels")


# --- memory bounded in bytes ------------------------------------------------------------------------------


def test_pending_halves_are_bounded_in_bytes_oldest_evicted_and_counted(tmp_path, artefact_dir, telco_rows):
    customers = sample_customers(telco_rows, 200, seed=5)
    with make_client(tmp_path, artefact_dir, join_max_bytes=1 << 20) as test_client:
        for index in range(40):
            ids = [{**c, "customerID": f"{index}-{c['customerID']}"} for c in customers]
            reply = test_client.post(
                "/", content=v1_request(ids), headers=kserve_headers(f"unanswered-{index}", REQUEST_TYPE)
            )
            assert reply.status_code == 200
        detector = test_client.app.state.detector
        assert detector.join.bytes <= 1 << 20
        metrics = test_client.get("/metrics").text
        evicted = metric_value(
            metrics, "churn_payload_unpaired_halves_total", {"type": "request", "reason": "evicted"}
        )
        assert evicted is not None
        assert evicted >= 1
        assert evicted + len(detector.join) == 40
        assert metric_value(metrics, "churn_payload_pending_bytes") == detector.join.bytes


def test_a_half_keeps_the_contract_fields_not_the_payload(artefact_dir, telco_rows):
    """What a waiting request holds, measured: far less than its body, and close to its estimate."""
    import gc
    import tracemalloc

    from churn_core.contract import FeatureContract
    from churn_monitoring.events import parse_event, parse_request
    from churn_monitoring.halves import Compactor, event_key

    contract = FeatureContract.load(artefact_dir)
    customers = [
        {**c, "notes": "x" * 2000, "extra": list(range(50))} for c in sample_customers(telco_rows, 1000, 6)
    ]
    body = v1_request(customers)
    event = parse_event(
        {"ce-specversion": "1.0", "ce-id": "m", "ce-type": REQUEST_TYPE, "ce-source": "s"}, body
    )
    compactor = Compactor(contract)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    half = compactor.request(event, event_key(event), parse_request(event))
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    # About 380 bytes a customer (its id, a tuple of 19 shared or small values) for 2,700 sent.
    assert held < len(body) / 5, f"{held} bytes held for a {len(body)}-byte body"
    assert 0.5 * held <= half.size <= 2.0 * held, (half.size, held)


# --- labels from callers --------------------------------------------------------------------------------


def test_unknown_model_versions_share_one_metric_label_and_are_still_stored(
    tmp_path, artefact_dir, scorer, telco_rows
):
    customers = sample_customers(telco_rows, 2, seed=7)
    with make_client(tmp_path, artefact_dir, known_versions="canary-9") as test_client:
        for version in [scorer.version, "canary-9", *(f"forged-{i}" for i in range(30)), "v" * 500]:
            answers = [{**a, "model_version": version} for a in scorer.answers(customers)]
            replies = post_call(test_client, "/", v1_request(customers), v1_response(answers))
            assert [r.status_code for r in replies] == [200, 200]
        assert test_client.app.state.detector.writer.wait_empty(15)
        metrics = test_client.get("/metrics").text
    versions = {
        line.split('model_version="')[1].split('"')[0]
        for line in metrics.splitlines()
        if line.startswith("churn_logged_predictions_total{")
    }
    assert versions == {scorer.version, "canary-9", "unknown"}
    stored_versions = {row.model_version for row in stored(tmp_path)}
    assert "forged-17" in stored_versions
    assert "v" * 64 in stored_versions  # cut to the column's 64 characters, not refused


def test_risk_levels_from_callers_are_a_closed_label_set(tmp_path, artefact_dir, scorer, telco_rows):
    customers = sample_customers(telco_rows, 1, seed=8)
    with make_client(tmp_path, artefact_dir) as test_client:
        for level in ("High", "<script>", "x" * 100):
            answers = [{**a, "risk_level": level} for a in scorer.answers(customers)]
            post_call(test_client, "/", v1_request(customers), v1_response(answers))
        metrics = test_client.get("/metrics").text
    levels = {
        line.split('risk_level="')[1].split('"')[0]
        for line in metrics.splitlines()
        if line.startswith("churn_logged_predictions_total{")
    }
    assert levels == {"High", "unknown"}


# --- a reused ce-id drops nothing -----------------------------------------------------------------------


def test_calls_reusing_a_ce_id_are_all_stored_and_only_true_redeliveries_are_duplicates(
    tmp_path, artefact_dir, scorer, telco_rows
):
    reused = "chosen-by-the-client"
    first = sample_customers(telco_rows, 3, seed=9)
    second = sample_customers(telco_rows, 2, seed=10)
    at = datetime(2025, 11, 26, 14, 0, tzinfo=UTC)
    with make_client(tmp_path, artefact_dir) as test_client:
        calls = [
            post_call(test_client, "/", v1_request(c), v1_response(scorer.answers(c)), event_id=reused, at=at)
            for c in (first, second)
        ]
        redelivered = post_call(
            test_client, "/", v1_request(first), v1_response(scorer.answers(first)), event_id=reused, at=at
        )
        later = datetime(2025, 11, 26, 15, 0, tzinfo=UTC)
        same_body_later = post_call(
            test_client, "/", v1_request(first), v1_response(scorer.answers(first)), event_id=reused, at=later
        )
        assert test_client.app.state.detector.writer.wait_empty(15)
    assert [r.json()["status"] for call in calls for r in call] == ["pending", "joined"] * 2
    assert [r.json()["status"] for r in redelivered] == ["duplicate", "duplicate"]
    assert [r.json()["status"] for r in same_body_later] == ["pending", "joined"]
    rows = stored(tmp_path)
    assert len(rows) == 3 + 2 + 3
    assert len({row.event_id for row in rows}) == 3
    assert {row.event_id.rsplit("~", 1)[0] for row in rows} == {reused}


def test_interleaved_calls_sharing_a_ce_id_pair_by_their_customers(
    tmp_path, artefact_dir, scorer, telco_rows
):
    a = sample_customers(telco_rows, 2, seed=11)
    b = sample_customers(telco_rows, 2, seed=12)
    with make_client(tmp_path, artefact_dir) as test_client:
        for kind, body in (
            (REQUEST_TYPE, v1_request(a)),
            (REQUEST_TYPE, v1_request(b)),
            (RESPONSE_TYPE, v1_response(scorer.answers(b))),
            (RESPONSE_TYPE, v1_response(scorer.answers(a))),
        ):
            reply = test_client.post("/", content=body, headers=kserve_headers("shared", kind))
            assert reply.status_code == 200, reply.text
        assert test_client.app.state.detector.writer.wait_empty(15)
    by_customer = {row.customer_id: row.probability for row in stored(tmp_path)}
    expected = {
        c["customerID"]: ans["churn_probability"] for c, ans in zip(a + b, scorer.answers(a + b), strict=True)
    }
    assert by_customer == pytest.approx(expected)


def test_a_forged_response_cannot_unpair_a_waiting_request(tmp_path, artefact_dir, scorer, telco_rows):
    customers = sample_customers(telco_rows, 3, seed=13)
    event_id = str(uuid.uuid4())
    with make_client(tmp_path, artefact_dir) as test_client:
        test_client.post("/", content=v1_request(customers), headers=kserve_headers(event_id, REQUEST_TYPE))
        forged = v1_response(scorer.answers(customers[:1]))
        refused = test_client.post("/", content=forged, headers=kserve_headers(event_id, RESPONSE_TYPE))
        assert_error(refused, 422, "pair_mismatch")
        real = test_client.post(
            "/",
            content=v1_response(scorer.answers(customers)),
            headers=kserve_headers(event_id, RESPONSE_TYPE),
        )
        assert real.json() == {"status": "joined", "rows": 3}


def test_performance_alerts_only_for_versions_the_detector_knows(tmp_path, artefact_dir):
    """A version in the store is whatever a caller's events claimed: each forged one would be a Slack
    alert of its own (and its text in the channel). Only the versions the detector serves alert."""
    import asyncio

    from churn_monitoring.performance import Realised, VersionPerformance

    settings = DetectorSettings(home=tmp_path, model_dir=artefact_dir, drift_backend="scipy")
    service = DetectorService(settings, load_detector=False)
    sent: list[str] = []

    async def send(kind, scope, message, subjects=()):
        sent.append(scope)
        return "sent"

    service.notifier.send = send
    low = Realised(n=10_000, positives=2_000, f1=0.1, precision=0.1, recall=0.1, roc_auc=None)
    (own,) = service.labels.versions
    assert asyncio.run(service._alert_performance(VersionPerformance("<!channel> 9", low, None))) is None
    assert asyncio.run(service._alert_performance(VersionPerformance(own, low, None))) == "sent"
    assert sent == [own]
