"""The authorizer's path table: deny by default, health open, every other path behind a scope."""

from __future__ import annotations

import pytest

from churn_authorizer.policy import OPEN, normalize_path, required_scope
from churn_authorizer.scopes import Scope


@pytest.mark.parametrize(
    "path",
    [
        "/healthz",
        "/readyz",
        "/livez",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/churn/ready",
        "/v2/models/churn/versions/3/ready",
    ],
)
def test_health_paths_need_no_key(path):
    assert required_scope("GET", path) is OPEN
    assert required_scope("HEAD", path) is OPEN


def test_metrics_needs_the_metrics_scope():
    """Business counters are not for everyone who reaches a pod: Prometheus scrapes with a metrics key."""
    assert required_scope("GET", "/metrics") is Scope.METRICS
    assert required_scope("POST", "/metrics") is None


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/models/churn:predict"),
        ("POST", "/v2/models/churn/infer"),
        ("POST", "/v2/models/churn/versions/3/infer"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/churn"),
        ("GET", "/v2"),
        ("HEAD", "/v2/models/churn"),
        ("GET", "/v2/models/churn/versions/3"),
    ],
)
def test_inference_and_model_metadata_need_predict(method, path):
    assert required_scope(method, path) is Scope.PREDICT


def test_explain_is_refused_no_explainer_is_deployed():
    """KServe's transformer answers `:explain` with a 501 when there is no explainer: closed here."""
    assert required_scope("POST", "/v1/models/churn:explain") is None


def test_feedback_needs_feedback():
    assert required_scope("POST", "/feedback") is Scope.FEEDBACK


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/performance"),
        ("GET", "/reports/drift"),
        ("GET", "/reports/drift/latest"),
        ("GET", "/reports/drift/20260101T000000.json"),
        ("POST", "/v2/repository/index"),
        ("POST", "/v2/repository/models/churn/load"),
        ("POST", "/v2/repository/models/churn/unload"),
    ],
)
def test_detector_reports_and_repository_need_admin(method, path):
    assert required_scope(method, path) is Scope.ADMIN


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("POST", "/"),  # the detector's second payload-log entry: never by key
        ("POST", "/events"),  # only the churn pods' mesh identity (Istio ALLOW), never by key
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("POST", "/inference.GRPCInferenceService/ModelInfer"),
        ("POST", "/inference.GRPCInferenceService/RepositoryModelUnload"),
        ("POST", "/grpc.health.v1.Health/Check"),
        ("DELETE", "/v2/models/churn"),  # metadata paths are read-only
        ("POST", "/v1/models/churn"),
        ("GET", "/v2/models/churn/infer"),  # infer is POST only
        ("GET", "/admin/reload"),
        ("GET", "/v3/anything"),
        ("GET", "/v2/health"),  # only live/ready are open, not whatever else appears under health
        ("GET", "/v2/models/churn/infer/extra"),
        ("POST", "/feedbackx"),
        ("POST", "/feedback/batch"),
        ("GET", "/V2/MODELS/CHURN"),  # routing is case-sensitive upstream: an unknown path here too
        ("GET", "/v2/health/live\x00"),
    ],
)
def test_unknown_paths_and_methods_are_refused_whatever_the_key(method, path):
    assert required_scope(method, path) is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/health/live/../../models/churn/infer", Scope.PREDICT),
        ("/v2//health/./live", OPEN),
        ("//v2/models/churn/infer", Scope.PREDICT),
        ("/v2/health/ready/../../repository/models/churn/unload", Scope.ADMIN),
        ("/../../v2/models/churn/infer", Scope.PREDICT),
        ("/v2%2Fmodels%2Fchurn%2Finfer", Scope.PREDICT),  # decoded as uvicorn decodes it upstream
        ("/v2/health/live%2F..%2F..%2Fmodels%2Fchurn%2Finfer", Scope.PREDICT),
        ("/v2\\models\\churn\\infer", Scope.PREDICT),
        ("/%76%32/models/churn/infer", Scope.PREDICT),
        # Decoded once only, like the server behind: %252F is a literal "%2F" there, routed nowhere.
        ("/v2/health/live%252F..%252F..%252Fmodels%252Fchurn%252Finfer", None),
    ],
)
def test_encodings_dot_segments_and_double_slashes_cannot_reach_an_open_rule(path, expected):
    assert required_scope("POST" if expected is not OPEN else "GET", path) is expected


def test_normalize_path_resolves_segments_like_the_mesh():
    assert normalize_path("/a//b/./c/../d") == "/a/b/d"
    assert normalize_path("") == "/"
    assert normalize_path("v2/health/live") == "/v2/health/live"
    assert normalize_path("/a%2Fb") == "/a/b"
    assert normalize_path("/a%252Fb") == "/a%2Fb"
    assert normalize_path("/%ff") == "/\ufffd"
