"""The CI deployer's RBAC (manifests/ci): valid like every manifest, and exactly what deploying an overlay
needs: each rendered kind can be applied, nothing can be deleted, read beyond the API-keys Secret, executed
into, or escalated."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from churnops.cluster.settings import ClusterSettings, ToolMissingError
from churnops.cluster.validate import parse_documents, run_checkov, validate_documents
from tests.cluster.conftest import OVERLAYS
from tests.support.services import REPO, unavailable

Documents = list[dict[str, Any]]
CI = REPO / "manifests" / "ci"
# kind -> (API group, resource) of every kind an overlay renders; a new kind fails the test until mapped.
RESOURCES = {
    "Namespace": ("", "namespaces"),
    "ConfigMap": ("", "configmaps"),
    "Secret": ("", "secrets"),
    "Service": ("", "services"),
    "ServiceAccount": ("", "serviceaccounts"),
    "PersistentVolumeClaim": ("", "persistentvolumeclaims"),
    "Deployment": ("apps", "deployments"),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
    "InferenceService": ("serving.kserve.io", "inferenceservices"),
    "AuthorizationPolicy": ("security.istio.io", "authorizationpolicies"),
    "EnvoyFilter": ("networking.istio.io", "envoyfilters"),
    "PrometheusRule": ("monitoring.coreos.com", "prometheusrules"),
    "PodMonitor": ("monitoring.coreos.com", "podmonitors"),
    "ServiceMonitor": ("monitoring.coreos.com", "servicemonitors"),
}


@pytest.fixture(scope="module")
def rbac(cluster_settings: ClusterSettings) -> Documents:
    result = subprocess.run(
        [cluster_settings.kubectl_path(), "kustomize", str(CI)], capture_output=True, text=True, check=True
    )
    return parse_documents(result.stdout)


def grants(documents: Documents, kind: str) -> list[dict[str, Any]]:
    return [rule for d in documents if d["kind"] == kind for rule in d["rules"]]


def allowed(
    rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str | None = None
) -> bool:
    return any(
        group in rule["apiGroups"]
        and resource in rule["resources"]
        and verb in rule["verbs"]
        and (not rule.get("resourceNames") or (name is not None and name in rule["resourceNames"]))
        for rule in rules
    )


def test_deployer_rbac_validates_strictly(rbac: Documents, crds, kubernetes_validate: Path):
    report = validate_documents(rbac, crds, kubernetes_validate, "1.32.0")
    assert report.ok, "\n".join(map(str, report.problems))
    assert {d["kind"] for d in rbac} == {
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
    }


@pytest.mark.slow
def test_deployer_rbac_passes_checkov(cluster_settings: ClusterSettings, tmp_path: Path, rbac: Documents):
    try:
        checkov = cluster_settings.tool("checkov")
    except ToolMissingError as error:
        unavailable(str(error))
        raise
    path = tmp_path / "deployer.yaml"
    path.write_text(yaml.safe_dump_all(rbac))
    assert run_checkov([path], checkov, cluster_settings.checkov_config) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_deployer_can_apply_every_rendered_resource(
    overlay: str, rendered: dict[str, Documents], rbac: Documents
):
    role, cluster_role = grants(rbac, "Role"), grants(rbac, "ClusterRole")
    for document in rendered[overlay]:
        kind, name = document["kind"], document["metadata"]["name"]
        assert kind in RESOURCES, f"{kind} is new: map it here and grant it in manifests/ci"
        group, resource = RESOURCES[kind]
        rules = cluster_role if kind == "Namespace" else role
        for verb in ("get", "patch"):
            assert allowed(rules, group, resource, verb, name), (kind, name, verb)
        if kind != "Namespace":
            assert allowed(rules, group, resource, "create"), (kind, name)
    # What the deploy jobs and `churnops rollout` wait on.
    for group, resource in (("serving.kserve.io", "inferenceservices"), ("apps", "deployments")):
        assert allowed(role, group, resource, "watch")
        assert allowed(role, group, resource, "list")


def test_the_deployer_can_do_nothing_more(rbac: Documents):
    role, cluster_role = grants(rbac, "Role"), grants(rbac, "ClusterRole")
    for rule in role + cluster_role:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        assert not {"delete", "deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"])
        assert not {"pods", "pods/exec", "pods/portforward", "pods/log", "roles", "rolebindings"} & set(
            rule["resources"]
        )
    assert not allowed(role, "", "secrets", "get", "churnops-s3")
    assert not allowed(role, "", "secrets", "get", "churnops-detector")
    assert not allowed(role, "", "secrets", "list")
    assert all(rule.get("resourceNames") == ["churnops"] for rule in cluster_role)
    (binding,) = [d for d in rbac if d["kind"] == "RoleBinding"]
    assert binding["metadata"]["namespace"] == "churnops"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "churnops-deployer", "namespace": "churnops"}
    ]


def test_ci_never_applies_its_own_permissions():
    listed = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())["resources"]
    assert "ci" not in listed
