"""The keys Secret manifest that `churnops keys` edits: a Kubernetes Secret holding `keys.json` (hashes only).

The authorizer never reads this file; it reads `keys.json` as the kubelet mounts it from the applied Secret.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from churn_authorizer.keys import KEYS_FILE_NAME, KeysDocument, KeysFileError

SECRET_NAME = "churnops-api-keys"  # noqa: S105 - the name of a Secret resource, not a secret
HEADER = (
    "# API keys of the ChurnOps external authorizer: SHA-256 hashes only, never a key.\n"
    "# Managed by `churnops keys create | list | revoke`; the authorizer mounts keys.json from this Secret.\n"
)


class _LiteralDumper(yaml.SafeDumper):
    """Multi-line strings as `|` blocks, so that keys.json stays readable and diffs line by line."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _str_representer)


def new_secret_manifest() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": SECRET_NAME,
            "labels": {
                "app.kubernetes.io/name": "churnops-authorizer",
                "app.kubernetes.io/part-of": "churnops",
            },
        },
        "type": "Opaque",
        "stringData": {KEYS_FILE_NAME: KeysDocument().to_json()},
    }


def read_secret_manifest(path: Path) -> tuple[dict[str, Any], KeysDocument]:
    """The manifest (other fields are kept on write) and its keys; a new one if `path` does not exist."""
    if not path.exists():
        return new_secret_manifest(), KeysDocument()
    manifest = yaml.safe_load(path.read_text())
    if not isinstance(manifest, dict) or manifest.get("kind") != "Secret":
        raise KeysFileError(f"{path} is not a Kubernetes Secret manifest")
    string_data = manifest.get("stringData") or {}
    data = manifest.get("data") or {}
    if KEYS_FILE_NAME in string_data:
        text = string_data[KEYS_FILE_NAME]
    elif KEYS_FILE_NAME in data:
        text = base64.b64decode(data[KEYS_FILE_NAME]).decode()
    else:
        text = KeysDocument().to_json()
    return manifest, KeysDocument.from_json(text)


def write_secret_manifest(path: Path, manifest: dict[str, Any], document: KeysDocument) -> None:
    """Replace keys.json in the manifest and write it atomically (a crash leaves the old file whole)."""
    data = manifest.get("data")
    if isinstance(data, dict):
        data.pop(KEYS_FILE_NAME, None)
        if not data:
            manifest.pop("data")
    manifest.setdefault("stringData", {})[KEYS_FILE_NAME] = document.to_json()
    text = HEADER + yaml.dump(manifest, Dumper=_LiteralDumper, sort_keys=False, default_flow_style=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
