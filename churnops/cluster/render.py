"""Rendering overlays with `kubectl kustomize` (kustomize v5 is built into kubectl >= 1.27).

Deploy-time variations (other images than the overlay pins, a code canary) are not edits of the overlay:
they go into a small wrapper kustomization that lists the overlay as its resource, so `kubectl apply -k
WRAPPER` deploys exactly what was rendered and the overlay in git stays the record of intent. Images are
always pinned immutably (churnops.cluster.images): a digest or a full commit SHA, never a moving tag.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from churnops.cluster.images import IMAGES as IMAGE_NAMES
from churnops.cluster.images import ImageError, kustomize_entry, pins_for_tag
from churnops.cluster.settings import ClusterSettings
from churnops.cluster.state import read_state

# Our images, as the base names them (kustomize/base/kustomization.yaml `images`).
IMAGES = tuple(IMAGE_NAMES.values())
WRAPPER_FILE = "kustomization.yaml"


class RenderError(RuntimeError):
    """An overlay that does not exist or does not build."""


def overlay_names(settings: ClusterSettings) -> list[str]:
    root = settings.overlays_dir
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if (p / "kustomization.yaml").is_file() and not p.name.startswith(".")
    )


def overlay_dir(settings: ClusterSettings, overlay: str) -> Path:
    path = settings.overlays_dir / overlay
    if not (path / "kustomization.yaml").is_file():
        known = ", ".join(overlay_names(settings)) or "none"
        raise RenderError(f"no overlay {overlay!r} under {settings.overlays_dir} (known: {known})")
    return path


def kustomize(settings: ClusterSettings, directory: Path) -> str:
    """`kubectl kustomize DIR`: the rendered multi-document YAML."""
    result = subprocess.run(
        [settings.kubectl_path(), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RenderError(f"kubectl kustomize {directory} failed:\n{result.stderr.strip()}")
    return result.stdout


def image_pins(image_tag: str | None, images: Mapping[str, str] | None) -> dict[str, str]:
    """Image name -> digest or commit SHA: all four at `image_tag`, then `images` over them."""
    try:
        pins = pins_for_tag(image_tag) if image_tag else {}
    except ImageError as error:
        raise RenderError(str(error)) from error
    return {**pins, **(images or {})}


def wrapper_kustomization(
    overlay_path: Path,
    wrapper_dir: Path,
    *,
    image_tag: str | None,
    canary_percent: int | None,
    images: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The wrapper's kustomization: the overlay, our images at `image_tag` (or `images`: name -> digest or
    commit SHA), and a code-canary split."""
    document: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize refuses absolute resource paths: point at the overlay relative to the wrapper.
        "resources": [os.path.relpath(overlay_path.resolve(), wrapper_dir.resolve())],
    }
    pins = image_pins(image_tag, images)
    if pins:
        try:
            document["images"] = [kustomize_entry(name, pins[name]) for name in sorted(pins)]
        except ImageError as error:
            raise RenderError(str(error)) from error
    if canary_percent is not None:
        # One split for the whole pod: the transformer is collocated in the predictor's revisions.
        operations = [{"op": "add", "path": "/spec/predictor/canaryTrafficPercent", "value": canary_percent}]
        document["patches"] = [
            {
                "target": {"group": "serving.kserve.io", "kind": "InferenceService", "name": "churn"},
                "patch": yaml.safe_dump(operations, sort_keys=False),
            }
        ]
    return document


def code_canary_percent(overlay_path: Path, requested: int | None) -> int | None:
    """The split for a deploy of new images: `requested` when the environment is stable, else none.

    A model canary in progress (or an abort pinning traffic) keeps its own split; one canary at a time.
    """
    if requested is None:
        return None
    if not 0 < requested < 100:
        raise RenderError(f"--canary must be between 1 and 99, not {requested}")
    return requested if read_state(overlay_path).phase == "stable" else None


def write_wrapper(
    settings: ClusterSettings,
    overlay: str,
    destination: Path,
    *,
    image_tag: str | None = None,
    canary_percent: int | None = None,
    images: Mapping[str, str] | None = None,
) -> Path:
    """A directory for `kubectl apply -k`: the overlay with the commit's images and a code canary."""
    path = overlay_dir(settings, overlay)
    destination.mkdir(parents=True, exist_ok=True)
    document = wrapper_kustomization(
        path,
        destination,
        image_tag=image_tag,
        canary_percent=code_canary_percent(path, canary_percent),
        images=images,
    )
    target = destination / WRAPPER_FILE
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    return target


@contextmanager
def deployable(
    settings: ClusterSettings,
    overlay: str,
    *,
    image_tag: str | None = None,
    canary_percent: int | None = None,
    images: Mapping[str, str] | None = None,
) -> Iterator[Path]:
    """A kustomization directory to render or apply: the overlay itself, or a temporary wrapper."""
    if image_tag is None and canary_percent is None and not images:
        yield overlay_dir(settings, overlay)
        return
    scratch = Path(tempfile.mkdtemp(prefix="churnops-deploy-"))
    try:
        write_wrapper(
            settings, overlay, scratch, image_tag=image_tag, canary_percent=canary_percent, images=images
        )
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def render(
    settings: ClusterSettings,
    overlay: str,
    *,
    image_tag: str | None = None,
    canary_percent: int | None = None,
    images: Mapping[str, str] | None = None,
) -> str:
    with deployable(
        settings, overlay, image_tag=image_tag, canary_percent=canary_percent, images=images
    ) as directory:
        return kustomize(settings, directory)
