"""The local serving stack: components as processes on 127.0.0.1, started in order, stopped together.

A stack is a list of `Component`s (name, argv, env, readiness URL). `run_stack` starts them one after the
other, each only once the previous one answers its readiness URL (the transformer checks the predictor at
start), then waits; SIGINT/SIGTERM, or any component exiting, stops them all in reverse order: SIGTERM to
each child by PID, a grace period, then SIGKILL to that child's own process group (each child runs in a
session of its own, so its worker processes go with it and Ctrl-C in the terminal reaches only us).

Other parts of ChurnOps extend the stack by adding components (the drift detector, a local stand-in for
KServe's payload logger consumer...) and pointing the transformer's `CHURNOPS_TRANSFORMER_PAYLOAD_LOGGER_URL` at one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

import httpx

LOOPBACK = "127.0.0.1"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class StackError(RuntimeError):
    """A component did not start (exited, or not ready in time); the message names it."""


@dataclass(frozen=True)
class Component:
    """One process of the stack."""

    name: str
    argv: tuple[str, ...]
    ready_url: str
    env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 120.0
    cwd: Path | None = None
    log_file: Path | None = None  # stdout and stderr go here instead of the terminal

    def with_env(self, **env: str) -> Component:
        return replace(self, env={**self.env, **env})

    def logging_to(self, path: Path) -> Component:
        return replace(self, log_file=path)


@dataclass
class Running:
    component: Component
    process: subprocess.Popen[bytes]


@dataclass(frozen=True)
class ServingPorts:
    transformer: int = 8080
    predictor_http: int = 8090
    predictor_grpc: int = 8091
    predictor_metrics: int = 8092
    detector: int = 8095


def predictor_executable(python: Path) -> Path:
    """`mlserver` of the predictor environment (CHURNOPS_STACK_PREDICTOR_PYTHON points at its python)."""
    return python.parent / "mlserver"


def predictor_component(artefact: Path, python: Path, ports: ServingPorts, version: str) -> Component:
    """MLServer's sklearn runtime on the exported artefact, as KServe's kserve-mlserver runtime runs it."""
    return Component(
        name="predictor",
        argv=(str(predictor_executable(python)), "start", str(artefact.resolve())),
        ready_url=f"http://{LOOPBACK}:{ports.predictor_http}/v2/models/churn/versions/{version}/ready",
        env={
            "MLSERVER_HOST": LOOPBACK,
            "MLSERVER_HTTP_PORT": str(ports.predictor_http),
            "MLSERVER_GRPC_PORT": str(ports.predictor_grpc),
            "MLSERVER_METRICS_PORT": str(ports.predictor_metrics),
            # Inference in the server process: the default worker pool adds an IPC round trip per call.
            "MLSERVER_PARALLEL_WORKERS": "0",
            # No access log line per call (MLServer's default debug mode); the transformer logs requests.
            "MLSERVER_DEBUG": "false",
            **ONE_THREAD,
        },
    )


def transformer_component(
    artefact: Path,
    ports: ServingPorts,
    *,
    workers: int = 1,
    protocol: str = "grpc-v2",
    payload_logger_url: str | None = None,
) -> Component:
    predictor_port = ports.predictor_grpc if protocol == "grpc-v2" else ports.predictor_http
    env = {
        "CHURNOPS_TRANSFORMER_MODEL_DIR": str(artefact.resolve()),
        "CHURNOPS_TRANSFORMER_HOST": LOOPBACK,
        "CHURNOPS_TRANSFORMER_PREDICTOR_PROTOCOL": protocol,
        **ONE_THREAD,
    }
    if payload_logger_url:
        env["CHURNOPS_TRANSFORMER_PAYLOAD_LOGGER_URL"] = payload_logger_url
    return Component(
        name="transformer",
        argv=(
            sys.executable,
            "-m",
            "churn_transformer",
            "--model_name",
            "churn",
            "--http_port",
            str(ports.transformer),
            "--predictor_host",
            f"{LOOPBACK}:{predictor_port}",
            "--workers",
            str(workers),
        ),
        ready_url=f"http://{LOOPBACK}:{ports.transformer}/v2/models/churn/ready",
        env=env,
    )


def detector_component(
    artefact: Path, ports: ServingPorts, *, python: Path | None = None, home: Path | None = None
) -> Component:
    """The drift detector (churn_monitoring.service) on the artefact's reference sample.

    It runs from `.venv-drift` (alibi-detect, numpy<2) when `python` names it; otherwise from this
    interpreter, on the scipy backend when alibi-detect is not installed here. The prediction store is
    SQLite under `home` (`churnops serve` passes the model's home, so one `.churnops/` holds the local
    state) unless CHURNOPS_DETECTOR_DATABASE_URL says otherwise.
    """
    import importlib.util

    env = {
        "CHURNOPS_DETECTOR_MODEL_DIR": str(artefact.resolve()),
        "CHURNOPS_DETECTOR_HOST": LOOPBACK,
        "CHURNOPS_DETECTOR_PORT": str(ports.detector),
        "CHURNOPS_DETECTOR_URL": f"http://{LOOPBACK}:{ports.detector}",
        **ONE_THREAD,
    }
    if home is not None:
        env["CHURNOPS_DETECTOR_HOME"] = str(home.resolve())
    if python is None or not python.exists():
        python = Path(sys.executable)
        if importlib.util.find_spec("alibi_detect") is None:
            env["CHURNOPS_DETECTOR_DRIFT_BACKEND"] = "scipy"
    return Component(
        name="detector",
        argv=(str(python), "-m", "churn_monitoring.service"),
        ready_url=f"http://{LOOPBACK}:{ports.detector}/readyz",
        env=env,
    )


def serving_stack(
    artefact: Path,
    version: str,
    predictor_python: Path,
    ports: ServingPorts,
    *,
    workers: int = 1,
    detector_python: Path | None = None,
    with_detector: bool = False,
    home: Path | None = None,
) -> list[Component]:
    """Predictor first (the transformer refuses to start without it), then the transformer; with the
    detector, it starts first and the transformer's payload logger posts to it (as KServe's agent would)."""
    if not with_detector:
        return [
            predictor_component(artefact, predictor_python, ports, version),
            transformer_component(artefact, ports, workers=workers),
        ]
    return [
        detector_component(artefact, ports, python=detector_python, home=home),
        predictor_component(artefact, predictor_python, ports, version),
        transformer_component(
            artefact, ports, workers=workers, payload_logger_url=f"http://{LOOPBACK}:{ports.detector}/"
        ),
    ]


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def start_component(component: Component, log: Callable[[str], None] = print) -> Running:
    env = {**os.environ, **component.env}
    output = component.log_file.open("ab") if component.log_file is not None else None
    try:
        process = subprocess.Popen(
            component.argv,
            env=env,
            cwd=component.cwd,
            start_new_session=True,
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
        )
    finally:
        if output is not None:
            output.close()  # the child has its own descriptor
    running = Running(component, process)
    deadline = time.monotonic() + component.ready_timeout_s
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise StackError(f"{component.name} exited with code {code} before it was ready")
        if _ready(component.ready_url):
            log(f"{component.name} ready (pid {process.pid}): {component.ready_url}")
            return running
        time.sleep(0.2)
    stop_component(running)
    raise StackError(f"{component.name} was not ready within {component.ready_timeout_s:g} s")


def stop_component(running: Running, grace_s: float = 15.0) -> int | None:
    """SIGTERM by PID, wait, then SIGKILL the child's own process group (its workers) if anything is left."""
    process = running.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(grace_s)
    # The child leads its own session: its group id is its pid. Catches workers it failed to stop.
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.wait(5)
    return process.returncode


@contextmanager
def running_stack(
    components: Sequence[Component], log: Callable[[str], None] = print
) -> Iterator[list[Running]]:
    """Start the components in order; stop all of them (reverse order) however the block ends."""
    started: list[Running] = []
    try:
        for component in components:
            started.append(start_component(component, log))  # noqa: PERF401 (stop those started so far)
        yield started
    finally:
        for running in reversed(started):
            code = stop_component(running)
            log(f"{running.component.name} stopped (exit code {code})")


class _Stop(Exception):  # noqa: N818 (control flow, not an error)
    pass


def run_stack(
    components: Sequence[Component],
    on_ready: Callable[[list[Running]], None] | None = None,
    log: Callable[[str], None] = print,
) -> int:
    """Run until SIGINT/SIGTERM or until a component exits; returns 0 on a requested stop, 1 otherwise."""

    def request_stop(signum: int, _: FrameType | None) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the shutdown short
            signal.signal(sig, signal.SIG_IGN)
        log(f"{signal.Signals(signum).name} received; stopping the stack")
        raise _Stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with running_stack(components, log) as started:
            if on_ready is not None:
                on_ready(started)
            while True:
                for running in started:
                    code = running.process.poll()
                    if code is not None:
                        log(f"{running.component.name} exited with code {code}; stopping the stack")
                        return 1
                time.sleep(0.5)
    except _Stop:
        return 0
    except StackError as error:
        log(f"error: {error}")
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
