"""Real processes for the transformer tests: MLServer on the session's artefact, the transformer in front.

Session-scoped and shared: one predictor (MLServer, .venv-predictor) and one transformer with two worker
processes, its payload logger pointed at an in-process CloudEvents sink. Tests that need to break something
(predictor down, version mismatch) start their own short-lived transformer. Everything binds 127.0.0.1 on
free ports and is stopped by PID.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from churnops.stack import (
    Running,
    ServingPorts,
    StackError,
    TcpProxy,
    predictor_component,
    start_component,
    stop_component,
    transformer_component,
)
from tests.support.customers import customer_from_row
from tests.support.services import free_port, predictor_python, unavailable

DATATYPES = {"SeniorCitizen": "INT64", "tenure": "INT64", "MonthlyCharges": "FP64", "TotalCharges": "FP64"}


def v2_request(customers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    names = list(customers[0])
    inputs = [
        {
            "name": name,
            "datatype": DATATYPES.get(name, "BYTES"),
            "shape": [len(customers)],
            "data": [c[name] for c in customers],
        }
        for name in names
    ]
    return {"inputs": inputs, **extra}


def v2_outputs(document: dict[str, Any]) -> dict[str, list[Any]]:
    return {output["name"]: output["data"] for output in document["outputs"]}


@dataclass
class Predictor:
    running: Running
    http_port: int
    grpc_port: int
    version: str

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@dataclass
class Transformer:
    running: Running
    port: int
    log_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self) -> list[dict[str, Any]]:
        text = self.log_file.read_text(encoding="utf-8", errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def start_transformer(
    artefact: Path,
    predictor_grpc_port: int,
    log_file: Path,
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> Transformer:
    port = free_port()
    ports = ServingPorts(transformer=port, predictor_grpc=predictor_grpc_port)
    component = transformer_component(artefact, ports, workers=workers).logging_to(log_file)
    component = component.with_env(CHURNOPS_TRANSFORMER_STARTUP_TIMEOUT_S="20", **(env or {}))
    component = replace(component, ready_timeout_s=timeout_s)
    return Transformer(start_component(component, log=lambda _: None), port, log_file)


@pytest.fixture(scope="session")
def predictor(
    artefact_dir: Path, trained_model: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Predictor]:
    python = predictor_python()
    if not (python.parent / "mlserver").exists():
        unavailable(f"mlserver is not installed next to {python}")
    ports = ServingPorts(
        predictor_http=free_port(), predictor_grpc=free_port(), predictor_metrics=free_port()
    )
    log_file = tmp_path_factory.mktemp("predictor") / "mlserver.log"
    component = predictor_component(artefact_dir, python, ports, trained_model.version).logging_to(log_file)
    try:
        running = start_component(component, log=lambda _: None)
    except StackError as error:
        pytest.fail(f"MLServer did not start: {error}\n{log_file.read_text()[-3000:]}")
    yield Predictor(running, ports.predictor_http, ports.predictor_grpc, trained_model.version)
    stop_component(running)


class EventSink:
    """A CloudEvents consumer on 127.0.0.1: records every POST (headers, body)."""

    def __init__(self) -> None:
        self.events: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with sink.lock:
                    sink.events.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def with_id(self, event_id: str) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [event for event in self.events if event[0].get("ce-id") == event_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def event_sink() -> Iterator[EventSink]:
    sink = EventSink()
    yield sink
    sink.close()


@pytest.fixture(scope="session")
def transformer(
    artefact_dir: Path, predictor: Predictor, event_sink: EventSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Transformer]:
    """The shared transformer: two worker processes (metrics must add up across them), payload logger on."""
    log_file = tmp_path_factory.mktemp("transformer") / "transformer.log"
    try:
        served = start_transformer(
            artefact_dir,
            predictor.grpc_port,
            log_file,
            workers=2,
            env={"CHURNOPS_TRANSFORMER_PAYLOAD_LOGGER_URL": event_sink.url},
        )
    except StackError as error:
        pytest.fail(f"transformer did not start: {error}\n{log_file.read_text()[-3000:]}")
    yield served
    stop_component(served.running)


@pytest.fixture(scope="session")
def client(transformer: Transformer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=transformer.url, timeout=30.0) as http:
        yield http


@pytest.fixture(scope="session")
def customers(telco_rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [customer_from_row(row) for row in telco_rows]


@contextmanager
def transformer_behind_proxy(
    artefact: Path,
    predictor: Predictor,
    log_file: Path,
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[Transformer, TcpProxy]]:
    """A transformer that reaches the predictor through churnops.stack's TcpProxy: `cut()` takes the
    predictor away and `restore()` brings it back, `delay_s` holds requests in flight. Both are stopped
    on the way out."""
    with TcpProxy(predictor.grpc_port) as proxy:
        served = start_transformer(artefact, proxy.port, log_file, workers=workers, env=env)
        try:
            yield served, proxy
        finally:
            proxy.delay_s = 0.0
            stop_component(served.running)
