"""An open-loop load loop that records every request: what the fault scenarios and tests/faults drive.

Why not locust here: locust is the user-facing tool (scripts/load/locustfile.py, its CSV and HTML
reports), but a fault scenario must know, for every single request, when it was sent and how it ended
(status, or the connection error) to prove "503 only while the predictor was down" or "nothing in flight
was cut"; locust aggregates per name and time slice. Embedding locust in pytest is not clean either: it
monkey-patches the standard library with gevent on import, under every other test of the session.

aiohttp rather than httpx: measured 0.6-0.8 ms of CPU per request against httpx's 3.3-4.6 ms, and the load
loop shares two cores with the stack it measures (aiohttp comes with kserve).

Open loop: request i leaves at t0 + i/rate whether or not earlier ones have been answered (a closed loop
would slow down exactly when the service does and hide the outage), with a bound on requests in flight so a
dead service cannot pile up unbounded tasks; a request that finds the bound full is recorded as `skipped`.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace

import aiohttp

from scripts.load.payloads import Planned, RequestMix


@dataclass(frozen=True)
class Outcome:
    """One request as the client saw it; times on time.monotonic()'s clock."""

    kind: str
    target: str
    started: float
    elapsed: float
    status: int  # 0: no HTTP answer (see `error`)
    error: str = ""  # exception class of a failed exchange, "skipped" when the in-flight bound was full
    customers: int = 0
    expect_4xx: bool = False
    request_id: str = ""
    event_id: str = ""  # the `ce-id` sent: the payload log events, and the store's rows, carry it
    sent: float = 0.0  # when the whole request had been written to a connection (0: never)
    detail: str = ""  # the start of the body of a 5xx answer: who failed, and why

    @property
    def ended(self) -> float:
        return self.started + self.elapsed

    @property
    def ok(self) -> bool:
        """The answer a correct service gives: 200, or a 4xx for a request that is invalid on purpose."""
        if self.expect_4xx:
            return 400 <= self.status < 500
        return self.status == 200

    @property
    def refused_connection(self) -> bool:
        """Never reached a server (nothing listening): not a request in flight."""
        return self.error == "ConnectError"


@dataclass
class Pacer:
    """Sends the mix at `rate` requests/s to the serving URL (and feedback to the detector URL)."""

    mix: RequestMix
    serving_url: str
    detector_url: str
    rate: float = 100.0
    headers: Mapping[str, str] = field(default_factory=dict)
    max_in_flight: int = 256
    timeout_s: float = 30.0
    outcomes: list[Outcome] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, label: str) -> float:
        """Note when something happened (a kill, a restart), on the outcomes' clock."""
        moment = time.monotonic()
        self.marks[label] = moment
        return moment

    async def run(self, duration_s: float, stop: threading.Event | None = None) -> list[Outcome]:
        semaphore = asyncio.Semaphore(self.max_in_flight)
        tasks: set[asyncio.Task[None]] = set()
        trace = aiohttp.TraceConfig()
        trace.on_request_chunk_sent.append(_body_written)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_in_flight),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            trace_configs=[trace],
        ) as session:
            start = time.monotonic()
            sent = 0
            while (now := time.monotonic()) - start < duration_s and not (stop and stop.is_set()):
                due = start + sent / self.rate
                if due > now:
                    await asyncio.sleep(due - now)
                planned = self.mix.next()
                sent += 1
                if semaphore.locked():
                    self.outcomes.append(_skipped(planned))
                    continue
                await semaphore.acquire()
                task = asyncio.create_task(self._send(session, planned, semaphore))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks, timeout=self.timeout_s + 5)
        return self.outcomes

    async def _send(
        self, session: aiohttp.ClientSession, planned: Planned, semaphore: asyncio.Semaphore
    ) -> None:
        base = self.detector_url if planned.target == "detector" else self.serving_url
        # Our id on every request: the transformer logs x-request-id.
        request_id = uuid.uuid4().hex
        headers = {**planned.headers, **self.headers, "x-request-id": request_id}
        event_id = ""  # the payload events' ce-id is the transformer's own, answered as X-Event-ID
        progress = SimpleNamespace(sent=0.0)
        started = time.monotonic()
        status, error, detail = 0, "", ""
        try:
            async with session.post(
                base + planned.path, data=planned.body, headers=headers, trace_request_ctx=progress
            ) as response:
                body = await response.read()
                status = response.status
                if planned.target == "serving":
                    event_id = response.headers.get("x-event-id", "")
                if status >= 500:
                    detail = body[:160].decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = _error_name(exc)
        finally:
            semaphore.release()
        self.outcomes.append(
            Outcome(
                planned.kind,
                planned.target,
                started,
                time.monotonic() - started,
                status,
                error,
                planned.customers,
                planned.expect_4xx,
                request_id,
                event_id,
                progress.sent,
                detail,
            )
        )


async def _body_written(_: aiohttp.ClientSession, context: SimpleNamespace, __: object) -> None:
    """aiohttp's on_request_chunk_sent trace hook: the last chunk marks the request fully written to its
    connection, i.e. in the server's hands rather than queued in our pool."""
    if context.trace_request_ctx is not None:
        context.trace_request_ctx.sent = time.monotonic()


def _error_name(exc: BaseException) -> str:
    """A failed exchange by what happened: "ConnectError" when nothing listened (never in flight)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "ConnectError"
    if isinstance(exc, TimeoutError):
        return "Timeout"
    return type(exc).__name__


def _skipped(planned: Planned) -> Outcome:
    return Outcome(planned.kind, planned.target, time.monotonic(), 0.0, 0, "skipped", 0, planned.expect_4xx)


class PacerThread:
    """A Pacer running in a thread of its own (its own event loop) while the caller injects faults."""

    def __init__(self, pacer: Pacer, duration_s: float) -> None:
        self.pacer = pacer
        self.duration_s = duration_s
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="pacer", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self.pacer.run(self.duration_s, self.stop_event))
        except BaseException as exc:  # reported by join(), not lost in the thread
            self.error = exc

    def __enter__(self) -> PacerThread:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_event.set()
        self.join()

    def join(self) -> list[Outcome]:
        self.thread.join(self.duration_s + self.pacer.timeout_s + 30)
        if self.error is not None:
            raise RuntimeError(f"the load loop failed: {self.error!r}") from self.error
        return self.pacer.outcomes


# ---- figures ----------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of `values`; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass(frozen=True)
class Summary:
    requests: int
    ok: int
    unexpected: int  # not ok: wrong status or no answer
    statuses: dict[str, int]
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rate: float

    def line(self) -> str:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return (
            f"{self.requests} requests ({self.rate:.0f}/s), {self.unexpected} unexpected; "
            f"p50 {self.p50_ms:.1f} ms, p95 {self.p95_ms:.1f} ms, p99 {self.p99_ms:.1f} ms; [{counts}]"
        )


def status_label(outcome: Outcome) -> str:
    return str(outcome.status) if outcome.status else outcome.error


def summarize(outcomes: Iterable[Outcome], *, kinds: set[str] | None = None) -> Summary:
    """Counts and latency of 200 answers (the serving path's, unless `kinds` says otherwise)."""
    chosen = [o for o in outcomes if kinds is None or o.kind in kinds]
    statuses: dict[str, int] = {}
    for outcome in chosen:
        statuses[status_label(outcome)] = statuses.get(status_label(outcome), 0) + 1
    latencies = [o.elapsed * 1000 for o in chosen if o.status == 200]
    span = (max(o.started for o in chosen) - min(o.started for o in chosen)) if len(chosen) > 1 else 0.0
    return Summary(
        requests=len(chosen),
        ok=sum(o.ok for o in chosen),
        unexpected=sum(not o.ok for o in chosen),
        statuses=statuses,
        p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95),
        p99_ms=percentile(latencies, 99),
        rate=len(chosen) / span if span else 0.0,
    )


def between(outcomes: Iterable[Outcome], start: float, end: float) -> list[Outcome]:
    """Requests sent in [start, end)."""
    return [o for o in outcomes if start <= o.started < end]


def mean_or_nan(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")
