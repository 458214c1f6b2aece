"""`churnops rollout VERSION --auto`: the automated canary of a model version in one environment.

Before any traffic: the shadow evaluation must exist for VERSION against the version the environment
serves, and must not say that it loses (unless forced). Then the analysis loop (churnops.cluster.canary.
loop) walks the overlay's plan with an actuator that edits the rollout state and applies it
(`RolloutActuator`: churnops.cluster.rollout, with KServe's readiness gate). Every step is recorded in the
version's registry history, and the report is written and logged to the version's run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from churnops.cluster.canary.config import ANALYSIS_FILE, AnalysisConfig, load_config
from churnops.cluster.canary.loop import CanaryAnalysis, Outcome, StepRecord
from churnops.cluster.canary.prometheus import PrometheusSource
from churnops.cluster.canary.report import render_report, write_report
from churnops.cluster.canary.shadow import shadow_verdict
from churnops.cluster.kserve import Expectation
from churnops.cluster.rollout import Plan, RolloutError, Rollouts, abort_state, promote_state, start_states
from churnops.cluster.state import RolloutState

if TYPE_CHECKING:
    from churn_model.registry import Registry


class RefusedError(RolloutError):
    """The automated canary will not start (no shadow evaluation, or one the version loses)."""


def overlay_config(rollouts: Rollouts) -> AnalysisConfig:
    return load_config(rollouts.directory / ANALYSIS_FILE)


def check_shadow(
    registry: Registry, version: str, stable: str, config: AnalysisConfig, *, force: bool
) -> str:
    """The shadow evaluation's say, as a line for the log; raises when it forbids the canary."""
    record = registry.evaluation(version)
    if record is None or str(record.get("against")) != stable:
        message = (
            f"no shadow evaluation of version {version} against version {stable} (what this environment "
            f"serves): run `churnops evaluate {version} --against {stable}` first"
        )
        if not force:
            raise RefusedError(message + ", or pass --force")
        return f"forced: {message}"
    verdict, reasons = shadow_verdict(record, config.shadow)
    summary = f"shadow evaluation against version {stable}: {verdict}" + (
        f" ({'; '.join(reasons)})" if reasons else ""
    )
    if verdict == "loses" and not force:
        raise RefusedError(f"{summary}: the canary is not started (--force overrides)")
    return summary


class RolloutActuator:
    """Moves the split through churnops.cluster.rollout: edit the state, apply it, wait for KServe."""

    def __init__(self, rollouts: Rollouts, version: str, *, apply: bool = True) -> None:
        self.rollouts = rollouts
        self.version = version
        self.apply = apply

    def set_canary(self, percent: int) -> float:
        plan = self.rollouts.plan_start(self.version, percent)
        seconds = self.rollouts.execute(plan, apply=self.apply).seconds
        if self.rollouts.status() != plan.after:  # staged without --apply: the second half
            seconds += self.rollouts.execute(self.rollouts.plan_start(self.version, percent)).seconds
        return seconds

    def promote(self) -> float:
        return self.rollouts.execute(self.rollouts.plan_promote(), apply=self.apply).seconds

    def abort(self) -> float:
        return self.rollouts.execute(self.rollouts.plan_abort(), apply=self.apply).seconds


@dataclass(frozen=True)
class AutoResult:
    outcome: Outcome
    report: Path


def run_auto(
    rollouts: Rollouts,
    version: str,
    config: AnalysisConfig,
    source: PrometheusSource,
    *,
    actuator: RolloutActuator | None = None,
    reports_dir: Path,
    log: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> AutoResult:
    """Run the analysis loop; record each step and the decision in the registry; write the report."""
    registry = rollouts.registry
    stable = rollouts.status().stable_version
    overlay = rollouts.overlay

    def record_step(step: StepRecord) -> None:
        registry.record_rollout_event(version, step.event(overlay, version))

    analysis = CanaryAnalysis(
        config,
        source,
        actuator or RolloutActuator(rollouts, version),
        canary_version=version,
        stable_version=stable,
        on_step=record_step,
        log=log,
        sleep=sleep,
    )
    outcome = analysis.run()
    text = render_report(outcome, config, overlay=overlay, canary_version=version, stable_version=stable)
    report = write_report(text, reports_dir, overlay=overlay, version=version, started_at=outcome.started_at)
    registry.record_rollout_event(
        version,
        {
            "kind": "canary-decision",
            "overlay": overlay,
            "version": version,
            "stable": stable,
            "decision": outcome.decision,
            "reason": outcome.reason,
            "rollback_s": outcome.rollback_s,
            "report": report.name,
        },
    )
    registry.log_rollout_report(version, report)
    return AutoResult(outcome, report)


def dry_run(rollouts: Rollouts, reference: str, config: AnalysisConfig) -> str:
    """The plan and, step by step, the manifest changes and what the readiness gate waits for."""
    before = rollouts.status()
    version = rollouts.version_of(reference)
    first = rollouts.plan_start(reference, config.plan.steps[0])
    states = list(first.steps)
    for percent in config.plan.steps[1:]:
        states += start_states(
            states[-1], version, percent, first.after.storage_uri, first.after.artefact_sha256
        )
    promoted, aborted = promote_state(states[-1]), abort_state(states[-1])
    lines = [
        f"automated canary of version {version} in {rollouts.overlay} (stable: version {before.stable_version})",
        f"plan: {' -> '.join(f'{p} %' for p in config.plan.steps)} -> 100 %; each step: apply, wait until "
        f"KServe reports it, {config.plan.warmup_s:g} s warm-up, {config.plan.dwell_s:g} s window, judged "
        f"{config.plan.settle_s:g} s later (up to {config.plan.max_extensions} extensions)",
        f"selectors: serving {{{config.selectors.serving}}}, performance {{{config.selectors.performance}}}",
        "on a failed check: abort (canaryTrafficPercent 0, spec kept); after the last step: promote (100 %)",
        "",
    ]
    previous = before
    for state in [*states, promoted]:
        lines += _dry_step(rollouts, previous, state)
        previous = state
    lines += ["# on any failed step instead:", *_dry_step(rollouts, states[-1], aborted)]
    return "\n".join(lines) + "\n"


def _dry_step(rollouts: Rollouts, before: RolloutState, state: RolloutState) -> list[str]:
    plan = Plan("start", rollouts.overlay, before, (state,))
    expected = Expectation.of_state(state)
    gate = f"{expected.canary_percent} % on the latest revision" + (
        ", which must be the latest created and ready and run " + str(expected.storage_uri)
        if expected.require_ready
        else " (route only: the canary revision need not be ready)"
    )
    return [
        f"## {state.phase} {state.canary_percent} % (version {state.model_version})",
        f"kubectl apply -k <{rollouts.overlay} with the live images>",
        f"gate: {gate}",
        rollouts.diff(plan).rstrip("\n"),
        "",
    ]
