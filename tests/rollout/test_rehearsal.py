"""The automated canary, rehearsed for real: three local stacks (champion v1, a good and a bad challenger),
a real Prometheus, locust splitting the traffic, and the same analysis loop the cluster runs (tests/rollout/
rehearsal.py says what plays what). Short windows; scripts/canary_rehearsal.py runs the longer demo.

- the bad challenger (shuffled labels: it answers the base rate for everybody) is aborted at the first
  step, on its answers, while its 5xx ratio and latency are as good as the champion's;
- a slow challenger (the good model with its MLServer throttled like a CPU quota) is aborted on latency;
- the good challenger (another seed) walks every step and is promoted.
In each, the rollout state and the registry move as `churnops rollout` moves them, and nothing gets a 5xx.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from churn_model.registry import CHAMPION, HISTORY_TAG, Registry
from churnops.cluster.canary.auto import AutoResult, run_auto
from churnops.cluster.canary.config import AnalysisConfig, ModelLimits, Selectors, ServingLimits, StepPlan
from churnops.cluster.canary.prometheus import PrometheusSource
from churnops.cluster.rollout import Rollouts
from churnops.cluster.settings import ClusterSettings
from churnops.cluster.state import RolloutState, read_state, write_state
from tests.rollout.conftest import Challengers, mlflow_uris_kept
from tests.rollout.rehearsal import (
    LoadGenerator,
    LocalStack,
    Prometheus,
    RehearsalActuator,
    Throttle,
    running,
    scratch_checkout,
    start_stacks,
)
from tests.support.customers import sample_customers
from tests.support.services import predictor_python, unavailable

pytestmark = [pytest.mark.integration, pytest.mark.slow]

URI = "s3://churnops-models/churn-model/{}"
# The cluster's plan, in seconds instead of minutes: two steps, 5 s windows on 1 s scrapes.
CONFIG = AnalysisConfig(
    plan=StepPlan(steps=(25, 50), dwell_s=5, warmup_s=1, settle_s=2.5, max_extensions=1),
    selectors=Selectors(serving='job="rehearsal-v{version}"', performance='model_version="{version}"'),
    serving=ServingLimits(min_requests=30, min_latency_increase_s=0.03),
    model=ModelLimits(min_predictions=150),
)


@dataclass
class Rehearsal:
    challengers: Challengers
    stacks: dict[str, LocalStack]
    prometheus: Prometheus
    load: LoadGenerator
    cluster: ClusterSettings
    work: Path
    champion: str

    def registry(self) -> Registry:
        return Registry(self.challengers.settings)

    def reset(self) -> None:
        """Every scenario starts from the champion at 100 % in git and in the registry."""
        overlay = self.cluster.overlays_dir / "prod"
        write_state(overlay, RolloutState.stable(self.champion, URI.format(self.champion)))
        registry = self.registry()
        registry.client.set_registered_model_alias(registry.name, CHAMPION, self.champion)
        registry.client.set_registered_model_tag(registry.name, HISTORY_TAG, json.dumps([self.champion]))
        self.load.set_split(None, 0)

    def canary(self, version: str) -> AutoResult:
        registry = self.registry()
        rollouts = Rollouts(self.cluster, registry, "prod")
        actuator = RehearsalActuator(rollouts, version, self.load, self.stacks[version])
        return run_auto(
            rollouts,
            version,
            CONFIG,
            PrometheusSource(self.prometheus.url),
            actuator=actuator,
            reports_dir=self.work / "reports",
            log=lambda line: print(f"[{time.strftime('%H:%M:%S')}] {line}"),
        )

    def counter(self, expr: str) -> float:
        body = httpx.get(f"{self.prometheus.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        return sum(float(r["value"][1]) for r in body["data"]["result"])


@pytest.fixture(scope="module")
def rehearsal(challengers: Challengers, trained_model, telco_rows, tmp_path_factory) -> Iterator[Rehearsal]:
    prometheus_binary = shutil.which("prometheus")
    if prometheus_binary is None:
        unavailable("prometheus is not installed (Debian package prometheus)")
    assert prometheus_binary is not None
    python = predictor_python()
    if not (python.parent / "mlserver").exists():
        unavailable(f"mlserver is not installed next to {python}")
    work = tmp_path_factory.mktemp("rehearsal")
    cluster = ClusterSettings(project_dir=scratch_checkout(work / "checkout"), reports_dir=work / "reports")
    with mlflow_uris_kept():
        started = time.monotonic()
        stacks = start_stacks(challengers.artefacts, python, work)
        prometheus = Prometheus(work, list(stacks.values()))
        load = LoadGenerator(work, stacks[trained_model.version], sample_customers(telco_rows, 2000, seed=5))
        with running(*stacks.values(), prometheus, load):
            prometheus.start(prometheus_binary)
            load.start(users=4, rate=10, batch=10)
            print(f"rehearsal: {len(stacks)} stacks and Prometheus up in {time.monotonic() - started:.1f} s")
            rehearsal = Rehearsal(challengers, stacks, prometheus, load, cluster, work, trained_model.version)
            yield rehearsal


@pytest.fixture
def scenario(rehearsal: Rehearsal) -> Iterator[Rehearsal]:
    with mlflow_uris_kept():
        rehearsal.reset()
        yield rehearsal


def no_server_errors(rehearsal: Rehearsal) -> None:
    assert rehearsal.counter('churn_inference_responses_total{code="5xx"}') == 0
    assert rehearsal.counter('churn_inference_responses_total{code="2xx"}') > 0


def test_a_challenger_answering_differently_is_aborted_at_the_first_step(scenario: Rehearsal):
    bad = scenario.challengers.bad
    result = scenario.canary(bad)
    outcome = result.outcome
    print(result.report.read_text())

    assert outcome.decision == "aborted"
    assert len(outcome.steps) == 1
    (step,) = outcome.steps
    verdicts = {r.name: r.verdict for r in step.results}
    assert verdicts["probability KS"] == "fail"
    # What Flagger or Argo Rollouts judge by saw nothing wrong:
    assert verdicts["5xx ratio"] == verdicts["latency"] == "pass"

    state = read_state(scenario.cluster.overlays_dir / "prod")
    assert (state.phase, state.canary_percent, state.storage_uri) == ("aborted", 0, URI.format(bad))
    registry = scenario.registry()
    assert registry.alias_target(CHAMPION) == scenario.champion
    events = registry.rollout_history(bad)
    assert [e["kind"] for e in events][-2:] == ["canary-step", "canary-decision"]
    assert events[-1]["decision"] == "aborted"
    assert outcome.rollback_s is not None
    assert outcome.rollback_s < 5.0  # state, registry and split; measured 0.2-0.6 s

    # The rollback holds: no canary request is counted after it (a scrape and a margin later).
    time.sleep(2.5)
    served = f'sum(churn_inference_responses_total{{job="rehearsal-v{bad}"}})'
    before = scenario.counter(served)
    time.sleep(3)
    assert scenario.counter(served) == before
    no_server_errors(scenario)


def test_a_slow_challenger_is_aborted_on_latency(scenario: Rehearsal):
    good = scenario.challengers.good
    with Throttle(scenario.stacks[good].predictor.process.pid, run_ms=5, period_ms=100):
        result = scenario.canary(good)
    outcome = result.outcome
    print(result.report.read_text())

    assert outcome.decision == "aborted"
    (step,) = outcome.steps
    failed = step.failed
    assert "latency" in failed
    assert not [name for name in failed if name.startswith("probability")]
    assert read_state(scenario.cluster.overlays_dir / "prod").phase == "aborted"
    no_server_errors(scenario)


def test_a_good_challenger_walks_every_step_and_is_promoted(scenario: Rehearsal):
    good = scenario.challengers.good
    result = scenario.canary(good)
    outcome = result.outcome
    print(result.report.read_text())

    assert outcome.decision == "promoted", outcome.reason
    assert [(s.percent, s.verdict) for s in outcome.steps] == [(25, "pass"), (50, "pass")]
    state = read_state(scenario.cluster.overlays_dir / "prod")
    assert (state.phase, state.model_version, state.canary_percent) == ("stable", good, 100)
    registry = scenario.registry()
    assert registry.alias_target(CHAMPION) == good
    assert registry.history()[-1] == good
    report = result.report.read_text()
    assert f"# Canary of model version {good} in prod: promoted" in report
    assert report.count("| probability KS | pass |") == 2
    no_server_errors(scenario)
