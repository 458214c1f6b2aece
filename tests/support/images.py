"""Container images under test: running podman as this machine allows, and what an image holds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field

from tests.support.services import REPO, unavailable

CONTAINERS_CONF = REPO.parent / "shared" / "tools" / "containers" / "containers.conf"
MAKE_BASE_IMAGE = REPO.parent / "shared" / "tools" / "containers" / "make-base-image.sh"
LOCAL_BASE = "localhost/python:3.11-slim-bookworm"
# Every image under test, in the order the background builder takes them.
DOCKERFILES = {
    "authorizer": REPO / "authorizer" / "Dockerfile",
    "detector": REPO / "monitoring" / "Dockerfile",
    "predictor": REPO / "model" / "predictor" / "Dockerfile",
    "transformer": REPO / "transformer" / "Dockerfile",
}
OUR_PACKAGES = frozenset(
    {"churn_core", "churn_model", "churn_transformer", "churn_monitoring", "churn_authorizer", "churnops"}
)
# Our packages and the heavy libraries an image must not carry unless it needs them (pandas comes with
# kserve and with mlserver: installed there, never imported on our serving path).
PROBED_PACKAGES = (
    *sorted(OUR_PACKAGES),
    "sklearn",
    "pandas",
    "mlflow",
    "kserve",
    "alibi_detect",
)
_PROBE = (
    "import importlib.util, json, sys; "
    "print(json.dumps(sorted(n for n in sys.argv[1:] if importlib.util.find_spec(n) is not None)))"
)


def podman_env() -> dict[str, str]:
    if shutil.which("podman") is None:
        unavailable("podman is not installed")
    env = dict(os.environ)
    if CONTAINERS_CONF.is_file():
        env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return env


def packages_in(image: str) -> set[str]:
    """Which of PROBED_PACKAGES the image's Python can import (from its default working directory)."""
    result = subprocess.run(
        ["podman", "run", "--rm", "--network", "host", "--entrypoint", "python", image, "-c", _PROBE,
         *PROBED_PACKAGES],
        env=podman_env(), capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


def image_tag(name: str) -> str:
    # A stable tag keeps podman's layer cache warm between runs (dependencies are installed before the
    # code is copied, so a code change rebuilds only the last layers).
    return f"localhost/churnops-{name}:test"


@dataclass
class ImageBuilds:
    """Builds every image under test once per session, one after another on a background thread, at
    the lowest CPU priority (`nice -n 19`), while the rest of the suite runs: the container tests are
    ordered last (tests/conftest.py), so by then their images are built or nearly. Sequential builds
    took about 7 of the suite's minutes; overlapped, they cost the suite's wall time little (each build
    is mostly downloading and unpacking wheels)."""

    results: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    done: dict[str, threading.Event] = field(
        default_factory=lambda: {name: threading.Event() for name in DOCKERFILES}
    )
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._build_all, name="image-builds", daemon=True)
                self.thread.start()

    def tag(self, name: str) -> str:
        """The built image's tag; waits for its build (starting the builds if nothing has)."""
        podman_env()  # skips (or fails in CI) here, in the test, when podman is missing
        self.start()
        self.done[name].wait(timeout=1800)
        result = self.results.get(name)
        assert result is not None, f"the {name} image build did not finish in 30 min"
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        return image_tag(name)

    def _build_all(self) -> None:
        try:
            env = podman_env()
        except BaseException as error:
            failed = subprocess.CompletedProcess(["podman"], 1, "", f"podman unavailable: {error}")
            for name, event in self.done.items():
                self.results[name] = failed
                event.set()
            return
        base_args = self._base_args(env)
        for name, dockerfile in DOCKERFILES.items():
            try:
                self.results[name] = subprocess.run(
                    ["nice", "-n", "19", "podman", "build", "--network", "host", "--format", "docker",
                     *base_args, "-f", str(dockerfile), "-t", image_tag(name), str(REPO)],
                    env=env, capture_output=True, text=True, check=False, timeout=1500,
                )  # fmt: skip
            except subprocess.TimeoutExpired as error:
                self.results[name] = subprocess.CompletedProcess(
                    error.cmd, 1, "", f"build timed out: {error}"
                )
            finally:
                self.done[name].set()

    @staticmethod
    def _base_args(env: dict[str, str]) -> list[str]:
        def exists() -> bool:
            command = ["podman", "image", "exists", LOCAL_BASE]
            return subprocess.run(command, env=env, check=False).returncode == 0

        if not exists() and MAKE_BASE_IMAGE.is_file():
            # No registry is reachable here: the machine's stand-in for python:3.11-slim (~60 s, once).
            subprocess.run(["bash", str(MAKE_BASE_IMAGE), LOCAL_BASE], env=env, check=False, timeout=900)
        return ["--build-arg", f"BASE_IMAGE={LOCAL_BASE}"] if exists() else []


BUILDS = ImageBuilds()
