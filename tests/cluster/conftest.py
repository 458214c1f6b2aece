"""Fixtures of the cluster tests: the tools (kubectl, kubernetes-validate, checkov), the published CRDs,
the rendered overlays, and scratch copies of the kustomize tree for the tests that change it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from churnops.cluster.render import render
from churnops.cluster.schemas import CrdSchemas, SchemaError, load_crd_schemas
from churnops.cluster.settings import ClusterSettings, ToolMissingError
from churnops.cluster.validate import parse_documents
from tests.support.services import REPO, unavailable

OVERLAYS = ("dev", "staging", "prod")
# What `kubectl kustomize` needs from the checkout: the kustomize tree and the folders it lists.
TREES = ("kustomize", "manifests", "monitoring")


def _settings(project_dir: Path) -> ClusterSettings:
    """The checkout's schemas and tools (CHURNOPS_CLUSTER_TOOLS_BIN, else .venv-tools), for any project folder."""
    base = ClusterSettings(project_dir=REPO)
    return ClusterSettings(
        project_dir=project_dir,
        schemas_dir=base.resolved_schemas_dir(),
        tools_bin=base.tools_bin or REPO / ".venv-tools" / "bin",
    )


@pytest.fixture(scope="session")
def cluster_settings() -> ClusterSettings:
    settings = _settings(REPO)
    try:
        settings.kubectl_path()
    except ToolMissingError as error:
        unavailable(str(error))
    return settings


@pytest.fixture(scope="session")
def kubernetes_validate(cluster_settings: ClusterSettings) -> Path:
    try:
        return cluster_settings.tool("kubernetes-validate")
    except ToolMissingError as error:
        unavailable(str(error))
        raise


@pytest.fixture(scope="session")
def crds(cluster_settings: ClusterSettings) -> CrdSchemas:
    try:
        return load_crd_schemas(cluster_settings.resolved_schemas_dir())
    except SchemaError as error:
        unavailable(str(error))
        raise


@pytest.fixture(scope="session")
def rendered(cluster_settings: ClusterSettings) -> dict[str, list[dict[str, Any]]]:
    """Each overlay of the checkout, rendered once."""
    return {overlay: parse_documents(render(cluster_settings, overlay)) for overlay in OVERLAYS}


def find(documents: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in documents if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def transformer_container(inference_service: dict[str, Any]) -> dict[str, Any]:
    """The collocated transformer in the InferenceService's predictor pods."""
    (container,) = [
        c
        for c in inference_service["spec"]["predictor"]["containers"]
        if c["name"] == "transformer-container"
    ]
    return container


def env_of(container: dict[str, Any]) -> dict[str, str | None]:
    return {item["name"]: item.get("value") for item in container.get("env", [])}


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in {"__pycache__", "churn_monitoring"} or n.startswith(".dry-run")}


@pytest.fixture
def workspace(tmp_path: Path, cluster_settings: ClusterSettings) -> ClusterSettings:
    """Settings over a scratch copy of the kustomize tree: tests may edit its rollout files."""
    root = tmp_path / "checkout"
    for tree in TREES:
        if (REPO / tree).is_dir():
            shutil.copytree(REPO / tree, root / tree, ignore=_ignore)
    return _settings(root)
