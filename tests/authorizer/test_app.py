"""The authorizer as Envoy meets it: real `python -m churn_authorizer serve` processes and the real Redis."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from churn_authorizer.keys import Scope
from tests.authorizer.conftest import issue, write_keys_file
from tests.support.services import free_port

pytestmark = pytest.mark.integration

INFER = "/v2/models/churn/infer"
PREDICT_V1 = "/v1/models/churn:predict"


def metric(authorizer, name: str, **labels: str) -> float:
    """One sample of the authorizer's /metrics (0 when the series is absent)."""
    text = httpx.get(f"{authorizer.url}/metrics", timeout=5).text
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    wanted = f"{name}{{{selector}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_check_rejects_missing_key_with_401(start_authorizer):
    authorizer = start_authorizer()
    response = authorizer.check("POST", INFER)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["code"] == "unauthenticated"
    assert set(response.json()) == {"error", "code"}  # churn_core.errors.error_body
    assert "x-churnops-key-id" not in response.headers


def test_check_rejects_unknown_key_with_401(start_authorizer, keyring):
    authorizer = start_authorizer()
    stranger = issue(Scope.ADMIN)  # well-formed, never written to the keys file
    wrong_secret = keyring.predict.key[:-2] + ("AA" if not keyring.predict.key.endswith("AA") else "BB")
    for key in (stranger.key, wrong_secret, "not-a-key", keyring.predict.entry.hash):
        response = authorizer.check("POST", INFER, {"Authorization": f"Bearer {key}"})
        assert response.status_code == 401, key
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert response.json() == {"error": "unknown or revoked API key", "code": "invalid_api_key"}


def test_check_rejects_non_bearer_authorization_with_401(start_authorizer, keyring):
    authorizer = start_authorizer()
    response = authorizer.check("POST", INFER, {"Authorization": f"Basic {keyring.predict.key}"})
    assert response.status_code == 401


def test_check_rejects_wrong_scope_with_403(start_authorizer, keyring):
    authorizer = start_authorizer()
    cases = [
        (keyring.predict, "POST", "/feedback"),
        (keyring.feedback, "POST", INFER),
        (keyring.feedback, "POST", PREDICT_V1),
        (keyring.both, "POST", "/v2/repository/models/churn/unload"),
    ]
    for issued, method, path in cases:
        response = authorizer.check(method, path, issued.bearer)
        assert response.status_code == 403, (issued.entry.name, path)
        assert response.json()["code"] == "forbidden"


def test_check_allows_valid_key_and_passes_key_id_upstream(start_authorizer, keyring):
    authorizer = start_authorizer()
    for method, path in (("POST", INFER), ("POST", PREDICT_V1), ("GET", "/v2/models/churn")):
        response = authorizer.check(method, path, keyring.predict.bearer)
        assert response.status_code == 200, path
        assert response.headers["x-churnops-key-id"] == keyring.predict.id
        assert response.headers["x-ratelimit-limit"] == "100"
        exposed = json.dumps(dict(response.headers)) + response.text
        assert keyring.predict.key not in exposed


def test_check_accepts_x_api_key_header(start_authorizer, keyring):
    authorizer = start_authorizer()
    response = authorizer.check("POST", "/feedback", {"X-API-Key": keyring.feedback.key})
    assert response.status_code == 200
    assert response.headers["x-churnops-key-id"] == keyring.feedback.id


def test_admin_key_reaches_every_scope(start_authorizer, keyring):
    authorizer = start_authorizer()
    for path in (INFER, "/feedback", "/v2/repository/models/churn/load"):
        assert authorizer.check("POST", path, keyring.admin.bearer).status_code == 200, path
    assert authorizer.check("GET", "/reports/drift/latest", keyring.admin.bearer).status_code == 200
    assert authorizer.check("GET", "/metrics", keyring.admin.bearer).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/inference.GRPCInferenceService/ModelInfer"),
        ("POST", "/inference.GRPCInferenceService/RepositoryModelUnload"),
        ("POST", "/events"),
        ("POST", "/"),
        ("GET", "/docs"),
        ("PROPFIND", INFER),
        ("POST", "/v2%252Fmodels%252Fchurn%252Finfer"),
    ],
)
def test_unknown_paths_are_refused_even_to_an_admin_key(start_authorizer, keyring, method, path):
    """Deny by default, the authorizer's half: the mesh asks about everything but health paths, and a
    path no rule names is a 403 whatever the key."""
    authorizer = start_authorizer()
    for headers in ({}, keyring.admin.bearer):
        response = authorizer.check(method, path, headers)
        assert response.status_code == 403, (method, path)
        assert response.json()["code"] == "unknown_path"
    assert metric(authorizer, "churnops_authz_decisions_total", outcome="unknown_path", scope="none") == 2


def test_metrics_need_a_metrics_key(start_authorizer, keyring, keys_file):
    scraper = issue(Scope.METRICS, name="prometheus")
    write_keys_file(keys_file, *keyring.all(), scraper)
    authorizer = start_authorizer()
    assert authorizer.check("GET", "/metrics").status_code == 401
    assert authorizer.check("GET", "/metrics", keyring.predict.bearer).status_code == 403
    assert authorizer.check("GET", "/metrics", scraper.bearer).status_code == 200
    assert authorizer.check("POST", INFER, scraper.bearer).status_code == 403  # and nothing else


def test_detector_paths_need_their_scopes(start_authorizer, keyring):
    authorizer = start_authorizer()
    assert authorizer.check("POST", "/feedback", keyring.feedback.bearer).status_code == 200
    assert authorizer.check("GET", "/reports/drift/latest", keyring.feedback.bearer).status_code == 403
    assert authorizer.check("GET", "/performance", keyring.both.bearer).status_code == 403
    assert authorizer.check("GET", "/reports/drift", keyring.admin.bearer).status_code == 200


@pytest.mark.parametrize(
    "path", ["/v2/health/live", "/v2/health/ready", "/v2/models/churn/ready", "/healthz", "/readyz"]
)
def test_health_paths_stay_open_without_key(start_authorizer, path):
    authorizer = start_authorizer()
    response = authorizer.check("GET", path)
    assert response.status_code == 200
    assert "x-churnops-key-id" not in response.headers


def test_query_string_and_dot_segments_do_not_open_protected_paths(start_authorizer):
    authorizer = start_authorizer()
    for path in (
        "/v2/health/live/../../models/churn/infer",
        f"{INFER}?next=/v2/health/live",
        "/v2/health/live%2F..%2F..%2Fmodels%2Fchurn%2Finfer",
        "/v2/health/live%2f..%2f..%2fmodels%2fchurn%2finfer",
        "//v2//models//churn//infer",
    ):
        assert authorizer.check("POST", path).status_code == 401, path


def test_check_returns_429_with_retry_after_when_limit_exhausted(start_authorizer, keyring):
    authorizer = start_authorizer()
    limited = keyring.limited  # rate_limit=3 per 60 s (per-key override of the default 100)
    statuses = [authorizer.check("POST", INFER, limited.bearer).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    denied = authorizer.check("POST", INFER, limited.bearer)
    assert denied.status_code == 429
    assert denied.headers["retry-after"] == "20"  # one slot per 20 s
    assert denied.headers["x-ratelimit-limit"] == "3"
    assert denied.headers["x-ratelimit-remaining"] == "0"
    assert denied.json()["code"] == "rate_limited"
    # Other keys keep their own (default) budget.
    assert authorizer.check("POST", INFER, keyring.predict.bearer).status_code == 200


def test_default_rate_limit_is_configurable(start_authorizer, keyring):
    authorizer = start_authorizer(rate_limit=2, rate_period_s=3600)
    statuses = [authorizer.check("POST", INFER, keyring.predict.bearer).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert authorizer.check("POST", INFER, keyring.predict.bearer).headers["retry-after"] == "1800"


def test_forbidden_and_unauthenticated_requests_do_not_spend_the_budget(start_authorizer, keyring):
    authorizer = start_authorizer()
    for _ in range(5):
        assert authorizer.check("POST", "/feedback", keyring.limited.bearer).status_code == 403
    statuses = [authorizer.check("POST", INFER, keyring.limited.bearer).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]


def test_two_authorizer_processes_share_one_limit(start_authorizer, keyring):
    """Two replicas on one Redis: the 3-request budget is spent across both, then both say 429."""
    first, second = start_authorizer(), start_authorizer()
    assert first.port != second.port
    limited = keyring.limited
    statuses = [
        first.check("POST", INFER, limited.bearer).status_code,
        second.check("POST", INFER, limited.bearer).status_code,
        first.check("POST", INFER, limited.bearer).status_code,
    ]
    assert statuses == [200, 200, 200]
    assert second.check("POST", INFER, limited.bearer).status_code == 429
    assert first.check("POST", INFER, limited.bearer).status_code == 429


def test_redis_unreachable_fails_open_by_default(start_authorizer, keyring):
    authorizer = start_authorizer(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    for _ in range(5):  # beyond the limited key's budget: nothing is counted while Redis is away
        response = authorizer.check("POST", INFER, keyring.limited.bearer)
        assert response.status_code == 200
        assert response.headers["x-churnops-key-id"] == keyring.limited.id
    # Authentication and scopes do not depend on Redis.
    assert authorizer.check("POST", INFER).status_code == 401
    assert authorizer.check("POST", "/feedback", keyring.predict.bearer).status_code == 403
    assert metric(authorizer, "churnops_authz_redis_errors_total", error="ConnectionError") >= 1
    assert metric(authorizer, "churnops_authz_limiter_bypassed_total", reason="redis_error") == 5
    assert (
        metric(authorizer, "churnops_authz_decisions_total", outcome="allowed_unlimited", scope="predict")
        == 5
    )


def test_redis_unreachable_fails_closed_when_configured(start_authorizer, keyring):
    authorizer = start_authorizer(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        redis_failure_mode="closed",
        fail_closed_retry_after_s=2,
    )
    for _ in range(3):
        response = authorizer.check("POST", INFER, keyring.predict.bearer)
        assert response.status_code == 429  # a 4xx the client can retry, never a 5xx
        assert response.headers["retry-after"] == "2"
        assert response.json()["code"] == "limiter_unavailable"
    assert authorizer.check("POST", INFER).status_code == 401
    assert authorizer.check("GET", "/v2/health/ready").status_code == 200


def test_metrics_count_decisions_by_outcome(start_authorizer, keyring):
    authorizer = start_authorizer()
    authorizer.check("POST", INFER)
    authorizer.check("POST", INFER, keyring.predict.bearer)
    authorizer.check("POST", "/feedback", keyring.predict.bearer)
    authorizer.check("GET", "/v2/health/live")
    assert (
        metric(authorizer, "churnops_authz_decisions_total", outcome="unauthenticated", scope="predict") == 1
    )
    assert metric(authorizer, "churnops_authz_decisions_total", outcome="allowed", scope="predict") == 1
    assert metric(authorizer, "churnops_authz_decisions_total", outcome="forbidden", scope="feedback") == 1
    assert metric(authorizer, "churnops_authz_decisions_total", outcome="open", scope="none") == 1
    key_id = keyring.predict.id
    assert metric(authorizer, "churnops_authz_key_decisions_total", key_id=key_id, outcome="allowed") == 1
    assert metric(authorizer, "churnops_authz_check_duration_seconds_count", outcome="allowed") == 1
    assert metric(authorizer, "churnops_authz_keys_loaded") == 5


def test_logs_are_json_and_never_contain_keys_or_authorization(start_authorizer, keyring):
    authorizer = start_authorizer(log_level="DEBUG")
    wrong = keyring.admin.key[:-1] + ("x" if keyring.admin.key[-1] != "x" else "y")
    authorizer.check("POST", INFER, keyring.predict.bearer)
    authorizer.check("POST", INFER, {"X-API-Key": keyring.feedback.key})
    authorizer.check("POST", INFER, {"Authorization": f"Bearer {wrong}"})
    authorizer.check("POST", f"{INFER}?token=hunter2", keyring.limited.bearer)
    authorizer.stop()
    logs = authorizer.log_text()
    lines = [json.loads(line) for line in logs.splitlines() if line.strip()]
    decisions = [line for line in lines if line["event"] == "authz_decision"]
    assert len(decisions) == 4
    assert {d["key_id"] for d in decisions} >= {keyring.predict.id, keyring.feedback.id}
    for secret in (keyring.predict.key, keyring.feedback.key, wrong, wrong.split("_", 2)[2], "hunter2"):
        assert secret not in logs
    assert "Bearer co_" not in logs
    assert "authorization" not in logs.lower().replace("authorizer", "")


def test_keys_file_reload_picks_up_new_and_revoked_keys(start_authorizer, keyring, keys_file):
    authorizer = start_authorizer(keys_reload_interval_s=0.2)
    newcomer = issue(Scope.PREDICT, name="newcomer")
    assert authorizer.check("POST", INFER, newcomer.bearer).status_code == 401
    write_keys_file(keys_file, newcomer)  # keyring.predict revoked, newcomer added
    deadline = time.monotonic() + 10
    while authorizer.check("POST", INFER, newcomer.bearer).status_code != 200:
        assert time.monotonic() < deadline, "new key never accepted"
        time.sleep(0.1)
    assert authorizer.check("POST", INFER, keyring.predict.bearer).status_code == 401


def test_readyz_fails_until_a_keys_file_loads(start_authorizer, tmp_path):
    authorizer = start_authorizer(keys_file=tmp_path / "missing.json", keys_reload_interval_s=0)
    response = httpx.get(f"{authorizer.url}/readyz", timeout=5)
    assert response.status_code == 503
    assert authorizer.check("POST", INFER, issue(Scope.PREDICT).bearer).status_code == 401
    write_keys_file(tmp_path / "missing.json")
    assert httpx.get(f"{authorizer.url}/readyz", timeout=5).json() == {"status": "ready", "keys": 0}


def test_every_method_envoy_forwards_is_checked(start_authorizer, keyring):
    authorizer = start_authorizer()
    assert authorizer.check("POST", "/v2/repository/index").status_code == 401
    assert authorizer.check("POST", "/v2/repository/index", keyring.admin.bearer).status_code == 200
    for method in ("GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND"):
        response = authorizer.check(method, "/v2/repository/index", keyring.admin.bearer)
        assert response.status_code == 403, method


def test_a_keys_file_that_fails_to_load_is_reported_and_keeps_the_old_keys(
    start_authorizer, keyring, keys_file
):
    """The danger the ChurnAuthzKeysReloadFailing alert covers: a revocation that did not load."""
    authorizer = start_authorizer(keys_reload_interval_s=0.1)
    assert metric(authorizer, "churnops_authz_keys_file_failing") == 0
    keys_file.write_text('{"version": 1, "keys": [{"id": "nothex"}]}')  # predict key "revoked", badly
    deadline = time.monotonic() + 10
    while metric(authorizer, "churnops_authz_keys_file_failing") != 1:
        authorizer.check("POST", INFER, keyring.predict.bearer)
        assert time.monotonic() < deadline, "failure never reported"
        time.sleep(0.1)
    assert metric(authorizer, "churnops_authz_keys_reloads_total", result="failed") >= 1
    assert authorizer.check("POST", INFER, keyring.predict.bearer).status_code == 200  # still in force
    write_keys_file(keys_file, keyring.feedback)
    while metric(authorizer, "churnops_authz_keys_file_failing") != 0:
        authorizer.check("POST", INFER, keyring.predict.bearer)
        assert time.monotonic() < deadline, "recovery never reported"
        time.sleep(0.1)
    assert authorizer.check("POST", INFER, keyring.predict.bearer).status_code == 401


def test_a_stalled_redis_lifts_no_limit_beyond_the_stalled_request(
    start_authorizer, keyring, dedicated_redis
):
    """Redis sleeps 1.5 s: the check caught in it is let through unlimited (failure mode open), counted as
    a bypass; the checks after it are limited again at once."""
    authorizer = start_authorizer(redis_url=dedicated_redis.url, redis_timeout_s=0.1)
    limited = keyring.limited  # 3 per minute
    assert authorizer.check("POST", INFER, limited.bearer).status_code == 200
    stall = dedicated_redis.stall(1.5)
    caught = authorizer.check("POST", INFER, limited.bearer)
    stall.join(5)
    after = [authorizer.check("POST", INFER, limited.bearer).status_code for _ in range(3)]
    assert caught.status_code == 200
    assert after == [200, 429, 429]  # the stalled charge ran once when Redis woke: 1 + 1 + 1 = 3
    assert metric(authorizer, "churnops_authz_limiter_bypassed_total", reason="redis_error") == 1
    assert metric(authorizer, "churnops_authz_redis_circuit_state", state="closed") == 1


def test_a_dead_redis_opens_the_circuit_and_says_so(start_authorizer, keyring):
    authorizer = start_authorizer(
        redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_breaker_failures=3, redis_retry_interval_s=60
    )
    for _ in range(6):
        assert authorizer.check("POST", INFER, keyring.predict.bearer).status_code == 200
    assert metric(authorizer, "churnops_authz_redis_circuit_state", state="open") == 1
    assert metric(authorizer, "churnops_authz_redis_circuit_opened_total") == 1
    assert metric(authorizer, "churnops_authz_limiter_bypassed_total", reason="redis_error") == 3
    assert metric(authorizer, "churnops_authz_limiter_bypassed_total", reason="circuit_open") == 3
