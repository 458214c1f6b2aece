"""The canary report: a markdown file per automated canary, every step's checks with both sides' values."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

from churnops.cluster.canary.checks import CheckResult
from churnops.cluster.canary.config import AnalysisConfig
from churnops.cluster.canary.loop import Outcome

RATIOS = {"5xx ratio", "4xx ratio"}


def _when(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _value(result: CheckResult, value: float) -> str:
    if math.isnan(value):
        return "—"
    if result.name == "latency":
        return f"{value * 1000:.1f} ms"
    if result.name in RATIOS:
        return f"{value:.2%}"
    return f"{value:.3f}"


def render_report(
    outcome: Outcome,
    config: AnalysisConfig,
    *,
    overlay: str,
    canary_version: str,
    stable_version: str,
) -> str:
    lines = [
        f"# Canary of model version {canary_version} in {overlay}: {outcome.decision}",
        "",
        f"- Stable version: {stable_version}; plan: {' → '.join(f'{p} %' for p in config.plan.steps)} → 100 %,"
        f" {config.plan.dwell_s:g} s per step (warm-up {config.plan.warmup_s:g} s)",
        f"- Started {_when(outcome.started_at)}, finished {_when(outcome.finished_at)}",
        f"- Decision: **{outcome.decision}** — {outcome.reason}",
    ]
    if outcome.rollback_s is not None:
        lines.append(
            f"- Rollback (0 % to the canary, spec kept) live {outcome.rollback_s:.2f} s after the decision"
        )
    lines += [
        f"- Selectors: serving `{config.selectors.serving}`, performance `{config.selectors.performance}`",
        "",
    ]
    for step in outcome.steps:
        lines += [
            f"## Step {step.index}: {step.percent} % — {step.verdict}",
            "",
            f"Window {_when(step.window.start)} → {_when(step.window.end)} ({step.window.seconds} s"
            + (f", extended {step.extensions}x" if step.extensions else "")
            + f"); split live after {step.live_after_s:.1f} s.",
            "",
            "| check | verdict | canary | stable | fails when | detail |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.name} | {'**fail**' if r.verdict == 'fail' else r.verdict} | {_value(r, r.canary)} | "
            f"{_value(r, r.stable)} | {r.limit} | {r.detail} |"
            for r in step.results
        ]
        lines.append("")
    return "\n".join(lines)


def write_report(text: str, directory: Path, *, overlay: str, version: str, started_at: float) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromtimestamp(started_at, UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"canary-{overlay}-v{version}-{stamp}.md"
    path.write_text(text, encoding="utf-8")
    return path
