"""The rendered NetworkPolicies: default deny, every workload with its own ingress AND egress rules, and the
flows the system needs open while everything else is closed, evaluated the way Kubernetes evaluates them
(networking.k8s.io/v1: a pod selected by no policy of a direction is open in that direction; once selected,
a connection passes only if some policy's rule allows it, on the source's egress AND the destination's
ingress side)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.cluster.conftest import OVERLAYS, find

Documents = list[dict[str, Any]]
NAMESPACE = "churnops"


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)
    ip: str = "10.1.0.10"


def _labels_match(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        value, operator, values = (
            labels.get(expression["key"]),
            expression["operator"],
            expression.get("values", []),
        )
        if operator == "In" and value not in values:
            return False
        if operator == "NotIn" and value in values:
            return False
        if operator == "Exists" and value is None:
            return False
        if operator == "DoesNotExist" and value is not None:
            return False
    return True


def _ip_in(ip: str, block: dict[str, Any]) -> bool:
    import ipaddress

    address = ipaddress.ip_address(ip)
    inside = address in ipaddress.ip_network(block["cidr"])
    return inside and not any(address in ipaddress.ip_network(e) for e in block.get("except", []))


def _peer_matches(peer: dict[str, Any], other: Pod, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        return _ip_in(other.ip, peer["ipBlock"])
    namespace_selector = peer.get("namespaceSelector")
    if namespace_selector is None:
        namespace_ok = other.namespace == policy_namespace
    else:
        namespace_ok = _labels_match(namespace_selector, {"kubernetes.io/metadata.name": other.namespace})
    return namespace_ok and _labels_match(peer.get("podSelector"), other.labels)


def _port_ok(ports: list[dict[str, Any]] | None, port: int) -> bool:
    return not ports or any(p.get("port") == port and p.get("protocol", "TCP") == "TCP" for p in ports)


def _side_allows(policies: Documents, pod: Pod, other: Pod, port: int, direction: str) -> bool:
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace") == pod.namespace
        and direction in p["spec"].get("policyTypes", ["Ingress"])
        and _labels_match(p["spec"]["podSelector"], pod.labels)
    ]
    if not selecting:
        return True
    return any(
        _port_ok(rule.get("ports"), port)
        and (
            not rule.get(peers_key)
            or any(_peer_matches(peer, other, p["metadata"]["namespace"]) for peer in rule[peers_key])
        )
        for p in selecting
        for rule in p["spec"].get(key) or []
    )


def connects(policies: Documents, source: Pod, destination: Pod, port: int) -> bool:
    """Source's egress (if in our namespace) and destination's ingress (if in our namespace) both allow."""
    egress_ok = source.namespace != NAMESPACE or _side_allows(policies, source, destination, port, "Egress")
    ingress_ok = destination.namespace != NAMESPACE or _side_allows(
        policies, destination, source, port, "Ingress"
    )
    return egress_ok and ingress_ok


def network_policies(documents: Documents) -> Documents:
    return [d for d in documents if d["kind"] == "NetworkPolicy"]


def workloads(documents: Documents) -> dict[str, Pod]:
    """Every pod template the overlay runs, with the labels its pods carry."""
    inference_service = find(documents, "InferenceService", "churn")
    pods = {
        "churn": Pod(
            "churn",
            NAMESPACE,
            {
                "serving.kserve.io/inferenceservice": inference_service["metadata"]["name"],
                "component": "predictor",
            },
        )
    }
    for deployment in (d for d in documents if d["kind"] == "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        pods[deployment["metadata"]["name"]] = Pod(deployment["metadata"]["name"], NAMESPACE, labels)
    return pods


PLATFORM = {
    "gateway": Pod("gateway", "istio-system", {"istio": "ingressgateway"}, "10.2.0.1"),
    "local-gateway": Pod("local-gateway", "istio-system", {"istio": "knative-local-gateway"}, "10.2.0.2"),
    "istiod": Pod("istiod", "istio-system", {"app": "istiod"}, "10.2.0.3"),
    "activator": Pod("activator", "knative-serving", {"app": "activator"}, "10.3.0.1"),
    "autoscaler": Pod("autoscaler", "knative-serving", {"app": "autoscaler"}, "10.3.0.2"),
    "prometheus": Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}, "10.4.0.1"),
    "dns": Pod("dns", "kube-system", {"k8s-app": "kube-dns"}, "10.5.0.10"),
    "stranger": Pod("stranger", NAMESPACE, {"app": "debug"}, "10.1.0.99"),
    "other-namespace": Pod("other", "default", {"app": "web"}, "10.6.0.1"),
    "internet": Pod("internet", "", {}, "203.0.113.7"),
    "postgres": Pod("postgres", "", {}, "10.9.0.5"),
    "metadata-service": Pod("metadata", "", {}, "169.254.169.254"),
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_namespace_denies_by_default(overlay: str, rendered: dict[str, Documents]):
    deny = find(rendered[overlay], "NetworkPolicy", "default-deny")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_has_its_own_ingress_and_egress_rules(overlay: str, rendered: dict[str, Documents]):
    documents = rendered[overlay]
    policies = network_policies(documents)
    pods = workloads(documents)
    assert set(pods) >= {"churn", "churn-detector", "churnops-authorizer"}
    for name, pod in pods.items():
        own = [
            p
            for p in policies
            if p["spec"]["podSelector"] and _labels_match(p["spec"]["podSelector"], pod.labels)
        ]
        assert own, f"no NetworkPolicy names {name}"
        for direction, key in (("Ingress", "ingress"), ("Egress", "egress")):
            rules = [
                r for p in own if direction in p["spec"]["policyTypes"] for r in p["spec"].get(key) or []
            ]
            assert rules, f"{name} has no {key} rule"
            for rule in rules:  # every allow names its ports and its peers: no allow-all rule
                assert rule.get("ports"), (name, rule)
                assert rule.get("from" if key == "ingress" else "to"), (name, rule)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_flows_the_system_needs_are_open(overlay: str, rendered: dict[str, Documents]):
    documents = rendered[overlay]
    policies = network_policies(documents)
    pods = {**workloads(documents), **PLATFORM}
    churn, detector, authorizer = pods["churn"], pods["churn-detector"], pods["churnops-authorizer"]
    needed = [
        (pods["gateway"], churn, 8012),
        (pods["local-gateway"], churn, 8012),
        (pods["activator"], churn, 8012),
        (pods["activator"], churn, 8013),
        (pods["autoscaler"], churn, 9090),
        (pods["prometheus"], churn, 8080),
        (pods["prometheus"], churn, 15020),
        (pods["prometheus"], detector, 8080),
        (pods["prometheus"], authorizer, 8000),
        (churn, detector, 8080),
        (churn, authorizer, 8000),
        (detector, authorizer, 8000),
        (churn, pods["internet"], 443),  # the storage initializer's object store
        (detector, pods["postgres"], 5432),
        (detector, pods["internet"], 443),  # Slack
        (authorizer, pods["postgres"], 6379),  # Redis, wherever it is
    ]
    needed += [(pod, pods["dns"], 53) for pod in (churn, detector, authorizer)]
    needed += [(pod, pods["istiod"], 15012) for pod in (churn, detector, authorizer)]
    for source, destination, port in needed:
        assert connects(policies, source, destination, port), f"{source.name} -> {destination.name}:{port}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_else_is_closed(overlay: str, rendered: dict[str, Documents]):
    documents = rendered[overlay]
    policies = network_policies(documents)
    pods = {**workloads(documents), **PLATFORM}
    churn, detector, authorizer = pods["churn"], pods["churn-detector"], pods["churnops-authorizer"]
    closed = [
        # MLServer's ports (loopback-bound as well) and the transformer past queue-proxy
        *(
            (pods[s], churn, p)
            for s in ("stranger", "other-namespace", "gateway")
            for p in (8081, 8082, 8085, 8080)
        ),
        (pods["stranger"], churn, 8012),  # a pod of our namespace goes through the gateway like anyone
        (pods["stranger"], detector, 8080),  # no forged predictions, labels or Slack alerts
        (pods["other-namespace"], detector, 8080),
        (pods["stranger"], authorizer, 8000),  # no key oracle for arbitrary pods
        (pods["gateway"], authorizer, 8000),
        (churn, pods["postgres"], 5432),  # only the detector talks to the database
        (churn, pods["metadata-service"], 443),  # no cloud metadata from the churn pods
        (churn, pods["stranger"], 8080),
        (churn, pods["internet"], 80),
        (detector, churn, 8012),
        (authorizer, pods["internet"], 443),
        (authorizer, churn, 8012),
        (pods["prometheus"], churn, 8081),
        (pods["autoscaler"], churn, 8080),
    ]
    for source, destination, port in closed:
        assert not connects(policies, source, destination, port), (
            f"{source.name} -> {destination.name}:{port}"
        )
