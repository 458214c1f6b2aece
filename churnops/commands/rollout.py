"""`churnops rollout`: canary a model version by hand or automatically, promote, abort, settle, wait."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from churnops.commands.common import console, fail

if TYPE_CHECKING:
    from churnops.cluster.rollout import Plan, Rollouts

app = typer.Typer()

Overlay = Annotated[
    str | None,
    typer.Option("--overlay", help="Environment (default: CHURNOPS_CLUSTER_ROLLOUT_OVERLAY or prod)"),
]
ACTIONS = ("promote", "abort", "settle", "pin")


def _rollouts(overlay: str | None) -> Rollouts:
    from churn_model.registry import Registry
    from churn_model.settings import get_settings as model_settings
    from churnops.cluster.rollout import Rollouts
    from churnops.cluster.settings import get_settings

    return Rollouts(get_settings(), Registry(model_settings()), overlay)


def _done(plan: Plan, rollouts: Rollouts, *, apply: bool) -> None:
    path = rollouts.directory / "rollout.yaml"
    state = rollouts.status()
    if state != plan.after:
        console.print(
            f"{rollouts.overlay}: staged version {state.model_version} at 0 % in {path}: apply it, then run the "
            "same command again to move traffic once its revision is ready"
        )
        return
    console.print(plan.describe())
    if apply:
        console.print(f"applied to the cluster and recorded in {path}: commit it")
    else:
        console.print(f"recorded in {path}: commit it for CI to deploy, or rerun with --apply")


def _status(rollouts: Rollouts) -> None:
    state = rollouts.status()
    pin = state.artefact_sha256[:12] if state.artefact_sha256 else "not pinned"
    typer.echo(
        f"{rollouts.overlay}: {state.phase}, version {state.model_version} at {state.canary_percent} %, "
        f"stable version {state.stable_version}, artefact {pin}"
    )


def _wait(rollouts: Rollouts, image_tag: str | None, canary: int | None) -> None:
    """The readiness gate alone, for what `churnops manifests kustomization` rendered (CI's deploy jobs)."""
    from churnops.cluster.kserve import Expectation
    from churnops.cluster.render import render
    from churnops.cluster.validate import parse_documents

    text = render(rollouts.settings, rollouts.overlay, image_tag=image_tag, canary_percent=canary)
    inference_service = next(d for d in parse_documents(text) if d.get("kind") == "InferenceService")
    expected = Expectation.of_rendered(inference_service, require_ready=rollouts.status().phase != "aborted")
    seconds = rollouts.kserve().wait(
        expected,
        rollouts.settings.ready_timeout_s,
        rollouts.settings.ready_poll_interval_s,
        on_wait=lambda problems: console.print(f"waiting: {'; '.join(problems)}", highlight=False),
    )
    console.print(f"{rollouts.overlay}: serving {expected.describe()} ({seconds:.0f} s)")


def _plan(rollouts: Rollouts, target: str, canary: int) -> Plan:
    if target == "promote":
        return rollouts.plan_promote()
    if target == "abort":
        return rollouts.plan_abort()
    if target == "settle":
        return rollouts.plan_settle()
    if target == "pin":
        return rollouts.plan_pin()
    plan = rollouts.plan_start(target, canary)
    champion = rollouts.registry.alias_target("champion")
    if champion != plan.before.stable_version:
        console.print(
            f"[yellow]warning:[/yellow] the registry's champion is {champion}, but {rollouts.overlay} "
            f"serves version {plan.before.stable_version}"
        )
    return plan


def _auto(rollouts: Rollouts, target: str, *, dry_run: bool, force: bool, prometheus: str | None) -> None:
    from churnops.cluster.canary.auto import check_shadow, overlay_config, run_auto
    from churnops.cluster.canary.auto import dry_run as auto_dry_run
    from churnops.cluster.canary.prometheus import PrometheusSource

    config = overlay_config(rollouts)
    if dry_run:
        typer.echo(auto_dry_run(rollouts, target, config), nl=False)
        return
    version = rollouts.version_of(target)
    stable = rollouts.status().stable_version
    console.print(check_shadow(rollouts.registry, version, stable, config, force=force), highlight=False)
    settings = rollouts.settings
    source = PrometheusSource(prometheus or settings.prometheus_url, settings.prometheus_timeout_s)
    result = run_auto(
        rollouts,
        version,
        config,
        source,
        reports_dir=settings.reports_dir,
        log=lambda line: console.print(line, highlight=False),
    )
    outcome = result.outcome
    console.print(f"{outcome.decision}: {outcome.reason}; report {result.report}", highlight=False)
    if outcome.decision != "promoted":
        raise typer.Exit(code=1)


@app.command("rollout")
def rollout_command(
    target: Annotated[
        str,
        typer.Argument(
            help="VERSION (number or alias) to canary, or promote | abort | settle | pin | status | wait"
        ),
    ],
    canary: Annotated[int, typer.Option("--canary", min=1, max=99, help="% of traffic for VERSION")] = 10,
    overlay: Overlay = None,
    auto: Annotated[
        bool,
        typer.Option(
            "--auto",
            help="Automated canary: walk the overlay's canary-analysis.yaml plan, judge each step from "
            "Prometheus, abort or promote by itself (applies with kubectl)",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and the rendered manifest diff; change nothing")
    ] = False,
    apply: Annotated[
        bool, typer.Option("--apply", help="Also kubectl apply -k it and wait until KServe serves it")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="--auto: start even without or against the shadow evaluation")
    ] = False,
    prometheus: Annotated[
        str | None, typer.Option("--prometheus", help="--auto: Prometheus URL (default: the setting)")
    ] = None,
    image_tag: Annotated[
        str | None,
        typer.Option(
            "--image-tag",
            help="Commit SHA of our images: with --apply, deploy them (default: keep the live ones); "
            "with wait, the ones CI deployed",
        ),
    ] = None,
    code_canary: Annotated[
        int | None, typer.Option("--code-canary", min=1, max=99, help="wait: the code canary CI deployed")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="With --apply: wait until KServe serves the change")
    ] = True,
) -> None:
    """Canary a model version by traffic split (by hand or --auto), promote it, abort back, settle, wait."""
    from churnops.cluster.canary.config import AnalysisConfigError
    from churnops.cluster.canary.prometheus import PrometheusError
    from churnops.cluster.kserve import ServingNotReadyError
    from churnops.cluster.render import RenderError
    from churnops.cluster.rollout import RolloutError
    from churnops.cluster.settings import ToolMissingError
    from churnops.cluster.state import StateError

    try:
        rollouts = _rollouts(overlay)
        if target == "status":
            return _status(rollouts)
        if target == "wait":
            return _wait(rollouts, image_tag, code_canary)
        if auto and target not in ACTIONS:
            return _auto(rollouts, target, dry_run=dry_run, force=force, prometheus=prometheus)
        plan = _plan(rollouts, target, canary)
        if dry_run:
            console.print(plan.describe() + " (dry run: nothing changed)")
            typer.echo(rollouts.diff(plan), nl=False)
            return None
        rollouts.execute(plan, apply=apply, image_tag=image_tag, wait=wait)
    except (
        RolloutError,
        StateError,
        RenderError,
        ToolMissingError,
        ServingNotReadyError,
        PrometheusError,
        AnalysisConfigError,
    ) as error:
        raise fail(str(error)) from error
    _done(plan, rollouts, apply=apply)
    return None
