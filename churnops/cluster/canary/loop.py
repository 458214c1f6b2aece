"""The automated canary: walk the plan's steps, judge each from Prometheus, promote or roll back.

For each step: move the split (the actuator returns once it is live), wait `warmup_s`, then judge the
window of `dwell_s` that follows, canary against stable over the same window. A failed check aborts at
once, KServe's way (0 % to the canary, spec kept); an inconclusive window (too little traffic) is extended
up to `max_extensions` times, then aborts too: a canary nobody could judge is not promoted. After the last
step passes, the canary is promoted to 100 %. Anything going wrong mid-way (Prometheus unreachable, the
split not going live, Ctrl-C) also rolls back: failing closed costs a retry, failing open costs customers.

The cluster and the rehearsal run this same loop; only the actuator (kubectl and KServe, or a load
generator's split) and the selectors (per-revision series, or per local stack) differ.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from churnops.cluster.canary.checks import CheckResult, StepVerdict, judge, step_verdict
from churnops.cluster.canary.config import AnalysisConfig
from churnops.cluster.canary.prometheus import PrometheusError, PrometheusSource, SideSample, Window

Decision = Literal["promoted", "aborted"]


class Actuator(Protocol):
    """Moves traffic; each call returns once the change is live, with the seconds that took."""

    def set_canary(self, percent: int) -> float: ...

    def promote(self) -> float: ...

    def abort(self) -> float: ...


@dataclass(frozen=True)
class StepRecord:
    index: int
    percent: int
    window: Window
    verdict: StepVerdict
    results: tuple[CheckResult, ...]
    extensions: int
    live_after_s: float

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.results if r.verdict == "fail"]

    def event(self, overlay: str, version: str) -> dict[str, object]:
        return {
            "kind": "canary-step",
            "overlay": overlay,
            "version": version,
            "step": self.index,
            "percent": self.percent,
            "window": [round(self.window.start, 3), round(self.window.end, 3)],
            "verdict": self.verdict,
            "failed": self.failed,
            "checks": [r.as_dict() for r in self.results],
        }


@dataclass
class Outcome:
    decision: Decision
    reason: str
    started_at: float
    finished_at: float = 0.0
    steps: list[StepRecord] = field(default_factory=list)
    decided_at: float | None = None  # when the failing verdict (or the error) was known
    rollback_s: float | None = None  # from then until the actuator reported the rollback live


class CanaryAnalysis:
    """One automated canary of `canary_version` against `stable_version`."""

    def __init__(
        self,
        config: AnalysisConfig,
        source: PrometheusSource,
        actuator: Actuator,
        *,
        canary_version: str,
        stable_version: str,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        on_step: Callable[[StepRecord], None] | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.source = source
        self.actuator = actuator
        self.canary_version = canary_version
        self.stable_version = stable_version
        self.clock = clock
        self.sleep = sleep
        self.on_step = on_step
        self.log = log

    # --- one window ---

    def samples(self, window: Window) -> tuple[SideSample, SideSample]:
        """Canary and stable over the same window."""
        selectors, quantile = self.config.selectors, self.config.serving.latency_quantile
        result = []
        for role, version in (("canary", self.canary_version), ("stable", self.stable_version)):
            result.append(
                self.source.sample(
                    selectors.format(selectors.serving, version=version, role=role),
                    selectors.format(selectors.performance, version=version, role=role),
                    window,
                    quantile,
                )
            )
        return result[0], result[1]

    def evaluate(self, window: Window) -> list[CheckResult]:
        canary, stable = self.samples(window)
        return judge(canary, stable, self.config)

    # --- the plan ---

    def _wait_until(self, moment: float) -> None:
        remaining = moment - self.clock()
        if remaining > 0:
            self.sleep(remaining)

    def _step(self, index: int, percent: int) -> StepRecord:
        plan = self.config.plan
        live_after = self.actuator.set_canary(percent)
        opened = self.clock() + plan.warmup_s
        self.log(
            f"step {index}: {percent} % to version {self.canary_version} (live after {live_after:.1f} s)"
        )
        extensions = 0
        while True:
            end = opened + plan.dwell_s * (extensions + 1)
            self._wait_until(end + plan.settle_s)
            window = Window(end=end, seconds=max(round(end - opened), 1))
            results = tuple(self.evaluate(window))
            verdict = step_verdict(results)
            if verdict != "inconclusive" or extensions >= plan.max_extensions:
                return StepRecord(index, percent, window, verdict, results, extensions, live_after)
            extensions += 1
            self.log(f"step {index}: too little traffic to judge, window extended ({extensions})")

    def run(self) -> Outcome:
        outcome = Outcome("aborted", "", started_at=self.clock())
        try:
            for index, percent in enumerate(self.config.plan.steps, start=1):
                record = self._step(index, percent)
                outcome.steps.append(record)
                if self.on_step is not None:
                    self.on_step(record)
                self.log(
                    f"step {index}: {record.verdict}"
                    + (f" ({', '.join(record.failed)})" if record.failed else "")
                )
                if record.verdict != "pass":
                    reason = (
                        f"step {index} ({percent} %) failed: {', '.join(record.failed)}"
                        if record.verdict == "fail"
                        else f"step {index} ({percent} %) saw too little traffic to judge"
                    )
                    return self._abort(outcome, reason)
            self.actuator.promote()
            outcome.decision, outcome.reason = "promoted", f"all {len(outcome.steps)} steps passed"
        except (PrometheusError, RuntimeError) as error:
            return self._abort(outcome, f"analysis stopped: {error}")
        except KeyboardInterrupt:
            self._abort(outcome, "interrupted")
            raise
        outcome.finished_at = self.clock()
        return outcome

    def _abort(self, outcome: Outcome, reason: str) -> Outcome:
        outcome.decided_at = self.clock()
        self.log(f"aborting: {reason}")
        self.actuator.abort()
        outcome.finished_at = self.clock()
        outcome.rollback_s = outcome.finished_at - outcome.decided_at
        outcome.decision, outcome.reason = "aborted", reason
        return outcome
