"""The detector service in-process (SQLite store, real drift detector on the scipy backend, a local Slack
receiver): events in, rows stored once, windows tested, drift alerted once per cooldown."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from churn_monitoring.service.app import create_app
from churn_monitoring.settings import DetectorSettings
from churn_monitoring.store.schema import predictions
from tests.monitoring.detector_support import (
    REQUEST_TYPE,
    Scorer,
    kserve_headers,
    metric_value,
    post_call,
    slack_receiver,
    v1_request,
    v1_response,
    v2_request,
    v2_response,
)
from tests.support.customers import sample_customers
from tests.support.services import wait_until

WINDOW = 200


@pytest.fixture(scope="module")
def scorer(artefact_dir):
    return Scorer(artefact_dir)


@pytest.fixture
def slack():
    with slack_receiver() as receiver:
        yield receiver


@pytest.fixture
def service(tmp_path, artefact_dir, slack, request):
    # Indirect parametrisation may pass extra settings (e.g. the drift impact threshold).
    extra = getattr(request, "param", {})
    settings = DetectorSettings(
        **extra,
        home=tmp_path,
        model_dir=artefact_dir,
        drift_backend="scipy",
        window_size=WINDOW,
        window_min_size=50,
        store_flush_seconds=0.05,
        slack_webhook_url=slack.url,
        url="http://detector.example:8090",
        alert_cooldown_seconds=3600,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").json()["drift_detector"], 60, "drift detector")
        yield client, app.state.detector, tmp_path


def stored_rows(home):
    engine = create_engine(f"sqlite:///{home / 'monitoring.db'}")
    with engine.connect() as connection:
        rows = connection.execute(
            select(predictions).order_by(predictions.c.event_id, predictions.c.row_index)
        ).all()
    engine.dispose()
    return rows


def drain(detector):
    assert detector.writer.wait_empty(15), "writer did not drain"


@pytest.mark.parametrize("response_first", [False, True])
def test_logged_v1_call_is_stored_once_from_its_two_events(service, scorer, telco_rows, response_first):
    client, detector, home = service
    customers = sample_customers(telco_rows, 3, seed=1)
    answers = scorer.answers(customers)
    event_id = str(uuid.uuid4())
    sent_at = datetime.now(UTC)
    first, second = post_call(
        client,
        "/",
        v1_request(customers),
        v1_response(answers),
        event_id=event_id,
        response_first=response_first,
        at=sent_at,
    )
    assert first.status_code == 200
    assert first.json() == {"status": "pending", "rows": 0}
    assert second.json() == {"status": "joined", "rows": 3}
    # The same pair delivered again (an HTTP retry: same headers, same bodies) stores nothing more.
    again = post_call(
        client, "/events", v1_request(customers), v1_response(answers), event_id=event_id, at=sent_at
    )
    assert [r.json()["status"] for r in again] == ["duplicate", "duplicate"]
    drain(detector)
    rows = stored_rows(home)
    # Stored under `<ce-id>~<digest of both events>`: calls that reuse a ce-id are stored apart.
    assert [(r.event_id.rsplit("~", 1)[0], r.row_index) for r in rows] == [
        (event_id, 0),
        (event_id, 1),
        (event_id, 2),
    ]
    assert [r.customer_id for r in rows] == [c["customerID"] for c in customers]
    assert [r.probability for r in rows] == pytest.approx([a["churn_probability"] for a in answers])
    assert rows[0].model_version == scorer.version
    assert rows[0].features["tenure"] == customers[0]["tenure"]
    assert "customerID" not in rows[0].features
    assert rows[0].source == "http://localhost:9081/"
    text = client.get("/metrics").text
    assert metric_value(text, "churn_payload_joins_total", {"outcome": "joined"}) == 1.0
    assert (
        metric_value(text, "churn_payload_events_total", {"type": "request", "outcome": "duplicate"}) == 1.0
    )
    assert metric_value(text, "churn_store_rows_total", {"outcome": "inserted"}) == 3.0
    assert metric_value(text, "churn_store_backlog_rows") == 0.0


def test_logged_v2_call_is_stored(service, scorer, telco_rows):
    client, detector, home = service
    customers = sample_customers(telco_rows, 4, seed=2)
    answers = scorer.answers(customers)
    responses = post_call(
        client, "/", v2_request(customers, scorer.contract), v2_response(answers, scorer.version)
    )
    assert responses[1].json() == {"status": "joined", "rows": 4}
    drain(detector)
    rows = stored_rows(home)
    assert sorted(r.customer_id for r in rows) == sorted(c["customerID"] for c in customers)
    assert {r.prediction for r in rows} <= {True, False}
    assert {r.risk_level for r in rows} <= {"Low", "Medium", "High", "Very High"}


@pytest.mark.parametrize(
    ("headers", "body", "status", "names"),
    [
        ({"content-type": "application/json"}, b"{}", 400, "ce-specversion"),
        (kserve_headers("x", "org.example.other"), b"{}", 400, "ce-type"),
        (kserve_headers("x", REQUEST_TYPE), b"{not json", 400, "not valid JSON"),
        (kserve_headers("x", REQUEST_TYPE), b'{"instances": "abc"}', 400, "instances"),
        (
            kserve_headers("x", REQUEST_TYPE, content_type="application/octet-stream"),
            b"\x00",
            415,
            "content type",
        ),
        (
            kserve_headers("x", REQUEST_TYPE),
            b'{"inputs": [{"name": "a", "shape": ["x"], "data": [1]}]}',
            400,
            "shape",
        ),
    ],
)
def test_malformed_event_is_refused_with_4xx_naming_the_problem(service, headers, body, status, names):
    client, _, _ = service
    response = client.post("/", content=body, headers=headers)
    assert response.status_code == status
    assert names in response.json()["error"]
    assert (
        metric_value(client.get("/metrics").text, "churn_payload_events_total", {"outcome": "rejected"})
        == 1.0
    )


def test_request_and_response_of_different_sizes_get_422(service, scorer, telco_rows):
    client, _, _ = service
    customers = sample_customers(telco_rows, 2, seed=3)
    answers = scorer.answers(customers)[:1]
    second = post_call(client, "/", v1_request(customers), v1_response(answers))[1]
    assert second.status_code == 422
    assert "2 customers but response 1" in second.json()["error"]


def test_oversized_event_is_refused_with_413(service):
    client, _, _ = service
    body = b"{" + b" " * (8 << 20) + b"}"
    response = client.post("/", content=body, headers=kserve_headers("big", REQUEST_TYPE))
    assert response.status_code == 413


def drifted_customers(telco_rows, n, seed):
    """New, month-to-month fibre customers only: a shift in tenure, Contract, InternetService and more."""
    rows = [
        r
        for r in telco_rows
        if r["Contract"] == "Month-to-month"
        and r["InternetService"] == "Fiber optic"
        and int(r["tenure"]) <= 12
    ]
    return sample_customers(rows, n, seed=seed)


def send_window(client, scorer, customers, batch=20):
    for start in range(0, len(customers), batch):
        part = customers[start : start + batch]
        responses = post_call(client, "/", v1_request(part), v1_response(scorer.answers(part)))
        assert [r.status_code for r in responses] == [200, 200]


def test_drifted_window_posts_one_slack_alert_per_cooldown(service, scorer, telco_rows, slack):
    client, _, _ = service
    send_window(client, scorer, drifted_customers(telco_rows, WINDOW, seed=4))
    posts = slack.wait_for(1, timeout=30)
    message = posts[0]
    assert slack.paths == ["/services/T000/B000/secret-token"]
    text = message["text"]
    assert "Contract" in text
    assert "tenure" in text
    assert "http://detector.example:8090/reports/drift/1" in text
    blocks = {block["type"]: block for block in message["blocks"]}
    # Impact first (measured on the window), then the fields with their statistics.
    assert "Measured on this window" in message["blocks"][1]["text"]["text"]
    body = message["blocks"][2]["text"]["text"]
    assert "p-value" in body
    assert "tvd" in body
    assert "statistic" in body
    context = blocks["context"]["elements"][0]["text"]
    assert f"{WINDOW} customers" in context
    assert f"model version {scorer.version}" in context
    assert "<http://detector.example:8090/reports/drift/1|" in message["blocks"][-1]["text"]["text"]

    report = client.get("/reports/drift/1.json").json()
    assert report["dataset_drift"] is True
    assert report["window_size"] == WINDOW
    assert "Contract" in report["drifted"]
    page = client.get("/reports/drift/latest")
    assert page.status_code == 200
    assert "Contract" in page.text
    assert "text/html" in page.headers["content-type"]
    metrics = client.get("/metrics").text
    assert metric_value(metrics, "churn_feature_drift_detected", {"feature": "Contract"}) == 1.0
    assert metric_value(metrics, "churn_feature_drift_score", {"feature": "Contract"}) > 0.1
    assert metric_value(metrics, "churn_drift_windows_total", {"outcome": "drift"}) == 1.0

    # The same drift in the next window, within the cooldown: no second message.
    send_window(client, scorer, drifted_customers(telco_rows, WINDOW, seed=5))
    wait_until(
        lambda: (
            metric_value(
                client.get("/metrics").text, "churn_alerts_total", {"kind": "drift", "outcome": "suppressed"}
            )
            == 1.0
        ),
        30,
        "suppressed drift alert",
    )
    assert len(slack.posts) == 1


@pytest.mark.parametrize(
    "service", [{"drift_impact_threshold": 1.0, "drift_impact_f1_drop": 1.0}], indirect=True
)
def test_drift_below_the_impact_threshold_is_logged_not_posted(service, scorer, telco_rows, slack):
    """The same drifted window as above, with a threshold nothing reaches: tested, exported as severity 1
    (harmless), no Slack message."""
    client, _, _ = service
    send_window(client, scorer, drifted_customers(telco_rows, WINDOW, seed=4))
    wait_until(
        lambda: (
            metric_value(client.get("/metrics").text, "churn_drift_windows_total", {"outcome": "drift"})
            == 1.0
        ),
        30,
        "tested window",
    )
    metrics = client.get("/metrics").text
    assert metric_value(metrics, "churn_drift_severity") == 1.0
    assert metric_value(metrics, "churn_feature_drift_severity", {"feature": "Contract"}) == 1.0
    assert metric_value(metrics, "churn_alerts_total", {"kind": "drift", "outcome": "sent"}) is None
    assert slack.posts == []
    assert client.get("/reports/drift/latest.json").json()["severity"] == "harmless"


def test_window_like_the_reference_is_tested_without_alert(service, scorer, telco_rows, slack):
    client, _, _ = service
    send_window(client, scorer, sample_customers(telco_rows, WINDOW, seed=6))
    wait_until(
        lambda: (
            metric_value(client.get("/metrics").text, "churn_drift_windows_total", {"outcome": "no_drift"})
            == 1.0
        ),
        30,
        "tested window",
    )
    assert slack.posts == []
    assert client.get("/reports/drift/latest.json").json()["dataset_drift"] is False
    assert client.get("/reports/drift/99").status_code == 404
