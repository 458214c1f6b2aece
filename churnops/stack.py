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

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

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
    payload_logger_url: str | None = None,
) -> Component:
    predictor_port = ports.predictor_grpc  # the hop is gRPC v2
    env = {
        "CHURNOPS_TRANSFORMER_MODEL_DIR": str(artefact.resolve()),
        "CHURNOPS_TRANSFORMER_HOST": LOOPBACK,
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


# ---- fault injection: kill, restart, signal one component; cut or slow a TCP path ----------------------


def kill_component(running: Running) -> int | None:
    """SIGKILL the component's whole process group at once, as an OOM kill or a node loss does: no drain,
    no shutdown hooks. Returns the exit code (-9)."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(running.process.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        running.process.wait(10)
    return running.process.returncode


def restart_component(running: Running, log: Callable[[str], None] = print) -> Running:
    """Start a stopped or killed component again, same argv, environment and ports; waits until ready."""
    if running.process.poll() is None:
        raise StackError(f"{running.component.name} is still running (pid {running.process.pid})")
    return start_component(running.component, log)


def authorizer_component(port: int, env: Mapping[str, str]) -> Component:
    """The ext_authz authorizer (`python -m churn_authorizer serve`); `env` holds its CHURNOPS_AUTHORIZER_*
    settings (keys file, Redis URL and prefix, failure mode). Ready once it has loaded a keys file."""
    return Component(
        name="authorizer",
        argv=(sys.executable, "-m", "churn_authorizer", "serve"),
        ready_url=f"http://{LOOPBACK}:{port}/readyz",
        env={"CHURNOPS_AUTHORIZER_HOST": LOOPBACK, "CHURNOPS_AUTHORIZER_PORT": str(port), **env},
        ready_timeout_s=30.0,
    )


class TcpProxy:
    """A loopback TCP forwarder we control, put between a component and a server it depends on
    (PostgreSQL, Redis, the predictor) to inject faults there without touching the server itself, which
    other processes share.

    - `cut()`: every open connection is closed and the listening socket too, so new connects get
      ECONNREFUSED — what a client sees when the server's host goes away or the server restarts;
    - `restore()`: listens again on the same port;
    - `delay_s`: each chunk travelling client -> server waits this long first (a slow server or network),
      which holds requests in flight for a known time.

    Why not a library: toxiproxy (the usual tool) is a Go server that is not packaged for this machine, and
    the forwarding needed here is 60 lines of asyncio streams. It runs its own event loop in a daemon
    thread, so it works from synchronous code (scripts, pytest) without touching the caller's loop.
    """

    def __init__(self, target_port: int, target_host: str = LOOPBACK, *, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self.delay_s = 0.0
        self.connections_total = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def cut_off(self) -> bool:
        return self._server is None

    def start(self) -> TcpProxy:
        if not self._thread.is_alive():
            self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._cut())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, LOOPBACK, self.port)
            self.port = int(self._server.sockets[0].getsockname()[1])

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # stops listening; the connections are ours to close
        for writer in list(self._writers):
            writer.transport.abort()  # RST, as a vanished host's connections end (no orderly FIN)
        self._writers.clear()
        if server is not None:
            await server.wait_closed()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self.connections_total += 1
        self._writers.update((client_writer, server_writer))
        try:
            await asyncio.gather(
                self._pump(client_reader, server_writer, delayed=True),
                self._pump(server_reader, client_writer, delayed=False),
            )
        finally:
            for writer in (client_writer, server_writer):
                self._writers.discard(writer)
                writer.transport.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, delayed: bool
    ) -> None:
        if delayed:
            await self._pump_delayed(reader, writer)
            return
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            writer.transport.abort()

    async def _pump_delayed(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Each chunk leaves `delay_s` after it arrived, in order: added latency, not a throughput cap
        (sleeping between reads would queue every chunk of a busy connection behind the previous ones)."""
        loop = asyncio.get_running_loop()
        # At most 256 chunks of at most 64 KiB (16 MiB) wait; past that reading waits too (backpressure).
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=256)

        async def forward() -> None:
            while True:
                arrived, data = await chunks.get()
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                wait = arrived + self.delay_s - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        forwarding = asyncio.create_task(forward())
        try:
            while data := await reader.read(65536):
                await chunks.put((loop.time(), data))
            await chunks.put((loop.time(), b""))
            await forwarding
        except (OSError, RuntimeError):
            writer.transport.abort()
        finally:
            forwarding.cancel()
