"""`churnops manifests ...`, `churnops schemas ...`, `churnops rollout`: the cluster side."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from churnops.cluster.rollout import Plan, Rollouts

console = Console(stderr=True)
manifests_app = typer.Typer(
    name="manifests",
    help="Render and validate the Kubernetes manifests (kustomize overlays).",
    no_args_is_help=True,
)
schemas_app = typer.Typer(
    name="schemas",
    help="The published CRD schemas the manifests are validated against.",
    no_args_is_help=True,
)
app = typer.Typer()
app.add_typer(manifests_app)
app.add_typer(schemas_app)

ImageTag = Annotated[
    str | None,
    typer.Option(
        "--image-tag", help="Tag of our four images (CI: the commit SHA); default: the overlay's pins"
    ),
]
CodeCanary = Annotated[
    int | None,
    typer.Option(
        "--canary",
        min=1,
        max=99,
        help="Send this % to the new revisions (a code canary) when the overlay is stable; a model canary "
        "in progress keeps its own split.",
    ),
]


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=1)


@manifests_app.command("render")
def render_command(
    overlay: Annotated[str, typer.Argument(help="dev, staging or prod")],
    image_tag: ImageTag = None,
    canary: CodeCanary = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write here instead of stdout", dir_okay=False)
    ] = None,
) -> None:
    """Render an overlay (`kubectl kustomize`), optionally with the commit's images and a code canary."""
    from churnops.cluster.render import RenderError, render
    from churnops.cluster.settings import ToolMissingError, get_settings

    try:
        text = render(get_settings(), overlay, image_tag=image_tag, canary_percent=canary)
    except (RenderError, ToolMissingError) as error:
        raise _fail(str(error)) from error
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        console.print(f"wrote {out}")


@manifests_app.command("kustomization")
def kustomization_command(
    overlay: Annotated[str, typer.Argument(help="dev, staging or prod")],
    to: Annotated[
        Path, typer.Option("--to", help="Directory for the wrapper kustomization", file_okay=False)
    ],
    image_tag: ImageTag = None,
    canary: CodeCanary = None,
) -> None:
    """Write a kustomization wrapping OVERLAY with the commit's images, for `kubectl apply -k DIR`."""
    from churnops.cluster.render import RenderError, write_wrapper
    from churnops.cluster.settings import get_settings

    try:
        path = write_wrapper(get_settings(), overlay, to, image_tag=image_tag, canary_percent=canary)
    except RenderError as error:
        raise _fail(str(error)) from error
    console.print(f"wrote {path}: kubectl apply -k {to}")


@manifests_app.command("validate")
def validate_command(
    overlays: Annotated[list[str] | None, typer.Argument(help="Overlays to check (default: all)")] = None,
    checkov: Annotated[bool, typer.Option("--checkov/--no-checkov", help="Also run checkov")] = True,
) -> None:
    """Render each overlay and check every resource against its schema, strictly (exit 1 on a problem)."""
    from churnops.cluster.render import RenderError, overlay_names
    from churnops.cluster.schemas import SchemaError
    from churnops.cluster.settings import ToolMissingError, get_settings
    from churnops.cluster.validate import check_overlays

    settings = get_settings()
    names = overlays or overlay_names(settings)
    try:
        reports = check_overlays(settings, names, checkov=checkov)
    except (RenderError, SchemaError, ToolMissingError) as error:
        raise _fail(str(error)) from error
    failed = False
    for name, report in reports.items():
        count = sum(report.checked.values())
        if report.ok:
            console.print(f"{name}: {count} resources valid ({len(report.checked)} kinds)")
            continue
        failed = True
        console.print(f"[red]{name}: {len(report.problems)} problems[/red] in {count} resources")
        for problem in report.problems:
            console.print(f"  {problem}", markup=False, highlight=False)
    console.print(
        f"schemas: {settings.resolved_schemas_dir()}; core: Kubernetes {settings.kubernetes_version}"
    )
    if failed:
        raise typer.Exit(code=1)


@schemas_app.command("download")
def schemas_download(
    to: Annotated[
        Path | None, typer.Option("--to", help="Target folder (default: .churnops/schemas)", file_okay=False)
    ] = None,
) -> None:
    """Fetch the CRDs validation uses from their upstream repositories, at the pinned commits."""
    from churnops.cluster.schemas import SchemaError, download
    from churnops.cluster.settings import LOCAL_SCHEMAS, get_settings

    settings = get_settings()
    target = to or settings.project_dir / LOCAL_SCHEMAS
    try:
        written = download(target, settings.schemas_base_url)
    except SchemaError as error:
        raise _fail(str(error)) from error
    for path in written:
        console.print(f"  {path}")
    console.print(
        f"{len(written)} files (sha256 verified) in {target}; validation reads CHURNOPS_CLUSTER_SCHEMAS_DIR={target}"
    )


@schemas_app.command("list")
def schemas_list() -> None:
    """The pinned upstream files, and the folder validation reads."""
    from churnops.cluster.schemas import SOURCES
    from churnops.cluster.settings import get_settings

    for source in SOURCES:
        typer.echo(
            f"{source.folder}/{source.local_name}\t{source.repository}@{source.commit[:12]}\t{source.path}"
        )
    console.print(f"validation reads {get_settings().resolved_schemas_dir()}")


def _rollouts(overlay: str | None) -> Rollouts:
    from churn_model.registry import Registry
    from churn_model.settings import get_settings as model_settings
    from churnops.cluster.rollout import Rollouts
    from churnops.cluster.settings import get_settings

    return Rollouts(get_settings(), Registry(model_settings()), overlay)


def _report(plan: Plan, rollouts: Rollouts, *, apply: bool) -> None:
    console.print(plan.describe())
    path = rollouts.directory / "rollout.yaml"
    if apply:
        console.print(f"applied to the cluster and recorded in {path}: commit it")
    else:
        console.print(f"recorded in {path}: commit it for CI to deploy, or rerun with --apply")


@app.command("rollout")
def rollout_command(
    target: Annotated[
        str, typer.Argument(help="VERSION (number or alias) to canary, or promote | abort | status")
    ],
    canary: Annotated[int, typer.Option("--canary", min=1, max=99, help="% of traffic for VERSION")] = 10,
    overlay: Annotated[
        str | None,
        typer.Option("--overlay", help="Environment (default: CHURNOPS_CLUSTER_ROLLOUT_OVERLAY or prod)"),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the rendered manifest diff; change nothing")
    ] = False,
    apply: Annotated[
        bool, typer.Option("--apply", help="Also kubectl apply -k it (needs a kube context)")
    ] = False,
    image_tag: ImageTag = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="With --apply: wait for Ready (120 s)")
    ] = True,
) -> None:
    """Canary a model version by traffic split, promote it to 100 %, or abort back to the previous one."""
    from churnops.cluster.render import RenderError
    from churnops.cluster.rollout import RolloutError
    from churnops.cluster.settings import ToolMissingError
    from churnops.cluster.state import StateError

    try:
        rollouts = _rollouts(overlay)
        if target == "status":
            state = rollouts.status()
            typer.echo(
                f"{rollouts.overlay}: {state.phase}, version {state.model_version} at {state.canary_percent} %, "
                f"stable version {state.stable_version}"
            )
            return
        if target == "promote":
            plan = rollouts.plan_promote()
        elif target == "abort":
            plan = rollouts.plan_abort()
        else:
            plan = rollouts.plan_start(target, canary)
            champion = rollouts.registry.alias_target("champion")
            if champion != plan.before.stable_version:
                console.print(
                    f"[yellow]warning:[/yellow] the registry's champion is {champion}, but {rollouts.overlay} "
                    f"serves version {plan.before.stable_version}"
                )
        if dry_run:
            console.print(plan.describe() + " (dry run: nothing changed)")
            typer.echo(rollouts.diff(plan), nl=False)
            return
        rollouts.execute(plan, apply=apply, image_tag=image_tag, wait=wait)
    except (RolloutError, StateError, RenderError, ToolMissingError) as error:
        raise _fail(str(error)) from error
    _report(plan, rollouts, apply=apply)
