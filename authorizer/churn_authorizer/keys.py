"""API keys: format, hashing, the keys file and its verification.

A key looks like `co_<id>_<secret>`: `co_` makes a leaked key recognisable (secret scanners, log review),
`<id>` (12 hex characters, not secret) makes lookup O(1) and is what logs, metrics and the upstream header
carry, `<secret>` is `secrets.token_urlsafe(32)` (256 random bits).

Only `sha256:<hex>` of the whole key is stored. A plain SHA-256 is the right tool for a 256-bit random
secret: slow password hashes (bcrypt, scrypt, argon2) exist to make guessing *low-entropy* passwords
expensive and would cost milliseconds on every request for nothing, since 2^256 guesses are out of reach at
any speed. A keyed hash (HMAC with a server-side pepper) would only help if the keys file leaked *and* the
secrets were guessable; it would also put a second secret on every operator's machine (needed to create
keys) and make pepper rotation revoke every key. Hashing the whole key (id included) binds each hash to its
id. Comparison is `hmac.compare_digest`, and an unknown id is compared against a dummy digest so that the
timing does not tell known ids from unknown ones.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from churn_authorizer.scopes import Scope

KEY_PREFIX = "co"
KEY_ID_HEX_CHARS = 12
SECRET_BYTES = 32
HASH_SCHEME = "sha256"
KEYS_FILE_NAME = "keys.json"
_KEY_RE = re.compile(rf"{KEY_PREFIX}_([0-9a-f]{{{KEY_ID_HEX_CHARS}}})_([A-Za-z0-9_-]{{43}})")
_DUMMY_HASH = f"{HASH_SCHEME}:" + "0" * 64

__all__ = ["ApiKey", "KeyStore", "KeysDocument", "KeysFile", "KeysFileError", "NewKey", "Scope"]


class KeysFileError(ValueError):
    """The keys file is missing or malformed (the previous key set stays in force)."""


class ApiKey(BaseModel):
    """One entry of the keys file. Never holds the key itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=rf"^[0-9a-f]{{{KEY_ID_HEX_CHARS}}}$")
    name: str = Field(default="", max_length=200)
    scopes: tuple[Scope, ...] = Field(min_length=1)
    hash: str = Field(pattern=rf"^{HASH_SCHEME}:[0-9a-f]{{64}}$")
    rate_limit: int | None = Field(default=None, ge=1, description="requests per period; None: default")
    created: datetime | None = None

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes


class KeysDocument(BaseModel):
    """The whole keys file (`keys.json` in the `churnops-api-keys` Secret)."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    keys: list[ApiKey] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> KeysDocument:
        ids = [key.id for key in self.keys]
        if len(ids) != len(set(ids)):
            raise ValueError("duplicate key ids in keys file")
        return self

    def to_json(self) -> str:
        """Stable, diff-friendly rendering (one field per line, keys sorted)."""
        payload = self.model_dump(mode="json", exclude_none=True)
        return orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> KeysDocument:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            # Only field locations and messages: the file holds hashes, and input values stay out of errors.
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise KeysFileError(f"invalid keys file: {problems}") from None


@dataclass(frozen=True)
class NewKey:
    """A freshly generated key: `key` is shown once, `entry` is what gets stored."""

    key: str
    entry: ApiKey


def hash_key(key: str) -> str:
    return f"{HASH_SCHEME}:{hashlib.sha256(key.encode()).hexdigest()}"


def parse_key_id(presented: str) -> str | None:
    """The id of a well-formed key, else None (no secret material leaves this function)."""
    match = _KEY_RE.fullmatch(presented)
    return match.group(1) if match else None


def generate_key(
    scopes: list[Scope] | tuple[Scope, ...],
    *,
    name: str = "",
    rate_limit: int | None = None,
    taken_ids: frozenset[str] = frozenset(),
) -> NewKey:
    if not scopes:
        raise ValueError("a key needs at least one scope")
    key_id = secrets.token_hex(KEY_ID_HEX_CHARS // 2)
    while key_id in taken_ids:  # 48 random bits: a clash is astronomically rare, but cheap to rule out
        key_id = secrets.token_hex(KEY_ID_HEX_CHARS // 2)
    key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
    entry = ApiKey(
        id=key_id,
        name=name,
        scopes=tuple(dict.fromkeys(scopes)),
        hash=hash_key(key),
        rate_limit=rate_limit,
        created=datetime.now(UTC).replace(microsecond=0),
    )
    return NewKey(key=key, entry=entry)


@dataclass(frozen=True)
class KeyStore:
    """The loaded key set, indexed by id."""

    by_id: dict[str, ApiKey] = field(default_factory=dict)

    @classmethod
    def from_document(cls, document: KeysDocument) -> KeyStore:
        return cls(by_id={key.id: key for key in document.keys})

    def __len__(self) -> int:
        return len(self.by_id)

    def verify(self, presented: str) -> ApiKey | None:
        """The entry the presented key belongs to, or None. Constant time in the secret."""
        key_id = parse_key_id(presented)
        if key_id is None:
            return None
        entry = self.by_id.get(key_id)
        expected = entry.hash if entry is not None else _DUMMY_HASH
        matches = hmac.compare_digest(hash_key(presented).encode(), expected.encode())
        return entry if matches and entry is not None else None


def load_keys(path: Path) -> KeyStore:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise KeysFileError(f"cannot read keys file {path}: {exc.strerror}") from None
    return KeyStore.from_document(KeysDocument.from_json(text))


class KeysFile:
    """The mounted keys file, reloaded when it changes.

    A Secret update reaches a mounted volume after the kubelet's sync period, as an atomic swap of the
    `..data` symlink; `stat` follows the link, so a changed (mtime, size, inode) triggers a reload. A file
    that fails to load leaves the previous key set in force.
    """

    def __init__(self, path: Path, reload_interval_s: float) -> None:
        self.path = path
        self.reload_interval_s = reload_interval_s
        self.store = KeyStore()
        self.loaded = False
        self.last_error: str | None = None
        self._fingerprint: tuple[int, int, int] | None = None
        self._checked_at = float("-inf")

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def refresh(self, *, force: bool = False) -> Literal["unchanged", "reloaded", "failed"]:
        """Reload if due and changed; raises nothing (a failure is reported and kept in `last_error`)."""
        now = time.monotonic()
        if not force and now - self._checked_at < self.reload_interval_s:
            return "unchanged"
        self._checked_at = now
        fingerprint = self._stat()
        if not force and fingerprint is not None and fingerprint == self._fingerprint:
            return "unchanged"
        try:
            store = load_keys(self.path)
        except KeysFileError as exc:
            self.last_error = str(exc)
            return "failed"
        self.store, self.loaded, self.last_error = store, True, None
        self._fingerprint = fingerprint
        return "reloaded"
