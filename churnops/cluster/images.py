"""Immutable image references: what a deploying overlay may name, and the file CI writes them into.

A tag that a build overwrites (`0.1.0` pushed by every build of main) makes `kubectl apply -k` deploy
whatever was built last, past the canary and its approval. So our four images are referenced by digest
(`@sha256:...`, what CI records from the registry after the push) or by a full 40-hex commit SHA (a tag our
workflow writes once per commit and never again). Each overlay holds them in a kustomize Component,
`images/kustomization.yaml`, written by `churnops manifests pin-images` (CI: after the images are pushed)
and never by hand; the base names the images without pinning them.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Our images, as the base names them (kustomize/base/kustomization.yaml `images`), by component.
IMAGES = {
    "transformer": "ghcr.io/churnops/churnops-transformer",
    "predictor": "ghcr.io/churnops/churnops-predictor",
    "detector": "ghcr.io/churnops/churnops-detector",
    "authorizer": "ghcr.io/churnops/churnops-authorizer",
}
COMMIT_TAG = re.compile(r"^[0-9a-f]{40}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
COMPONENT_DIR = "images"
COMPONENT_HEADER = """\
# The images this environment deploys, by digest (or full commit SHA): written by `churnops manifests
# pin-images` (CI, after the images are pushed), never by hand. Mutable tags are refused.
"""


class ImageError(ValueError):
    """A mutable or malformed image reference."""


@dataclass(frozen=True)
class ImageRef:
    """`name[:tag][@digest]`, split. The tag is kept with a digest, but the digest is what pulls."""

    name: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, reference: str) -> ImageRef:
        name, _, digest = reference.partition("@")
        last = name.rsplit("/", 1)[-1]
        tag = None
        if ":" in last:
            name, tag = name.rsplit(":", 1)
        return cls(name, tag, digest or None)

    @property
    def immutable(self) -> bool:
        if self.digest is not None:
            return bool(DIGEST.match(self.digest))
        return self.tag is not None and bool(COMMIT_TAG.match(self.tag))

    @property
    def pin(self) -> str:
        """The reference without the name: `@sha256:...` or `:tag`."""
        return f"@{self.digest}" if self.digest else f":{self.tag}"

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def check_pin(pin: str) -> str:
    """A digest (`sha256:` + 64 hex) or a full commit SHA; anything else is refused, naming it."""
    if DIGEST.match(pin) or COMMIT_TAG.match(pin):
        return pin
    raise ImageError(
        f"image reference {pin!r} is mutable or malformed: use a digest (sha256:<64 hex>) or a full 40-hex "
        "commit SHA"
    )


def kustomize_entry(name: str, pin: str) -> dict[str, str]:
    """A kustomize `images` entry pinning `name` to a digest or commit tag."""
    check_pin(pin)
    return {"name": name, "digest": pin} if pin.startswith("sha256:") else {"name": name, "newTag": pin}


def component_document(pins: Mapping[str, str]) -> dict[str, Any]:
    """The overlay's images Component: each of `pins` (image name -> digest or commit SHA)."""
    return {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
        "images": [kustomize_entry(name, pins[name]) for name in sorted(pins)],
    }


def read_pins(overlay_dir: Path) -> dict[str, str]:
    """The overlay's pins (image name -> digest or commit SHA); empty when it has no images component."""
    path = overlay_dir / COMPONENT_DIR / "kustomization.yaml"
    if not path.is_file():
        return {}
    document = yaml.safe_load(path.read_text()) or {}
    return {
        entry["name"]: entry.get("digest") or entry.get("newTag", "") for entry in document.get("images", [])
    }


def write_pins(overlay_dir: Path, pins: Mapping[str, str]) -> Path:
    """Write (atomically) the overlay's images component with `pins` merged over the current ones."""
    unknown = set(pins) - set(IMAGES.values())
    if unknown:
        raise ImageError(f"not one of our images: {', '.join(sorted(unknown))}")
    merged = {**read_pins(overlay_dir), **{name: check_pin(pin) for name, pin in pins.items()}}
    directory = overlay_dir / COMPONENT_DIR
    directory.mkdir(exist_ok=True)
    path = directory / "kustomization.yaml"
    fd, scratch = tempfile.mkstemp(prefix=".kustomization.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(COMPONENT_HEADER + yaml.safe_dump(component_document(merged), sort_keys=False))
        os.chmod(scratch, 0o644)
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
    return path


def pins_for_tag(tag: str) -> dict[str, str]:
    """All four images at one commit SHA (what CI pushes per commit)."""
    check_pin(tag)
    return dict.fromkeys(IMAGES.values(), tag)


def pins_from_digests(path: Path) -> dict[str, str]:
    """Digests CI recorded after the push: a directory of `<component>.txt` files or a JSON object
    {component or image name: "sha256:..."}. Every one of our four images must be there."""
    if path.is_dir():
        found = {p.stem: p.read_text().strip() for p in path.glob("*.txt")}
    else:
        found = {str(k): str(v) for k, v in json.loads(path.read_text()).items()}
    pins = {IMAGES.get(key, key): check_pin(value) for key, value in found.items()}
    missing = set(IMAGES.values()) - set(pins)
    if missing:
        raise ImageError(f"{path}: no digest for {', '.join(sorted(missing))}")
    return pins


def _images_of(document: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, image) of every image field in a rendered resource: pod templates, the InferenceService's
    predictor model and containers, and anything else named `image` holding a string."""

    def walk(node: Any, path: str) -> Iterator[tuple[str, str]]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "image" and isinstance(value, str):
                    yield path or "(root)", value
                else:
                    yield from walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            for index, item in enumerate(node):
                label = item.get("name", index) if isinstance(item, dict) else index
                yield from walk(item, f"{path}[{label}]")

    yield from walk(document.get("spec", {}), "spec")


def mutable_images(documents: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every reference to one of our images that is not immutable, as `Kind/name spec.path: image`."""
    ours = set(IMAGES.values())
    found = []
    for document in documents:
        resource = f"{document.get('kind')}/{(document.get('metadata') or {}).get('name')}"
        for where, image in _images_of(document):
            reference = ImageRef.parse(image)
            if reference.name in ours and not reference.immutable:
                found.append(f"{resource} {where}: {image}")
    return found
