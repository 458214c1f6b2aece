"""Shadow evaluation before any traffic: both versions score the prediction store's labelled customers (the
machine's PostgreSQL), the comparison is kept in the registry, and `rollout --auto` refuses a loser."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from churn_core.contract import telco_contract
from churn_model.registry import Registry
from churn_monitoring.store.database import create_store_engine, insert_predictions, upgrade
from churn_monitoring.store.schema import labels
from churnops.cluster.settings import ClusterSettings
from tests.monitoring.detector_support import postgres_database
from tests.rollout.conftest import Challengers, mlflow_uris_kept
from tests.rollout.rehearsal import scratch_checkout
from tests.support.customers import sample_customers
from tests.support.services import ensure_postgres

pytestmark = pytest.mark.integration

FIELDS = telco_contract().field_names  # what the detector stores of each customer


@pytest.fixture(scope="module")
def store(telco_rows) -> Iterator[str]:
    """A prediction store holding 1,200 logged customers (as clients sent them) and their outcomes, plus one
    row no contract can read and one customer scored twice (only its latest prediction counts)."""
    outcomes = {row["customerID"]: row["Churn"] == "Yes" for row in telco_rows}
    customers = sample_customers(telco_rows, 1200, seed=11)
    with postgres_database(ensure_postgres()) as url:
        engine = create_store_engine(url)
        upgrade(engine)
        now = datetime.now(UTC)
        event = uuid.uuid4().hex
        records = [
            {
                "event_id": event,
                "row_index": i,
                "customer_id": customer["customerID"],
                "model_version": "1",
                "features": {name: customer[name] for name in FIELDS},
                "probability": 0.5,
                "prediction": False,
                "risk_level": "Medium",
                "predicted_at": now.isoformat(),
                "source": "test",
            }
            for i, customer in enumerate(customers)
        ]
        records.append({**records[0], "row_index": len(records), "customer_id": "odd-one",
                        "features": {**records[0]["features"], "Contract": "Weekly"}})  # fmt: skip
        with engine.begin() as connection:
            insert_predictions(connection, records)
            connection.execute(
                insert(labels),
                [
                    {
                        "event_id": r["event_id"],
                        "row_index": r["row_index"],
                        "customer_id": r["customer_id"],
                        "churned": outcomes.get(r["customer_id"], False),
                        "observed_at": now,
                        "received_at": now,
                    }
                    for r in records
                ],
            )
        engine.dispose()
        yield url


@pytest.fixture
def cli(challengers: Challengers, tmp_path: Path, monkeypatch) -> Iterator[ClusterSettings]:
    from churn_model.settings import get_settings as model_settings
    from churnops.cluster.settings import get_settings

    home = tmp_path / "home"
    shutil.copytree(challengers.settings.home, home)
    checkout = scratch_checkout(tmp_path / "checkout")
    monkeypatch.setenv("CHURNOPS_CLUSTER_PROJECT_DIR", str(checkout))
    monkeypatch.setenv("CHURNOPS_MODEL_HOME", str(home))
    monkeypatch.delenv("CHURNOPS_MODEL_MLFLOW_URI", raising=False)
    get_settings.cache_clear()
    model_settings.cache_clear()
    with mlflow_uris_kept():
        yield ClusterSettings(project_dir=checkout)
    get_settings.cache_clear()
    model_settings.cache_clear()


def invoke(*args: str) -> tuple[int, str]:
    from churnops.cli import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def registry() -> Registry:
    from churn_model.settings import get_settings

    return Registry(get_settings())


def test_evaluate_compares_both_versions_on_the_labelled_customers(cli, store, challengers: Challengers):
    code, output = invoke("evaluate", challengers.good, "--against", "1", "--database", store)
    print(output)
    assert code == 0, output
    assert "1200 labelled customers (1 unreadable by a contract)" in output
    assert "ROC AUC" in output
    assert "calibration error (ECE)" in output
    assert "risk level changes for" in output
    assert "verdict: holds" in output
    record = registry().evaluation(challengers.good)
    assert record is not None
    assert (record["version"], record["against"], record["customers"]) == (challengers.good, "1", 1200)
    assert 0.75 < record["challenger"]["roc_auc"] < 0.95
    assert abs(record["challenger"]["roc_auc"] - record["champion"]["roc_auc"]) < 0.02


def test_a_version_that_loses_is_refused_by_the_automated_canary(cli, store, challengers: Challengers):
    code, output = invoke("evaluate", challengers.bad, "--against", "1", "--database", store)
    print(output)
    assert code == 1
    assert "verdict: loses (ROC AUC" in output
    assert registry().evaluation(challengers.bad)["challenger"]["roc_auc"] < 0.6

    code, output = invoke("rollout", challengers.bad, "--auto", "--overlay", "prod")
    print(output)
    assert code == 1
    assert "shadow evaluation against version 1: loses" in output
    assert "--force overrides" in output
    # Never evaluated: refused too, naming the command to run.
    code, output = invoke(
        "rollout", challengers.good, "--auto", "--overlay", "staging", "--prometheus", "http://127.0.0.1:9"
    )
    assert code == 1
    assert f"churnops evaluate {challengers.good} --against 1" in output
