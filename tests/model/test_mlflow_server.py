"""The registry against a real MLflow tracking server backed by the machine's PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from churn_core.artefact import verify_artefact
from churn_model.pipeline import export_version, train
from churn_model.registry import CHALLENGER, CHAMPION, Registry
from churn_model.settings import ModelSettings
from churn_model.training import TrainingConfig
from tests.support.services import ensure_postgres, free_port, http_ok, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = ensure_postgres()
    database = f"churnops_mlflow_{uuid.uuid4().hex[:10]}"
    admin = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    workdir = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = (workdir / "server.log").open("w")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            url.rsplit("/", 1)[0] + f"/{database}",
            "--artifacts-destination",
            (workdir / "artifacts").as_uri(),
            "--workers",
            "1",
        ],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""},
        start_new_session=True,  # `mlflow server` runs uvicorn as a child: stop the whole group
    )
    try:
        wait_until(http_ok(f"http://127.0.0.1:{port}/health"), 120, "mlflow server")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_train_register_promote_rollback_and_export_through_a_real_server(mlflow_server, telco_csv, tmp_path):
    import mlflow

    previous_tracking = mlflow.get_tracking_uri()
    previous_registry = mlflow.get_registry_uri()
    settings = ModelSettings(home=tmp_path / "home", data=telco_csv, mlflow_uri=mlflow_server)
    try:
        first = train(settings, TrainingConfig(cv_repeats=0), telco_csv)
        registry = Registry(settings)
        # A second version of the same run: registration, not training, is under test here.
        second = registry.register(f"runs:/{first.run_id}/model", first.run_id)
        assert (first.version, second) == ("1", "2")
        assert registry.resolve(CHAMPION).version == "1"
        assert registry.resolve(CHALLENGER).version == "2"

        registry.promote("2")
        assert registry.resolve(CHAMPION).version == "2"
        assert registry.rollback() == ("2", "1")
        assert registry.resolve(CHAMPION).version == "1"

        exported = export_version(registry, "1", tmp_path / "export")
        assert verify_artefact(exported)["model"]["version"] == "1"
        assert not (tmp_path / "home" / "mlflow.db").exists(), "the local SQLite store must not be used"
    finally:
        mlflow.set_tracking_uri(previous_tracking)
        mlflow.set_registry_uri(previous_registry)
