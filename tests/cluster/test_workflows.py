"""The GitHub Actions workflows: actionlint-clean (shellcheck on every `run:`), and the delivery they encode."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from churnops.cluster.settings import ClusterSettings, ToolMissingError
from tests.support.services import REPO, unavailable

WORKFLOWS = REPO / ".github" / "workflows"


@pytest.fixture(scope="module")
def actionlint() -> Path:
    if shutil.which("shellcheck") is None:
        unavailable("shellcheck is not installed (make system-tools): actionlint would skip the run: scripts")
    try:
        return ClusterSettings(project_dir=REPO).tool("actionlint")
    except ToolMissingError as error:
        unavailable(str(error))
        raise


def lint(actionlint: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(actionlint),
            "-no-color",
            "-shellcheck",
            shutil.which("shellcheck") or "shellcheck",
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def workflow_files() -> list[Path]:
    return sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])


def test_workflows_pass_actionlint(actionlint: Path):
    files = workflow_files()
    assert files, f"no workflow in {WORKFLOWS}"
    result = lint(actionlint, *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_broken_expressions_and_shell(actionlint: Path, tmp_path: Path):
    """The lint is live: an unknown job in `needs` and an unquoted variable (shellcheck) both fail."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  a:\n"
        "    runs-on: ubuntu-24.04\n"
        "    needs: nowhere\n"
        "    steps:\n"
        "      - run: echo $HOME/*.log\n"
    )
    result = lint(actionlint, broken)
    assert result.returncode != 0
    assert "nowhere" in result.stdout
    assert "shellcheck" in result.stdout


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return document


def test_pipeline_tests_everything_then_delivers_main_through_approvals():
    workflow = load("ci.yml")
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as a boolean
    assert "pull_request" in triggers
    assert triggers["push"]["branches"] == ["main"]
    jobs = workflow["jobs"]
    assert any(step.get("run") == "make test" for step in jobs["test"]["steps"])

    dockerfiles = {
        entry["component"]: entry["dockerfile"] for entry in jobs["images"]["strategy"]["matrix"]["include"]
    }
    assert dockerfiles == {
        "transformer": "transformer/Dockerfile",
        "predictor": "model/predictor/Dockerfile",
        "detector": "monitoring/Dockerfile",
        "authorizer": "authorizer/Dockerfile",
    }
    build = next(
        step for step in jobs["images"]["steps"] if str(step.get("uses", "")).startswith("docker/build-push")
    )
    assert "${{ github.sha }}" in build["with"]["tags"]
    assert "version" in build["with"]["tags"]
    assert "refs/heads/main" in jobs["images"]["if"]

    # test -> images -> render -> staging -> production canary -> production 100 %, each gated in order.
    chain = ["test", "images", "render", "deploy-staging", "canary-prod", "promote-prod"]
    for before, after in itertools.pairwise(chain):
        assert jobs[after]["needs"] == before
    assert jobs["deploy-staging"]["environment"] == "staging"
    assert jobs["canary-prod"]["environment"] == "production"
    assert jobs["promote-prod"]["environment"] == "production-promote"
    canary_script = " ".join(step.get("run", "") for step in jobs["canary-prod"]["steps"])
    assert "--canary 10" in canary_script
    assert "kubectl apply -k" in canary_script
    staging_script = " ".join(step.get("run", "") for step in jobs["deploy-staging"]["steps"])
    assert "kubectl apply -k" in staging_script
