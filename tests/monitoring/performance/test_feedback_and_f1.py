"""Feedback joined to predictions on real PostgreSQL, live performance (realised and CBPE-estimated), and
the Slack alert when live F1 falls below 0.60 with enough labels."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score
from sqlalchemy import create_engine, select

from churn_monitoring.performance import (
    AUC_BINS,
    cbpe_from_probabilities,
    realised_metrics,
    roc_auc_from_histogram,
)
from churn_monitoring.service.app import create_app
from churn_monitoring.settings import DetectorSettings
from churn_monitoring.store.schema import labels, predictions
from tests.monitoring.detector_support import (
    Scorer,
    metric_value,
    post_call,
    postgres_database,
    slack_receiver,
    start_detector,
    v1_request,
    v1_response,
    wait_for_metric,
)
from tests.support.customers import customer_from_row
from tests.support.services import REPO, ensure_postgres

pytestmark = pytest.mark.integration
MIN_LABELS = 50


@pytest.fixture(scope="module")
def scorer(artefact_dir):
    return Scorer(artefact_dir)


@pytest.fixture
def database_url():
    with postgres_database(ensure_postgres(), prefix="churnops_feedback") as url:
        yield url


@pytest.fixture
def slack():
    with slack_receiver() as receiver:
        yield receiver


@pytest.fixture
def client(tmp_path, database_url, slack, scorer):
    settings = DetectorSettings(
        home=tmp_path,
        # No artefact here: the scored model's version gets its metric labels through the allow-list.
        known_versions=(scorer.version,),
        database_url=database_url,
        store_flush_seconds=0.05,
        slack_webhook_url=slack.url,
        url="http://detector.example:8090",
        performance_min_labels=MIN_LABELS,
        performance_interval_seconds=3600,
    )
    app = create_app(settings)
    with TestClient(app) as test_client:
        yield test_client, app.state.detector


def log_calls(client, scorer, customers, *, batch=10, at=None):
    """Log calls and wait until their rows are stored (labels come days after predictions)."""
    for start in range(0, len(customers), batch):
        part = customers[start : start + batch]
        replies = post_call(client, "/", v1_request(part), v1_response(scorer.answers(part)), at=at)
        assert [r.status_code for r in replies] == [200, 200]
    assert client.app.state.detector.writer.wait_empty(20)


def test_label_joins_the_latest_prediction_within_the_horizon(client, scorer, telco_rows, database_url):
    test_client, detector = client
    customer = customer_from_row(telco_rows[0])
    other = customer_from_row(telco_rows[1])
    now = datetime.now(UTC)
    log_calls(test_client, scorer, [customer], at=now - timedelta(days=20))
    log_calls(test_client, scorer, [customer], at=now - timedelta(days=2))
    log_calls(test_client, scorer, [other], at=now - timedelta(days=200))
    assert detector.writer.wait_empty(15)

    response = test_client.post(
        "/feedback",
        json=[
            {"customer_id": customer["customerID"], "churned": True},
            {
                "customer_id": customer["customerID"],
                "churned": False,
                "observed_at": (now - timedelta(days=10)).isoformat(),
            },
            {"customer_id": other["customerID"], "churned": True},
            {"customer_id": "0000-NOBODY", "churned": False},
        ],
    )
    assert response.status_code == 200
    body = response.json()
    assert body["received"] == 4
    assert body["matched"] == 2
    assert body["unknown_customer_ids"] == ["0000-NOBODY"]
    assert body["outside_horizon_customer_ids"] == [other["customerID"]]

    engine = create_engine(database_url)
    with engine.connect() as connection:
        joined = connection.execute(
            select(labels.c.churned, predictions.c.predicted_at)
            .join(
                predictions,
                (labels.c.event_id == predictions.c.event_id)
                & (labels.c.row_index == predictions.c.row_index),
            )
            .order_by(predictions.c.predicted_at)
        ).all()
    engine.dispose()
    # Observed 10 days ago: judges the prediction of 20 days ago; observed now: the one of 2 days ago.
    assert [row.churned for row in joined] == [False, True]
    assert abs((joined[1].predicted_at - (now - timedelta(days=2))).total_seconds()) < 1


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        ({"customer_id": "", "churned": True}, 422, "labels[0].customer_id"),
        ({"customer_id": "a", "churned": "maybe"}, 422, "labels[0].churned"),
        ([{"customer_id": "a", "churned": True}, {"customer_id": "b"}], 422, "labels[1].churned"),
        ({"customer_id": "a", "churned": True, "observed_at": "last week"}, 422, "labels[0].observed_at"),
        ({"customer_id": "a", "churned": True, "observed_at": "2999-01-01T00:00:00Z"}, 422, "in the future"),
        ({"customer_id": "a", "churned": True, "score": 1}, 422, "labels[0].score"),
        ([], 422, "empty"),
        ("yes", 422, "label object"),
    ],
)
def test_bad_feedback_gets_4xx_naming_the_field(client, body, status, names):
    test_client, _ = client
    response = test_client.post("/feedback", json=body)
    assert response.status_code == status
    # The one error body: every problem in one `error` message (was a list), a stable `code`.
    assert names in response.json()["error"]
    assert response.json()["code"] == "invalid_labels"


def test_feedback_body_that_is_not_json_gets_400(client):
    test_client, _ = client
    response = test_client.post(
        "/feedback", content=b"customer,churned", headers={"content-type": "text/csv"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]


def test_live_f1_below_floor_alerts_slack_once_with_enough_labels(client, scorer, telco_rows, slack):
    test_client, _ = client
    rows = telco_rows[100:500]
    customers = [customer_from_row(r) for r in rows]
    log_calls(test_client, scorer, customers)
    truth = np.array([r["Churn"] == "Yes" for r in rows])
    probabilities = scorer.probabilities(customers)
    predicted = probabilities >= scorer.contract.model.threshold

    honest = [
        {"customer_id": c["customerID"], "churned": bool(t)} for c, t in zip(customers, truth, strict=True)
    ]
    assert test_client.post("/feedback", json={"labels": honest}).json()["matched"] == len(rows)
    performance = test_client.get("/performance").json()
    [model] = performance["models"]
    assert model["model_version"] == scorer.version
    realised = model["realised"]
    assert realised["n"] == len(rows)
    assert realised["f1"] == pytest.approx(f1_score(truth, predicted))
    assert realised["precision"] == pytest.approx(precision_score(truth, predicted))
    assert realised["recall"] == pytest.approx(recall_score(truth, predicted))
    # From the database's histogram (AUC_BINS bins): a churner and a stayer in one bin count as a tie.
    assert realised["roc_auc"] == pytest.approx(roc_auc_score(truth, probabilities), abs=1e-3)
    estimated = model["estimated"]
    assert estimated["n"] == len(rows)
    assert estimated["f1"] == pytest.approx(
        cbpe_from_probabilities(probabilities, scorer.contract.model.threshold).f1
    )
    metrics = test_client.get("/metrics").text
    labels_ = {"model_version": scorer.version}
    assert metric_value(metrics, "churn_model_f1_score", labels_) == pytest.approx(realised["f1"])
    assert metric_value(metrics, "churn_model_estimated_f1_score", labels_) == pytest.approx(estimated["f1"])
    assert metric_value(metrics, "churn_model_labelled_predictions", labels_) == len(rows)
    posts_after_honest = len(slack.posts)
    if realised["f1"] >= 0.60:
        assert posts_after_honest == 0

    # Corrections: every label flipped. First for fewer customers than the minimum: no alert yet.
    flipped = [{**label, "churned": not label["churned"]} for label in honest]
    test_client.post("/feedback", json=flipped[: MIN_LABELS - 30])
    few = test_client.get("/performance").json()["models"][0]["realised"]
    assert few["n"] == len(rows)  # corrections replace labels: n is unchanged
    test_client.post("/feedback", json=flipped)
    low = test_client.get("/performance").json()["models"][0]["realised"]
    assert low["f1"] < 0.60
    assert low["f1"] == pytest.approx(f1_score(~truth, predicted))
    posts = slack.wait_for(posts_after_honest + 1)
    message = posts[-1]
    assert f"live F1 {low['f1']:.3f} below 0.60" in message["text"]
    assert f"n={len(rows)}" in message["text"]
    assert "CBPE" in message["blocks"][1]["text"]["text"]
    assert "http://detector.example:8090/performance" in message["text"]
    # Within the cooldown the same alert is not repeated.
    test_client.post("/feedback", json=flipped[:10])
    assert len(slack.posts) == posts_after_honest + 1
    assert (
        metric_value(
            test_client.get("/metrics").text,
            "churn_alerts_total",
            {"kind": "performance", "outcome": "suppressed"},
        )
        >= 1
    )


def test_no_f1_alert_below_the_minimum_number_of_labels(client, scorer, telco_rows, slack):
    test_client, _ = client
    rows = telco_rows[600:640]
    customers = [customer_from_row(r) for r in rows]
    log_calls(test_client, scorer, customers)
    wrong = [
        {"customer_id": c["customerID"], "churned": r["Churn"] != "Yes"}
        for c, r in zip(customers, rows, strict=True)
    ]
    test_client.post("/feedback", json=wrong)
    realised = test_client.get("/performance").json()["models"][0]["realised"]
    assert realised["n"] == len(rows) < MIN_LABELS
    assert realised["f1"] < 0.60
    assert slack.posts == []


def test_roc_auc_from_the_histogram_matches_the_exact_auc_within_the_tie_bound():
    rng = np.random.default_rng(5)
    probabilities = rng.beta(1.2, 3.0, size=200_000)
    churned = rng.random(200_000) < probabilities
    bins = np.minimum((probabilities * AUC_BINS).astype(np.int64), AUC_BINS)
    churners = np.bincount(bins[churned], minlength=AUC_BINS + 1)
    stayers = np.bincount(bins[~churned], minlength=AUC_BINS + 1)
    exact = roc_auc_score(churned, probabilities)
    # Pairs sharing a bin are counted as half: the error is at most half their share.
    tie_bound = 0.5 * float(np.sum(churners * stayers)) / (churners.sum() * stayers.sum())
    assert abs(roc_auc_from_histogram(churners, stayers) - exact) <= tie_bound < 1e-3
    assert roc_auc_from_histogram(churners, np.zeros_like(stayers)) is None


def test_cbpe_estimates_f1_of_calibrated_probabilities():
    rng = np.random.default_rng(11)
    probabilities = rng.beta(1.2, 3.0, size=50_000)
    churned = rng.random(50_000) < probabilities  # calibrated by construction
    estimate = cbpe_from_probabilities(probabilities, 0.35)
    realised = realised_metrics(churned, probabilities >= 0.35, probabilities)
    assert estimate.f1 == pytest.approx(realised.f1, abs=0.01)
    assert estimate.precision == pytest.approx(realised.precision, abs=0.01)
    assert estimate.recall == pytest.approx(realised.recall, abs=0.01)


def test_feedback_command_posts_a_csv_to_the_service_or_writes_directly(
    tmp_path, database_url, scorer, telco_rows
):
    detector = start_detector(
        {"CHURNOPS_DETECTOR_HOME": str(tmp_path / "home"), "CHURNOPS_DETECTOR_DATABASE_URL": database_url},
        tmp_path / "detector.log",
    )
    try:
        import httpx

        customers = [customer_from_row(r) for r in telco_rows[700:720]]
        with httpx.Client(timeout=10) as http:
            post_call(http, f"{detector.url}/", v1_request(customers), v1_response(scorer.answers(customers)))
        # Events are acknowledged before their rows are written (batched off the receive path): labels
        # can only join predictions that are in the store.
        wait_for_metric(detector, "churn_store_rows_total", lambda v: v == 20, labels={"outcome": "inserted"})
        labels_file = tmp_path / "labels.csv"
        with labels_file.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["customerID", "Churn", "observed_at"])
            for row in telco_rows[700:715]:
                writer.writerow([row["customerID"], row["Churn"], ""])
            writer.writerow(["9999-UNKNOWN", "No", ""])
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNOPS_")}
        churnops = str(Path(sys.executable).parent / "churnops")
        posted = subprocess.run(
            [churnops, "feedback", "--file", str(labels_file), "--url", detector.url],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert posted.returncode == 0, posted.stderr
        summary = json.loads(posted.stdout)
        assert summary["matched"] == 15
        assert summary["unknown_customer_ids"] == ["9999-UNKNOWN"]
        assert detector.metric("churn_feedback_labels_total", {"outcome": "matched"}) == 15

        direct = subprocess.run(
            [churnops, "feedback", "--file", str(labels_file), "--direct"],
            cwd=REPO,
            env={**env, "CHURNOPS_DETECTOR_DATABASE_URL": database_url},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert direct.returncode == 0, direct.stderr
        assert json.loads(direct.stdout)["matched"] == 15

        bad_file = tmp_path / "bad.csv"
        bad_file.write_text("customerID,Churn\n0001,perhaps\n")
        bad = subprocess.run(
            [churnops, "feedback", "--file", str(bad_file), "--url", detector.url],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert bad.returncode == 2
        assert "line 2" in bad.stderr
        assert "'Churn'" in bad.stderr
    finally:
        detector.stop()
