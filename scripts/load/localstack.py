"""The local stack the load and fault scenarios run against, built from churnops.stack's components.

    detector (prediction store: SQLite, or PostgreSQL through a TcpProxy)
    predictor (MLServer) <- [TcpProxy, optional] <- transformer (payload logger -> detector)
    [optional] gateway (Envoy stand-in) -> authorizer (Redis through a TcpProxy) -> transformer / detector

Every process binds 127.0.0.1 on a free port and logs to a file in the scratch directory; everything is
stopped by PID (churnops.stack.stop_component). PostgreSQL and Redis are the machine's shared servers: the
store gets a database of its own (dropped afterwards) and the authorizer a Redis key prefix of its own
(deleted afterwards), and the faults are injected in our proxies, never in those servers.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from churnops.stack import (
    LOOPBACK,
    Component,
    Running,
    ServingPorts,
    TcpProxy,
    authorizer_component,
    detector_component,
    kill_component,
    predictor_component,
    restart_component,
    start_component,
    stop_component,
    transformer_component,
)

if TYPE_CHECKING:
    from churn_authorizer.keys import ApiKey

REPO = Path(__file__).resolve().parents[2]
POSTGRES = "postgresql+psycopg://{user}@127.0.0.1:{port}/{database}"


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def side_python(variable: str, venv: str) -> Path:
    return Path(os.environ.get(variable, REPO / venv / "bin" / "python"))


def unrefused_drops(drops: dict[str, int]) -> int:
    """Events dropped for want of room or of a detector (`queue_full`, `post_failed`): the ones that count
    as lost; `refused` ones were invalid (of requests answered 4xx: scripts/load/faults.py checks so)."""
    return sum(count for reason, count in drops.items() if reason != "refused")


def counter_samples(url: str, family: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of each `<family>_total` sample on the /metrics page of the service at `url`."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=5).text
    return [
        (sample.labels, sample.value)
        for metrics in text_string_to_metric_families(text)
        if metrics.name == family
        for sample in metrics.samples
        if sample.name == f"{family}_total"
    ]


@dataclass(frozen=True)
class StackOptions:
    workers: int = 1
    detector: bool = True
    store: str = "sqlite"  # "sqlite" (under the scratch home) or "postgres" (own database, via a proxy)
    detector_python: Path | None = None  # None: .venv-drift if present (alibi-detect), else this one
    authorizer: bool = False
    redis_failure_mode: str = "open"
    predictor_proxy: bool = False  # the transformer reaches MLServer's gRPC port through a TcpProxy
    detector_env: dict[str, str] = field(default_factory=dict)
    transformer_env: dict[str, str] = field(default_factory=dict)
    authorizer_env: dict[str, str] = field(default_factory=dict)  # CHURNOPS_AUTHORIZER_* overrides
    extra_keys: tuple[ApiKey, ...] = ()  # keys-file entries besides the load key (the attack suite's)


@dataclass
class LocalStack:
    """A running stack: its processes by name, URLs, proxies, and the fault controls."""

    running: dict[str, Running]
    scratch: Path
    serving_url: str  # where clients send inference requests (the gateway when the authorizer runs)
    detector_url: str  # where clients send feedback (the gateway too, with the authorizer)
    transformer_url: str
    detector_direct_url: str
    database_url: str | None = None  # the store as clients reach it: PostgreSQL through our proxy, or SQLite
    api_key: str | None = None
    redis_prefix: str | None = None
    redis_failure_mode: str = "open"
    proxies: dict[str, TcpProxy] = field(default_factory=dict)

    def store_url(self) -> str:
        """The prediction store, reached directly (not through the proxy a scenario may have cut)."""
        if self.database_url is None:
            return f"sqlite:///{self.scratch / 'home' / 'monitoring.db'}"
        proxy = self.proxies["postgres"]
        return self.database_url.replace(f":{proxy.port}/", ":5432/")

    def pids(self) -> dict[str, int]:
        return {name: r.process.pid for name, r in self.running.items() if r.process.poll() is None}

    def log(self, name: str) -> str:
        path = self.running[name].component.log_file
        return path.read_text(encoding="utf-8", errors="replace") if path else ""

    def payload_drops(self) -> dict[str, int]:
        """Payload-log events the transformer's local logger dropped, by reason (`queue_full`,
        `post_failed`, `refused`): its /metrics counter, exact (its log lines are sampled)."""
        samples = counter_samples(self.transformer_url, "churn_payload_events_dropped")
        return {labels["reason"]: int(value) for labels, value in samples}

    def kill(self, name: str) -> int | None:
        return kill_component(self.running[name])

    def terminate(self, name: str, grace_s: float = 30.0) -> int | None:
        """SIGTERM, as Kubernetes stops a pod; SIGKILL after `grace_s` (terminationGracePeriodSeconds)."""
        return stop_component(self.running[name], grace_s=grace_s)

    def signal(self, name: str, sig: signal.Signals = signal.SIGTERM) -> None:
        self.running[name].process.send_signal(sig)

    def restart(self, name: str) -> Running:
        self.running[name] = restart_component(self.running[name], log=lambda _: None)
        return self.running[name]


def _postgres_database(stack: ExitStack, options: StackOptions) -> tuple[str, TcpProxy]:
    from sqlalchemy import create_engine, text

    user = os.environ.get("PGUSER", "postgres")
    name = f"churnops_load_{uuid.uuid4().hex[:10]}"
    admin = create_engine(
        POSTGRES.format(user=user, port=5432, database="test"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    stack.callback(drop)
    proxy = stack.enter_context(TcpProxy(5432))
    return POSTGRES.format(user=user, port=proxy.port, database=name), proxy


def _authorizer_keys(scratch: Path, extra: tuple[ApiKey, ...] = ()) -> tuple[Path, str]:
    """A keys file with one key allowed to predict and send feedback, with a budget no load run reaches,
    and the `extra` entries."""
    from churn_authorizer.keys import KeysDocument, generate_key
    from churn_authorizer.scopes import Scope

    issued = generate_key([Scope.PREDICT, Scope.FEEDBACK], name="load-test", rate_limit=10_000_000)
    path = scratch / "keys.json"
    path.write_text(KeysDocument(keys=[issued.entry, *extra]).to_json(), encoding="utf-8")
    return path, issued.key


def _delete_redis_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        stale = list(client.scan_iter(match=prefix + "*"))
        if stale:
            client.delete(*stale)
    finally:
        client.close()


def gateway_component(port: int, authorizer: str, serving: str, detector: str) -> Component:
    return Component(
        name="gateway",
        argv=(
            sys.executable,
            str(REPO / "scripts" / "load" / "gateway.py"),
            "--port",
            str(port),
            "--authorizer",
            authorizer,
            "--serving",
            serving,
            "--detector",
            detector,
        ),
        ready_url=f"http://{LOOPBACK}:{port}/gateway/healthz",
        env={"PYTHONPATH": str(REPO)},
        ready_timeout_s=30.0,
    )


@contextmanager
def local_stack(artefact: Path, version: str, scratch: Path, options: StackOptions) -> Iterator[LocalStack]:
    """Start the stack (detector, predictor, transformer, then authorizer and gateway), yield it, stop it."""
    scratch.mkdir(parents=True, exist_ok=True)
    ports = ServingPorts(free_port(), free_port(), free_port(), free_port(), free_port())
    with ExitStack() as stack:
        proxies: dict[str, TcpProxy] = {}
        components: list[Component] = []
        database_url = None
        transformer_url = f"http://{LOOPBACK}:{ports.transformer}"
        detector_url = f"http://{LOOPBACK}:{ports.detector}"
        if options.detector:
            detector_python = options.detector_python or side_python(
                "CHURNOPS_STACK_DETECTOR_PYTHON", ".venv-drift"
            )
            detector = detector_component(artefact, ports, python=detector_python, home=scratch / "home")
            env = {"PYTHONUNBUFFERED": "1", **options.detector_env}
            if options.store == "postgres":
                database_url, proxies["postgres"] = _postgres_database(stack, options)
                env["CHURNOPS_DETECTOR_DATABASE_URL"] = database_url
            components.append(detector.with_env(**env))
        predictor_python = side_python("CHURNOPS_STACK_PREDICTOR_PYTHON", ".venv-predictor")
        components.append(predictor_component(artefact, predictor_python, ports, version))
        hop_ports = ports
        if options.predictor_proxy:
            proxies["predictor"] = stack.enter_context(TcpProxy(ports.predictor_grpc))
            hop_ports = replace(ports, predictor_grpc=proxies["predictor"].port)
        transformer = transformer_component(
            artefact,
            hop_ports,
            workers=options.workers,
            payload_logger_url=f"{detector_url}/" if options.detector else None,
        )
        components.append(transformer.with_env(**options.transformer_env))
        serving_url, feedback_url, api_key, redis_prefix = transformer_url, detector_url, None, None
        if options.authorizer:
            keys_file, api_key = _authorizer_keys(scratch, options.extra_keys)
            redis_prefix = f"churnops-load:{uuid.uuid4().hex[:12]}:"
            stack.callback(_delete_redis_prefix, redis_prefix)
            proxies["redis"] = stack.enter_context(TcpProxy(6379))
            authorizer_port, gateway_port = free_port(), free_port()
            components.append(
                authorizer_component(
                    authorizer_port,
                    {
                        "CHURNOPS_AUTHORIZER_KEYS_FILE": str(keys_file),
                        "CHURNOPS_AUTHORIZER_REDIS_URL": f"redis://{LOOPBACK}:{proxies['redis'].port}/0",
                        "CHURNOPS_AUTHORIZER_REDIS_PREFIX": redis_prefix,
                        "CHURNOPS_AUTHORIZER_REDIS_FAILURE_MODE": options.redis_failure_mode,
                        **options.authorizer_env,
                    },
                )
            )
            components.append(
                gateway_component(
                    gateway_port, f"http://{LOOPBACK}:{authorizer_port}", transformer_url, detector_url
                )
            )
            serving_url = feedback_url = f"http://{LOOPBACK}:{gateway_port}"
        components = [c.logging_to(scratch / f"{c.name}.log") for c in components]
        local = LocalStack(
            running={},
            scratch=scratch,
            serving_url=serving_url,
            detector_url=feedback_url,
            transformer_url=transformer_url,
            detector_direct_url=detector_url,
            database_url=database_url,
            api_key=api_key,
            redis_prefix=redis_prefix,
            redis_failure_mode=options.redis_failure_mode,
            proxies=proxies,
        )
        try:
            for component in components:
                local.running[component.name] = start_component(component, log=lambda _: None)
            yield local
        finally:
            # Reverse order, and whatever a scenario restarted under a new pid.
            for running in reversed(list(local.running.values())):
                stop_component(running)


def resolve_artefact(explicit: Path | None = None) -> tuple[Path, str]:
    """The given artefact, else the registry's champion exported (as `churnops serve` serves it)."""
    from churn_core.contract import FeatureContract

    if explicit is not None:
        return explicit, FeatureContract.load(explicit).model.version
    from churn_model.pipeline import export_version
    from churn_model.registry import Registry
    from churn_model.settings import get_settings

    settings = get_settings()
    registry = Registry(settings)
    if not registry.has_versions():  # as `make run` does: a fresh clone can load-test at once
        from churn_model.pipeline import train
        from churn_model.training import TrainingConfig

        print("no model is registered: training one (churnops train --cv-repeats 0) ...", flush=True)
        train(settings, TrainingConfig(seed=settings.seed, cv_repeats=0))
    info = registry.resolve("champion")
    return export_version(registry, info.version), info.version
