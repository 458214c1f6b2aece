"""The predictor image's entry point (model/predictor/entrypoint.py), run as the image runs it: a plain
interpreter in isolated mode, a real artefact, and an `mlserver` on PATH that records how it was started.
MLServer must start only for exactly the artefact the deployment pinned."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.services import REPO

ENTRYPOINT = REPO / "model" / "predictor" / "entrypoint.py"
PIN = "CHURNOPS_PREDICTOR_ARTEFACT_SHA256"


@pytest.fixture
def artefact(artefact_dir: Path, tmp_path: Path) -> Path:
    """A copy of the session's real artefact that each test may tamper with."""
    return Path(shutil.copytree(artefact_dir, tmp_path / "models"))


@pytest.fixture
def fake_mlserver(tmp_path: Path) -> Path:
    """`mlserver` that writes its arguments where the test can read them, and exits 0."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "mlserver"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path / "started"}"\n')
    script.chmod(0o755)
    return bin_dir


def manifest_sha256(directory: Path) -> str:
    return hashlib.sha256((directory / "manifest.json").read_bytes()).hexdigest()


def run(directory: Path, bin_dir: Path, pin: str | None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    if pin is not None:
        env[PIN] = pin
    return subprocess.run(
        [sys.executable, "-I", str(ENTRYPOINT), str(directory)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def started(tmp_path: Path) -> list[str] | None:
    record = tmp_path / "started"
    return record.read_text().split() if record.exists() else None


def test_the_pinned_artefact_starts_mlserver(artefact, fake_mlserver, tmp_path):
    result = run(artefact, fake_mlserver, manifest_sha256(artefact))
    assert result.returncode == 0, result.stderr
    assert started(tmp_path) == ["start", str(artefact)]
    assert "verified" in result.stderr


def test_a_missing_or_malformed_pin_refuses_to_start(artefact, fake_mlserver, tmp_path):
    for pin in (None, "", "not-a-digest", manifest_sha256(artefact)[:-1]):
        result = run(artefact, fake_mlserver, pin)
        assert result.returncode == 2, pin
        assert PIN in result.stderr
    assert started(tmp_path) is None


def test_a_manifest_other_than_the_pinned_one_refuses_to_start(artefact, fake_mlserver, tmp_path):
    pin = manifest_sha256(artefact)
    manifest = json.loads((artefact / "manifest.json").read_text())
    manifest["model"]["version"] = "666"
    (artefact / "manifest.json").write_text(json.dumps(manifest))
    result = run(artefact, fake_mlserver, pin)
    assert result.returncode == 3
    assert "the deployment pins" in result.stderr
    assert started(tmp_path) is None


def test_a_swapped_model_that_the_manifest_vouches_for_still_fails_the_pin(artefact, fake_mlserver, tmp_path):
    """The attack the pin exists for: replace model.joblib AND rewrite its checksum in the manifest."""
    pin = manifest_sha256(artefact)
    (artefact / "model.joblib").write_bytes(b"cos\nsystem\n(S'id'\ntR.")  # a pickle that runs a command
    manifest = json.loads((artefact / "manifest.json").read_text())
    manifest["files"]["model.joblib"] = hashlib.sha256((artefact / "model.joblib").read_bytes()).hexdigest()
    (artefact / "manifest.json").write_text(json.dumps(manifest))
    assert run(artefact, fake_mlserver, pin).returncode == 3
    assert started(tmp_path) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: (d / "model.joblib").write_bytes((d / "model.joblib").read_bytes() + b"\0"),
        lambda d: (d / "model-settings.json").unlink(),
        lambda d: (d / "extra").mkdir() or (d / "extra" / "model-settings.json").write_text("{}"),
        lambda d: (d / "second.joblib").write_bytes(b"pickle"),
        lambda d: (d / ".hidden").write_text("x"),
        lambda d: (d / "model.joblib").unlink() or os.symlink("/etc/passwd", d / "model.joblib"),
    ],
    ids=["changed-model", "missing-file", "nested-model-settings", "unlisted-file", "hidden-file", "symlink"],
)
def test_any_change_to_the_files_refuses_to_start(artefact, fake_mlserver, tmp_path, tamper):
    pin = manifest_sha256(artefact)
    tamper(artefact)
    result = run(artefact, fake_mlserver, pin)
    assert result.returncode == 3, result.stderr
    assert "refusing to load" in result.stderr
    assert started(tmp_path) is None


def test_the_script_needs_nothing_but_the_standard_library():
    """The image has no ChurnOps package: the entry point may import only the standard library."""
    source = ENTRYPOINT.read_text()
    imports = {
        line.split()[1].split(".")[0]
        for line in source.splitlines()
        if line.startswith(("import ", "from ")) and not line.startswith("from __future__")
    }
    assert imports <= set(sys.stdlib_module_names), imports
