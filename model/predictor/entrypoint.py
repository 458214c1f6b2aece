"""The predictor image's entry point: verify the serving artefact, THEN let MLServer load it.

MLServer's scikit-learn runtime unpickles `model.joblib` (and loads whatever `model-settings.json` it finds
below its models directory) without any check, and unpickling runs code. So before MLServer starts:

1. `manifest.json` must have the sha256 the rollout pinned (env CHURNOPS_PREDICTOR_ARTEFACT_SHA256, written
   into the InferenceService by `churnops rollout` next to the storageUri it pins): the manifest no longer
   vouches for itself, the deployment does.
2. Every file the manifest lists must exist as a regular file and match its sha256.
3. Nothing else may be there (except the manifest): no extra `model-settings.json` MLServer would pick up,
   no second pickle, no symlink, no sub-directory.
Then it execs `mlserver start <models dir>`, so MLServer is PID 1's successor and gets the kubelet's signals.

Standard library only, and no ChurnOps package: the image holds MLServer and the pinned scikit-learn, not
our code (tests/transformer/test_images.py). Exit codes: 2 the pin is missing or malformed, 3 the artefact
fails verification; MLServer never starts in either case and the pod restarts with the reason in its log.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys
from pathlib import Path

PIN_VARIABLE = "CHURNOPS_PREDICTOR_ARTEFACT_SHA256"
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20  # a manifest is a few KB; a bigger one is not ours
CHUNK_BYTES = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class VerificationError(Exception):
    """The artefact is not the one the deployment pinned."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _regular_file(path: Path) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise VerificationError(f"{path.name} is missing") from None
    if not stat.S_ISREG(mode):
        raise VerificationError(f"{path.name} is not a regular file (symlinks and directories are refused)")


def read_manifest(directory: Path, pin: str) -> dict[str, str]:
    """The manifest's file table, once the manifest itself matches the pin."""
    path = directory / MANIFEST
    _regular_file(path)
    data = path.read_bytes()[: MAX_MANIFEST_BYTES + 1]
    if len(data) > MAX_MANIFEST_BYTES:
        raise VerificationError(f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes")
    actual = hashlib.sha256(data).hexdigest()
    if actual != pin:
        raise VerificationError(f"{MANIFEST} has sha256 {actual}, the deployment pins {pin}")
    try:
        files = json.loads(data)["files"]
    except (ValueError, KeyError, TypeError):
        raise VerificationError(f"{MANIFEST} has no file table") from None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise VerificationError(f"{MANIFEST}: 'files' must map names to sha256 digests")
    for name in files:
        if not _PLAIN_NAME.fullmatch(name) or name == MANIFEST:
            raise VerificationError(f"{MANIFEST} lists {name!r}: only plain file names are allowed")
    return files


def verify(directory: Path, pin: str) -> dict[str, str]:
    """Raise VerificationError unless `directory` holds exactly the pinned artefact; returns its file table."""
    if not directory.is_dir():
        raise VerificationError(f"{directory} is not a directory")
    files = read_manifest(directory, pin)
    present = {entry.name for entry in directory.iterdir()}
    unlisted = sorted(present - set(files) - {MANIFEST})
    if unlisted:
        raise VerificationError(f"files the manifest does not list: {', '.join(unlisted)}")
    for name, expected in sorted(files.items()):
        path = directory / name
        _regular_file(path)
        if sha256_file(path) != expected:
            raise VerificationError(f"{name} does not match its sha256 in {MANIFEST}")
    return files


def pinned_digest(environ: dict[str, str]) -> str:
    pin = environ.get(PIN_VARIABLE, "").strip().lower()
    if not _SHA256.fullmatch(pin):
        raise ValueError(f"{PIN_VARIABLE} must be the 64-hex sha256 of the artefact's {MANIFEST}")
    return pin


def main(argv: list[str], environ: dict[str, str]) -> int:
    directory = Path(argv[1] if len(argv) > 1 else environ.get("MLSERVER_MODELS_DIR", "/mnt/models"))
    try:
        pin = pinned_digest(environ)
    except ValueError as error:
        print(f"churnops-predictor: refusing to start: {error}", file=sys.stderr)
        return 2
    try:
        files = verify(directory, pin)
    except (VerificationError, OSError) as error:
        print(f"churnops-predictor: refusing to load {directory}: {error}", file=sys.stderr)
        return 3
    print(f"churnops-predictor: {directory} verified ({len(files)} files, manifest {pin})", file=sys.stderr)
    sys.stderr.flush()
    os.execvp("mlserver", ["mlserver", "start", str(directory)])  # noqa: S606 - argv list, no shell
    return 0  # unreachable: exec replaces the process


if __name__ == "__main__":
    sys.exit(main(sys.argv, dict(os.environ)))
