"""Canary rollouts against a real local registry (two trained versions) and a scratch kustomize tree."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from churn_model.registry import CHALLENGER, CHAMPION, HISTORY_TAG, Registry
from churn_model.settings import ModelSettings
from churnops.cluster.render import render
from churnops.cluster.rollout import RolloutError, Rollouts
from churnops.cluster.settings import ClusterSettings
from churnops.cluster.state import StateError, read_state
from churnops.cluster.validate import parse_documents, validate_custom_resource
from tests.cluster.conftest import env_of, find, transformer_container

URI = "s3://churnops-models/churn-model/{}"


@pytest.fixture(scope="module")
def two_versions(trained_model, telco_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelSettings:
    """A copy of the session's registry (version 1, champion) with a second registered version.

    Version 2 registers version 1's logged model again: a real registry version (its own number, its own
    aliases) without a second training run, which is all a rollout needs from the registry.
    """
    home = tmp_path_factory.mktemp("rollout-home")
    shutil.copytree(trained_model.settings.home, home, dirs_exist_ok=True)
    settings = ModelSettings(home=home, data=telco_csv)
    with mlflow_uris_kept():
        registry = Registry(settings)
        first = registry.client.get_model_version(registry.name, "1")
        assert registry.register(first.source, first.run_id) == "2"
    return settings


@contextmanager
def mlflow_uris_kept() -> Iterator[None]:
    """Registry() points MLflow's process-wide URIs at its store: give them back afterwards, so that the
    rest of the session keeps talking to its own registry."""
    import mlflow

    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        yield
    finally:
        mlflow.set_tracking_uri(tracking)
        mlflow.set_registry_uri(registry)


@pytest.fixture
def registry(two_versions: ModelSettings) -> Iterator[Registry]:
    """The copy, reset to: version 1 champion (history [1]), version 2 registered without an alias."""
    with mlflow_uris_kept():
        registry = Registry(two_versions)
        registry.client.set_registered_model_alias(registry.name, CHAMPION, "1")
        if registry.alias_target(CHALLENGER) is not None:
            registry.client.delete_registered_model_alias(registry.name, CHALLENGER)
        registry.client.set_registered_model_tag(registry.name, HISTORY_TAG, json.dumps(["1"]))
        yield registry


def rendered_isvc(
    settings: ClusterSettings, overlay: str = "prod"
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    documents = parse_documents(render(settings, overlay))
    return find(documents, "InferenceService"), documents


def split(inference_service: dict[str, Any]) -> tuple[int, str]:
    """(canaryTrafficPercent, storageUri) of the one component; the transformer rides along in its pods."""
    spec = inference_service["spec"]
    assert set(spec) == {"predictor"}, "the transformer must stay collocated (no spec.transformer)"
    env = env_of(transformer_container(inference_service))
    assert env["CHURNOPS_TRANSFORMER_MODEL_DIR"] == "/mnt/models"
    assert "STORAGE_URI" not in env
    return spec["predictor"]["canaryTrafficPercent"], spec["predictor"]["model"]["storageUri"]


def detector_reference(documents: list[dict[str, Any]]) -> str:
    deployment = find(documents, "Deployment", "churn-detector")
    return str(deployment["spec"]["template"]["spec"]["initContainers"][0]["args"][0])


def test_rollout_canary_sets_traffic_percent_and_challenger_alias(workspace, registry, crds):
    rollouts = Rollouts(workspace, registry, "prod")
    plan = rollouts.plan_start("2", 10)
    rollouts.execute(plan)

    inference_service, documents = rendered_isvc(workspace)
    assert split(inference_service) == (10, URI.format(2))
    assert detector_reference(documents) == URI.format(1)  # the detector keeps the stable reference
    assert validate_custom_resource(inference_service, crds) == []
    assert read_state(rollouts.directory).phase == "canary"
    assert registry.alias_target(CHALLENGER) == "2"
    assert registry.alias_target(CHAMPION) == "1"

    # The same version again moves the split of the running canary.
    rollouts.execute(rollouts.plan_start("challenger", 50))
    assert split(rendered_isvc(workspace)[0]) == (50, URI.format(2))


def test_model_canary_moves_transformer_and_predictor_together(workspace, registry):
    """The whole InferenceService changes in exactly two predictor fields, nothing per half.

    A new storageUri makes KServe create one new predictor revision, whose pods hold MLServer AND the
    transformer on the same /mnt/models (the new version's artefact); canaryTrafficPercent splits between
    whole pods. So no new transformer ever meets an old predictor, and no old transformer a new one.
    """
    before, _ = rendered_isvc(workspace)
    rollouts = Rollouts(workspace, registry, "prod")
    rollouts.execute(rollouts.plan_start("2", 10))
    after, _ = rendered_isvc(workspace)

    assert split(before) == (100, URI.format(1))
    assert split(after) == (10, URI.format(2))
    expected = json.loads(json.dumps(before))
    expected["spec"]["predictor"]["canaryTrafficPercent"] = 10
    expected["spec"]["predictor"]["model"]["storageUri"] = URI.format(2)
    assert after == expected
    # Both halves of the new revision read the one artefact KServe downloads for it.
    assert transformer_container(after) == transformer_container(before)


def test_rollout_promote_routes_all_traffic_and_makes_the_version_champion(workspace, registry):
    rollouts = Rollouts(workspace, registry, "prod")
    rollouts.execute(rollouts.plan_start("2", 10))
    rollouts.execute(rollouts.plan_promote())

    inference_service, documents = rendered_isvc(workspace)
    assert split(inference_service) == (100, URI.format(2))
    assert detector_reference(documents) == URI.format(2)
    assert registry.alias_target(CHAMPION) == "2"
    assert registry.alias_target(CHALLENGER) is None
    assert registry.history() == ["1", "2"]
    with pytest.raises(RolloutError, match="no canary to promote"):
        rollouts.plan_promote()


def test_rollout_abort_returns_traffic_to_the_previous_version(workspace, registry):
    rollouts = Rollouts(workspace, registry, "prod")
    rollouts.execute(rollouts.plan_start("2", 10))
    rollouts.execute(rollouts.plan_abort())

    inference_service, documents = rendered_isvc(workspace)
    # 0 % to the latest revision: all traffic on the revision that served version 1 before the canary,
    # and the spec itself back on version 1, so no later deploy can bring version 2 back by accident.
    assert split(inference_service) == (0, URI.format(1))
    assert detector_reference(documents) == URI.format(1)
    assert registry.alias_target(CHALLENGER) is None
    assert registry.alias_target(CHAMPION) == "1"
    assert registry.history() == ["1"]

    # Settling the aborted rollout: 100 % to the latest revisions (version 1 again); the registry stays.
    rollouts.execute(rollouts.plan_promote())
    assert split(rendered_isvc(workspace)[0]) == (100, URI.format(1))
    assert registry.alias_target(CHAMPION) == "1"


def test_rollout_refuses_steps_that_do_not_fit_the_state(workspace, registry):
    rollouts = Rollouts(workspace, registry, "prod")
    with pytest.raises(RolloutError, match="no canary to abort"):
        rollouts.plan_abort()
    with pytest.raises(RolloutError, match="already serves all traffic"):
        rollouts.plan_start("1", 10)
    with pytest.raises(RolloutError, match="no version or alias"):
        rollouts.plan_start("99", 10)
    with pytest.raises(RolloutError, match="between 1 and 99"):
        rollouts.plan_start("2", 100)
    rollouts.execute(rollouts.plan_start("2", 10))
    registry.client.set_registered_model_alias(registry.name, "candidate", "1")
    rollouts.execute(rollouts.plan_abort())
    # After an abort only version 1 serves: rolling out 1 again is refused, 2 may be retried.
    with pytest.raises(RolloutError, match="already serves all traffic"):
        rollouts.plan_start("candidate", 10)
    assert rollouts.plan_start("2", 5).after.canary_percent == 5


@pytest.fixture
def cli_env(workspace: ClusterSettings, registry: Registry, monkeypatch) -> Iterator[ClusterSettings]:
    from churn_model.settings import get_settings as model_settings
    from churnops.cluster.settings import get_settings

    monkeypatch.setenv("CHURNOPS_CLUSTER_PROJECT_DIR", str(workspace.project_dir))
    monkeypatch.setenv("CHURNOPS_CLUSTER_SCHEMAS_DIR", str(workspace.resolved_schemas_dir()))
    monkeypatch.setenv("CHURNOPS_MODEL_HOME", str(registry.settings.home))
    monkeypatch.delenv("CHURNOPS_MODEL_MLFLOW_URI", raising=False)
    if workspace.tools_bin is not None:
        monkeypatch.setenv("CHURNOPS_CLUSTER_TOOLS_BIN", str(workspace.tools_bin))
    get_settings.cache_clear()
    model_settings.cache_clear()
    yield workspace
    get_settings.cache_clear()
    model_settings.cache_clear()


def test_rollout_dry_run_prints_the_manifest_diff_and_changes_nothing(cli_env, registry):
    from churnops.cli import app

    state_file = cli_env.overlays_dir / "prod" / "rollout.yaml"
    before = state_file.read_bytes()
    result = CliRunner().invoke(app, ["rollout", "2", "--canary", "10", "--overlay", "prod", "--dry-run"])
    assert result.exit_code == 0, result.output
    diff = result.stdout
    # One split and one storageUri: the transformer is collocated, so nothing of its own changes.
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert [line for line in changed if "canaryTrafficPercent" in line] == [
        "-    canaryTrafficPercent: 100",
        "+    canaryTrafficPercent: 10",
    ]
    assert f"+      storageUri: {URI.format(2)}" in diff
    assert not [line for line in changed if "transformer" in line or "STORAGE_URI" in line]
    assert "+  phase: canary" in diff
    assert state_file.read_bytes() == before
    assert registry.alias_target(CHALLENGER) is None
    assert not [p for p in state_file.parent.parent.iterdir() if p.name.startswith(".")]

    result = CliRunner().invoke(app, ["rollout", "status", "--overlay", "prod"])
    assert result.exit_code == 0
    assert "prod: stable, version 1 at 100 %" in result.stdout


def test_rollout_commands_from_the_cli(cli_env, registry):
    from churnops.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["rollout", "2", "--canary", "20", "--overlay", "staging"]).exit_code == 0
    assert read_state(cli_env.overlays_dir / "staging").canary_percent == 20
    assert registry.alias_target(CHALLENGER) == "2"
    result = runner.invoke(app, ["rollout", "3", "--overlay", "staging"])
    assert result.exit_code == 1
    assert "no version or alias '3'" in result.output
    assert runner.invoke(app, ["rollout", "abort", "--overlay", "staging"]).exit_code == 0
    assert read_state(cli_env.overlays_dir / "staging").phase == "aborted"
    assert registry.alias_target(CHALLENGER) is None


FAKE_KUBECTL = """#!/usr/bin/env bash
# Stands in for kubectl: renders with the real one, records every cluster call, answers `get` with an image.
set -euo pipefail
log={log}
if [ "$1" = kustomize ]; then exec {real} "$@"; fi
echo "$*" >> "$log/calls"
case " $* " in
  *" get "*) printf '{live}' ;;
  *" apply -k "*) dir="${{*: -1}}"; cp "$dir/kustomization.yaml" "$log/applied.yaml" 2>/dev/null || true
                  {real} kustomize "$dir" > "$log/applied-rendered.yaml"; exit {apply_exit} ;;
esac
"""


# What `kubectl get -o jsonpath=LIVE_TRANSFORMER_IMAGE` prints: the collocated transformer-container's image,
# a newline, and the pre-collocation spec.transformer image (empty once migrated).
LIVE_COLLOCATED = "ghcr.io/churnops/churnops-transformer:live1234\\n"


def fake_kubectl(tmp_path: Path, apply_exit: int = 0, live: str = LIVE_COLLOCATED) -> Path:
    real = shutil.which("kubectl")
    assert real is not None
    log = tmp_path / "kubectl-log"
    log.mkdir(exist_ok=True)
    script = tmp_path / "kubectl"
    script.write_text(FAKE_KUBECTL.format(log=log, real=real, apply_exit=apply_exit, live=live))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_rollout_apply_applies_with_kubectl_keeping_the_live_images(workspace, registry, tmp_path):
    settings = workspace.model_copy(
        update={"kubectl": str(fake_kubectl(tmp_path)), "kube_context": "prod-eu"}
    )
    rollouts = Rollouts(settings, registry, "prod")
    rollouts.execute(rollouts.plan_start("2", 10), apply=True)

    log = tmp_path / "kubectl-log"
    calls = (log / "calls").read_text().splitlines()
    assert calls[0].startswith("--context prod-eu --namespace churnops get inferenceservice churn")
    assert calls[1].startswith("--context prod-eu apply -k ")
    assert calls[2].startswith("--context prod-eu --namespace churnops wait --for=condition=Ready")
    applied = parse_documents((log / "applied-rendered.yaml").read_text())
    inference_service = find(applied, "InferenceService")
    assert split(inference_service) == (10, URI.format(2))
    assert transformer_container(inference_service)["image"].endswith(":live1234")
    assert inference_service["spec"]["predictor"]["model"]["image"].endswith(":live1234")
    assert registry.alias_target(CHALLENGER) == "2"
    assert "transformer-container" in calls[0]  # the jsonpath asks for the collocated container


def test_live_image_tag_falls_back_to_the_layout_before_collocation(workspace, registry, tmp_path):
    """A cluster still running spec.transformer: its image tag is kept by the (migrating) rollout."""
    settings = workspace.model_copy(
        update={
            "kubectl": str(fake_kubectl(tmp_path, live="\\nghcr.io/churnops/churnops-transformer:old99\\n"))
        }
    )
    assert Rollouts(settings, registry, "prod").live_image_tag() == "old99"
    (tmp_path / "none").mkdir()
    settings = workspace.model_copy(update={"kubectl": str(fake_kubectl(tmp_path / "none", live="\\n"))})
    assert Rollouts(settings, registry, "prod").live_image_tag() is None


def test_rollout_state_refuses_a_transformer_section(workspace):
    """A rollout file from before collocation would make kustomize add an empty transformer component."""
    path = workspace.overlays_dir / "prod" / "rollout.yaml"
    documents = list(yaml.safe_load_all(path.read_text()))
    documents[0]["spec"]["transformer"] = {"canaryTrafficPercent": 100}
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    with pytest.raises(StateError, match="collocated"):
        read_state(path.parent)


def test_rollout_apply_failure_restores_the_file_and_leaves_the_registry(workspace, registry, tmp_path):
    settings = workspace.model_copy(update={"kubectl": str(fake_kubectl(tmp_path, apply_exit=1))})
    rollouts = Rollouts(settings, registry, "prod")
    before = (rollouts.directory / "rollout.yaml").read_bytes()
    with pytest.raises(RolloutError, match="apply -k failed"):
        rollouts.execute(rollouts.plan_start("2", 10), apply=True)
    assert (rollouts.directory / "rollout.yaml").read_bytes() == before
    assert registry.alias_target(CHALLENGER) is None
    assert sorted(os.listdir(rollouts.directory)) == sorted(os.listdir(workspace.overlays_dir / "dev"))
