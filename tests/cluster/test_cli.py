"""`churnops manifests ...` and `churnops schemas ...` as a user runs them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from churnops.cluster.settings import ClusterSettings


@pytest.fixture
def cli(workspace: ClusterSettings, kubernetes_validate: Path, monkeypatch) -> Iterator[ClusterSettings]:
    from churnops.cluster.settings import get_settings

    monkeypatch.setenv("CHURNOPS_CLUSTER_PROJECT_DIR", str(workspace.project_dir))
    monkeypatch.setenv("CHURNOPS_CLUSTER_SCHEMAS_DIR", str(workspace.resolved_schemas_dir()))
    monkeypatch.setenv("CHURNOPS_CLUSTER_TOOLS_BIN", str(kubernetes_validate.parent))
    get_settings.cache_clear()
    yield workspace
    get_settings.cache_clear()


def invoke(*args: str) -> tuple[int, str]:
    from churnops.cli import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_manifests_validate_passes_the_overlays_and_names_a_misspelt_field(cli: ClusterSettings):
    code, output = invoke("manifests", "validate", "dev", "staging", "--no-checkov")
    assert code == 0, output
    assert "dev:" in output
    assert "resources valid" in output

    source = cli.project_dir / "manifests" / "serving" / "inferenceservice.yaml"
    source.write_text(source.read_text().replace("    minReplicas: 2\n", "    minReplica: 2\n", 1))
    code, output = invoke("manifests", "validate", "prod", "--no-checkov")
    assert code == 1
    assert "minReplica" in output
    assert "InferenceService/churnops/churn" in output


def test_manifests_kustomization_writes_a_deployable_wrapper(cli: ClusterSettings, tmp_path: Path):
    code, output = invoke(
        "manifests",
        "kustomization",
        "prod",
        "--image-tag",
        "c0ffee",
        "--canary",
        "10",
        "--to",
        str(tmp_path / "d"),
    )
    assert code == 0, output
    wrapper = yaml.safe_load((tmp_path / "d" / "kustomization.yaml").read_text())
    assert {image["newTag"] for image in wrapper["images"]} == {"c0ffee"}
    assert "canaryTrafficPercent" in wrapper["patches"][0]["patch"]
    code, output = invoke("manifests", "render", "prod", "--image-tag", "c0ffee")
    assert code == 0
    assert "churnops-transformer:c0ffee" in output


def test_manifests_render_names_unknown_overlays(cli: ClusterSettings):
    code, output = invoke("manifests", "render", "qa")
    assert code == 1
    assert "no overlay 'qa'" in output
    assert "dev, prod, staging" in output


def test_schemas_list_shows_the_pins(cli: ClusterSettings):
    code, output = invoke("schemas", "list")
    assert code == 0
    assert "kserve/serving.kserve.io_inferenceservices.yaml\tkserve/kserve@aaac4e294dae" in output
    assert "istio/crd-all.gen.yaml" in output
