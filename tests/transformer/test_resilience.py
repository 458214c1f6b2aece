"""Failures around the transformer: the predictor goes away, or serves another model version."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.services import free_port, http_ok, wait_until
from tests.transformer.conftest import transformer_behind_proxy

pytestmark = pytest.mark.integration


def test_predictor_down_gives_503_with_a_clear_message_and_recovers(
    artefact_dir, predictor, customers, tmp_path
):
    with transformer_behind_proxy(
        artefact_dir,
        predictor,
        tmp_path / "transformer.log",
        env={"CHURNOPS_TRANSFORMER_PREDICTOR_TIMEOUT_S": "2"},
    ) as (served, proxy):
        body = {"instances": [customers[0]]}
        with httpx.Client(base_url=served.url, timeout=30) as http:
            assert http.post("/v1/models/churn:predict", json=body).status_code == 200
            metrics = http.get("/metrics")  # one worker: the ordinary in-memory registry
            assert metrics.status_code == 200
            assert f'churn_model_info{{version="{predictor.version}"}} 1.0' in metrics.text
            assert "churn_predictions_total" in metrics.text
            proxy.cut()
            for _ in range(3):
                response = http.post("/v1/models/churn:predict", json=body)
                assert response.status_code == 503
                assert "unavailable" in response.json()["error"] or "not ready" in response.json()["error"]
                assert "Traceback" not in response.text
            wait_until(lambda: http.get("/v2/health/ready").status_code == 503, 10, "readiness to drop")
            assert http.get("/v2/models/churn/ready").status_code == 503
            assert http.get("/v2/health/live").status_code == 200  # alive: do not restart, wait
            proxy.restore()
            wait_until(http_ok(f"{served.url}/v2/models/churn/ready"), 20, "readiness to come back")
            assert http.post("/v1/models/churn:predict", json=body).status_code == 200
    assert "Traceback" not in (tmp_path / "transformer.log").read_text()


def _restamp(artefact: Path, destination: Path, contract_version: str, settings_version: str) -> Path:
    """A copy of the artefact claiming other versions, its manifest checksums updated to match."""
    shutil.copytree(artefact, destination)
    contract = json.loads((destination / "churn-contract.json").read_text())
    contract["model"]["version"] = contract_version
    (destination / "churn-contract.json").write_text(json.dumps(contract))
    settings = json.loads((destination / "model-settings.json").read_text())
    settings["parameters"]["version"] = settings_version
    (destination / "model-settings.json").write_text(json.dumps(settings))
    manifest = json.loads((destination / "manifest.json").read_text())
    for name in manifest["files"]:
        manifest["files"][name] = hashlib.sha256((destination / name).read_bytes()).hexdigest()
    (destination / "manifest.json").write_text(json.dumps(manifest))
    return destination


def _run_transformer(
    artefact: Path, predictor_port: int, timeout_s: str = "20"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "churn_transformer", "--http_port", str(free_port()),
            "--predictor_host", f"127.0.0.1:{predictor_port}",
        ],
        env={
            "PATH": "/usr/bin:/bin",
            "CHURNOPS_TRANSFORMER_MODEL_DIR": str(artefact),
            "CHURNOPS_TRANSFORMER_STARTUP_TIMEOUT_S": timeout_s,
            "CHURNOPS_TRANSFORMER_HOST": "127.0.0.1",
        },
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )  # fmt: skip


def test_version_mismatch_with_the_predictor_is_refused_at_start(artefact_dir, predictor, tmp_path):
    other = _restamp(artefact_dir, tmp_path / "artefact", "99", "99")
    result = _run_transformer(other, predictor.grpc_port)
    assert result.returncode == 2
    assert "version mismatch" in result.stderr
    assert "'99'" in result.stderr


def test_artefact_whose_contract_and_settings_disagree_is_refused(artefact_dir, predictor, tmp_path):
    other = _restamp(artefact_dir, tmp_path / "artefact", predictor.version, "99")
    result = _run_transformer(other, predictor.grpc_port)
    assert result.returncode == 2
    assert "declares version '99'" in result.stderr


def test_tampered_artefact_is_refused(artefact_dir, predictor, tmp_path):
    copy = tmp_path / "artefact"
    shutil.copytree(artefact_dir, copy)
    (copy / "churn-contract.json").write_text((copy / "churn-contract.json").read_text().replace("Yes", "Ja"))
    result = _run_transformer(copy, predictor.grpc_port)
    assert result.returncode == 2
    assert "checksum" in result.stderr


def test_no_predictor_within_the_start_timeout_is_refused(artefact_dir):
    result = _run_transformer(artefact_dir, free_port(), timeout_s="1")
    assert result.returncode == 2
    assert "did not serve model" in result.stderr
