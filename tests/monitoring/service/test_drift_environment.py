"""The detector as it runs in its image: from `.venv-drift` (alibi-detect 0.13, numpy 1.26), default
backend, PostgreSQL store; a window of logged calls is stored and tested."""

from __future__ import annotations

import httpx
import pytest

from tests.monitoring.detector_support import (
    Scorer,
    post_call,
    postgres_database,
    start_detector,
    v1_request,
    v1_response,
    wait_for_metric,
)
from tests.support.customers import sample_customers
from tests.support.services import drift_python, ensure_postgres

pytestmark = pytest.mark.integration


def test_detector_from_the_drift_environment_tests_windows_with_alibi(tmp_path, artefact_dir, telco_rows):
    python = drift_python()
    scorer = Scorer(artefact_dir)
    with postgres_database(ensure_postgres(), prefix="churnops_alibi") as url:
        detector = start_detector(
            {
                "CHURNOPS_DETECTOR_HOME": str(tmp_path / "home"),
                "CHURNOPS_DETECTOR_MODEL_DIR": str(artefact_dir),
                "CHURNOPS_DETECTOR_DATABASE_URL": url,
                "CHURNOPS_DETECTOR_WINDOW_SIZE": "100",
                "CHURNOPS_DETECTOR_WINDOW_MIN_SIZE": "50",
            },
            tmp_path / "detector.log",
            python=python,
            ready_timeout=120,
        )
        try:
            ready = httpx.get(f"{detector.url}/readyz", timeout=5).json()
            assert ready["drift_detector"] is True, ready
            customers = sample_customers(telco_rows, 100, seed=31)
            with httpx.Client(timeout=10) as client:
                for start in range(0, 100, 10):
                    part = customers[start : start + 10]
                    post_call(client, f"{detector.url}/", v1_request(part), v1_response(scorer.answers(part)))
            wait_for_metric(
                detector,
                "churn_drift_windows_total",
                lambda v: v >= 1,
                timeout=60,
                labels={"outcome": "no_drift"},
            )
            wait_for_metric(
                detector, "churn_store_rows_total", lambda v: v == 100, labels={"outcome": "inserted"}
            )
            report = httpx.get(f"{detector.url}/reports/drift/latest.json", timeout=10).json()
            assert report["backend"] == "alibi"
            assert report["window_size"] == 100
            page = httpx.get(f"{detector.url}/reports/drift/latest", timeout=60)
            assert page.status_code == 200
            assert "<img" in page.text or "data:image/png" in page.text
        finally:
            detector.stop()
