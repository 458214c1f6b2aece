"""`churnops export VERSION DIR` never deletes what it did not create: a new or empty DIR, or an earlier
export, is (re)written; anything else is refused with its contents intact, and no symlink is followed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from churn_model.export_target import ExportTargetError
from churn_model.pipeline import export_version
from churn_model.registry import Registry


def tree(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


@pytest.fixture
def registry(trained_model) -> Registry:
    return Registry(trained_model.settings)


def test_export_into_a_new_or_empty_directory(registry, trained_model, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for target in (tmp_path / "new" / "nested", empty):
        export_version(registry, trained_model.version, target)
        assert tree(target) == tree(trained_model.artefact)


def test_an_earlier_export_is_replaced(registry, trained_model, tmp_path):
    target = tmp_path / "export"
    export_version(registry, trained_model.version, target)
    (target / "model.joblib").write_bytes(b"stale")  # an old artefact, even a damaged one, is ours to replace
    export_version(registry, trained_model.version, target)
    assert tree(target) == tree(trained_model.artefact)
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no scratch directory left behind


@pytest.mark.parametrize(
    "prepare",
    [
        lambda d: (d / "notes.txt").write_text("my thesis"),  # a directory of someone else's files
        lambda d: ((d / "manifest.json").write_text('{"files": {}}'), (d / "thesis.tex").write_text("x")),
        lambda d: (d / "manifest.json").write_text("not json"),
        lambda d: ((d / "sub").mkdir(), (d / "sub" / "deep.txt").write_text("x")),
    ],
    ids=["foreign-files", "artefact-plus-extra", "broken-manifest", "subdirectory"],
)
def test_a_directory_that_is_not_an_artefact_is_refused_untouched(registry, trained_model, tmp_path, prepare):
    target = tmp_path / "precious"
    target.mkdir()
    prepare(target)
    before = tree(target)
    with pytest.raises(ExportTargetError, match="artefact"):
        export_version(registry, trained_model.version, target)
    assert tree(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["precious"]


def test_symbolic_links_are_never_followed(registry, trained_model, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    link = tmp_path / "link"
    link.symlink_to(outside, target_is_directory=True)
    with pytest.raises(ExportTargetError, match="symbolic link"):
        export_version(registry, trained_model.version, link)
    # An earlier export whose listed file was swapped for a link out of it: refused, the target kept.
    target = tmp_path / "export"
    export_version(registry, trained_model.version, target)
    (target / "metrics.json").unlink()
    os.symlink(outside / "keep.txt", target / "metrics.json")
    with pytest.raises(ExportTargetError):
        export_version(registry, trained_model.version, target)
    assert (outside / "keep.txt").read_text() == "keep"
    assert tree(outside) == {"keep.txt": b"keep"}


def test_a_file_in_the_way_is_refused(registry, trained_model, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ExportTargetError, match="not a directory"):
        export_version(registry, trained_model.version, target)
    assert target.read_text() == "x"


def test_the_cli_refuses_clearly_and_prints_the_pin(trained_model, tmp_path, monkeypatch):
    from churn_model.settings import get_settings
    from churnops.cli import app

    monkeypatch.setenv("CHURNOPS_MODEL_HOME", str(trained_model.settings.home))
    monkeypatch.setenv("CHURNOPS_MODEL_DATA", str(trained_model.settings.data))
    get_settings.cache_clear()
    try:
        precious = tmp_path / "precious"
        precious.mkdir()
        (precious / "notes.txt").write_text("mine")
        refused = CliRunner().invoke(app, ["export", trained_model.version, str(precious)])
        assert refused.exit_code != 0
        assert "not a ChurnOps artefact" in refused.output
        assert (precious / "notes.txt").read_text() == "mine"
        done = CliRunner().invoke(app, ["export", trained_model.version, str(tmp_path / "out")])
        assert done.exit_code == 0, done.output
        digest = hashlib.sha256((tmp_path / "out" / "manifest.json").read_bytes()).hexdigest()
        assert digest in done.output.replace("\n", "")
    finally:
        get_settings.cache_clear()
