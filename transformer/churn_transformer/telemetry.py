"""Telemetry of the transformer: metrics, one JSON log line per request, the local payload logger.

The app (app.py) opens a `RequestRecord` per inference request; validation and the model fill it in
(protocol, batch size, answers, refusal code) through a context variable, so nothing threads it through
KServe's `Model.__call__` signature. When the answer is sent the app closes the record: metrics, the
request log line, and (when configured) the request/response CloudEvents of the payload logger.

## Metrics
Prometheus metrics of the transformer, served on `/metrics` beside KServe's own.

With `--workers N` (N > 1) each uvicorn worker is its own process, and `/metrics`, answered by any one of
them, must add up all of them: prometheus-client then runs in multiprocess mode (PROMETHEUS_MULTIPROC_DIR,
set by the entry point before anything imports prometheus_client). A single worker keeps the ordinary
in-memory registry: multiprocess values cost an mmap write and a getpid() system call per update, about
5 % of the transformer's CPU per request (measured with py-spy).

Every series carries `model_version`: each transformer process serves one model version, and the canary
analysis compares canary and stable series from Prometheus (`churn_predictions_total`,
`churn_prediction_duration_seconds`, `churn_inference_responses_total`, `churn_probability`,
`churn_actions_total`). The version is known at start, so every label set is closed: `prediction`,
`risk_level` and `action` come from the contract's bands and the retention playbook, `protocol` and `code`
are the small sets below.

`churn_inference_responses_total{protocol, code, model_version}` counts every answer of the inference endpoints (v1
`:predict`, v2 `/infer`) by status class, 5xx included: the transformer's own error ratio (alert
ChurnServing5xxRatioHigh). Health, readiness, metadata and `/metrics` are not inference and are not counted,
so probes and scrapes cannot dilute the ratio. Both labels are closed sets (no paths, no exact codes), and
the children the ratio needs exist from the start at 0: a series that appears only at its first increment
loses that increment to `rate()`, and a 5xx numerator would have no series until the first failure.

## Payload logger
Local stand-in for KServe's payload logger (the agent sidecar's `logger` of an InferenceService). In the
cluster, KServe's agent proxies the component and posts each request and each 200 response to
`spec.<component>.logger.url` as CloudEvents; the drift detector consumes them. Locally there is no agent,
so when `CHURNOPS_TRANSFORMER_PAYLOAD_LOGGER_URL` is set the transformer posts the same events itself,
mirroring kserve/kserve pkg/logger (handler.go, worker.go): binary content mode; `ce-type`
`org.kubeflow.serving.inference.request` / `.response`; one `ce-id` shared by the pair, always made here
(uuid4: a client-chosen id, reused, made every later event a "duplicate" the detector never stored) and
answered in the `X-Event-ID` response header;
`ce-source`; extensions `inferenceservicename`, `namespace`, `component`, `endpoint` and `metadata`
(`{}`); the body is the raw request or response body with the *request's* Content-Type on both events;
the response event only when the status is 200, and no event at all for a request answered before its
body was read (413). Posting never delays an answer: a queue bounded in events and in bytes, drained by
`workers` concurrent posters (KServe's agent runs 5) over one keep-alive HTTP client; a failed post is
retried with capped backoff for `retry_s` (a detector restarting: the events behind it wait in the queue,
delayed, not lost), then dropped; a full queue sheds its *oldest* events; every drop is counted in
`churn_payload_events_dropped_total{reason}`. Do not set it in the cluster, where the agent does this.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter as Tally
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

request_log = structlog.get_logger("churn_transformer.request")
log = structlog.get_logger("churn_transformer.telemetry")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PROTOCOLS = ("v1", "v2")  # plus "other": a :predict or /infer path under neither prefix (a 404)
STATUS_CLASSES = ("2xx", "4xx", "5xx")  # plus "1xx"/"3xx", which the inference routes never answer
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# 0.05, 0.10, ..., 1.0: the predicted churn probability of every answered customer, per model version.
PROBABILITY_BUCKETS = tuple(round(0.05 * step, 2) for step in range(1, 21))


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def prepare_multiprocess_dir() -> Path:
    """Point PROMETHEUS_MULTIPROC_DIR at an empty directory (a fresh one unless the environment names one).

    Must run before prometheus_client is imported. Files left by an earlier run would add that run's
    counts to ours, so a named directory is emptied (prometheus-client's documented practice).
    """
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="churn-transformer-metrics-"))
        os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def remove_multiprocess_dir(directory: Path) -> None:
    if directory.name.startswith("churn-transformer-metrics-"):
        shutil.rmtree(directory, ignore_errors=True)


class Metrics:
    """The transformer's metrics for the one model version this process serves."""

    def __init__(self, model_version: str) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.model_version = model_version
        self.predictions = Counter(
            "churn_predictions_total",
            "Customers scored, by prediction, risk level and model version",
            ["prediction", "risk_level", "model_version"],
        )
        self.duration = Histogram(
            "churn_prediction_duration_seconds",
            "End-to-end time of an answered inference request in the transformer (body in to answer out)",
            ["model_version"],
            buckets=DURATION_BUCKETS,
        )
        self.probability = Histogram(
            "churn_probability",
            "Predicted churn probability of every answered customer, by model version",
            ["model_version"],
            buckets=PROBABILITY_BUCKETS,
        )
        self.actions = Counter(
            "churn_actions_total",
            "Recommended actions answered, by action (the playbook's closed set) and model version",
            ["action", "model_version"],
        )
        self.model_info = Gauge(
            "churn_model_info",
            "The model version this transformer serves (value 1)",
            ["version"],
            multiprocess_mode="max",
        )
        self.invalid = Counter(
            "churn_invalid_requests_total", "Requests refused with a 4xx, by reason", ["reason"]
        )
        self.payload_dropped = Counter(
            "churn_payload_events_dropped_total",
            "Payload-log events not delivered, by reason (queue_full, post_failed, refused)",
            ["reason"],
        )
        self.responses = Counter(
            "churn_inference_responses_total",
            "Answers of the inference endpoints (health and /metrics excluded), by protocol, status class "
            "and model version",
            ["protocol", "code", "model_version"],
        )
        for protocol in PROTOCOLS:
            for code in STATUS_CLASSES:
                self.responses.labels(protocol, code, model_version)
        self._duration = self.duration.labels(model_version)
        self._probability = self.probability.labels(model_version)
        self.model_info.labels(model_version).set(1)

    def record_response(self, protocol: str, status: int, elapsed_s: float) -> None:
        """One answer of an inference endpoint; the latency of answered (200) requests only."""
        self.responses.labels(protocol, status_class(status), self.model_version).inc()
        if status == 200:
            self._duration.observe(elapsed_s)

    def record_answers(
        self,
        probabilities: Sequence[float],
        predictions: Sequence[bool],
        risk_levels: Sequence[str],
        actions: Sequence[str],
    ) -> None:
        """Every customer of one answer: prediction and risk level, action, probability."""
        version = self.model_version
        for (prediction, risk), count in Tally(zip(predictions, risk_levels, strict=True)).items():
            self.predictions.labels("churn" if prediction else "no_churn", risk, version).inc(count)
        for action, count in Tally(actions).items():
            self.actions.labels(action, version).inc(count)
        for probability in probabilities:
            self._probability.observe(probability)


def status_class(status: int) -> str:
    """The `code` label: 2xx for 200..299 and so on; a status outside 100..599 (none is sent) is a 5xx."""
    return f"{status // 100}xx" if 100 <= status <= 599 else "5xx"


_metrics: list[Metrics] = []  # this process's one Metrics, made by start_metrics


def start_metrics(model_version: str) -> Metrics:
    """Register the metrics of the model version this process serves (once per process; the model does it
    when it is built, in every worker process)."""
    if not _metrics:
        _metrics.append(Metrics(model_version))
    elif _metrics[0].model_version != model_version:
        raise RuntimeError(
            f"this process serves model version {_metrics[0].model_version}, not {model_version}"
        )
    return _metrics[0]


def get_metrics() -> Metrics:
    if not _metrics:
        raise RuntimeError(
            "metrics are not started: start_metrics(model_version) runs when the model is built"
        )
    return _metrics[0]


def render_metrics(accept: str | None) -> tuple[bytes, str]:
    """All worker processes' metrics (ours and KServe's), in the format the scraper asked for."""
    from prometheus_client import REGISTRY, CollectorRegistry, exposition, multiprocess

    registry = REGISTRY
    if multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    encoder, content_type = exposition.choose_encoder(accept or "")
    return encoder(registry), content_type


# ---- one request: its record, its log line ----------------------------------------------------------------

MAX_REQUEST_ID = 128


@dataclass
class RequestRecord:
    """What one inference request did, collected along the way for its log line, metrics and events."""

    request_id: str
    path: str
    protocol: str  # "v1" | "v2" | "other": the label of churn_inference_responses_total
    started: float = field(default_factory=time.perf_counter)
    body: bytes | None = None  # None until the body was read whole: then no payload-log event
    content_type: str = ""
    batch_size: int = 0
    model_version: str | None = None
    code: str | None = None
    error: str | None = None
    customers: list[dict[str, Any]] = field(default_factory=list)
    # The payload-log events' ce-id: made here, never the client's; answered as X-Event-ID so that a client
    # (the load harness) can find its events and the store's rows.
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))


CURRENT: ContextVar[RequestRecord | None] = ContextVar("churn_request", default=None)


def current() -> RequestRecord | None:
    return CURRENT.get()


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-ID when it is short printable text, else a new one."""
    for key, value in headers:
        if key == b"x-request-id":
            text = value.decode("latin-1").strip()
            if 0 < len(text) <= MAX_REQUEST_ID and text.isprintable():
                return text
    return uuid.uuid4().hex


def finish_request(
    record: RequestRecord, status: int, response_body: bytes, events: PayloadLogger | None
) -> None:
    """Once per answer, where the status is final: metrics, the request log line, payload-log events."""
    elapsed = time.perf_counter() - record.started
    metrics = get_metrics()
    metrics.record_response(record.protocol, status, elapsed)
    if 400 <= status < 500:
        metrics.invalid.labels(record.code or f"http_{status}").inc()
    fields: dict[str, Any] = {
        "request_id": record.request_id,
        "path": record.path[:200],
        "status": status,
        "protocol": record.protocol,
        "batch_size": record.batch_size,
        "latency_ms": round(elapsed * 1000, 3),
        "model_version": record.model_version,
    }
    if record.customers:
        fields["customers"] = record.customers
    if record.code:
        fields["code"] = record.code
    if record.error:
        fields["error"] = record.error
    if status >= 500:
        request_log.error("inference request failed", **fields)
    else:
        request_log.info("inference request", **fields)
    if events is not None and record.body is not None:
        events.submit(record.event_id, record.body, record.content_type, status, response_body)


# ---- the payload logger -------------------------------------------------------------------------------------

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class EventSource:
    url: str
    source: str
    inference_service: str
    namespace: str
    component: str
    endpoint: str


@dataclass(frozen=True)
class _Event:
    event_id: str
    event_type: str
    body: bytes
    content_type: str


class PayloadLogger:
    """Posts payload-log CloudEvents off the request path; see the module's docstring."""

    def __init__(
        self,
        target: EventSource,
        *,
        workers: int = 5,
        max_events: int = 10_000,
        max_bytes: int = 64 << 20,
        retry_s: float = 120.0,
        backoff_s: float = 0.2,
        max_backoff_s: float = 2.0,
        timeout_s: float = 5.0,
        transport: Any = None,
    ) -> None:
        self.target = target
        self.transport = transport  # tests: an httpx transport in place of the network
        self.workers = workers
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.retry_s = retry_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.dropped = 0
        self.dropped_by_reason: dict[str, int] = {}
        self.queued_bytes = 0
        self._queue: asyncio.Queue[_Event] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._client: Any = None

    def headers(self, event: _Event) -> dict[str, str]:
        return {
            "ce-specversion": "1.0",
            "ce-id": event.event_id,
            "ce-type": event.event_type,
            "ce-source": self.target.source,
            "ce-time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "ce-inferenceservicename": self.target.inference_service,
            "ce-namespace": self.target.namespace,
            "ce-component": self.target.component,
            "ce-endpoint": self.target.endpoint,
            "ce-metadata": "{}",
            "content-type": event.content_type,
        }

    def start(self) -> None:
        """Start the posters in the running event loop (idempotent)."""
        if self._queue is not None:
            return
        import httpx

        self._queue = asyncio.Queue()
        self._client = httpx.AsyncClient(
            timeout=self.timeout_s,
            limits=httpx.Limits(max_keepalive_connections=self.workers),
            transport=self.transport,
        )
        self._tasks = [
            asyncio.create_task(self._post_events(), name=f"churn-payload-logger-{n}")
            for n in range(self.workers)
        ]

    def submit(
        self, event_id: str, request_body: bytes, content_type: str, status: int, response_body: bytes
    ) -> None:
        """Queue the request event and, for a 200, the response event; never blocks, never raises."""
        self.start()
        assert self._queue is not None
        events = [_Event(event_id, REQUEST_TYPE, request_body, content_type)]
        if status == 200:
            events.append(_Event(event_id, RESPONSE_TYPE, response_body, content_type))
        for event in events:
            if self._make_room(len(event.body)):
                self.queued_bytes += len(event.body)
                self._queue.put_nowait(event)
            else:
                self._drop("queue_full")

    def _full(self, size: int) -> bool:
        assert self._queue is not None
        return self._queue.qsize() >= self.max_events or self.queued_bytes + size > self.max_bytes

    def _make_room(self, size: int) -> bool:
        """Shed the oldest queued events until `size` more bytes fit; False when they cannot.

        Oldest first, not the newcomer: while the detector is away the queue fills with the start of the
        outage, and dropping newcomers would then keep the stalest events and lose the ones submitted
        after the detector is back. Shedding the oldest delivers the freshest events once it returns
        (what drift windows and live F1 want) and every event submitted after that.
        """
        assert self._queue is not None
        while self._full(size) and not self._queue.empty():
            oldest = self._queue.get_nowait()
            self._queue.task_done()
            self.queued_bytes -= len(oldest.body)
            self._drop("queue_full")
        return not self._full(size)  # still full: the bytes are in posts under way (or `size` too big)

    def _drop(self, reason: str, **detail: Any) -> None:
        self.dropped += 1
        self.dropped_by_reason[reason] = count = self.dropped_by_reason.get(reason, 0) + 1
        get_metrics().payload_dropped.labels(reason).inc()
        if reason == "queue_full":  # the running count at the first drop and every 1,000th
            if count == 1 or count % 1000 == 0:
                log.warning("payload logger queue full; events dropped", dropped=count)
        elif reason == "post_failed":
            log.warning("payload logger post failed", dropped=count, **detail)
        else:
            log.warning("payload logger post refused", dropped=count, **detail)

    async def _post_events(self) -> None:
        assert self._queue is not None
        while True:
            event = await self._queue.get()
            try:
                await self._post(event)
            finally:
                self.queued_bytes -= len(event.body)
                self._queue.task_done()

    async def _post(self, event: _Event) -> None:
        """Post until the consumer takes the event, refuses it (a 4xx but 408/425/429: the event itself is
        wrong, retrying cannot help) or `retry_s` has passed. Retrying for that long, rather than a few
        times, is what lets a detector restart cost delay instead of events: one event per worker waits here
        while the queue holds the rest (bounded, oldest shed), and all of it is posted once it is back."""
        import httpx

        deadline = time.monotonic() + self.retry_s
        delay = self.backoff_s
        attempts = 0
        while True:
            attempts += 1
            try:
                response = await self._client.post(
                    self.target.url, content=event.body, headers=self.headers(event)
                )
            except httpx.HTTPError as error:
                problem: dict[str, Any] = {"error": type(error).__name__}
            else:
                if response.status_code < 300:
                    return
                problem = {"status": response.status_code}
                if response.status_code not in RETRY_STATUSES:
                    self._drop("refused", ce_id=event.event_id, **problem)
                    return
            if time.monotonic() + delay > deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)
        self._drop("post_failed", ce_id=event.event_id, attempts=attempts, **problem)

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until queued events are posted (or dropped); False when `timeout_s` ran out first."""
        if self._queue is None:
            return True
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout_s: float) -> None:
        """Best-effort flush, then stop the posters and close the client (shutdown)."""
        if self._queue is None:
            return
        if not await self.flush(timeout_s):
            log.warning("payload logger closed with events still queued", queued=self._queue.qsize())
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()
        self._queue = None
