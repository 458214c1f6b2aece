"""CHURNOPS_TRANSFORMER_ARTEFACT_SHA256: the transformer serves only the artefact the deployment pinned."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from tests.support.services import free_port

pytestmark = pytest.mark.integration


def _start(artefact, pin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "churn_transformer", "--http_port", str(free_port()),
            "--predictor_host", f"127.0.0.1:{free_port()}",
        ],
        env={
            "PATH": "/usr/bin:/bin",
            "CHURNOPS_TRANSFORMER_MODEL_DIR": str(artefact),
            "CHURNOPS_TRANSFORMER_STARTUP_TIMEOUT_S": "0",
            "CHURNOPS_TRANSFORMER_HOST": "127.0.0.1",
            "CHURNOPS_TRANSFORMER_ARTEFACT_SHA256": pin,
        },
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )  # fmt: skip


def _reason(result: subprocess.CompletedProcess[str]) -> str:
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("churn-transformer:")]
    return line


def test_another_artefact_than_the_pinned_one_is_refused_before_loading(artefact_dir):
    result = _start(artefact_dir, "0" * 64)
    assert result.returncode == 2
    assert "pin mismatch" in _reason(result)
    assert "Traceback" not in result.stderr


def test_a_malformed_pin_is_refused(artefact_dir):
    result = _start(artefact_dir, "not-a-sha256")
    assert result.returncode == 2
    assert "ARTEFACT_SHA256" in _reason(result)


def test_the_pinned_artefact_is_accepted(artefact_dir):
    pin = hashlib.sha256((artefact_dir / "manifest.json").read_bytes()).hexdigest()
    result = _start(artefact_dir, pin)
    assert result.returncode == 2  # no predictor here: it got past the pin to the predictor check
    assert "did not serve model" in _reason(result)
