"""Where `churnops export VERSION DIR` may write: an empty or new directory, or an older ChurnOps artefact.

The export used to `rmtree` DIR whatever it held. Now a non-empty DIR must be exactly a serving artefact
(`manifest.json` plus the regular files its manifest lists, nothing else) before anything in it is
removed, and then only those files are: a typo that names a home directory or a checkout is refused with
its contents intact. DIR itself may not be a symbolic link, and nothing inside is followed: an artefact
holds regular files only (os.lstat, never stat), so no link can lead the removal out of DIR.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from churn_core.artefact import MANIFEST_FILE
from churn_model.registry import RegistryError


class ExportTargetError(RegistryError):
    """DIR cannot be (re)written safely; nothing in it was touched."""


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _listed_files(directory: Path) -> set[str]:
    """The names an artefact's manifest lists, or an error naming why DIR is not an artefact."""
    manifest = directory / MANIFEST_FILE
    if not _is_regular(manifest):
        raise ExportTargetError(
            f"{directory} is not empty and holds no {MANIFEST_FILE}: not a ChurnOps artefact"
        )
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ExportTargetError(f"{directory}/{MANIFEST_FILE} is not a ChurnOps artefact manifest") from None
    if not isinstance(files, dict) or any("/" in name or name in {"", ".", ".."} for name in files):
        raise ExportTargetError(f"{directory}/{MANIFEST_FILE} is not a ChurnOps artefact manifest")
    return {str(name) for name in files}


def existing_artefact(directory: Path) -> list[str] | None:
    """None when DIR does not exist or is empty; the files to remove when it is an artefact; else raise."""
    try:
        mode = os.lstat(directory).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        raise ExportTargetError(f"{directory} is a symbolic link: name the directory itself")
    if not stat.S_ISDIR(mode):
        raise ExportTargetError(f"{directory} exists and is not a directory")
    present = {entry.name for entry in directory.iterdir()}
    if not present:
        return None
    listed = _listed_files(directory)
    unexpected = sorted(name for name in present - {MANIFEST_FILE} if name not in listed)
    irregular = sorted(name for name in present & listed if not _is_regular(directory / name))
    if unexpected or irregular:
        shown = ", ".join((unexpected + irregular)[:5])
        raise ExportTargetError(
            f"{directory} holds more than a ChurnOps artefact ({shown}); refusing to replace it: "
            "export into an empty or new directory"
        )
    return sorted(present)


def replace_with(new: Path, target: Path, old_files: list[str] | None) -> None:
    """Put the verified directory `new` at `target`, removing only the old artefact's own files."""
    if old_files is not None:
        for name in old_files:
            (target / name).unlink()
        target.rmdir()  # fails, leaving it, if anything appeared meanwhile
    elif target.is_dir():
        target.rmdir()  # empty
    os.replace(new, target)
