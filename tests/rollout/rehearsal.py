"""A canary rehearsal on one machine: what a cluster does, played by real local processes.

- Each model version is a real local stack (churnops.stack: MLServer + the transformer on the version's
  exported artefact), as a revision's pod is in the cluster.
- A real Prometheus (the Debian binary, 127.0.0.1, 1 s scrapes) scrapes each transformer as job
  `rehearsal-v<version>`: the analysis selects each side by that job label instead of per-revision pods.
- Knative's traffic split is played by the load generator: locust (headless, a subprocess: its gevent
  monkey-patching stays out of this process) sends each request to the canary with the step's
  probability, reading the split from a small JSON file the actuator rewrites.
- The actuator also edits a scratch copy of the overlay's rollout state exactly as `churnops rollout`
  does (apply=False: no cluster), so the GitOps record and the registry move as they would.
- A slow canary: its MLServer is throttled the way a CPU quota throttles a container (CFS bandwidth
  control: run for the quota, then stopped until the period ends), by SIGSTOP/SIGCONT to its process
  group on a fixed period; no cgroup is touched.
The decision loop is churnops.cluster.canary, unchanged: only the actuator and the selectors differ.
Used by tests/rollout/test_rehearsal.py (short dwell) and scripts/canary_rehearsal.py (longer).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import yaml

from churnops.cluster.rollout import Rollouts
from churnops.stack import (
    Running,
    ServingPorts,
    predictor_component,
    start_component,
    stop_component,
    transformer_component,
)

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalStack:
    """One model version served as a revision's pod serves it: MLServer + the transformer."""

    version: str
    predictor: Running
    transformer: Running
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def job(self) -> str:
        return f"rehearsal-v{self.version}"

    def stop(self) -> None:
        for running in (self.transformer, self.predictor):
            stop_component(running)


def start_stack(
    artefact: Path, version: str, predictor_python: Path, work: Path, *, payload_logger_url: str | None = None
) -> LocalStack:
    ports = ServingPorts(
        transformer=free_port(),
        predictor_http=free_port(),
        predictor_grpc=free_port(),
        predictor_metrics=free_port(),
    )
    predictor = start_component(
        predictor_component(artefact, predictor_python, ports, version).logging_to(
            work / f"mlserver-v{version}.log"
        ),
        log=lambda _: None,
    )
    try:
        component = transformer_component(artefact, ports, payload_logger_url=payload_logger_url)
        component = replace(component.logging_to(work / f"transformer-v{version}.log"), ready_timeout_s=90)
        transformer = start_component(component, log=lambda _: None)
    except BaseException:
        stop_component(predictor)
        raise
    return LocalStack(version, predictor, transformer, ports.transformer)


def start_stacks(
    artefacts: dict[str, Path], predictor_python: Path, work: Path, payload_logger_url: str | None = None
) -> dict[str, LocalStack]:
    """All versions' stacks, started in parallel (each waits for its own MLServer)."""
    stacks: dict[str, LocalStack] = {}
    errors: list[BaseException] = []

    def one(version: str, artefact: Path) -> None:
        try:
            stacks[version] = start_stack(
                artefact, version, predictor_python, work, payload_logger_url=payload_logger_url
            )
        except BaseException as error:  # reported below, after the others are started or stopped
            errors.append(error)

    threads = [threading.Thread(target=one, args=item) for item in artefacts.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        for stack in stacks.values():
            stack.stop()
        raise errors[0]
    return stacks


class Prometheus:
    """The Debian `prometheus` binary on loopback, scraping every stack's transformer each second."""

    def __init__(self, work: Path, stacks: Sequence[LocalStack], extra: dict[str, str] | None = None) -> None:
        self.work = work
        self.port = free_port()
        scrape_configs = [
            {"job_name": stack.job, "static_configs": [{"targets": [f"{LOOPBACK}:{stack.port}"]}]}
            for stack in stacks
        ] + [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in (extra or {}).items()
        ]
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": scrape_configs,
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.targets = len(scrape_configs)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, binary: str) -> None:
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={self.work / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.work / 'tsdb'}",
                f"--web.listen-address={LOOPBACK}:{self.port}",
                "--log.level=warn",
            ],
            stdout=(self.work / "prometheus.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._all_up():
                return
            time.sleep(0.5)
        raise RuntimeError(
            f"prometheus targets not all up: {(self.work / 'prometheus.log').read_text()[-2000:]}"
        )

    def _all_up(self) -> bool:
        try:
            result = httpx.get(f"{self.url}/api/v1/query", params={"query": "up"}, timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return False
        values = [r["value"][1] for r in result.get("data", {}).get("result", [])]
        return len(values) == self.targets and all(v == "1" for v in values)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class LoadGenerator:
    """locust, headless, in a subprocess: `users` users at `rate` requests/s each, `batch` customers per
    request, each request to the canary with the current split's probability."""

    def __init__(self, work: Path, stable: LocalStack, customers: list[dict[str, Any]]) -> None:
        self.work = work
        self.route = work / "route.json"
        (work / "customers.json").write_text(json.dumps(customers))
        self.stable = stable
        self.set_split(None, 0)
        self.process: subprocess.Popen[bytes] | None = None

    def set_split(self, canary: LocalStack | None, percent: int) -> None:
        document = {"stable": self.stable.url, "canary": canary.url if canary else None, "percent": percent}
        scratch = self.route.with_suffix(".tmp")
        scratch.write_text(json.dumps(document))
        os.replace(scratch, self.route)

    def start(self, *, users: int = 4, rate: float = 10.0, batch: int = 5) -> None:
        locust = Path(sys.executable).with_name("locust")
        env = {
            **os.environ,
            "REHEARSAL_ROUTE": str(self.route),
            "REHEARSAL_CUSTOMERS": str(self.work / "customers.json"),
            "REHEARSAL_RATE": str(rate),
            "REHEARSAL_BATCH": str(batch),
        }
        self.process = subprocess.Popen(
            [
                str(locust),
                "-f",
                str(LOCUSTFILE),
                "--headless",
                "--users",
                str(users),
                "--spawn-rate",
                str(users),
                "--host",
                self.stable.url,
                "--csv",
                str(self.work / "locust"),
                "--only-summary",
            ],
            env=env,
            stdout=(self.work / "locust.log").open("wb"),
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> str:
        """Stop locust (SIGINT: it prints its summary and writes its CSV); returns the summary."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        stats = self.work / "locust_stats.csv"
        return stats.read_text() if stats.is_file() else ""


class Throttle:
    """CPU-quota throttling of a process group: run `run_ms`, stopped for the rest of `period_ms`."""

    def __init__(self, pid: int, run_ms: float = 5.0, period_ms: float = 100.0) -> None:
        self.pid = pid
        self.run_s, self.stop_s = run_ms / 1000, (period_ms - run_ms) / 1000
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        try:
            while not self._done.is_set():
                os.killpg(self.pid, signal.SIGSTOP)
                self._done.wait(self.stop_s)
                os.killpg(self.pid, signal.SIGCONT)
                self._done.wait(self.run_s)
        except ProcessLookupError:
            return
        finally:
            with suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGCONT)

    def __enter__(self) -> Throttle:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()


class RehearsalActuator:
    """The canary's traffic moves in the load generator; the rollout state and registry as in a cluster."""

    def __init__(self, rollouts: Rollouts, version: str, load: LoadGenerator, canary: LocalStack) -> None:
        self.rollouts = rollouts
        self.version = version
        self.load = load
        self.canary = canary
        self.history: list[tuple[float, str, int]] = []

    def _record(self, action: str, percent: int) -> None:
        self.history.append((time.time(), action, percent))

    def set_canary(self, percent: int) -> float:
        started = time.monotonic()
        plan = self.rollouts.plan_start(self.version, percent)
        self.rollouts.execute(plan)
        if self.rollouts.status() != plan.after:  # staged first (after an abort of another version)
            self.rollouts.execute(self.rollouts.plan_start(self.version, percent))
        self.load.set_split(self.canary, percent)
        self._record("set", percent)
        return time.monotonic() - started

    def promote(self) -> float:
        started = time.monotonic()
        self.rollouts.execute(self.rollouts.plan_promote())
        self.load.set_split(self.canary, 100)
        self._record("promote", 100)
        return time.monotonic() - started

    def abort(self) -> float:
        started = time.monotonic()
        self.load.set_split(None, 0)  # the route first, as KServe's 0 % does
        self.rollouts.execute(self.rollouts.plan_abort())
        self._record("abort", 0)
        return time.monotonic() - started


def scratch_checkout(destination: Path) -> Path:
    """A copy of the kustomize tree (and what it lists) whose rollout files the rehearsal may edit."""
    for tree in ("kustomize", "manifests", "monitoring"):
        shutil.copytree(
            REPO / tree,
            destination / tree,
            ignore=lambda _, names: {n for n in names if n in {"__pycache__", "churn_monitoring"}},
        )
    return destination


@contextmanager
def running(*things: Any) -> Iterator[None]:
    """Stop each of `things` (anything with .stop()) however the block ends, last first."""
    try:
        yield
    finally:
        for thing in reversed(things):
            with suppress(Exception):
                thing.stop()
