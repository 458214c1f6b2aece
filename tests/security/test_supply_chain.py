"""Supply chain: every environment and image installs from a lock with hashes, the locks still cover
pyproject.toml (so a new dependency cannot slip in unhashed), and every GitHub Action is pinned by commit."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.services import REPO

LOCKS = REPO / "locks"
DOCKERFILES = {
    "transformer/Dockerfile": "transformer.txt",
    "model/predictor/Dockerfile": "predictor.txt",
    "monitoring/Dockerfile": "detector.txt",
    "authorizer/Dockerfile": "authorizer.txt",
}
# Which extras each lock must satisfy (base dependencies included unless the lock is an extra alone).
LOCK_CONTENTS = {
    "dev.txt": ("base", "train", "transformer", "monitoring", "authorizer", "dev"),
    "drift.txt": ("base", "monitoring", "alibi"),
    "detector.txt": ("base", "monitoring", "alibi"),
    "transformer.txt": ("base", "transformer"),
    "authorizer.txt": ("base", "authorizer"),
    "cluster.txt": ("base", "cluster"),
    "predictor.txt": ("predictor",),
}


def locked(lock: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of every requirement of a lock file, markers aside."""
    text = lock.read_text().replace("\\\n", " ")
    entries: dict[str, tuple[str, list[str]]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        requirement = line.split(" --hash", 1)[0].split(";", 1)[0].strip()
        name, _, version = requirement.partition("==")
        assert version, f"{lock.name}: not pinned: {line[:80]}"
        entries.setdefault(
            canonicalize_name(name), (version, re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
        )
    return entries


def project() -> dict:
    with (REPO / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)["project"]


@pytest.mark.parametrize("lock", sorted(LOCKS.glob("*.txt")), ids=lambda p: p.name)
def test_every_locked_requirement_is_pinned_and_hashed(lock: Path):
    entries = locked(lock)
    assert entries
    for name, (_, hashes) in entries.items():
        assert hashes, f"{lock.name}: {name} has no hash"


@pytest.mark.parametrize(("lock", "groups"), sorted(LOCK_CONTENTS.items()))
def test_locks_still_satisfy_pyproject(lock: str, groups: tuple[str, ...]):
    """A dependency added to pyproject.toml without `make lock` fails here, not in an image build."""
    metadata = project()
    entries = locked(LOCKS / lock)
    for group in groups:
        requirements = (
            metadata["dependencies"] if group == "base" else metadata["optional-dependencies"][group]
        )
        for text in requirements:
            requirement = Requirement(text)
            name = canonicalize_name(requirement.name)
            assert name in entries, f"{lock}: {requirement.name} ({group}) is not locked: run `make lock`"
            version = entries[name][0]
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{lock}: {name}=={version} vs {text}"
            )


@pytest.mark.parametrize(("dockerfile", "lock"), sorted(DOCKERFILES.items()))
def test_images_install_only_their_lock_with_hashes(dockerfile: str, lock: str):
    text = (REPO / dockerfile).read_text()
    installs = [
        line
        for line in text.splitlines()
        if re.search(r"\bpip install\b", line) and not line.lstrip().startswith("#")
    ]
    assert installs, dockerfile
    for line in installs:
        assert "--require-hashes" in line, line
        assert "--only-binary :all:" in line, line
        assert f"-r {lock}" in line, line
    assert f"COPY locks/{lock} " in text
    assert (
        "pyproject.toml" not in text.split("FROM ${BASE_IMAGE}")[1]
    )  # nothing resolved from it in the build


def test_make_install_uses_the_locks_with_hashes():
    makefile = (REPO / "Makefile").read_text()
    rules = re.findall(r"^\$\((\w+)\)/\.installed:.*?(?=^\S)", makefile, flags=re.S | re.M)
    assert set(rules) >= {"VENV", "PREDICTOR_VENV", "DRIFT_VENV", "TOOLS_VENV"}
    for block in re.findall(
        r"^\$\((?:VENV|PREDICTOR_VENV|DRIFT_VENV|TOOLS_VENV)\)/\.installed:.*?(?=^\S)",
        makefile,
        flags=re.S | re.M,
    ):
        installs = [line for line in block.splitlines() if "pip install" in line or "UV_INSTALL" in line]
        assert installs, block
        for line in installs:
            assert "$(PIP_LOCKED)" in line or "$(PIP_PROJECT)" in line, line
    assert "PIP_LOCKED := --require-hashes --only-binary :all: -r" in makefile
    assert "PIP_PROJECT := --no-deps --no-build-isolation -e" in makefile
    # The installer itself (uv) comes from its own lock, with hashes, installed by pip.
    bootstrap = re.search(r"^\$\(UV_VENV\)/\.installed:.*?(?=^\S)", makefile, flags=re.S | re.M)
    assert bootstrap is not None
    assert "pip install $(PIP) $(PIP_LOCKED) $(LOCKS)/uv.txt" in bootstrap.group(0)
    assert re.search(r"^lock: ", makefile, flags=re.M)


def test_github_actions_are_pinned_by_commit_and_pip_installs_are_hashed():
    workflow = REPO / ".github" / "workflows" / "ci.yml"
    document = yaml.safe_load(workflow.read_text())
    uses = [step["uses"] for job in document["jobs"].values() for step in job["steps"] if "uses" in step]
    assert uses
    for line in workflow.read_text().splitlines():
        if "uses:" in line:
            assert re.search(r"uses: [\w.-]+/[\w.-]+@[0-9a-f]{40}  # v\d+\.\d+\.\d+$", line), line
    for job in document["jobs"].values():
        for step in job["steps"]:
            for command in step.get("run", "").splitlines():
                if "pip install" in command and "--no-deps" not in command:
                    assert "--require-hashes" in command, command
