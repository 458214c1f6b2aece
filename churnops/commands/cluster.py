"""`churnops manifests ...`, `churnops schemas ...`: the cluster side's manifests (rollouts: commands/rollout.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from churnops.commands.common import console, fail

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
        "--image-tag",
        help="Full 40-hex commit SHA our four images were pushed under (mutable tags are refused); "
        "default: the overlay's pins",
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
        raise fail(str(error)) from error
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
        raise fail(str(error)) from error
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
        raise fail(str(error)) from error
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
        raise fail(str(error)) from error
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


@manifests_app.command("pin-images")
def pin_images_command(
    overlays: Annotated[list[str], typer.Argument(help="Overlays to pin")],
    digests: Annotated[
        Path | None,
        typer.Option(
            "--digests",
            help="CI's digest record: a folder of <component>.txt files or a JSON object {component: sha256:...}",
        ),
    ] = None,
    image_tag: ImageTag = None,
) -> None:
    """Write the images OVERLAYS deploy (their `images` Component), by digest or full commit SHA."""
    from churnops.cluster.images import ImageError, pins_for_tag, pins_from_digests, write_pins
    from churnops.cluster.render import RenderError, overlay_dir
    from churnops.cluster.settings import get_settings

    if (digests is None) == (image_tag is None):
        raise fail("give exactly one of --digests and --image-tag")
    try:
        pins = pins_from_digests(digests) if digests is not None else pins_for_tag(str(image_tag))
        for overlay in overlays:
            path = write_pins(overlay_dir(get_settings(), overlay), pins)
            console.print(f"wrote {path}")
    except (ImageError, RenderError, OSError, ValueError) as error:
        raise fail(str(error)) from error
