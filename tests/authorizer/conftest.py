"""Fixtures of the authorizer tests: the real Redis, keys files, and real authorizer processes.

Every test gets its own Redis key prefix (deleted afterwards), so tests never share a rate-limit bucket.
Authorizers run as `python -m churn_authorizer serve` (uvicorn) subprocesses on free 127.0.0.1 ports and
are stopped by their PID.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from churn_authorizer.keys import ApiKey, KeysDocument, Scope, generate_key
from tests.support.services import REPO, LocalProcess, ensure_redis, free_port, http_ok, wait_until


@pytest.fixture(scope="session")
def redis_url() -> str:
    return ensure_redis()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"churnops-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        stale = list(client.scan_iter(match=prefix + "*"))
        if stale:
            client.delete(*stale)
    finally:
        client.close()


@dataclass(frozen=True)
class Issued:
    """A key as a client holds it, with the entry the keys file stores."""

    key: str
    entry: ApiKey

    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def issue(*scopes: Scope, name: str = "test", rate_limit: int | None = None) -> Issued:
    new = generate_key(list(scopes), name=name, rate_limit=rate_limit)
    return Issued(new.key, new.entry)


def write_keys_file(path: Path, *issued: Issued) -> Path:
    path.write_text(KeysDocument(keys=[i.entry for i in issued]).to_json())
    return path


@dataclass
class KeyRing:
    predict: Issued = field(default_factory=lambda: issue(Scope.PREDICT, name="predict-client"))
    feedback: Issued = field(default_factory=lambda: issue(Scope.FEEDBACK, name="feedback-client"))
    admin: Issued = field(default_factory=lambda: issue(Scope.ADMIN, name="ops"))
    both: Issued = field(default_factory=lambda: issue(Scope.PREDICT, Scope.FEEDBACK, name="app"))
    limited: Issued = field(default_factory=lambda: issue(Scope.PREDICT, name="limited", rate_limit=3))

    def all(self) -> tuple[Issued, ...]:
        return (self.predict, self.feedback, self.admin, self.both, self.limited)


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing()


@pytest.fixture
def keys_file(tmp_path: Path, keyring: KeyRing) -> Path:
    return write_keys_file(tmp_path / "keys.json", *keyring.all())


class AuthorizerProcess(LocalProcess):
    def check(self, method: str, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """What Envoy sends: the original method and path under the check prefix, no body."""
        return httpx.request(method, f"{self.url}/check{path}", headers=headers or {}, timeout=5.0)


StartAuthorizer = Callable[..., AuthorizerProcess]


@pytest.fixture
def start_authorizer(
    tmp_path: Path, redis_url: str, redis_prefix: str, keys_file: Path
) -> Iterator[StartAuthorizer]:
    """Start `python -m churn_authorizer serve`; keyword arguments become CHURNOPS_AUTHORIZER_* variables."""
    started: list[AuthorizerProcess] = []

    def start(**overrides: object) -> AuthorizerProcess:
        port = free_port()
        settings: dict[str, object] = {
            "port": port,
            "keys_file": keys_file,
            "redis_url": redis_url,
            "redis_prefix": redis_prefix,
            "log_level": "DEBUG",
        }
        settings.update(overrides)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNOPS_AUTHORIZER_")}
        env.update({f"CHURNOPS_AUTHORIZER_{k.upper()}": str(v) for k, v in settings.items()})
        log_path = tmp_path / f"authorizer-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "churn_authorizer", "serve"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        authorizer = AuthorizerProcess(process, port, log_path)
        started.append(authorizer)
        try:
            wait_until(http_ok(f"{authorizer.url}/healthz"), 20, f"authorizer on port {port}")
        except TimeoutError:
            authorizer.stop()
            raise AssertionError(f"authorizer did not start:\n{authorizer.log_text()}") from None
        return authorizer

    yield start
    for authorizer in started:
        authorizer.stop()
