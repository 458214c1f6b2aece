"""The canary's statistics, checks and decision loop, on synthetic windows (the rehearsal runs them live)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from churnops.cluster.canary.checks import judge, step_verdict
from churnops.cluster.canary.config import AnalysisConfig, AnalysisConfigError, StepPlan, load_config
from churnops.cluster.canary.loop import CanaryAnalysis
from churnops.cluster.canary.prometheus import PrometheusError, SideSample, Window
from churnops.cluster.canary.report import render_report
from churnops.cluster.canary.shadow import shadow_verdict
from churnops.cluster.canary.statistics import ks_distance, mix_distance, psi

BOUNDS = [round(0.05 * i, 2) for i in range(1, 21)] + [math.inf]
RISK_BANDS = ((0.3, "Low"), (0.5, "Medium"), (0.7, "High"), (math.inf, "Very High"))


def histogram(probabilities: np.ndarray) -> dict[float, float]:
    """Cumulative `le` buckets as the transformer's Histogram exports them."""
    return {bound: float(np.sum(probabilities <= bound)) for bound in BOUNDS}


def sample(
    probabilities: np.ndarray,
    *,
    latency_s: float = 0.02,
    errors: int = 0,
    refused: int = 0,
    f1: float = math.nan,
    labelled: float = 0.0,
) -> SideSample:
    levels: dict[str, float] = {}
    for p in probabilities:
        level = next(name for upper, name in RISK_BANDS if p < upper)
        levels[level] = levels.get(level, 0.0) + 1
    actions = {"call": float(np.sum(probabilities >= 0.5)), "none": float(np.sum(probabilities < 0.5))}
    requests = len(probabilities) // 5
    return SideSample(
        responses={"2xx": float(requests - errors - refused), "4xx": float(refused), "5xx": float(errors)},
        latency_quantile_s=latency_s,
        probability_buckets=histogram(probabilities),
        risk_levels=levels,
        actions=actions,
        f1=f1,
        labelled=labelled,
    )


def churn_like(n: int, seed: int) -> np.ndarray:
    """Probabilities shaped like the model's on Telco customers: most low, a long tail of churners."""
    return np.random.default_rng(seed).beta(0.7, 1.8, size=n)


CONFIG = AnalysisConfig()
STABLE = sample(churn_like(9000, 1))


def verdicts(canary: SideSample, stable: SideSample = STABLE) -> dict[str, str]:
    return {r.name: r.verdict for r in judge(canary, stable, CONFIG)}


def test_distances_of_one_distribution_are_small_and_insignificant():
    a, b = histogram(churn_like(2000, 2)), histogram(churn_like(8000, 3))
    ks, stability = ks_distance(a, b), psi(a, b)
    assert ks.value < 0.05
    assert ks.p_value > 0.01
    assert stability.value < 0.05
    assert stability.p_value > 0.01
    assert mix_distance({"x": 10, "y": 30}, {"x": 100, "y": 300}).value == pytest.approx(0.0)


def test_distances_of_shifted_answers_are_large_and_significant():
    flat = np.clip(np.random.default_rng(4).normal(0.27, 0.02, 2000), 0, 1)  # shuffled labels: base rate
    ks, stability = (
        ks_distance(histogram(flat), STABLE.probability_buckets),
        psi(histogram(flat), STABLE.probability_buckets),
    )
    assert ks.value > 0.3
    assert ks.p_value < 1e-6
    assert stability.value > 1.0
    assert stability.p_value < 1e-6


def test_a_model_of_the_same_behaviour_passes_every_check():
    results = judge(sample(churn_like(1500, 5)), STABLE, CONFIG)
    assert {r.name: r.verdict for r in results} == {
        "5xx ratio": "pass",
        "4xx ratio": "pass",
        "latency": "pass",
        "probability KS": "pass",
        "probability PSI": "pass",
        "risk-level mix": "pass",
        "action mix": "pass",
        "live F1": "insufficient",  # no labels yet: never holds a canary back
    }
    assert step_verdict(results) == "pass"


def test_a_model_answering_differently_fails_on_its_probabilities_and_mixes():
    flat = np.clip(np.random.default_rng(6).normal(0.27, 0.02, 1500), 0, 1)
    found = verdicts(sample(flat))
    assert found["probability KS"] == found["probability PSI"] == "fail"
    assert found["risk-level mix"] == "fail"
    assert found["5xx ratio"] == found["latency"] == "pass"  # what Flagger or Argo would have looked at


def test_a_slow_canary_fails_on_latency_but_not_on_jitter():
    probabilities = churn_like(1500, 7)
    assert verdicts(sample(probabilities, latency_s=0.09))["latency"] == "fail"
    assert verdicts(sample(probabilities, latency_s=0.035))["latency"] == "pass"  # 1.75x, but only 15 ms


def test_server_errors_and_new_refusals_fail():
    probabilities = churn_like(1500, 8)
    assert verdicts(sample(probabilities, errors=15))["5xx ratio"] == "fail"  # 5 % of 300 requests
    assert verdicts(sample(probabilities, errors=1))["5xx ratio"] == "pass"  # 0.3 %: under the floor
    assert verdicts(sample(probabilities, refused=30))["4xx ratio"] == "fail"


def test_live_f1_judges_once_both_versions_have_labels():
    probabilities = churn_like(1500, 9)
    stable = sample(churn_like(9000, 1), f1=0.62, labelled=900)
    assert verdicts(sample(probabilities, f1=0.50, labelled=250), stable)["live F1"] == "fail"
    assert verdicts(sample(probabilities, f1=0.60, labelled=250), stable)["live F1"] == "pass"
    assert verdicts(sample(probabilities, f1=0.10, labelled=50), stable)["live F1"] == "insufficient"


def test_a_quiet_window_is_inconclusive_unless_something_already_failed():
    quiet = sample(churn_like(100, 10))
    assert step_verdict(judge(quiet, STABLE, CONFIG)) == "inconclusive"
    failing = SideSample(responses={"5xx": 250.0, "2xx": 0.0})  # answers nothing but errors
    assert step_verdict(judge(failing, STABLE, CONFIG)) == "fail"


@dataclass
class Source:
    """Answers each window with the next canary sample (stable: always the same); may raise."""

    canary: list[SideSample | Exception]
    windows: list[Window] = field(default_factory=list)

    def sample(self, serving: str, performance: str, window: Window, quantile: float) -> SideSample:
        if 'role="stable"' in serving:
            return STABLE
        self.windows.append(window)
        item = self.canary.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


@dataclass
class Actuator:
    calls: list[str] = field(default_factory=list)

    def set_canary(self, percent: int) -> float:
        self.calls.append(f"set {percent}")
        return 0.5

    def promote(self) -> float:
        self.calls.append("promote")
        return 0.5

    def abort(self) -> float:
        self.calls.append("abort")
        return 0.5


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run(canary: list[SideSample | Exception], plan: StepPlan | None = None):
    config = AnalysisConfig(
        plan=plan or StepPlan(steps=(10, 25, 50), dwell_s=60, warmup_s=5, settle_s=2),
        selectors={"serving": 'role="{role}"', "performance": 'v="{version}"'},
    )
    source, actuator, clock = Source(list(canary)), Actuator(), Clock()
    analysis = CanaryAnalysis(
        config,
        source,
        actuator,
        canary_version="2",
        stable_version="1",
        clock=clock,
        sleep=clock.sleep,
        log=lambda _: None,
    )
    return analysis.run(), actuator, source, config


GOOD = sample(churn_like(1500, 11))
BAD = sample(np.clip(np.random.default_rng(12).normal(0.27, 0.02, 1500), 0, 1))


def test_a_good_canary_walks_every_step_and_is_promoted():
    outcome, actuator, source, config = run([GOOD, GOOD, GOOD])
    assert outcome.decision == "promoted"
    assert actuator.calls == ["set 10", "set 25", "set 50", "promote"]
    assert [w.seconds for w in source.windows] == [60, 60, 60]
    # Each window opens after the warm-up and was queried only once it had settled.
    assert all(b.start >= a.end for a, b in zip(source.windows, source.windows[1:], strict=False))
    report = render_report(outcome, config, overlay="prod", canary_version="2", stable_version="1")
    assert "# Canary of model version 2 in prod: promoted" in report
    assert report.count("| probability KS | pass |") == 3


def test_a_failing_check_aborts_at_once_and_never_promotes():
    outcome, actuator, _, config = run([BAD])
    assert outcome.decision == "aborted"
    assert actuator.calls == ["set 10", "abort"]
    assert "step 1 (10 %) failed: probability KS" in outcome.reason
    assert outcome.rollback_s is not None
    report = render_report(outcome, config, overlay="prod", canary_version="2", stable_version="1")
    assert "| probability KS | **fail** |" in report


def test_a_quiet_step_is_extended_then_judged():
    quiet = sample(churn_like(100, 13))
    outcome, actuator, source, _ = run(
        [quiet, GOOD], StepPlan(steps=(10,), dwell_s=60, warmup_s=5, settle_s=2)
    )
    assert outcome.decision == "promoted"
    assert [w.seconds for w in source.windows] == [60, 120]  # the same opening, twice as long
    assert outcome.steps[0].extensions == 1
    outcome, actuator, _, _ = run([quiet, quiet, quiet], StepPlan(steps=(10,), dwell_s=60, max_extensions=2))
    assert actuator.calls == ["set 10", "abort"]
    assert "too little traffic" in outcome.reason


def test_the_analysis_fails_closed_when_prometheus_is_unreachable():
    outcome, actuator, _, _ = run([GOOD, PrometheusError("connection refused")])
    assert actuator.calls == ["set 10", "set 25", "abort"]
    assert "connection refused" in outcome.reason


def test_thresholds_file_errors_name_the_field(tmp_path):
    path = tmp_path / "canary-analysis.yaml"
    path.write_text("plan:\n  steps: [50, 10]\nmodel:\n  max_ks: 2\n")
    with pytest.raises(AnalysisConfigError, match=r"plan.steps: .*increase") as caught:
        load_config(path)
    assert "model.max_ks" in str(caught.value)
    path.write_text("serving:\n  max_5xx: 0.1\n")
    with pytest.raises(AnalysisConfigError, match=r"serving\.max_5xx"):
        load_config(path)
    assert load_config(tmp_path / "absent.yaml") == AnalysisConfig()


def test_shadow_verdict_uses_the_overlays_margins():
    record = {
        "customers": 500,
        "challenger": {"roc_auc": 0.83, "f1": 0.60},
        "champion": {"roc_auc": 0.85, "f1": 0.61},
    }
    limits = CONFIG.shadow
    assert shadow_verdict(record, limits)[0] == "loses"
    assert shadow_verdict({**record, "challenger": {"roc_auc": 0.845, "f1": 0.60}}, limits) == ("holds", [])
    assert shadow_verdict({**record, "customers": 20}, limits)[0] == "insufficient"
