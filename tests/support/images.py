"""Container images under test: running podman as this machine allows, and what an image holds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from tests.support.services import REPO, unavailable

CONTAINERS_CONF = REPO.parent / "shared" / "tools" / "containers" / "containers.conf"
LOCAL_BASE = "localhost/python:3.11-slim-bookworm"
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
