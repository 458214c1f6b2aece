"""The readiness gate on statuses shaped like KServe's (status.components.predictor, Knative revisions)."""

from __future__ import annotations

from typing import Any

from churnops.cluster.kserve import Expectation, serving_problems, traffic_problems

OLD, NEW = "churn-predictor-00001", "churn-predictor-00002"
URI = "s3://churnops-models/churn-model/{}"
PIN = "c" * 64


def status(created: str, ready: str, rolled_out: str, traffic: list[dict[str, Any]]) -> dict[str, Any]:
    """An InferenceService as `kubectl get -o json` returns it, Ready True (whatever the rest says)."""
    return {
        "status": {
            "observedGeneration": 3,
            "conditions": [{"type": "Ready", "status": "True"}],
            "components": {
                "predictor": {
                    "latestCreatedRevision": created,
                    "latestReadyRevision": ready,
                    "latestRolledoutRevision": rolled_out,
                    "traffic": traffic,
                }
            },
        }
    }


def split(percent: int, latest: str, rolled_out: str = OLD) -> list[dict[str, Any]]:
    targets = [{"tag": "latest", "latestRevision": True, "percent": percent, "revisionName": latest}]
    if percent < 100:
        targets.append(
            {"tag": "prev", "latestRevision": False, "percent": 100 - percent, "revisionName": rolled_out}
        )
    return targets


def revision(name: str, version: int, pin: str | None = PIN) -> dict[str, Any]:
    env = [{"name": "CHURNOPS_TRANSFORMER_ARTEFACT_SHA256", "value": pin}] if pin else []
    model_env = [{"name": "CHURNOPS_PREDICTOR_ARTEFACT_SHA256", "value": pin}] if pin else []
    return {
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "ghcr.io/churnops/churnops-predictor:a",
                    "env": model_env,
                },
                {
                    "name": "transformer-container",
                    "image": "ghcr.io/churnops/churnops-transformer:a",
                    "env": env,
                },
            ],
            "initContainers": [{"name": "storage-initializer", "args": [URI.format(version), "/mnt/models"]}],
        },
    }


REVISIONS = {OLD: revision(OLD, 1, pin=None), NEW: revision(NEW, 2)}
CANARY = Expectation(10, URI.format(2), artefact_sha256=PIN)


def test_a_stale_ready_status_does_not_pass_the_gate():
    """Before KServe reconciles the apply, the status still says Ready with 100 % on the old revision."""
    stale = status(OLD, OLD, OLD, split(100, OLD))
    problems = serving_problems(stale, CANARY, REVISIONS.get)
    assert "latest revision has 100 % of traffic, not 10 %" in problems
    assert any("does not download s3://churnops-models/churn-model/2" in p for p in problems)


def test_a_split_on_the_old_revision_with_the_right_percent_still_fails():
    """The percent alone is not enough: the latest ready revision must run the spec that was applied."""
    moved_too_early = status(OLD, OLD, OLD, split(10, OLD))
    problems = serving_problems(moved_too_early, CANARY, REVISIONS.get)
    assert any("artefact pin is None, not" in p for p in problems)


def test_the_new_revision_not_ready_yet_fails_the_gate():
    starting = status(NEW, OLD, OLD, split(10, OLD))
    problems = serving_problems(starting, CANARY, REVISIONS.get)
    assert f"latest created revision {NEW} is not ready (latest ready: {OLD})" in problems


def test_the_gate_passes_once_kserve_reports_the_split_on_the_new_revision():
    live = status(NEW, NEW, OLD, split(10, NEW))
    assert serving_problems(live, CANARY, REVISIONS.get) == []
    promoted = status(NEW, NEW, NEW, split(100, NEW))
    assert (
        serving_problems(promoted, Expectation(100, URI.format(2), artefact_sha256=PIN), REVISIONS.get) == []
    )


def test_a_rollback_is_judged_on_the_route_alone():
    """0 % to a canary revision that never became ready: the rollback is complete once the route is."""
    rollback = Expectation(0, URI.format(2), require_ready=False)
    rolled_back = status(NEW, OLD, OLD, split(0, OLD))
    assert serving_problems(rolled_back, rollback, lambda name: None) == []
    still_routed = status(NEW, OLD, OLD, split(10, OLD))
    assert serving_problems(still_routed, rollback, lambda name: None) == [
        "latest revision has 10 % of traffic, not 0 %",
        f"rolled-out revision {OLD} has 90 % of traffic, not 100 %",
    ]


def test_traffic_problems_name_the_rolled_out_revisions_share():
    predictor = status(NEW, NEW, OLD, [{"latestRevision": True, "percent": 10, "revisionName": NEW}])
    problems = traffic_problems(predictor["status"]["components"]["predictor"], 10)
    assert problems == [f"rolled-out revision {OLD} has 0 % of traffic, not 90 %"]
    assert serving_problems({"status": {}}, CANARY, REVISIONS.get) == ["no status.components.predictor yet"]
