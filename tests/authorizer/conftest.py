"""Fixtures of the authorizer tests: the real Redis, keys files, and real authorizer processes.

Every test gets its own Redis key prefix (deleted afterwards), so tests never share a rate-limit bucket.
Authorizers run as `python -m churn_authorizer serve` (uvicorn) subprocesses on free 127.0.0.1 ports and
are stopped by their PID.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from churn_authorizer.keys import ApiKey, KeysDocument, Scope, generate_key
from tests.support.services import (
    REPO,
    LocalProcess,
    ensure_redis,
    free_port,
    http_ok,
    port_open,
    unavailable,
    wait_until,
)


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


@dataclass
class DedicatedRedis:
    """A redis-server of the test's own on a free port: it may be stalled or stopped without touching the
    machine's Redis that other tests (and other worktrees) share."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stall(self, seconds: float) -> threading.Thread:
        """`DEBUG SLEEP seconds` from another connection: Redis answers nobody until it has slept."""
        client = redis.Redis(port=self.port, socket_timeout=seconds + 5)

        def sleep() -> None:
            try:
                client.execute_command("DEBUG", "SLEEP", seconds)
            finally:
                client.close()

        thread = threading.Thread(target=sleep, daemon=True)
        thread.start()
        wait_until(lambda: not _answers(self.port), 2, "redis to stall", interval=0.005)
        return thread

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def _answers(port: int) -> bool:
    client = redis.Redis(
        port=port, socket_timeout=0.02, socket_connect_timeout=0.02, retry=Retry(NoBackoff(), 0)
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture
def dedicated_redis(tmp_path: Path) -> Iterator[DedicatedRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed")
    assert binary is not None
    port = free_port()
    process = subprocess.Popen(
        [
            *(binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"),
            *("--enable-debug-command", "local", "--dir", str(tmp_path)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    server = DedicatedRedis(process, port)
    try:
        wait_until(lambda: port_open("127.0.0.1", port) and _answers(port), 10, f"redis-server on {port}")
        yield server
    finally:
        server.stop()


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
