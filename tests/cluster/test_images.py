"""Every deploying overlay names our images immutably: a digest, or a full commit SHA CI wrote once."""

from __future__ import annotations

import json

import pytest
import yaml

from churnops.cluster.images import (
    IMAGES,
    ImageError,
    ImageRef,
    check_pin,
    mutable_images,
    pins_from_digests,
    read_pins,
    write_pins,
)
from churnops.cluster.render import render
from churnops.cluster.settings import ClusterSettings
from churnops.cluster.validate import image_problems, parse_documents
from tests.cluster.conftest import OVERLAYS

DIGEST = "sha256:" + "b" * 64


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deploying_overlay_pins_our_images_immutably(overlay: str, rendered):
    documents = rendered[overlay]
    assert mutable_images(documents) == []
    found = {
        ImageRef.parse(image).name
        for document in documents
        for image in yaml.safe_dump(document).split()
        if image.startswith("ghcr.io/churnops/")
    }
    assert found == set(IMAGES.values())  # all four are deployed, and all four were checked


def test_a_mutable_tag_in_an_overlay_fails_the_check(workspace: ClusterSettings):
    """A hand edit back to a moving tag (or an overlay without its images component) is caught."""
    component = workspace.overlays_dir / "prod" / "images" / "kustomization.yaml"
    document = yaml.safe_load(component.read_text())
    document["images"][0] = {"name": document["images"][0]["name"], "newTag": "0.1.0"}
    component.write_text(yaml.safe_dump(document))
    problems = image_problems(parse_documents(render(workspace, "prod")))
    assert [p.check for p in problems] == ["image"]
    assert "churnops-authorizer:0.1.0" in problems[0].message

    kustomization = workspace.overlays_dir / "staging" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("components:\n  - images\n", ""))
    found = mutable_images(parse_documents(render(workspace, "staging")))
    assert len(found) == 4  # the manifests' own `:0.1.0`, for each of the four
    assert all(":0.1.0" in line for line in found)


@pytest.mark.parametrize(
    ("reference", "immutable"),
    [
        ("ghcr.io/churnops/churnops-transformer@" + DIGEST, True),
        ("ghcr.io/churnops/churnops-transformer:0123456789abcdef0123456789abcdef01234567", True),
        ("ghcr.io/churnops/churnops-transformer:0.1.0@" + DIGEST, True),
        ("ghcr.io/churnops/churnops-transformer:0.1.0", False),
        ("ghcr.io/churnops/churnops-transformer:latest", False),
        ("ghcr.io/churnops/churnops-transformer", False),
        ("ghcr.io/churnops/churnops-transformer:0123abc", False),
        ("ghcr.io/churnops/churnops-transformer@sha256:abc", False),
        ("localhost:5000/churnops-transformer:0.1.0", False),
    ],
)
def test_image_references_are_immutable_only_by_digest_or_full_commit(reference: str, immutable: bool):
    assert ImageRef.parse(reference).immutable is immutable


def test_pins_are_written_from_ci_digests_and_refuse_anything_mutable(workspace: ClusterSettings, tmp_path):
    record = tmp_path / "digests.json"
    record.write_text(
        json.dumps(dict.fromkeys(("transformer", "predictor", "detector", "authorizer"), DIGEST))
    )
    overlay = workspace.overlays_dir / "staging"
    write_pins(overlay, pins_from_digests(record))
    assert set(read_pins(overlay).values()) == {DIGEST}
    assert f"churnops-predictor@{DIGEST}" in render(workspace, "staging")

    with pytest.raises(ImageError, match="'v2' is mutable"):
        check_pin("v2")
    with pytest.raises(ImageError, match="not one of our images"):
        write_pins(overlay, {"docker.io/library/redis": DIGEST})
    record.write_text(json.dumps({"transformer": DIGEST}))
    with pytest.raises(ImageError, match="no digest for"):
        pins_from_digests(record)
