"""The rendered overlays: strictly valid, wired together as designed, and checked by checkov."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from churnops.cluster.images import ImageRef
from churnops.cluster.render import IMAGES, kustomize, render, write_wrapper
from churnops.cluster.schemas import CrdSchemas
from churnops.cluster.settings import ClusterSettings, ToolMissingError
from churnops.cluster.state import RolloutState, read_state, render_pin, render_state, write_state
from churnops.cluster.validate import (
    check_overlays,
    parse_documents,
    run_checkov,
    validate_custom_resource,
    validate_documents,
)
from tests.cluster.conftest import OVERLAYS, env_of, find, transformer_container
from tests.support.services import unavailable

Documents = list[dict[str, Any]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_and_validates_strictly(
    overlay: str, rendered: dict[str, Documents], crds: CrdSchemas, kubernetes_validate: Path
):
    documents = rendered[overlay]
    report = validate_documents(documents, crds, kubernetes_validate, "1.32.0")
    assert report.ok, "\n".join(map(str, report.problems))
    kinds = {document["kind"] for document in documents}
    assert {"InferenceService", "Deployment", "Service", "PodDisruptionBudget", "ConfigMap"} <= kinds
    assert {"AuthorizationPolicy", "EnvoyFilter"} <= kinds  # manifests/istio, from the authorizer side
    assert "PrometheusRule" in kinds  # monitoring/, included by the base
    assert kinds & {"ServiceMonitor", "PodMonitor"}
    assert all(d["metadata"].get("namespace") == "churnops" for d in documents if d["kind"] != "Namespace")


@pytest.mark.parametrize(
    ("path", "misspelt"),
    [
        (("spec", "predictor"), ("canaryTrafficPercent", "canaryTrafficPercnt")),
        (("spec", "predictor"), ("minReplicas", "minReplica")),
        (("spec", "predictor"), ("scaleTarget", "scaleTraget")),
        (("spec", "predictor", "logger"), ("mode", "mdoe")),
        (("spec", "predictor", "model"), ("storageUri", "storageURI")),
        (("spec", "predictor", "containers", 0), ("startupProbe", "startupProbes")),
        (("metadata",), ("annotations", "annotation")),
    ],
)
def test_misspelt_inferenceservice_field_fails_validation(
    rendered: dict[str, Documents], crds: CrdSchemas, path: tuple[str | int, ...], misspelt: tuple[str, str]
):
    inference_service = find(rendered["prod"], "InferenceService")
    assert validate_custom_resource(inference_service, crds) == []
    broken = copy.deepcopy(inference_service)
    node: Any = broken
    for key in path:
        node = node[key]
    right, wrong = misspelt
    node[wrong] = node.pop(right)
    problems = validate_custom_resource(broken, crds)
    assert problems, f"{'.'.join(map(str, path))}.{wrong} was accepted"
    assert any(wrong in problem.message for problem in problems), problems


def test_wrong_types_and_values_in_the_inferenceservice_fail(
    rendered: dict[str, Documents], crds: CrdSchemas
):
    inference_service = find(rendered["prod"], "InferenceService")
    for mutate in (
        lambda d: d["spec"]["predictor"].__setitem__("scaleMetric", "cpus"),
        lambda d: d["spec"]["predictor"].__setitem__("minReplicas", "2"),
        lambda d: d["spec"]["predictor"]["logger"].__setitem__("mode", "everything"),
        lambda d: d["spec"]["predictor"]["containers"][0]["ports"][0].__setitem__("containerPort", "8080"),
    ):
        broken = copy.deepcopy(inference_service)
        mutate(broken)
        assert validate_custom_resource(broken, crds)


def test_misspelt_core_fields_fail_kubernetes_validate(
    rendered: dict[str, Documents], crds: CrdSchemas, kubernetes_validate: Path
):
    deployment = copy.deepcopy(find(rendered["prod"], "Deployment", "churn-detector"))
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    service = copy.deepcopy(find(rendered["prod"], "Service", "churn-detector"))
    service["spec"]["selectr"] = service["spec"].pop("selector")
    report = validate_documents([deployment, service], crds, kubernetes_validate, "1.32.0")
    messages = " ".join(problem.message for problem in report.problems)
    assert "'replica' was unexpected" in messages
    assert "'selectr' was unexpected" in messages


def test_a_kind_without_a_published_schema_is_a_problem(crds: CrdSchemas, kubernetes_validate: Path):
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}}
    report = validate_documents([unknown], crds, kubernetes_validate, "1.32.0")
    assert [problem.check for problem in report.problems] == ["crd"]
    assert "no published schema" in report.problems[0].message


def args_of(container: dict[str, Any]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_transformer_is_collocated_with_the_predictor_on_one_artefact(
    overlay: str, rendered: dict[str, Documents]
):
    """KServe's collocation: no transformer component, `transformer-container` in the predictor's pods.

    One revision then pairs one model version of both halves, and the predictor's split moves them together.
    The storage initializer mounts the model volume at /mnt/models into kserve-container and into a container
    named exactly `transformer-container`; KServe's webhook refuses a STORAGE_URI in that container.
    """
    inference_service = find(rendered[overlay], "InferenceService", "churn")
    spec = inference_service["spec"]
    assert set(spec) == {"predictor"}
    predictor = spec["predictor"]
    assert [c["name"] for c in predictor["containers"]] == ["transformer-container"]
    container = transformer_container(inference_service)
    assert ImageRef.parse(container["image"]).name == "ghcr.io/churnops/churnops-transformer"
    env = env_of(container)
    assert env["CHURNOPS_TRANSFORMER_MODEL_DIR"] == "/mnt/models"
    assert "STORAGE_URI" not in env
    assert args_of(container)["model_name"] == "churn"

    model = predictor["model"]
    assert model["storageUri"].startswith("s3://churnops-models/churn-model/")
    assert model["modelFormat"]["name"] == "sklearn"
    assert (model["runtime"], model["protocolVersion"]) == ("kserve-mlserver", "v2")
    assert ImageRef.parse(model["image"]).name == "ghcr.io/churnops/churnops-predictor"
    # One storageUri in the whole InferenceService: nothing else can name another version.
    assert json.dumps(inference_service).count("s3://churnops-models/") == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_inside_the_pod_fit_together(overlay: str, rendered: dict[str, Documents]):
    """Transformer on the serving port, MLServer off it, the hop on MLServer's gRPC port over loopback."""
    documents = rendered[overlay]
    inference_service = find(documents, "InferenceService", "churn")
    model = inference_service["spec"]["predictor"]["model"]
    transformer = transformer_container(inference_service)
    mlserver = {
        k: int(v or 0) for k, v in env_of(model).items() if k.startswith("MLSERVER_") and k.endswith("_PORT")
    }
    args = args_of(transformer)

    # Knative: exactly one declared port in the pod, the transformer's, and no probes on the other container.
    (port,) = transformer["ports"]
    assert port["containerPort"] == int(args["http_port"]) == 8080
    assert port.get("name") in (None, "http1")
    assert "ports" not in model
    assert not {"readinessProbe", "livenessProbe", "startupProbe"} & set(model)
    # The runtime's MLSERVER_HTTP_PORT=8080 would collide with the transformer: overridden by the model.
    assert set(mlserver) == {"MLSERVER_HTTP_PORT", "MLSERVER_GRPC_PORT", "MLSERVER_METRICS_PORT"}
    assert len({port["containerPort"], *mlserver.values()}) == 4
    assert args["enable_grpc"] == "false"  # 8081 stays MLServer's
    assert args["predictor_protocol"] == "grpc-v2"
    assert args["predictor_host"] == f"127.0.0.1:{mlserver['MLSERVER_GRPC_PORT']}"

    # Probes on the serving port: readiness needs MLServer at the artefact's version, startup outlasts the
    # transformer's own wait for it, so the process exits with its reason before the kubelet restarts it.
    probes = {name: transformer[name] for name in ("readinessProbe", "livenessProbe", "startupProbe")}
    assert all(probe["httpGet"]["port"] == port["containerPort"] for probe in probes.values())
    assert probes["readinessProbe"]["httpGet"]["path"] == "/v2/models/churn/ready"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = probes["startupProbe"]
    allowed = startup.get("initialDelaySeconds", 0) + startup["periodSeconds"] * startup["failureThreshold"]
    assert float(env_of(transformer)["CHURNOPS_TRANSFORMER_STARTUP_TIMEOUT_S"] or 0) < allowed <= 150

    # Prometheus: the transformer's declared port by number, MLServer's undeclared metrics port by relabelling.
    monitors = {d["metadata"]["name"]: d for d in documents if d["kind"] == "PodMonitor"}
    (transformer_endpoint,) = monitors["churn-transformer"]["spec"]["podMetricsEndpoints"]
    assert transformer_endpoint["portNumber"] == port["containerPort"]
    (predictor_endpoint,) = monitors["churn-predictor"]["spec"]["podMetricsEndpoints"]
    assert not {"port", "portNumber", "targetPort"} & set(predictor_endpoint)
    relabelings = predictor_endpoint["relabelings"]
    keep = {
        "sourceLabels": ["__meta_kubernetes_pod_container_name"],
        "regex": "kserve-container",
        "action": "keep",
    }
    assert keep in relabelings
    (address,) = [r for r in relabelings if r.get("targetLabel") == "__address__"]
    # MLServer listens on loopback only: the Istio agent (15020) scrapes the port the pod annotation names.
    assert env_of(model)["MLSERVER_HOST"] == "127.0.0.1"
    assert address["replacement"].endswith(":15020")
    annotations = inference_service["spec"]["predictor"]["annotations"]
    assert annotations["prometheus.io/port"] == str(mlserver["MLSERVER_METRICS_PORT"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_payload_logger_on_the_collocated_pod_posts_to_the_detector(
    overlay: str, rendered: dict[str, Documents]
):
    """KServe's agent proxies the pod's serving port, the transformer's (customers in, answers out)."""
    documents = rendered[overlay]
    predictor = find(documents, "InferenceService", "churn")["spec"]["predictor"]
    declaring = [c["name"] for c in [predictor["model"], *predictor["containers"]] if c.get("ports")]
    assert declaring == ["transformer-container"]
    logger = urlparse(predictor["logger"]["url"])
    assert predictor["logger"]["mode"] == "all"
    detector = find(documents, "Service", "churn-detector")
    assert logger.hostname == f"churn-detector.{detector['metadata']['namespace']}.svc.cluster.local"
    assert logger.port in (None, 80)
    assert 80 in [port["port"] for port in detector["spec"]["ports"]]
    assert logger.path == "/events"
    deployment = find(documents, "Deployment", "churn-detector")
    assert (
        detector["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_aimed_at_the_churn_pods_selects_the_predictor_component(
    overlay: str, rendered: dict[str, Documents]
):
    """PDB, API-key policy, rate limit and both PodMonitors all select the collocated pods."""
    churn_pods = {"serving.kserve.io/inferenceservice": "churn", "component": "predictor"}
    documents = rendered[overlay]
    selectors = {
        f"{d['kind']}/{d['metadata']['name']}": (
            d["spec"]["workloadSelector"]["labels"]
            if d["kind"] == "EnvoyFilter"
            else d["spec"]["selector"]["matchLabels"]
        )
        for d in documents
        if d["kind"] in {"PodDisruptionBudget", "AuthorizationPolicy", "EnvoyFilter", "PodMonitor"}
        and d["metadata"]["name"].startswith("churn-")
    }
    assert set(selectors) == {
        "PodDisruptionBudget/churn-predictor",
        "AuthorizationPolicy/churn-api-keys",
        "EnvoyFilter/churn-local-ratelimit",
        "PodMonitor/churn-transformer",
        "PodMonitor/churn-predictor",
    }
    assert all(labels == churn_pods for labels in selectors.values()), selectors


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serverless_autoscaling_on_concurrency_at_70_percent(overlay: str, rendered: dict[str, Documents]):
    inference_service = find(rendered[overlay], "InferenceService")
    annotations = inference_service["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Knative"
    assert annotations["autoscaling.knative.dev/class"] == "kpa.autoscaling.knative.dev"
    assert annotations["autoscaling.knative.dev/target-utilization-percentage"] == "70"
    assert "autoscaling.knative.dev/scale-down-delay" in annotations
    expected = (1, 2) if overlay == "dev" else (2, 10)
    # One component scales: the transformer lives in the predictor's pods.
    assert "transformer" not in inference_service["spec"]
    spec = inference_service["spec"]["predictor"]
    assert spec["scaleMetric"] == "concurrency"
    assert spec["scaleTarget"] > 0
    assert (spec["minReplicas"], spec["maxReplicas"]) == expected


def _containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    if document["kind"] == "InferenceService":
        spec = document["spec"]
        return [spec["predictor"]["model"], *spec["predictor"]["containers"]]
    pod = document["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_non_root_read_only_and_without_capabilities(
    overlay: str, rendered: dict[str, Documents]
):
    workloads = [d for d in rendered[overlay] if d["kind"] in {"InferenceService", "Deployment"}]
    assert len(workloads) >= 3
    for workload in workloads:
        pod_context = {} if workload["kind"] == "InferenceService" else workload["spec"]["template"]["spec"]
        for container in _containers(workload):
            context = {**pod_context.get("securityContext", {}), **container.get("securityContext", {})}
            where = f"{workload['metadata']['name']}/{container.get('name', 'model')}"
            assert context.get("runAsNonRoot") is True, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert "add" not in context.get("capabilities", {}), where
            assert container["resources"]["limits"], where
            assert container["resources"]["requests"], where


def test_one_pod_disruption_budget_covers_the_collocated_churn_pods(rendered: dict[str, Documents]):
    budgets = [d for d in rendered["prod"] if d["kind"] == "PodDisruptionBudget"]
    churn = [
        d for d in budgets if d["spec"]["selector"]["matchLabels"].get("serving.kserve.io/inferenceservice")
    ]
    assert [d["metadata"]["name"] for d in churn] == ["churn-predictor"]
    assert churn[0]["spec"]["selector"]["matchLabels"] == {
        "serving.kserve.io/inferenceservice": "churn",
        "component": "predictor",
    }
    assert churn[0]["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_value_is_rendered(overlay: str, rendered: dict[str, Documents]):
    """Only the API-key Secret (hashes) is in git; credentials are referenced, created out of band."""
    secrets = [d for d in rendered[overlay] if d["kind"] == "Secret"]
    assert [s["metadata"]["name"] for s in secrets] == ["churnops-api-keys"]
    keys = json.loads(secrets[0]["stringData"]["keys.json"])["keys"]
    assert all(set(key) >= {"id", "hash"} and key["hash"].startswith("sha256:") for key in keys)
    text = yaml.safe_dump_all(rendered[overlay])
    assert "hooks.slack.com" not in text
    assert "postgresql://" not in text
    assert "postgresql+psycopg://" not in text
    deployment = find(rendered[overlay], "Deployment", "churn-detector")
    references = json.dumps(deployment)
    assert '"secretKeyRef"' in references
    assert '"secretName": "churnops-detector"' in references


def test_detector_compares_with_the_stable_versions_reference(workspace: ClusterSettings):
    overlay = workspace.overlays_dir / "staging"
    write_state(
        overlay,
        RolloutState(
            "canary", "7", "5", "s3://churnops-models/churn-model/7", "s3://churnops-models/churn-model/5", 25
        ),
    )
    documents = parse_documents(render(workspace, "staging"))
    deployment = find(documents, "Deployment", "churn-detector")
    fetch = deployment["spec"]["template"]["spec"]["initContainers"][0]
    assert fetch["args"] == ["s3://churnops-models/churn-model/5", "/mnt/models"]
    assert find(documents, "ConfigMap", "churn-rollout")["data"]["phase"] == "canary"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rollout_file_is_exactly_what_churnops_rollout_writes(
    overlay: str, cluster_settings: ClusterSettings
):
    directory = cluster_settings.overlays_dir / overlay
    assert (directory / "rollout.yaml").read_text() == render_state(read_state(directory))
    assert (directory / "artefact-pin.yaml").read_text() == render_pin(read_state(directory))


COMMIT = "0123abcd" * 5


def test_render_with_image_tag_and_code_canary(workspace: ClusterSettings):
    documents = parse_documents(render(workspace, "prod", image_tag=COMMIT, canary_percent=10))
    images = [
        c["image"]
        for d in documents
        if d["kind"] in {"InferenceService", "Deployment"}
        for c in _containers(d)
    ]
    ours = [image for image in images if image.rsplit(":", 1)[0] in IMAGES]
    assert len(ours) == 4
    assert all(image.endswith(f":{COMMIT}") for image in ours)
    assert "kserve/storage-initializer:v0.20.0" in images
    spec = find(documents, "InferenceService")["spec"]
    assert spec["predictor"]["canaryTrafficPercent"] == 10
    assert "transformer" not in spec  # the code canary's patch adds no transformer component

    # A model canary in progress keeps its own split: one canary at a time.
    write_state(
        workspace.overlays_dir / "prod",
        RolloutState(
            "canary", "2", "1", "s3://churnops-models/churn-model/2", "s3://churnops-models/churn-model/1", 30
        ),
    )
    spec = find(
        parse_documents(render(workspace, "prod", image_tag=COMMIT, canary_percent=10)), "InferenceService"
    )["spec"]
    assert spec["predictor"]["canaryTrafficPercent"] == 30
    assert "transformer" not in spec


def test_kustomization_wrapper_applies_what_render_shows(workspace: ClusterSettings, tmp_path: Path):
    path = write_wrapper(workspace, "staging", tmp_path / "deploy", image_tag=COMMIT)
    assert kustomize(workspace, path.parent) == render(workspace, "staging", image_tag=COMMIT)


@pytest.mark.slow
def test_checkov_passes_on_every_rendered_overlay(cluster_settings: ClusterSettings, tmp_path: Path):
    try:
        checkov = cluster_settings.tool("checkov")
    except ToolMissingError as error:
        unavailable(str(error))
        raise
    files = []
    for overlay in OVERLAYS:
        files.append(tmp_path / f"{overlay}.yaml")
        files[-1].write_text(render(cluster_settings, overlay))
    assert run_checkov(files, checkov, cluster_settings.checkov_config) == []

    # ... and it does check: a privileged detector fails.
    broken = parse_documents(files[0].read_text())
    detector = find(broken, "Deployment", "churn-detector")
    detector["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    files[0].write_text(yaml.safe_dump_all(broken))
    problems = run_checkov(files[:1], checkov, cluster_settings.checkov_config)
    assert any("churn-detector" in problem.resource for problem in problems), problems


@pytest.mark.slow
def test_manifests_validate_reports_every_overlay_clean(cluster_settings: ClusterSettings):
    reports = check_overlays(cluster_settings, list(OVERLAYS), checkov=False)
    assert sorted(reports) == sorted(OVERLAYS)
    assert all(report.ok for report in reports.values()), {
        k: list(map(str, r.problems)) for k, r in reports.items()
    }
