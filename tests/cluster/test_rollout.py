"""Canary rollouts against a real local registry (two trained versions) and a scratch kustomize tree."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from churn_model.registry import CHALLENGER, CHAMPION, HISTORY_TAG, Registry
from churn_model.settings import ModelSettings
from churnops.cluster.images import write_pins
from churnops.cluster.render import deployable, render
from churnops.cluster.rollout import NotReadyError, RolloutError, Rollouts
from churnops.cluster.settings import ClusterSettings
from churnops.cluster.state import PREDICTOR_PIN_ENV, TRANSFORMER_PIN_ENV, StateError, read_state
from churnops.cluster.validate import parse_documents, validate_custom_resource, validate_documents
from tests.cluster.conftest import env_of, find, transformer_container

URI = "s3://churnops-models/churn-model/{}"


@pytest.fixture(scope="module")
def two_versions(trained_model, telco_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelSettings:
    """A copy of the session's registry (version 1, champion) with versions 2 and 3 registered.

    They register version 1's logged model again: real registry versions (their own numbers, their own
    aliases) without more training runs, which is all a rollout needs from the registry.
    """
    home = tmp_path_factory.mktemp("rollout-home")
    shutil.copytree(trained_model.settings.home, home, dirs_exist_ok=True)
    settings = ModelSettings(home=home, data=telco_csv)
    with mlflow_uris_kept():
        registry = Registry(settings)
        first = registry.client.get_model_version(registry.name, "1")
        assert registry.register(first.source, first.run_id) == "2"
        assert registry.register(first.source, first.run_id) == "3"
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
    pin = read_state(rollouts.directory).artefact_sha256
    expected["spec"]["predictor"]["model"]["env"].append({"name": PREDICTOR_PIN_ENV, "value": pin})
    transformer_container(expected)["env"].append({"name": TRANSFORMER_PIN_ENV, "value": pin})
    assert after == expected
    # Both halves of the new revision read the one artefact KServe downloads for it, pinned to one digest.
    assert transformer_container(after)["image"] == transformer_container(before)["image"]


def test_rollout_pins_the_versions_manifest_digest_into_both_containers(
    workspace, registry, trained_model, crds, kubernetes_validate
):
    """CHURNOPS_{TRANSFORMER,PREDICTOR}_ARTEFACT_SHA256 = sha256 of the version's manifest.json, and the
    rendered overlay still validates strictly."""
    rollouts = Rollouts(workspace, registry, "prod")
    rollouts.execute(rollouts.plan_start("2", 10))
    digest = hashlib.sha256((trained_model.artefact / "manifest.json").read_bytes()).hexdigest()
    inference_service, documents = rendered_isvc(workspace)
    assert env_of(transformer_container(inference_service))[TRANSFORMER_PIN_ENV] == digest
    assert env_of(inference_service["spec"]["predictor"]["model"])[PREDICTOR_PIN_ENV] == digest
    # The other variables are all still there (a strategic merge of a CRD list would have replaced them).
    assert env_of(inference_service["spec"]["predictor"]["model"])["MLSERVER_GRPC_PORT"] == "8081"
    assert env_of(transformer_container(inference_service))["CHURNOPS_TRANSFORMER_MODEL_DIR"] == "/mnt/models"
    assert find(documents, "ConfigMap", "churn-rollout")["data"]["artefact-sha256"] == digest
    report = validate_documents(documents, crds, kubernetes_validate, "1.32.0")
    assert report.ok, "\n".join(map(str, report.problems))

    # A hand edit of either file is refused: the pin must be the digest rollout.yaml records.
    pin_file = rollouts.directory / "artefact-pin.yaml"
    pin_file.write_text(pin_file.read_text().replace(digest, "0" * 64))
    with pytest.raises(StateError, match="does not pin the digest"):
        rollouts.status()


def test_rollout_pin_pins_the_serving_version_of_an_unpinned_environment(workspace, registry, trained_model):
    """The committed overlays predate the pin, and the predictor refuses to start without one:
    `churnops rollout pin` writes the stable version's digest into both containers, nothing else."""
    rollouts = Rollouts(workspace, registry, "prod")
    assert rollouts.status().artefact_sha256 is None
    rollouts.execute(rollouts.plan_pin())
    digest = hashlib.sha256((trained_model.artefact / "manifest.json").read_bytes()).hexdigest()
    state = rollouts.status()
    assert (state.phase, state.model_version, state.canary_percent, state.artefact_sha256) == (
        "stable",
        "1",
        100,
        digest,
    )
    inference_service, _ = rendered_isvc(workspace)
    assert env_of(inference_service["spec"]["predictor"]["model"])[PREDICTOR_PIN_ENV] == digest
    assert env_of(transformer_container(inference_service))[TRANSFORMER_PIN_ENV] == digest
    with pytest.raises(RolloutError, match="already pinned"):
        rollouts.plan_pin()
    rollouts.execute(rollouts.plan_start("2", 10))
    with pytest.raises(RolloutError, match="pin a stable environment only"):
        rollouts.plan_pin()


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


def test_rollout_abort_keeps_the_spec_and_routes_nothing_to_the_canary(workspace, registry):
    """KServe's documented rollback: canaryTrafficPercent 0, the spec untouched, so no new revision."""
    rollouts = Rollouts(workspace, registry, "prod")
    rollouts.execute(rollouts.plan_start("2", 10))
    canary, _ = rendered_isvc(workspace)
    rollouts.execute(rollouts.plan_abort())

    inference_service, documents = rendered_isvc(workspace)
    assert split(inference_service) == (0, URI.format(2))
    expected = json.loads(json.dumps(canary))
    expected["spec"]["predictor"]["canaryTrafficPercent"] = 0
    assert inference_service == expected  # nothing but the percentage changed
    assert detector_reference(documents) == URI.format(1)
    assert read_state(rollouts.directory).phase == "aborted"
    assert registry.alias_target(CHALLENGER) is None
    assert registry.alias_target(CHAMPION) == "1"
    assert registry.history() == ["1"]
    with pytest.raises(RolloutError, match="aborted at 0 %"):
        rollouts.plan_promote()

    # Settling retires the failed revision: the spec back on version 1, staged at 0 % until its new
    # revision is ready (Knative routes `latestRevision` to the latest READY one: the failed one until then).
    plan = rollouts.plan_settle()
    assert [(s.phase, s.canary_percent, s.storage_uri) for s in plan.steps] == [
        ("staged", 0, URI.format(1)),
        ("stable", 100, URI.format(1)),
    ]
    rollouts.execute(plan)  # without --apply: the staged half only
    assert split(rendered_isvc(workspace)[0]) == (0, URI.format(1))
    rollouts.execute(rollouts.plan_settle())
    assert split(rendered_isvc(workspace)[0]) == (100, URI.format(1))
    assert registry.alias_target(CHAMPION) == "1"


def test_after_an_abort_a_new_version_is_staged_before_it_gets_traffic(workspace, registry):
    rollouts = Rollouts(workspace, registry, "prod")
    rollouts.execute(rollouts.plan_start("2", 10))
    rollouts.execute(rollouts.plan_abort())
    plan = rollouts.plan_start("3", 20)
    assert [(s.phase, s.model_version, s.canary_percent) for s in plan.steps] == [
        ("staged", "3", 0),
        ("canary", "3", 20),
    ]
    # Retrying the aborted version itself moves only the split: its revision exists and is ready.
    assert [(s.phase, s.canary_percent) for s in rollouts.plan_start("2", 5).steps] == [("canary", 5)]


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
    with pytest.raises(RolloutError, match="already in canary"):
        rollouts.plan_start("3", 10)
    registry.client.set_registered_model_alias(registry.name, "candidate", "1")
    rollouts.execute(rollouts.plan_abort())
    # After an abort only version 1 serves: rolling it out again is refused (settle does that).
    with pytest.raises(RolloutError, match="rollout settle"):
        rollouts.plan_start("candidate", 10)
    with pytest.raises(RolloutError, match="no canary to abort"):
        rollouts.plan_abort()


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
    result = runner.invoke(app, ["rollout", "9", "--overlay", "staging"])
    assert result.exit_code == 1
    assert "no version or alias '9'" in result.output
    assert runner.invoke(app, ["rollout", "abort", "--overlay", "staging"]).exit_code == 0
    assert read_state(cli_env.overlays_dir / "staging").phase == "aborted"
    assert registry.alias_target(CHALLENGER) is None


SIM = Path(__file__).with_name("kserve_sim.py")
LIVE = "ghcr.io/churnops/churnops-{}@sha256:" + "a" * 64


def simulated_cluster(
    settings: ClusterSettings, tmp_path: Path, **config: Any
) -> tuple[ClusterSettings, Path]:
    """Settings whose kubectl is tests/cluster/kserve_sim.py (KServe's controller, as its source reads),
    with the overlay already deployed once (live images by digest) and reconciled."""
    real = shutil.which("kubectl")
    assert real is not None
    log = tmp_path / "cluster"
    log.mkdir()
    script = tmp_path / "kubectl"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} {SIM} {log} {real} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    simulated = settings.model_copy(
        update={"kubectl": str(script), "ready_timeout_s": 5.0, "ready_poll_interval_s": 0.05}
    )
    images = {f"ghcr.io/churnops/churnops-{c}": "sha256:" + "a" * 64 for c in ("transformer", "predictor")}
    with deployable(simulated, "prod", images=images) as directory:
        subprocess.run([str(script), "apply", "-k", str(directory)], check=True, capture_output=True)
    (log / "state.json").write_text(
        json.dumps({**json.loads((log / "state.json").read_text()), "stale_reads": 0, "config": config})
    )
    subprocess.run(
        [str(script), "get", "inferenceservice", "churn", "--output", "json"], check=True, capture_output=True
    )
    (log / "calls").unlink()
    return simulated, log


def cluster_state(log: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((log / "state.json").read_text())
    return state


def test_rollout_apply_waits_for_kserve_to_serve_the_new_revision(workspace, registry, tmp_path):
    """--apply waits through the stale status (Ready True from before the apply, kserve/kserve#6081) until
    KServe reports the split on a revision running the new spec; the live images are kept."""
    settings, log = simulated_cluster(
        workspace.model_copy(update={"kube_context": "prod-eu"}), tmp_path, stale_reads=3
    )
    rollouts = Rollouts(settings, registry, "prod")
    execution = rollouts.execute(rollouts.plan_start("2", 10), apply=True)

    calls = (log / "calls").read_text().splitlines()
    assert calls[0] == "--context prod-eu --namespace churnops get inferenceservice churn --output json"
    assert calls[1].startswith(
        "--context prod-eu --namespace churnops get inferenceservice churn --output jsonpath="
    )
    assert calls[2].startswith("--context prod-eu apply -k ")
    assert not [c for c in calls if "wait" in c.split()]
    gets = [c for c in calls[3:] if "inferenceservice churn --output json" in c]
    assert len(gets) >= 4  # three stale answers, then the reconciled one
    status = cluster_state(log)["status"]
    assert status["latestCreatedRevision"] == status["latestReadyRevision"] == "churn-predictor-00002"
    assert status["traffic"] == [
        {"tag": "latest", "latestRevision": True, "percent": 10, "revisionName": "churn-predictor-00002"},
        {"tag": "prev", "latestRevision": False, "percent": 90, "revisionName": "churn-predictor-00001"},
    ]
    revision = cluster_state(log)["revisions"]["churn-predictor-00002"]["spec"]
    images = {c["name"]: c["image"] for c in revision["containers"]}
    assert images == {
        "kserve-container": LIVE.format("predictor"),
        "transformer-container": LIVE.format("transformer"),
    }
    assert revision["initContainers"][0]["args"][0] == URI.format(2)
    assert registry.alias_target(CHALLENGER) == "2"
    assert len(execution.applied) == 1
    assert execution.applied[0][2] > 0  # it did wait


def test_rollback_creates_no_revision_and_never_waits_for_one(workspace, registry, tmp_path):
    """A canary whose revision never becomes ready: the start times out (aliases unmoved), and the abort,
    a route change only, is live at the first reconciled status."""
    settings, log = simulated_cluster(workspace, tmp_path, stale_reads=1)
    state = cluster_state(log)
    state["never_ready"] = [URI.format(2)]
    (log / "state.json").write_text(json.dumps(state))
    rollouts = Rollouts(settings, registry, "prod")
    with pytest.raises(NotReadyError, match="churn-predictor-00002 is not ready"):
        rollouts.execute(rollouts.plan_start("2", 10), apply=True)
    assert registry.alias_target(CHALLENGER) is None
    assert read_state(rollouts.directory).phase == "canary"  # applied, so recorded

    execution = rollouts.execute(rollouts.plan_abort(), apply=True)
    state = cluster_state(log)
    assert sorted(state["revisions"]) == ["churn-predictor-00001", "churn-predictor-00002"]
    assert state["status"]["traffic"][0]["percent"] == 0
    assert state["status"]["traffic"][1] == {
        "tag": "prev", "latestRevision": False, "percent": 100, "revisionName": "churn-predictor-00001"
    }  # fmt: skip
    assert execution.seconds < 5


def test_after_an_abort_the_failed_revision_never_gets_traffic_again(workspace, registry, tmp_path):
    """Knative routes `latestRevision` to the latest READY revision: a new version applied at 10 % straight
    after an abort would send 10 % to the aborted one while its own revision starts. Staged first, it
    never does."""
    settings, log = simulated_cluster(workspace, tmp_path, stale_reads=1)
    rollouts = Rollouts(settings, registry, "prod")
    rollouts.execute(rollouts.plan_start("2", 10), apply=True)
    rollouts.execute(rollouts.plan_abort(), apply=True)
    aborted = cluster_state(log)["status"]["latestReadyRevision"]
    (log / "traffic-log").unlink()

    rollouts.execute(rollouts.plan_start("3", 20), apply=True)
    blocks = [json.loads(line) for line in (log / "traffic-log").read_text().splitlines()]
    assert blocks
    assert all(t["percent"] == 0 for block in blocks for t in block if t["revisionName"] == aborted)
    assert blocks[-1][0]["percent"] == 20
    assert blocks[-1][0]["revisionName"] not in (aborted, "churn-predictor-00001")
    assert read_state(rollouts.directory).phase == "canary"


def test_rollout_refuses_a_cluster_whose_split_differs_from_the_file(workspace, registry, tmp_path):
    """A code canary from CI in flight: a model rollout made for the recorded split would fight it."""
    settings, log = simulated_cluster(workspace, tmp_path)
    state = cluster_state(log)
    state["status"]["traffic"][0]["percent"] = 10
    (log / "state.json").write_text(json.dumps(state))
    rollouts = Rollouts(settings, registry, "prod")
    plan = rollouts.plan_start("2", 10)
    state["desired"]["spec"]["predictor"]["canaryTrafficPercent"] = 10
    (log / "state.json").write_text(json.dumps(state))
    with pytest.raises(RolloutError, match="finish or roll back the change in flight"):
        rollouts.execute(plan, apply=True)
    assert read_state(rollouts.directory) == plan.before


def test_live_images_keeps_digests_and_the_layout_before_collocation(workspace, registry, tmp_path):
    settings, _ = simulated_cluster(workspace, tmp_path)
    assert Rollouts(settings, registry, "prod").live_images() == {
        "ghcr.io/churnops/churnops-transformer": "sha256:" + "a" * 64,
        "ghcr.io/churnops/churnops-predictor": "sha256:" + "a" * 64,
    }


def test_rollout_state_refuses_a_transformer_section(workspace):
    """A rollout file from before collocation would make kustomize add an empty transformer component."""
    path = workspace.overlays_dir / "prod" / "rollout.yaml"
    documents = list(yaml.safe_load_all(path.read_text()))
    documents[0]["spec"]["transformer"] = {"canaryTrafficPercent": 100}
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    with pytest.raises(StateError, match="collocated"):
        read_state(path.parent)


def test_rollout_apply_failure_restores_the_file_and_leaves_the_registry(workspace, registry, tmp_path):
    settings, _ = simulated_cluster(workspace, tmp_path, apply_exit=1)
    rollouts = Rollouts(settings, registry, "prod")
    before = (rollouts.directory / "rollout.yaml").read_bytes()
    with pytest.raises(RolloutError, match="apply -k failed"):
        rollouts.execute(rollouts.plan_start("2", 10), apply=True)
    assert (rollouts.directory / "rollout.yaml").read_bytes() == before
    assert registry.alias_target(CHALLENGER) is None
    assert sorted(os.listdir(rollouts.directory)) == sorted(os.listdir(workspace.overlays_dir / "dev"))


def dry_run_sections(output: str) -> dict[str, list[str]]:
    """`--auto --dry-run` output: the changed lines (+/-) of each `## phase percent` section."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in output.splitlines():
        if line.startswith("## "):
            current = line[3:].split(" (")[0]
            sections[current] = []
        elif current and line[:1] in ("+", "-") and line[:3] not in ("+++", "---"):
            sections[current].append(line)
    return sections


def changed_fields(lines: list[str]) -> set[str]:
    return {line[1:].strip().split(":")[0] for line in lines}


def test_auto_dry_run_prints_what_kserves_canary_documentation_prescribes(cli_env, registry):
    """KServe's canary rollout (website: "Canary Rollout Strategy"): the first step sets the new storageUri
    with canaryTrafficPercent; each further step changes canaryTrafficPercent only; promotion sets 100; the
    rollback sets 0 and nothing else (the spec is kept, so KServe creates no revision)."""
    from churnops.cli import app

    state_file = cli_env.overlays_dir / "prod" / "rollout.yaml"
    before = state_file.read_bytes()
    result = CliRunner().invoke(app, ["rollout", "2", "--auto", "--dry-run", "--overlay", "prod"])
    assert result.exit_code == 0, result.output
    output = result.stdout
    assert "plan: 10 % -> 25 % -> 50 % -> 100 %" in output
    sections = dry_run_sections(output)
    assert list(sections) == ["canary 10 %", "canary 25 %", "canary 50 %", "stable 100 %", "aborted 0 %"]

    first = sections["canary 10 %"]
    assert "+    canaryTrafficPercent: 10" in first
    assert f"+      storageUri: {URI.format(2)}" in first
    assert sum("_ARTEFACT_SHA256" in line for line in first) == 2  # the pin, into both containers
    for step in ("canary 25 %", "canary 50 %"):
        isvc = [line for line in sections[step] if "canaryTrafficPercent" in line or "storageUri" in line]
        assert changed_fields(sections[step]) == {"canaryTrafficPercent", "canary-percent"}, sections[step]
        assert len(isvc) == 2
    promoted = sections["stable 100 %"]
    assert "+    canaryTrafficPercent: 100" in promoted
    assert changed_fields(promoted) == {
        "canaryTrafficPercent",
        "canary-percent",
        "phase",
        "stable-version",
        "stable-storage-uri",
        "stable-artefact-sha256",
        "- s3",  # the detector's reference moves to the promoted version (its init container's argument)
    }
    rollback = sections["aborted 0 %"]
    assert changed_fields(rollback) == {"canaryTrafficPercent", "canary-percent", "phase"}
    assert "+    canaryTrafficPercent: 0" in rollback
    assert "gate: 0 % on the latest revision (route only: the canary revision need not be ready)" in output
    assert state_file.read_bytes() == before
    assert registry.alias_target(CHALLENGER) is None


def test_rollout_wait_is_the_gate_ci_runs(cli_env, registry, tmp_path, monkeypatch):
    """`churnops rollout wait`: passes on what KServe reports for the rendered overlay, and fails (exit 1,
    naming what is missing) on a split the cluster does not have."""
    from churnops.cli import app
    from churnops.cluster.settings import get_settings

    settings, log = simulated_cluster(cli_env, tmp_path, stale_reads=2)
    monkeypatch.setenv("CHURNOPS_CLUSTER_KUBECTL", settings.kubectl)
    monkeypatch.setenv("CHURNOPS_CLUSTER_READY_TIMEOUT_S", "2")
    monkeypatch.setenv("CHURNOPS_CLUSTER_READY_POLL_INTERVAL_S", "0.05")
    get_settings.cache_clear()
    images = ["--image-tag", "a" * 40]
    # The cluster runs the live digests, not this commit's tag: the revision is not ours, the gate waits.
    result = CliRunner().invoke(app, ["rollout", "wait", "--overlay", "prod", *images])
    assert result.exit_code == 1
    assert "transformer image is 'ghcr.io/churnops/churnops-transformer@sha256:" in result.output
    result = CliRunner().invoke(app, ["rollout", "wait", "--overlay", "prod", "--code-canary", "10"])
    assert result.exit_code == 1
    assert "latest revision has 100 % of traffic, not 10 %" in result.output
    # Once the overlay pins what is live (CI's deploy record), the gate passes on it:
    state = cluster_state(log)
    live = {c["name"]: c["image"] for c in state["desired"]["spec"]["predictor"]["containers"]}
    assert live["transformer-container"] == LIVE.format("transformer")
    write_pins(
        cli_env.overlays_dir / "prod",
        {f"ghcr.io/churnops/churnops-{c}": "sha256:" + "a" * 64 for c in ("transformer", "predictor")},
    )
    result = CliRunner().invoke(app, ["rollout", "wait", "--overlay", "prod"])
    assert result.exit_code == 0, result.output
    assert "prod: serving 100 % to the latest revision" in result.output
    assert not [c for c in (log / "calls").read_text().splitlines() if "wait" in c.split()]
