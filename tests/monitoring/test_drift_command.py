"""`churnops monitor drift` as a user runs it from the default environment: the default backend
(alibi-detect) is not importable there, so the test runs in the detector's environment (.venv-drift) with
the same output and exit codes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from churn_monitoring.drift.command import run_scenario
from tests.support.services import REPO, drift_python

pytestmark = pytest.mark.integration

CHURNOPS = Path(sys.executable).parent / "churnops"


@pytest.fixture(scope="module")
def contract_shift(tmp_path_factory, telco_csv):
    directory = tmp_path_factory.mktemp("drift-command")
    return run_scenario("contract", directory / "contract.csv", data=telco_csv, rows=1000, seed=3)


def run_churnops(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHURNOPS_")}
    return subprocess.run(
        [str(CHURNOPS), *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_drift_command_runs_the_default_backend_in_the_detector_environment(
    contract_shift, artefact_dir, tmp_path
):
    assert importlib.util.find_spec("alibi_detect") is None, "this test needs the default environment"
    result = run_churnops(
        "monitor",
        "drift",
        "--current",
        str(contract_shift),
        "--artefact",
        str(artefact_dir),
        "--format",
        "json",
        cwd=tmp_path,
        CHURNOPS_STACK_DETECTOR_PYTHON=str(drift_python()),
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["backend"] == "alibi"
    assert report["drifted"] == ["Contract"]
    assert "None of PyTorch" not in result.stderr


def test_drift_command_in_the_detector_environment_keeps_exit_code_and_message(
    contract_shift, artefact_dir, tmp_path
):
    lines = contract_shift.read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3].replace("Month-to-month", "Weekly").replace("One year", "Weekly")
    lines[3] = lines[3].replace("Two year", "Weekly")
    broken = tmp_path / "broken.csv"
    broken.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = run_churnops(
        "monitor",
        "drift",
        "--current",
        str(broken),
        "--artefact",
        str(artefact_dir),
        cwd=tmp_path,
        CHURNOPS_STACK_DETECTOR_PYTHON=str(drift_python()),
    )

    assert result.returncode == 1
    assert "'Contract', line 4: 'Weekly'" in result.stderr


def test_drift_command_without_the_detector_environment_says_what_to_do(
    contract_shift, artefact_dir, tmp_path
):
    result = run_churnops(
        "monitor",
        "drift",
        "--current",
        str(contract_shift),
        "--artefact",
        str(artefact_dir),
        cwd=tmp_path,
        CHURNOPS_STACK_DETECTOR_PYTHON=str(tmp_path / "no-such-venv" / "bin" / "python"),
    )

    assert result.returncode == 1
    assert "make install" in result.stderr
    assert "--backend scipy" in result.stderr


def test_detector_python_is_found_from_any_working_directory(monkeypatch, tmp_path):
    from churnops.commands.monitor import detector_python
    from churnops.settings import get_stack_settings

    monkeypatch.delenv("CHURNOPS_STACK_DETECTOR_PYTHON", raising=False)
    monkeypatch.chdir(tmp_path)
    get_stack_settings.cache_clear()
    try:
        found = detector_python()
    finally:
        get_stack_settings.cache_clear()

    assert found == REPO / ".venv-drift" / "bin" / "python"
