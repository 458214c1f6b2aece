"""Real services over loopback for the tests: find them, start them if they are not running, and fail
(never skip) when CI=true and a service cannot be had."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
REPO = Path(__file__).resolve().parents[2]


def unavailable(reason: str) -> None:
    """A missing service: a failure in CI, a skip on a developer machine."""
    if IN_CI:
        pytest.fail(f"required service unavailable in CI: {reason}")
    pytest.skip(reason)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def ensure_redis(host: str = "127.0.0.1", port: int = 6379) -> str:
    """URL of the machine's Redis, started with the machine's own command if it is not running."""
    if not port_open(host, port):
        if shutil.which("redis-server") is None:
            unavailable("redis-server is not installed")
        subprocess.run(
            [
                "redis-server",
                "--daemonize",
                "yes",
                "--bind",
                host,
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            check=False,
        )
        try:
            wait_until(lambda: port_open(host, port), 10, "redis")
        except TimeoutError:
            unavailable(f"redis at {host}:{port} did not start")
    return f"redis://{host}:{port}/0"


def ensure_postgres(host: str = "127.0.0.1", port: int = 5432) -> str:
    """SQLAlchemy URL of the machine's PostgreSQL (trust auth, database `test`), started if needed."""
    if not port_open(host, port):
        clusters = Path("/etc/postgresql")
        if clusters.is_dir():
            for version in sorted(p.name for p in clusters.iterdir()):
                subprocess.run(
                    ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=False
                )
        try:
            wait_until(lambda: port_open(host, port), 20, "postgresql")
        except TimeoutError:
            unavailable(f"postgresql at {host}:{port} is not running")
    user = os.environ.get("PGUSER", "postgres")
    return f"postgresql+psycopg://{user}@{host}:{port}/test"


def side_python(variable: str, venv: str) -> Path:
    """Interpreter of one of the side environments (.venv-predictor, .venv-drift)."""
    path = Path(os.environ.get(variable, REPO / venv / "bin" / "python"))
    if not path.exists():
        unavailable(f"{venv} is missing (run `make install`)")
    return path


def predictor_python() -> Path:
    return side_python("CHURNOPS_STACK_PREDICTOR_PYTHON", ".venv-predictor")


def drift_python() -> Path:
    return side_python("CHURNOPS_STACK_DETECTOR_PYTHON", ".venv-drift")


@dataclass
class LocalProcess:
    """A service the tests started on 127.0.0.1: its process, port and log; stopped by PID."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return int(self.process.returncode)
