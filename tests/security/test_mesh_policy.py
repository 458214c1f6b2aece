"""Deny by default at the mesh, proven on the RENDERED overlays: every request a corpus of tricky paths can
make (encoded, doubled slashes, dot segments, backslashes, case variants, gRPC, metrics, repository) either
reaches the authorizer, is refused by the mesh, or is a listed health path; and whatever the authorizer then
lets through without a key is never a protected route of the server behind.

The sidecar is modelled by tests/security/istio.py (Istio's documented normalization and matching, itself
tested against Istio's examples in test_istio_model.py); the authorizer's half is the real
churn_authorizer.policy; the server behind routes on the forwarded path percent-decoded once.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
import yaml

from churn_authorizer.policy import OPEN, required_scope
from tests.cluster.conftest import OVERLAYS, find
from tests.security.istio import (
    NORMALIZATIONS,
    RejectedError,
    Request,
    evaluate,
    normalize,
    upstream_route,
)
from tests.support.services import REPO

Documents = list[dict[str, Any]]
MESH_SNIPPET = REPO / "manifests" / "istio" / "mesh-config-extension-provider.yaml"
CHURN_PRINCIPAL = "cluster.local/ns/churnops/sa/churn-models"
# What may pass the mesh without the authorizer: the health paths (exact) and queue-proxy's metrics ports.
CHURN_HEALTH = {"/healthz", "/v2/health/live", "/v2/health/ready", "/v2/models/churn/ready"}
DETECTOR_HEALTH = {"/healthz", "/readyz"}
KNATIVE_METRICS_PORTS = {9090, 9091}
# Ports of a churn pod that take requests: queue-proxy (8012 HTTP/1, 8013 h2c, what the gateway and the
# activator call), the transformer (8080, what Prometheus scrapes), MLServer (8081/8082/8085: loopback only
# now, but a policy must not rely on that).
CHURN_PORTS = (8012, 8013, 8080, 8081, 8082, 8085)

# Routes of the servers behind, as they route (on the decoded path, `{x}` = one segment): none of them may
# ever be reached without a key.
_SEG = r"[^/]+"
PROTECTED_ROUTES = re.compile(
    "|".join(
        (
            rf"/v1/models/{_SEG}:(?:predict|explain)",
            rf"/v2/models/{_SEG}(?:/versions/{_SEG})?/infer",
            rf"/v1/models(?:/{_SEG})?",
            rf"/v2/?|/v2/models/{_SEG}(?:/versions/{_SEG})?",
            r"/v2/repository/.*",
            r"/metrics",
            r"/docs.*|/openapi\.json|/redoc",
            r"/inference\.GRPCInferenceService/.*|/grpc\..*",
            r"/feedback|/performance|/reports/.*|/events|/",
        )
    )
)

TARGETS = [
    "/v2/models/churn/infer",
    "/v2/models/churn/versions/1/infer",
    "/v1/models/churn:predict",
    "/v2",
    "/v2/",
    "/v2/models/churn",
    "/v1/models",
    "/v2/repository/index",
    "/v2/repository/models/churn/load",
    "/v2/repository/models/churn/unload",
    "/metrics",
    "/docs",
    "/openapi.json",
    "/inference.GRPCInferenceService/ModelInfer",
    "/inference.GRPCInferenceService/ModelMetadata",
    "/inference.GRPCInferenceService/RepositoryModelLoad",
    "/inference.GRPCInferenceService/RepositoryModelUnload",
    "/inference.GRPCInferenceService/RepositoryIndex",
    "/grpc.health.v1.Health/Check",
    "/",
    "/feedback",
    "/events",
    "/performance",
    "/reports/drift",
    "/reports/drift/latest",
]
HEALTH_DISGUISES = ["/v2/health/live", "/v2/health/ready", "/v2/models/churn/ready", "/healthz", "/readyz"]


def disguises(target: str) -> list[str]:
    """Ways to spell `target` that a path matcher might read as something else."""
    rest = target.lstrip("/")
    spelled = [
        target,
        target + "/",
        target.upper(),
        target.replace("/v2/", "/V2/"),
        "/" + rest.replace("/", "%2F"),
        "/" + rest.replace("/", "%2f"),
        "/" + rest.replace("/", "%252F"),
        "/" + rest.replace("/", "\\"),
        "/" + rest.replace("/", "%5C"),
        "//" + rest.replace("/", "//"),
        "/./" + rest,
        "/%2e/" + rest,
        "/" + "".join(f"%{ord(c):02x}" if c.isalnum() else c for c in rest),
        target + "?next=/v2/health/live",
        target + ";/v2/health/live",
        target + "#/healthz",
    ]
    for health in HEALTH_DISGUISES:
        depth = health.count("/")
        spelled += [
            f"{health}/{'../' * depth}{rest}",
            f"{health}/{'%2e%2e/' * depth}{rest}",
            f"{health}%2F{'..%2F' * depth}{rest.replace('/', '%2F')}",
            f"{health}/..;/{rest}",
            f"{health}?/../{rest}",
        ]
    return spelled


CORPUS = sorted(
    {path for target in TARGETS for path in disguises(target)} | {*HEALTH_DISGUISES, "/%65vents", "/%76%32"}
)


def policies(documents: Documents) -> Documents:
    return [d for d in documents if d["kind"] == "AuthorizationPolicy"]


def churn_labels(documents: Documents) -> dict[str, str]:
    """The labels KServe puts on the churn pods: the InferenceService's name and the component."""
    inference_service = find(documents, "InferenceService", "churn")
    return {
        **(inference_service["spec"]["predictor"].get("labels") or {}),
        "serving.kserve.io/inferenceservice": inference_service["metadata"]["name"],
        "component": "predictor",
    }


def pod_labels(documents: Documents, deployment: str) -> dict[str, str]:
    labels: dict[str, str] = find(documents, "Deployment", deployment)["spec"]["template"]["metadata"][
        "labels"
    ]
    return labels


def configured_normalization() -> str:
    mesh = yaml.safe_load(MESH_SNIPPET.read_text())["spec"]["meshConfig"]
    normalization: str = mesh["pathNormalization"]["normalization"]
    return normalization


def forwarded(raw: str, mode: str) -> str | None:
    try:
        return normalize(raw, mode)  # type: ignore[arg-type]
    except RejectedError:
        return None  # 400 from the proxy: nothing reaches anything


def test_the_mesh_decodes_and_merges_slashes_before_policies_match():
    # istio/api mesh/v1alpha1/config.proto ProxyPathNormalization.NormalizationType.
    assert configured_normalization() in {"NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"}
    assert configured_normalization() == "DECODE_AND_MERGE_SLASHES"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_health_exceptions_are_exact_paths_only(overlay: str, rendered: dict[str, Documents]):
    """A prefix or suffix pattern in notPaths would let whole families of paths skip the check."""
    for policy in policies(rendered[overlay]):
        for rule in policy["spec"].get("rules", []):
            for operation in (to["operation"] for to in rule.get("to", [])):
                for path in operation.get("notPaths", []):
                    assert not set(path) & set("*{%"), (policy["metadata"]["name"], path)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("mode", NORMALIZATIONS)
def test_every_request_to_the_churn_pods_reaches_the_authorizer_or_is_a_health_path(
    overlay: str, mode: str, rendered: dict[str, Documents]
):
    """Under every normalization Istio offers, not only the configured one: deny by default does not
    depend on it."""
    documents = rendered[overlay]
    labels = churn_labels(documents)
    skipped = []
    for raw, method, port in itertools.product(CORPUS, ("GET", "POST"), CHURN_PORTS):
        path = forwarded(raw, mode)
        if path is None:
            continue
        verdict = evaluate(policies(documents), labels, Request(method, path, port))
        assert not verdict.denied_by_mesh  # no ALLOW/DENY on the churn pods: the authorizer decides
        if verdict.reaches_authorizer:
            assert verdict.checked_by == ["churnops-ext-authz"]
        else:
            skipped.append((raw, upstream_route(path)))
            assert upstream_route(path) in CHURN_HEALTH, (raw, method, port, path)
    assert {route for _, route in skipped} <= CHURN_HEALTH
    assert len(CORPUS) > 500


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("mode", ["BASE", "DECODE_AND_MERGE_SLASHES"])
def test_what_the_probe_found_now_reaches_the_authorizer(
    overlay: str, mode: str, rendered: dict[str, Documents]
):
    """The finding's paths, under Istio's default normalization and under ours."""
    documents = rendered[overlay]
    for raw in (
        "/v2%2Fmodels%2Fchurn%2Finfer",
        "/metrics",
        "/v2",
        "/inference.GRPCInferenceService/ModelInfer",
        "/inference.GRPCInferenceService/RepositoryModelUnload",
        "/v2/repository/models/churn/unload",
    ):
        path = forwarded(raw, mode)
        assert path is not None
        for port in (8012, 8080):
            assert evaluate(
                policies(documents), churn_labels(documents), Request("POST", path, port)
            ).reaches_authorizer


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_knative_metrics_ports_skip_the_check_and_nothing_else_does(
    overlay: str, rendered: dict[str, Documents]
):
    documents = rendered[overlay]
    labels = churn_labels(documents)
    for port in (*CHURN_PORTS, *KNATIVE_METRICS_PORTS, 15020, 8022):
        checked = evaluate(policies(documents), labels, Request("GET", "/metrics", port)).reaches_authorizer
        assert checked is (port not in KNATIVE_METRICS_PORTS), port


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nothing_the_chain_lets_through_without_a_key_is_a_protected_route(
    overlay: str, rendered: dict[str, Documents]
):
    """Mesh (configured normalization) then authorizer: a request that needs no key at the end must not be
    routed by the server behind to anything but health."""
    documents = rendered[overlay]
    mode = configured_normalization()
    for workload, labels, health in (
        ("churn", churn_labels(documents), CHURN_HEALTH),
        ("detector", pod_labels(documents, "churn-detector"), DETECTOR_HEALTH),
    ):
        for raw, method in itertools.product(CORPUS, ("GET", "HEAD", "POST", "DELETE")):
            path = forwarded(raw, mode)
            if path is None:
                continue
            verdict = evaluate(policies(documents), labels, Request(method, path, 8080, principal=None))
            if verdict.denied_by_mesh:
                continue
            route = upstream_route(path)
            if not verdict.reaches_authorizer:
                assert route in health, (workload, raw)
            elif required_scope(method, path) is OPEN:
                assert not PROTECTED_ROUTES.fullmatch(route), (workload, method, raw, route)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_churn_pods_identity_may_post_the_payload_log(overlay: str, rendered: dict[str, Documents]):
    documents = rendered[overlay]
    labels = pod_labels(documents, "churn-detector")
    mode = configured_normalization()
    others = [
        None,  # plaintext, no mesh identity
        "cluster.local/ns/churnops/sa/default",
        "cluster.local/ns/churnops/sa/churnops-authorizer",
        "cluster.local/ns/elsewhere/sa/churn-models",  # same account name, another namespace
    ]
    events = [raw for raw in CORPUS if upstream_route(forwarded(raw, mode) or "") in {"/events", "/"}]
    assert {"/events", "/%65vents", "/%2e/events"} <= set(events)
    for raw in events:
        path = forwarded(raw, mode)
        assert path is not None
        for principal in others:
            verdict = evaluate(policies(documents), labels, Request("POST", path, 8080, principal=principal))
            # Denied by the mesh, or sent to the authorizer, which refuses /events and / to any key.
            assert verdict.denied_by_mesh or (
                verdict.reaches_authorizer and required_scope("POST", path) is None
            ), (
                raw,
                principal,
            )
    churn = evaluate(policies(documents), labels, Request("POST", "/events", 8080, principal=CHURN_PRINCIPAL))
    assert not churn.denied_by_mesh  # the payload log flows, with no key ...
    assert not churn.reaches_authorizer  # ... and no authorizer call


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_detector_feedback_reports_and_metrics_go_through_the_authorizer(
    overlay: str, rendered: dict[str, Documents]
):
    documents = rendered[overlay]
    labels = pod_labels(documents, "churn-detector")
    for method, path, scope in (
        ("POST", "/feedback", "feedback"),
        ("GET", "/reports/drift/latest", "admin"),
        ("GET", "/performance", "admin"),
        ("GET", "/metrics", "metrics"),
    ):
        for principal in (None, CHURN_PRINCIPAL):
            verdict = evaluate(policies(documents), labels, Request(method, path, 8080, principal=principal))
            assert verdict.reaches_authorizer, (path, principal)
            assert not verdict.denied_by_mesh, (path, principal)
        assert str(required_scope(method, path)) == scope
    for path in DETECTOR_HEALTH:
        verdict = evaluate(policies(documents), labels, Request("GET", path, 8080))
        assert not verdict.reaches_authorizer
        assert not verdict.denied_by_mesh


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_payload_log_principal_is_the_inferenceservices_account_in_the_rendered_namespace(
    overlay: str, rendered: dict[str, Documents]
):
    documents = rendered[overlay]
    inference_service = find(documents, "InferenceService", "churn")
    account = inference_service["spec"]["predictor"]["serviceAccountName"]
    namespace = inference_service["metadata"]["namespace"]
    callers = find(documents, "AuthorizationPolicy", "churnops-detector-callers")
    principals = [
        p
        for rule in callers["spec"]["rules"]
        for source in rule.get("from", [])
        for p in source["source"].get("principals", [])
    ]
    assert principals == [f"cluster.local/ns/{namespace}/sa/{account}"]
    # The logger posts where the policy expects it.
    assert inference_service["spec"]["predictor"]["logger"]["url"].endswith("/events")


def test_mesh_snippet_is_the_only_place_normalization_is_set():
    text = "\n".join(p.read_text() for p in (REPO / "manifests").rglob("*.yaml") if p != MESH_SNIPPET)
    assert "pathNormalization" not in text
