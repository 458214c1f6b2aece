"""The verdict of one step: every check of the canary against the stable revision over the same window.

Each check passes, fails, or cannot judge (too little traffic or no labels). A step fails on any failed
check; it passes only when the checks that must always judge (5xx, latency, the probability distribution)
could; otherwise it is inconclusive and its window is extended. Live F1 judges only once both versions
have enough labels: labels come back weeks later, so its absence never holds a canary back.

Flagger and Argo Rollouts judge serving health only (error rate, latency); the model checks are what tells
that a new model answers the same customers differently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from churnops.cluster.canary.config import AnalysisConfig
from churnops.cluster.canary.prometheus import SideSample
from churnops.cluster.canary.statistics import Distance, ks_distance, mix_distance, psi

Verdict = Literal["pass", "fail", "insufficient"]
StepVerdict = Literal["pass", "fail", "inconclusive"]
# Checks that must judge for a step to pass.
REQUIRED = ("5xx ratio", "latency", "probability KS", "probability PSI")


@dataclass(frozen=True)
class CheckResult:
    name: str
    verdict: Verdict
    canary: float
    stable: float
    limit: str
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def _insufficient(name: str, canary: float, stable: float, limit: str, detail: str) -> CheckResult:
    return CheckResult(name, "insufficient", canary, stable, limit, detail)


def error_ratio_checks(canary: SideSample, stable: SideSample, config: AnalysisConfig) -> list[CheckResult]:
    limits = config.serving
    c5, s5 = canary.ratio("5xx"), stable.ratio("5xx")
    c4, s4 = canary.ratio("4xx"), stable.ratio("4xx")
    limit5 = f"> {limits.max_5xx_ratio:g} and > stable + {limits.max_5xx_ratio_increase:g}"
    limit4 = f"> stable + {limits.max_4xx_ratio_increase:g}"
    if canary.requests < limits.min_requests or stable.requests <= 0:
        detail = f"{canary.requests:.0f} canary requests (needs {limits.min_requests})"
        return [
            _insufficient("5xx ratio", c5, s5, limit5, detail),
            _insufficient("4xx ratio", c4, s4, limit4, detail),
        ]
    failed5 = c5 > limits.max_5xx_ratio and c5 > s5 + limits.max_5xx_ratio_increase
    failed4 = c4 > s4 + limits.max_4xx_ratio_increase
    requests = f"{canary.requests:.0f} vs {stable.requests:.0f} requests"
    return [
        CheckResult("5xx ratio", "fail" if failed5 else "pass", c5, s5, limit5, requests),
        CheckResult("4xx ratio", "fail" if failed4 else "pass", c4, s4, limit4, requests),
    ]


def latency_check(canary: SideSample, stable: SideSample, config: AnalysisConfig) -> CheckResult:
    limits = config.serving
    name = "latency"
    c, s = canary.latency_quantile_s, stable.latency_quantile_s
    limit = (
        f"p{limits.latency_quantile * 100:g} > {limits.max_latency_ratio:g} x stable and "
        f"+{limits.min_latency_increase_s * 1000:g} ms"
    )
    if canary.requests < limits.min_requests or math.isnan(c) or math.isnan(s):
        return _insufficient(name, c, s, limit, f"{canary.requests:.0f} canary requests")
    failed = c > s * limits.max_latency_ratio and c - s > limits.min_latency_increase_s
    return CheckResult(
        name, "fail" if failed else "pass", c, s, limit, f"{c * 1000:.1f} vs {s * 1000:.1f} ms"
    )


def _distance_check(
    name: str, distance: Distance, maximum: float, significance: float, minimum_n: int
) -> CheckResult:
    limit = f"> {maximum:g} (p < {significance:g})"
    detail = f"n {distance.n_canary:.0f} vs {distance.n_stable:.0f}, p = {distance.p_value:.2g}"
    if distance.n_canary < minimum_n or math.isnan(distance.value):
        return _insufficient(
            name,
            distance.value,
            math.nan,
            limit,
            f"{distance.n_canary:.0f} canary customers (needs {minimum_n})",
        )
    failed = distance.value > maximum and distance.p_value < significance
    # A distance has one value (canary against stable): the stable column stays empty.
    return CheckResult(name, "fail" if failed else "pass", distance.value, math.nan, limit, detail)


def model_checks(canary: SideSample, stable: SideSample, config: AnalysisConfig) -> list[CheckResult]:
    limits = config.model
    alpha, n = limits.significance, limits.min_predictions
    return [
        _distance_check(
            "probability KS",
            ks_distance(canary.probability_buckets, stable.probability_buckets),
            limits.max_ks,
            alpha,
            n,
        ),
        _distance_check(
            "probability PSI",
            psi(canary.probability_buckets, stable.probability_buckets),
            limits.max_psi,
            alpha,
            n,
        ),
        _distance_check(
            "risk-level mix",
            mix_distance(canary.risk_levels, stable.risk_levels),
            limits.max_risk_mix_distance,
            alpha,
            n,
        ),
        _distance_check(
            "action mix",
            mix_distance(canary.actions, stable.actions),
            limits.max_action_mix_distance,
            alpha,
            n,
        ),
    ]


def performance_check(canary: SideSample, stable: SideSample, config: AnalysisConfig) -> CheckResult:
    limits = config.performance
    limit = f"< stable - {limits.max_f1_drop:g}"
    counts = f"{canary.labelled:.0f} vs {stable.labelled:.0f} labelled"
    if min(canary.labelled, stable.labelled) < limits.min_labelled or math.isnan(canary.f1 + stable.f1):
        return _insufficient(
            "live F1", canary.f1, stable.f1, limit, f"{counts} (needs {limits.min_labelled})"
        )
    failed = canary.f1 < stable.f1 - limits.max_f1_drop
    return CheckResult("live F1", "fail" if failed else "pass", canary.f1, stable.f1, limit, counts)


def judge(canary: SideSample, stable: SideSample, config: AnalysisConfig) -> list[CheckResult]:
    return [
        *error_ratio_checks(canary, stable, config),
        latency_check(canary, stable, config),
        *model_checks(canary, stable, config),
        performance_check(canary, stable, config),
    ]


def step_verdict(results: Sequence[CheckResult]) -> StepVerdict:
    if any(r.verdict == "fail" for r in results):
        return "fail"
    if any(r.verdict == "insufficient" and r.name in REQUIRED for r in results):
        return "inconclusive"
    return "pass"
