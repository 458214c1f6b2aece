"""The detector as every overlay renders it: the spill bound fits its volume (past an emptyDir's sizeLimit
the kubelet evicts the pod), prod keeps the state on a claim that outlives the pod, the rolled-out
version gets its own metric labels, and shutdown has the time it needs."""

from __future__ import annotations

from typing import Any

import pytest

from churnops.cluster.render import render
from churnops.cluster.settings import ClusterSettings, ToolMissingError
from churnops.cluster.validate import parse_documents
from tests.support.services import REPO, unavailable

pytestmark = pytest.mark.integration
OVERLAYS = ("dev", "staging", "prod")
UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    settings = ClusterSettings(project_dir=REPO)
    try:
        settings.kubectl_path()
    except ToolMissingError as error:
        unavailable(str(error))
    return {overlay: parse_documents(render(settings, overlay)) for overlay in OVERLAYS}


def one(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def quantity(text: str) -> int:
    for suffix, factor in UNITS.items():
        if text.endswith(suffix):
            return int(text.removesuffix(suffix)) * factor
    return int(text)


def detector_env(deployment: dict[str, Any]) -> dict[str, str]:
    (container,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "detector"
    ]
    return {item["name"]: item.get("value", "") for item in container["env"]}


def state_volume_bytes(documents: list[dict[str, Any]], deployment: dict[str, Any]) -> int:
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "state"]
    if "persistentVolumeClaim" in volume:
        claim = one(documents, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
        return quantity(claim["spec"]["resources"]["requests"]["storage"])
    return quantity(volume["emptyDir"]["sizeLimit"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_spill_bound_stays_below_the_state_volume(rendered, overlay):
    documents = rendered[overlay]
    deployment = one(documents, "Deployment", "churn-detector")
    spill_max = int(detector_env(deployment)["CHURNOPS_DETECTOR_STORE_SPILL_MAX_BYTES"])
    assert spill_max <= 0.9 * state_volume_bytes(documents, deployment)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rolled_out_version_is_a_known_metric_label_and_shutdown_has_time(rendered, overlay):
    documents = rendered[overlay]
    deployment = one(documents, "Deployment", "churn-detector")
    rollout = one(documents, "ConfigMap", "churn-rollout")["data"]
    assert detector_env(deployment)["CHURNOPS_DETECTOR_KNOWN_VERSIONS"] == rollout["model-version"]
    # uvicorn's graceful shutdown (20 s) plus the writer's last flush (10 s), before SIGKILL.
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30


def test_prod_keeps_the_spill_on_a_claim_one_pod_at_a_time(rendered):
    documents = rendered["prod"]
    deployment = one(documents, "Deployment", "churn-detector")
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "state"]
    assert volume == {"name": "state", "persistentVolumeClaim": {"claimName": "churn-detector-state"}}
    claim = one(documents, "PersistentVolumeClaim", "churn-detector-state")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["metadata"]["namespace"] == "churnops"
    # A ReadWriteOnce claim cannot be attached to an old and a new pod on two nodes: no surge.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    for overlay in ("dev", "staging"):
        assert not [d for d in rendered[overlay] if d["kind"] == "PersistentVolumeClaim"]
