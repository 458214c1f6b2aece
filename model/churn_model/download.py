"""Fetching the Telco data set from its public source, verified by sha256 before it is kept."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import httpx


class ChecksumMismatchError(RuntimeError):
    pass


def download_dataset(url: str, sha256: str, destination: Path, timeout: float = 60.0) -> Path:
    """Stream `url` to a temporary file, check its digest, then move it into place atomically.

    A failed or tampered download never leaves a file at `destination`.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=".download-")
    try:
        with (
            os.fdopen(handle, "wb") as out,
            httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as r,
        ):
            r.raise_for_status()
            for block in r.iter_bytes():
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != sha256:
            raise ChecksumMismatchError(
                f"{url}: sha256 {digest.hexdigest()} does not match the expected {sha256}; file not kept"
            )
        os.replace(temporary, destination)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return destination
