"""`churnops manifests ...` and `churnops schemas ...` as a user runs them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from churnops.cluster.settings import ClusterSettings

COMMIT = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"


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
        COMMIT,
        "--canary",
        "10",
        "--to",
        str(tmp_path / "d"),
    )
    assert code == 0, output
    wrapper = yaml.safe_load((tmp_path / "d" / "kustomization.yaml").read_text())
    assert {image["newTag"] for image in wrapper["images"]} == {COMMIT}
    assert "canaryTrafficPercent" in wrapper["patches"][0]["patch"]
    code, output = invoke("manifests", "render", "prod", "--image-tag", COMMIT)
    assert code == 0
    assert f"churnops-transformer:{COMMIT}" in output


@pytest.mark.parametrize("tag", ["0.1.0", "latest", "c0ffee"])
def test_manifests_refuse_a_mutable_image_tag(cli: ClusterSettings, tmp_path: Path, tag: str):
    code, output = invoke(
        "manifests", "kustomization", "prod", "--image-tag", tag, "--to", str(tmp_path / "d")
    )
    assert code == 1
    assert f"image reference '{tag}' is mutable" in output
    assert not (tmp_path / "d" / "kustomization.yaml").exists()


def test_manifests_pin_images_writes_ci_digests_into_the_overlays(cli: ClusterSettings, tmp_path: Path):
    digests = tmp_path / "digests"
    digests.mkdir()
    for index, component in enumerate(("transformer", "predictor", "detector", "authorizer")):
        (digests / f"{component}.txt").write_text(f"sha256:{str(index) * 64}\n")
    code, output = invoke("manifests", "pin-images", "staging", "prod", "--digests", str(digests))
    assert code == 0, output
    code, output = invoke("manifests", "render", "prod")
    assert code == 0
    assert f"churnops-transformer@sha256:{'0' * 64}" in output
    assert f"churnops-authorizer@sha256:{'3' * 64}" in output
    (digests / "detector.txt").write_text("0.1.0")
    code, output = invoke("manifests", "pin-images", "prod", "--digests", str(digests))
    assert code == 1
    assert "'0.1.0' is mutable" in output


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
