"""The authorizer's Kubernetes and Istio manifests: schema-valid, consistent with each other and the app.

The Istio resources are validated against the upstream CRDs in ../shared/schemas/ strictly (unknown fields
fail, as with kubeconform -strict). The full rendered-overlay validation lives with kustomize/ (cluster tests).
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from churn_authorizer.settings import AuthorizerSettings
from tests.support.services import REPO, unavailable

AUTHORIZER = REPO / "manifests" / "authorizer"
ISTIO = REPO / "manifests" / "istio"
MESH_SNIPPET = ISTIO / "mesh-config-extension-provider.yaml"
ISTIO_CRDS = REPO.parent / "shared" / "schemas" / "istio" / "crd-all.gen.yaml"


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def documents(directory: Path) -> list[dict[str, Any]]:
    """Every resource of the files a directory's kustomization lists."""
    listed = load(directory / "kustomization.yaml")["resources"]
    return [doc for name in listed for doc in yaml.safe_load_all((directory / name).read_text()) if doc]


def resources(directory: Path) -> dict[str, dict[str, Any]]:
    """kind → resource (the first of its kind; churn-api-keys is the first AuthorizationPolicy)."""
    found: dict[str, dict[str, Any]] = {}
    for doc in documents(directory):
        found.setdefault(doc["kind"], doc)
    return found


def strict(schema: Any) -> Any:
    """additionalProperties: false wherever properties are listed and unknown fields are not preserved."""
    if isinstance(schema, dict):
        out = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


@pytest.fixture(scope="module")
def istio_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    if not ISTIO_CRDS.is_file():
        unavailable(f"Istio CRDs not found at {ISTIO_CRDS}")
    schemas = {}
    for crd in yaml.safe_load_all(ISTIO_CRDS.read_text()):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            # Kubernetes adds these to every object; Istio's CRDs list only spec and status.
            schema["properties"].update(
                {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
            )
            schemas[(f"{group}/{version['name']}", kind)] = strict(schema)
    return schemas


def test_istio_resources_validate_strictly_against_upstream_crds(istio_schemas):
    found = documents(ISTIO)
    assert {d["kind"] for d in found} == {"AuthorizationPolicy", "EnvoyFilter"}
    for resource in found:
        schema = istio_schemas[(resource["apiVersion"], resource["kind"])]
        errors = sorted(Draft7Validator(schema).iter_errors(resource), key=lambda e: list(e.path))
        assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_strict_schema_check_catches_a_misspelt_field(istio_schemas):
    """The check above can fail: a typo in the policy is reported."""
    resource = copy.deepcopy(resources(ISTIO)["AuthorizationPolicy"])
    resource["spec"]["rules"][0]["to"][0]["operation"]["notPath"] = ["/v2/health/*"]
    schema = istio_schemas[(resource["apiVersion"], "AuthorizationPolicy")]
    assert list(Draft7Validator(schema).iter_errors(resource))


def test_authorization_policy_checks_everything_but_health_with_our_provider():
    policy = resources(ISTIO)["AuthorizationPolicy"]["spec"]
    provider = load(MESH_SNIPPET)["spec"]["meshConfig"]["extensionProviders"][0]
    assert policy["action"] == "CUSTOM"
    assert policy["provider"]["name"] == provider["name"]
    # The churn pods: the transformer is collocated with the predictor, so KServe labels them `predictor`.
    assert policy["selector"]["matchLabels"] == {
        "serving.kserve.io/inferenceservice": "churn",
        "component": "predictor",
    }
    (operation,) = [to["operation"] for rule in policy["rules"] for to in rule["to"]]
    assert "paths" not in operation  # deny by default: no allowlist of checked paths
    assert set(operation["notPaths"]) == {
        "/healthz",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/churn/ready",
    }
    assert set(operation) == {"notPaths", "notPorts"}


def test_mesh_normalizes_paths_before_policies_match():
    mesh = load(MESH_SNIPPET)["spec"]["meshConfig"]
    assert mesh["pathNormalization"] == {"normalization": "DECODE_AND_MERGE_SLASHES"}


def test_mesh_provider_matches_authorizer_service_and_settings():
    provider = load(MESH_SNIPPET)["spec"]["meshConfig"]["extensionProviders"][0]["envoyExtAuthzHttp"]
    service = resources(AUTHORIZER)["Service"]
    namespace = load(AUTHORIZER / "kustomization.yaml")["namespace"]
    defaults = AuthorizerSettings()
    assert provider["service"] == f"{service['metadata']['name']}.{namespace}.svc.cluster.local"
    assert provider["port"] in {port["port"] for port in service["spec"]["ports"]}
    assert provider["pathPrefix"] == defaults.check_prefix
    assert provider["headersToUpstreamOnAllow"] == [defaults.key_id_header]
    assert {"authorization", "x-api-key"} <= set(provider["includeRequestHeadersInCheck"])
    assert "retry-after" in provider["headersToDownstreamOnDeny"]
    assert provider["failOpen"] is False


def test_mesh_snippet_is_not_a_kustomize_resource():
    for directory in (ISTIO, AUTHORIZER):
        assert MESH_SNIPPET.name not in load(directory / "kustomization.yaml")["resources"]


def test_every_manifest_file_is_listed_in_its_kustomization():
    for directory, unlisted in ((AUTHORIZER, set()), (ISTIO, {MESH_SNIPPET.name})):
        files = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"} - unlisted
        assert files == set(load(directory / "kustomization.yaml")["resources"])


def test_envoy_filter_local_rate_limit_is_enforced_on_the_churn_pods_inbound():
    spec = resources(ISTIO)["EnvoyFilter"]["spec"]
    policy = resources(ISTIO)["AuthorizationPolicy"]["spec"]
    # The same pods as the API-key policy: those running the (collocated) transformer.
    assert spec["workloadSelector"]["labels"] == policy["selector"]["matchLabels"]
    assert spec["workloadSelector"]["labels"]["component"] == "predictor"
    (patch,) = spec["configPatches"]
    assert patch["match"]["context"] == "SIDECAR_INBOUND"
    config = patch["patch"]["value"]["typed_config"]["value"]
    assert config["token_bucket"]["max_tokens"] > 0
    for switch in ("filter_enabled", "filter_enforced"):  # Envoy's default is 0 %: nothing limited
        assert config[switch]["default_value"] == {"numerator": 100, "denominator": "HUNDRED"}


def test_deployment_is_hardened_and_mounts_the_keys_secret():
    deployment = resources(AUTHORIZER)["Deployment"]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert spec["replicas"] == 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mount = next(m for m in container["volumeMounts"] if volumes[m["name"]].get("secret"))
    assert volumes[mount["name"]]["secret"]["secretName"] == "churnops-api-keys"
    assert mount["readOnly"] is True
    assert env["CHURNOPS_AUTHORIZER_KEYS_FILE"] == f"{mount['mountPath']}/keys.json"
    assert env["CHURNOPS_AUTHORIZER_HOST"] == "0.0.0.0"


def test_no_key_or_key_hash_is_written_into_the_manifests():
    """Keys exist only with their holders; hashes only in the Secret that `churnops keys create` writes."""
    key_shape = re.compile(r"co_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
    for path in [*AUTHORIZER.glob("*.yaml"), *ISTIO.glob("*.yaml")]:
        text = path.read_text()
        assert not key_shape.search(text), path
        assert "sha256:" not in text, path
        assert "kind: Secret" not in text, path


def test_pod_disruption_budget_keeps_one_authorizer_up():
    found = resources(AUTHORIZER)
    pdb, deployment = found["PodDisruptionBudget"], found["Deployment"]
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    service_selector = found["Service"]["spec"]["selector"]
    assert service_selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("directory", [AUTHORIZER, ISTIO], ids=["authorizer", "istio"])
def test_kustomize_renders_manifests(directory):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=True
    ).stdout
    documents = [doc for doc in yaml.safe_load_all(rendered) if doc]
    assert {doc["metadata"]["namespace"] for doc in documents} == {"churnops"}
    assert len(documents) == sum(
        len([d for d in yaml.safe_load_all((directory / name).read_text()) if d])
        for name in load(directory / "kustomization.yaml")["resources"]
    )
