"""The GitHub Actions workflows: actionlint-clean (shellcheck on every `run:`), and the delivery they encode."""

from __future__ import annotations

import itertools
import os
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
    # One immutable tag per build: the commit. No tag a later build would move under the overlays.
    assert build["with"]["tags"] == "${{ env.IMAGE_PREFIX }}-${{ matrix.component }}:${{ github.sha }}"
    recorded = " ".join(str(step.get("env", {})) for step in jobs["images"]["steps"])
    assert "steps.build.outputs.digest" in recorded
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


DEPLOY_JOBS = ("deploy-staging", "canary-prod", "promote-prod")


def script(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_deploy_jobs_apply_pinned_digests_and_gate_on_what_kserve_reports():
    """No `kubectl wait --for=condition=Ready` (kserve/kserve#6081): `churnops rollout wait` reads the split and
    the revision from status.components.predictor. Each applies the overlays the render job pinned to the
    build's digests, and the environments that reach their final state commit those pins back."""
    jobs = load("ci.yml")["jobs"]
    assert "pin-images dev staging prod --digests digests/" in script(jobs["render"])
    for name in DEPLOY_JOBS:
        job = jobs[name]
        text = script(job)
        assert "condition=Ready" not in text, name
        assert "churnops rollout wait --overlay" in text, name
        downloads = [
            s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/download-artifact")
        ]
        assert [d["with"]["name"] for d in downloads] == ["image-pins"], name
        assert "--image-tag" not in text, name  # images come from the pinned overlay, by digest
    assert "--code-canary 10" in script(jobs["canary-prod"])
    for name, overlay in (("deploy-staging", "staging"), ("promote-prod", "prod")):
        assert jobs[name]["permissions"] == {"contents": "write"}
        (record,) = [s for s in jobs[name]["steps"] if s.get("run") == "scripts/record-deploy.sh"]
        assert record["env"] == {"OVERLAY": overlay}
    assert "permissions" not in jobs["canary-prod"]  # a canary is not what the environment runs


def test_the_deploy_record_commits_only_the_overlays_pins(tmp_path: Path):
    """scripts/record-deploy.sh against a real git remote: one commit touching only the pins, then a no-op."""
    remote, clone = tmp_path / "remote.git", tmp_path / "clone"
    run = lambda *args, cwd=clone: subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True)  # noqa: E731
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(remote)], check=True)
    subprocess.run(["git", "clone", "--quiet", str(remote), str(clone)], check=True, capture_output=True)
    pins = clone / "kustomize" / "overlays" / "staging" / "images" / "kustomization.yaml"
    pins.parent.mkdir(parents=True)
    pins.write_text("images: []\n")
    (clone / "other.txt").write_text("before\n")
    run("git", "-c", "user.name=t", "-c", "user.email=t@example.com", "add", ".")
    run("git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "--quiet", "-m", "base")
    run("git", "push", "--quiet", "origin", "HEAD:main")
    pins.write_text("images: [{name: x, digest: 'sha256:...'}]\n")
    (clone / "other.txt").write_text("a change the record must not commit\n")
    env = {
        "OVERLAY": "staging",
        "GITHUB_SHA": "0123456789abcdef" * 2 + "01234567",
        "PATH": os.environ["PATH"],
    }
    result = subprocess.run(
        [str(REPO / "scripts" / "record-deploy.sh")],
        check=False,
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    subjects = run(
        "git", "--git-dir", str(remote), "log", "--format=%s", "main", cwd=tmp_path
    ).stdout.splitlines()
    assert subjects == ["Deploy: staging runs the images of 0123456789ab", "base"]
    changed = run(
        "git", "--git-dir", str(remote), "show", "--name-only", "--format=", "main", cwd=tmp_path
    ).stdout
    assert changed.split() == ["kustomize/overlays/staging/images/kustomization.yaml"]
    again = subprocess.run(
        [str(REPO / "scripts" / "record-deploy.sh")],
        check=False,
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0
    assert "already records these images" in again.stdout
