from __future__ import annotations

import pytest

from churn_authorizer.policy import normalize_path, required_scope
from churn_authorizer.scopes import Scope


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/livez"),
        ("GET", "/metrics"),
        ("GET", "/v2/health/live"),
        ("GET", "/v2/health/ready"),
        ("GET", "/v2/models/churn/ready"),
        ("GET", "/v2/models/churn/versions/3/ready"),
    ],
)
def test_health_and_metrics_paths_need_no_key(method, path):
    assert required_scope(method, path) is None


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/models/churn:predict"),
        ("POST", "/v1/models/churn:explain"),
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


@pytest.mark.parametrize("path", ["/feedback", "/feedback/batch", "/v1/feedback", "/v2/feedback/labels"])
def test_feedback_paths_need_feedback(path):
    assert required_scope("POST", path) is Scope.FEEDBACK


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/repository/models/churn/load"),
        ("POST", "/v2/repository/models/churn/unload"),
        ("GET", "/v2/repository/index"),
        ("DELETE", "/v2/models/churn"),  # metadata paths are read-only for predict keys
        ("POST", "/v1/models/churn"),
        ("GET", "/admin/reload"),
        ("GET", "/v3/anything"),
        ("GET", "/v2/health"),  # only live/ready are open, not whatever else appears under health
        ("GET", "/v2/models/churn/infer/extra"),
        ("GET", "/feedbackx"),
    ],
)
def test_unmapped_or_admin_paths_need_admin(method, path):
    assert required_scope(method, path) is Scope.ADMIN


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/health/live/../../models/churn/infer", Scope.PREDICT),
        ("/v2//health/./live", None),
        ("//v2/models/churn/infer", Scope.PREDICT),
        ("/v2/health/ready/../../repository/models/churn/unload", Scope.ADMIN),
        ("/../../v2/models/churn/infer", Scope.PREDICT),
    ],
)
def test_dot_segments_and_double_slashes_cannot_reach_an_open_rule(path, expected):
    assert required_scope("POST", path) is expected


def test_normalize_path_resolves_segments_like_the_mesh():
    assert normalize_path("/a//b/./c/../d") == "/a/b/d"
    assert normalize_path("") == "/"
    assert normalize_path("v2/health/live") == "/v2/health/live"
