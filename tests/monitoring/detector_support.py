"""Shared pieces of the detector-service tests: customers and answers in exactly the transformer's format,
payload-log events with exactly the headers KServe's agent sends, a Slack receiver, a PostgreSQL database
per test session, a TCP proxy that can cut the database off, and the detector run as a real process."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.support.services import REPO, LocalProcess, free_port, wait_until

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
AGENT_SOURCE = "http://localhost:9081/"  # KServe agent's default --source-uri


class Scorer:
    """Answers of the real model for customers, in the transformer's v1 answer format."""

    def __init__(self, artefact: Path) -> None:
        from churn_core.artefact import load_model
        from churn_core.contract import Encoder, FeatureContract
        from churn_core.decision import DecisionMaker
        from churn_core.explain import Explainer

        self.contract = FeatureContract.load(artefact)
        self.version = self.contract.model.version
        self.model = load_model(artefact)
        self.encoder = Encoder(self.contract)
        self.explainer = Explainer(self.contract)
        self.decider = DecisionMaker(self.contract)

    def probabilities(self, customers: Sequence[Mapping[str, Any]]) -> np.ndarray:
        batch = self.encoder.batch_from_records(customers)
        return np.asarray(self.model.predict_proba(self.encoder.encode(batch))[:, 1], dtype=np.float64)

    def answers(self, customers: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        batch = self.encoder.batch_from_records(customers)
        probabilities = np.asarray(
            self.model.predict_proba(self.encoder.encode(batch))[:, 1], dtype=np.float64
        )
        contributions = self.explainer.contributions(batch)
        top = self.explainer.top_indices(contributions)
        factors = self.explainer.factors(batch, contributions, top)
        decisions = self.decider.decide(batch, probabilities, contributions, top)
        answers = []
        for index, customer in enumerate(customers):
            answer: dict[str, Any] = {}
            if customer.get("customerID"):
                answer["customerID"] = customer["customerID"]
            answer.update(
                churn_probability=float(probabilities[index]),
                churn_prediction=bool(decisions.predictions[index]),
                risk_level=str(decisions.risk_levels[index]),
                recommended_action=str(decisions.actions[index]),
                top_factors=[factor.as_dict() for factor in factors[index]],
                model_version=self.version,
            )
            answers.append(answer)
        return answers


def v1_request(customers: Sequence[Mapping[str, Any]]) -> bytes:
    return json.dumps({"instances": list(customers)}).encode()


def v1_response(answers: Sequence[Mapping[str, Any]]) -> bytes:
    return json.dumps({"predictions": list(answers)}).encode()


def v2_request(customers: Sequence[Mapping[str, Any]], contract: Any) -> bytes:
    """One named tensor per field (BYTES/INT64/FP64, as the transformer's input types), plus customerID."""
    n = len(customers)
    inputs = []
    if all(c.get("customerID") for c in customers):
        inputs.append(
            {
                "name": "customerID",
                "shape": [n],
                "datatype": "BYTES",
                "data": [c["customerID"] for c in customers],
            }
        )
    for spec in contract.fields:
        datatype = {"category": "BYTES", "integer": "INT64"}.get(spec.kind, "FP64")
        inputs.append(
            {"name": spec.name, "shape": [n], "datatype": datatype, "data": [c[spec.name] for c in customers]}
        )
    return json.dumps({"id": str(uuid.uuid4()), "inputs": inputs}).encode()


def v2_response(answers: Sequence[Mapping[str, Any]], version: str) -> bytes:
    """What kserve's InferResponse.to_rest() makes of the transformer's v2 outputs."""
    n = len(answers)
    outputs = []
    if all(a.get("customerID") for a in answers):
        outputs.append(
            {
                "name": "customer_id",
                "shape": [n],
                "datatype": "BYTES",
                "data": [a["customerID"] for a in answers],
            }
        )
    outputs += [
        {
            "name": "churn_probability",
            "shape": [n],
            "datatype": "FP64",
            "data": [a["churn_probability"] for a in answers],
        },
        {
            "name": "churn_prediction",
            "shape": [n],
            "datatype": "BOOL",
            "data": [a["churn_prediction"] for a in answers],
        },
        {"name": "risk_level", "shape": [n], "datatype": "BYTES", "data": [a["risk_level"] for a in answers]},
        {
            "name": "recommended_action",
            "shape": [n],
            "datatype": "BYTES",
            "data": [a["recommended_action"] for a in answers],
        },
        {
            "name": "top_factors",
            "shape": [n],
            "datatype": "BYTES",
            "data": [json.dumps(a["top_factors"]) for a in answers],
        },
        {"name": "model_version", "shape": [n], "datatype": "BYTES", "data": [version] * n},
    ]
    return json.dumps(
        {
            "model_name": "churn",
            "model_version": version,
            "id": str(uuid.uuid4()),
            "parameters": None,
            "outputs": outputs,
        }
    ).encode()


def go_time(moment: datetime) -> str:
    """RFC 3339 with nanoseconds and Z, as Go's time.RFC3339Nano writes ce-time."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


def kserve_headers(
    event_id: str,
    event_type: str,
    *,
    content_type: str = "application/json",
    component: str = "transformer",
    time_text: str | None = None,
) -> dict[str, str]:
    """Headers of a binary-mode CloudEvent exactly as KServe's agent worker sends it (pkg/logger/worker.go:
    cloudevents sdk-go, Go's canonical header case, RFC 3339 nano time, metadata as JSON of no headers)."""
    headers = {
        "Ce-Specversion": "1.0",
        "Ce-Id": event_id,
        "Ce-Type": event_type,
        "Ce-Source": AGENT_SOURCE,
        "Ce-Time": time_text or go_time(datetime.now(UTC)),
        "Ce-Inferenceservicename": "churn",
        "Ce-Namespace": "churn",
        "Ce-Component": component,
        "Ce-Endpoint": "default",
        "Ce-Metadata": "{}",
    }
    if content_type:
        headers["Content-Type"] = content_type
    return headers


def post_call(
    client: httpx.Client,
    url: str,
    request_body: bytes,
    response_body: bytes | None,
    *,
    event_id: str | None = None,
    response_first: bool = False,
    at: datetime | None = None,
) -> tuple[httpx.Response, ...]:
    """Post the two events of one logged call (the response only when given, as for an HTTP 200)."""
    event_id = event_id or str(uuid.uuid4())
    events = [(REQUEST_TYPE, request_body)]
    if response_body is not None:
        events.append((RESPONSE_TYPE, response_body))
    if response_first:
        events.reverse()
    time_text = go_time(at) if at is not None else None
    return tuple(
        client.post(url, content=body, headers=kserve_headers(event_id, kind, time_text=time_text))
        for kind, body in events
    )


# --- Slack --------------------------------------------------------------------------------------------


@dataclass
class SlackReceiver:
    """A local HTTP server that answers like a Slack incoming webhook and records every post."""

    port: int
    posts: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/T000/B000/secret-token"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        wait_until(lambda: len(self.posts) >= count, timeout, f"{count} Slack post(s)")
        return self.posts


@contextlib.contextmanager
def slack_receiver() -> Iterator[SlackReceiver]:
    receiver = SlackReceiver(port=free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            receiver.paths.append(self.path)
            receiver.posts.append(json.loads(body))
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), Handler)
    receiver.server = server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


# --- PostgreSQL -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_database(base_url: str, prefix: str = "churnops_test") -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL for one test module, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(base_url).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# --- a TCP proxy that can make the database unreachable --------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; `cut()` closes every connection and refuses new ones (the
    listening socket is closed, so connects get ECONNREFUSED), `restore()` listens again."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._accept_thread: threading.Thread | None = None

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._accept_thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._accept_thread.start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sockets = [a, b]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [], 1.0)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (b if source is a else a).sendall(data)
        except OSError:
            return
        finally:
            for s in sockets:
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() first: a thread blocked in accept() keeps a closed socket listening otherwise.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                connection.close()

    def restore(self) -> None:
        self.start()

    def stop(self) -> None:
        self.cut()


def metric_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """Value of the first sample of `name` whose labels include `labels` in a text exposition."""
    wanted = labels or {}
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        series, _, label_text = head.partition("{")
        if series != name:
            continue
        found = {}
        for part in label_text.rstrip("}").split(","):
            if "=" in part:
                key, _, raw = part.partition("=")
                found[key] = raw.strip('"')
        if all(found.get(k) == v for k, v in wanted.items()):
            return float(value)
    return None


# --- the detector as a real process ------------------------------------------------------------------------


class DetectorProcess(LocalProcess):
    def metrics_text(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        return metric_value(self.metrics_text(), name, labels)


def start_detector(
    env: Mapping[str, str], log_path: Path, *, python: Path | str | None = None, ready_timeout: float = 60.0
) -> DetectorProcess:
    """`python -m churn_monitoring.service` on a free port with `env` (CHURNOPS_* settings) added."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNOPS_")}
    full_env.update(
        {
            "CHURNOPS_DETECTOR_HOST": "127.0.0.1",
            "CHURNOPS_DETECTOR_PORT": str(port),
            "CHURNOPS_DETECTOR_URL": f"http://127.0.0.1:{port}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    full_env.update(env)
    handle = log_path.open("wb")
    process = subprocess.Popen(
        [str(python or sys.executable), "-m", "churn_monitoring.service"],
        cwd=REPO,
        env=full_env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    detector = DetectorProcess(process, port, log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"detector exited with {process.returncode}:\n{detector.log_text()[-3000:]}")
        try:
            return httpx.get(f"{detector.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, ready_timeout, "the detector service")
    except BaseException:
        detector.stop()
        raise
    return detector


def wait_for_metric(
    detector: DetectorProcess,
    name: str,
    predicate: Any,
    timeout: float = 30.0,
    labels: Mapping[str, str] | None = None,
) -> float:
    holder: dict[str, float | None] = {}

    def check() -> bool:
        holder["value"] = detector.metric(name, labels)
        return holder["value"] is not None and bool(predicate(holder["value"]))

    wait_until(check, timeout, f"metric {name} {labels or ''}", interval=0.2)
    value = holder["value"]
    assert value is not None
    return value


def elapsed(since: float) -> float:
    return time.monotonic() - since
