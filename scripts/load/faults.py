"""Fault scenarios under load: one part of the stack fails while the client mix flows at ~100 requests/s.

Each scenario starts its own local stack (scripts/load/localstack.py), sends the mix with the open-loop
Pacer (every request recorded), injects its fault, and returns a FaultReport: the figures (what clients
saw, when, how long recovery took, what the store holds) and the invariants, each True or False:

- predictor killed (SIGKILL) and restarted: 503s only from the kill until the transformer serves again,
  which it does by itself (same process), time to recovery measured;
- drift detector killed for the outage: serving answers everything; the payload logs of the outage are
  counted (lost: KServe's logger, like ours, does not retry) and logging resumes by itself;
- PostgreSQL unreachable (our proxy cut): serving answers everything; every served prediction is stored
  exactly once after the database returns;
- Redis unreachable under the authorizer (our proxy cut): the configured failure mode (open: 200s without
  limits; closed: 429s) and never a 5xx;
- transformer SIGTERM with requests held in flight (predictor calls slowed by our proxy): every request in
  flight is answered 200 and the process exits by itself within the grace period.

scripts/faults.py runs them at full length (60 s outages) and prints the figures; tests/faults runs short
ones and asserts the invariants. Timings are reported, never asserted.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from churn_transformer.settings import TransformerSettings
from scripts.load.localstack import LocalStack, StackOptions, counter_samples, local_stack, unrefused_drops
from scripts.load.pacer import Outcome, Pacer, PacerThread, between, summarize
from scripts.load.payloads import RequestMix

SERVING_KINDS = {"v2_single", "v2_batch10", "v2_batch100", "v1_single", "invalid"}
# The transformer's payload logger as the stacks here run it (its defaults): queue in events, retry time.
PAYLOAD_QUEUE_EVENTS: int = TransformerSettings.model_fields["payload_logger_queue"].default
PAYLOAD_RETRY_S: float = TransformerSettings.model_fields["payload_logger_retry_s"].default
IN_FLIGHT_MARGIN_S = 0.1  # sent at least this long before the signal: surely read by the server


@dataclass(frozen=True)
class Phases:
    """Seconds of normal traffic before the fault, of the fault itself, and of traffic after recovery."""

    before_s: float = 10.0
    outage_s: float = 60.0
    after_s: float = 15.0


@dataclass
class FaultReport:
    name: str
    outcomes: list[Outcome]
    marks: dict[str, float]
    figures: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(self.checks.values())

    def failed(self) -> list[str]:
        return [name for name, held in self.checks.items() if not held]

    def lines(self) -> list[str]:
        start = min(self.marks.values()) if self.marks else 0.0
        out = [f"## {self.name}"]
        out += [f"  {label} at +{moment - start:.1f} s" for label, moment in self.marks.items()]
        out += [f"  {key}: {_fmt(value)}" for key, value in self.figures.items()]
        reasons = Counter(
            f"{o.status} {o.detail}" for o in self.outcomes if o.status >= 500 and o.status != 503
        )
        reasons.update(f"503 {o.detail}" for o in self.outcomes if o.status == 503 and "gateway" in o.detail)
        out += [f"  5xx answer x{count}: {reason}" for reason, count in reasons.most_common(5)]
        out += [f"  note: {note}" for note in self.notes]
        out += [f"  [{'ok' if held else 'FAIL'}] {check}" for check, held in self.checks.items()]
        return out


def traceback_excerpt(log: str, limit: int = 1200) -> str:
    """The last stack trace of a JSON log (its `exception` field), cut to `limit` characters."""
    for line in reversed(log.splitlines()):
        if "Traceback" in line:
            try:
                text = str(json.loads(line).get("exception") or line)
            except ValueError:
                text = line
            return text[-limit:]
    return ""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def serving(outcomes: list[Outcome]) -> list[Outcome]:
    """Inference requests that were sent (not those the load loop's in-flight bound held back)."""
    return [o for o in outcomes if o.target == "serving" and o.error != "skipped"]


def feedback(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.target == "detector" and o.error != "skipped"]


def answered_between(outcomes: list[Outcome], start: float, end: float) -> list[Outcome]:
    """Requests answered (or failed) in [start, end): what the service did in that span, whenever sent."""
    return [o for o in outcomes if start <= o.ended < end]


def not_sent(outcomes: list[Outcome]) -> int:
    return sum(1 for o in outcomes if o.error == "skipped")


@contextmanager
def _traffic(stack: LocalStack, rate: float, seed: int, *, gateway: bool = False) -> Iterator[Pacer]:
    """Load at `rate` until the block ends; the outcomes are complete once it has. Straight to the
    transformer and the detector, or through the gateway and the authorizer with the stack's API key."""
    if gateway:
        headers = {"authorization": f"Bearer {stack.api_key}"}
        pacer = Pacer(RequestMix(seed=seed), stack.serving_url, stack.detector_url, rate, headers=headers)
    else:
        pacer = Pacer(RequestMix(seed=seed), stack.transformer_url, stack.detector_direct_url, rate)
    with PacerThread(pacer, duration_s=24 * 3600):
        pacer.mark("traffic")
        yield pacer


def _wait(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval_s)
    return False


# ---- the prediction store: what was served against what was stored ---------------------------------------


def stored_rows(url: str) -> dict[str, int]:
    from sqlalchemy import create_engine, func, select

    from churn_monitoring.store.schema import predictions

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(predictions.c.event_id, func.count()).group_by(predictions.c.event_id)
            ).all()
    finally:
        engine.dispose()
    # The detector stores a call as `<ce-id>~<digest of both halves>` (monitoring halves.stored_event_id):
    # count rows per ce-id, so a call stored twice under two digests still shows as a duplicate.
    counts: dict[str, int] = {}
    for event_id, count in rows:
        ce_id = str(event_id).rsplit("~", 1)[0]
        counts[ce_id] = counts.get(ce_id, 0) + int(count)
    return counts


def settle_store(stack: LocalStack, timeout_s: float = 180.0) -> dict[str, Any]:
    """Wait until the detector has written everything it holds (backlog 0) and the store stops growing."""
    last: dict[str, Any] = {}
    previous = -1

    def settled() -> bool:
        nonlocal previous, last
        try:
            last = httpx.get(f"{stack.detector_direct_url}/readyz", timeout=5).json()
        except httpx.HTTPError:
            return False
        if last["store"]["backlog_rows"] != 0 or not last["store"]["up"]:
            return False
        count = sum(stored_rows(stack.store_url()).values())
        done = count == previous
        previous = count
        return done

    _wait(settled, timeout_s, interval_s=2.0)
    return last


def detector_counter(stack: LocalStack, name: str, **labels: str) -> float:
    """Sum of a detector counter's samples (those with `labels`), from its /metrics."""
    samples = counter_samples(stack.detector_direct_url, name.removesuffix("_total"))
    return sum(value for found, value in samples if labels.items() <= found.items())


def drops_since(stack: LocalStack, before: dict[str, int]) -> dict[str, int]:
    """Payload-log events the transformer dropped since `before` (`stack.payload_drops()`), by reason."""
    now = stack.payload_drops()
    return {
        reason: count - before.get(reason, 0)
        for reason, count in now.items()
        if count > before.get(reason, 0)
    }


REFUSED = "payload logger post refused"  # the transformer's log line, with the refused event's ce_id


def refused_only_for_refused_requests(stack: LocalStack, outcomes: list[Outcome], log_from: int) -> bool:
    """Every event the detector refused (4xx: the event itself is wrong) since `log_from` (an offset in
    the transformer's log) is one of a request the transformer answered with a 4xx too: an invalid
    request's body is as invalid to the detector."""
    refused = {
        str(json.loads(line).get("ce_id", ""))
        for line in stack.log("transformer")[log_from:].splitlines()
        if REFUSED in line and line.startswith("{")
    }
    answered_4xx = {o.event_id for o in outcomes if o.status is not None and 400 <= o.status < 500}
    return refused <= answered_4xx


@dataclass(frozen=True)
class StoreAccount:
    served_requests: int
    expected_rows: int
    stored_rows: int
    lost_rows: int  # rows of 200 answers missing from the store
    lost_requests: int  # 200 answers with at least one row missing
    duplicate_rows: int


def account(outcomes: list[Outcome], stored: dict[str, int]) -> StoreAccount:
    served = [o for o in serving(outcomes) if o.status == 200 and o.customers > 0 and o.event_id]
    lost = [max(0, o.customers - stored.get(o.event_id, 0)) for o in served]
    duplicates = sum(max(0, stored.get(o.event_id, 0) - o.customers) for o in served)
    return StoreAccount(
        served_requests=len(served),
        expected_rows=sum(o.customers for o in served),
        stored_rows=sum(stored.get(o.event_id, 0) for o in served),
        lost_rows=sum(lost),
        lost_requests=sum(1 for n in lost if n),
        duplicate_rows=duplicates,
    )


# ---- the scenarios -------------------------------------------------------------------------------------


def predictor_restart(
    stack: LocalStack, phases: Phases, *, rate: float = 100.0, recovery_timeout_s: float = 120.0
) -> FaultReport:
    """MLServer SIGKILLed, down for the outage, started again; the transformer is left alone."""
    transformer = stack.running["transformer"].process
    with _traffic(stack, rate, seed=1) as pacer:
        time.sleep(phases.before_s)
        pacer.mark("kill")
        stack.kill("predictor")
        time.sleep(phases.outage_s)
        pacer.mark("restart")
        stack.restart("predictor")
        ready = pacer.mark("predictor_ready")
        _wait(lambda: any(o.status == 200 for o in between(serving(pacer.outcomes), ready, 1e18)),
              recovery_timeout_s)  # fmt: skip
        time.sleep(phases.after_s)
    same_process = transformer.poll() is None and stack.running["transformer"].process is transformer
    log = stack.log("transformer")
    outcomes = pacer.outcomes
    marks = pacer.marks
    report = FaultReport("predictor killed and restarted", outcomes, marks)
    kill, ready = marks["kill"], marks["predictor_ready"]
    served = serving(outcomes)
    # Recovered: from this request on, every serving request got the right answer (all workers back).
    recovered = _recovered_at(served, ready)
    unavailable = [o for o in served if o.status == 503]
    report.figures |= {
        "requests": len(outcomes),
        "503 answers": len(unavailable),
        "first 503 at (s after the kill)": (min(o.started for o in unavailable) - kill)
        if unavailable
        else "-",
        "last 503 at (s after the kill)": (max(o.started for o in unavailable) - kill)
        if unavailable
        else "-",
        "predictor restart took (s)": ready - marks["restart"],
        "recovery after the predictor was ready (s)": (recovered - ready) if recovered else "never",
        "clients saw the outage for (s)": (recovered - kill) if recovered else "never",
        "sent before the kill": summarize(between(served, 0, kill)).line(),
        "sent during the outage": summarize(between(served, kill, recovered or 1e18)).line(),
        "sent after recovery": summarize(between(served, recovered or 1e18, 1e18)).line(),
        "feedback (detector)": summarize(feedback(outcomes)).line(),
    }
    report.figures["not sent (load loop's in-flight bound full)"] = not_sent(outcomes)
    end = recovered or 1e18
    report.checks = {
        "transformer never restarted (same process, still running)": same_process,
        "answered before the kill: every request as expected": all(
            o.ok for o in answered_between(served, 0, kill)
        ),
        "503s only in the outage (answered after the kill, sent before recovery)": all(
            o.ended >= kill and o.started < end for o in unavailable
        ),
        "in the outage: 200, 503 or the expected 4xx, never another status or a cut connection": all(
            o.ok or o.status == 503 for o in served if o.ended >= kill and o.started < end
        ),
        "the transformer recovered by itself (every request right after recovery)": recovered is not None
        and len(between(served, recovered, 1e18)) > 0,
        "no stack trace in the transformer log": "Traceback" not in log,
    }
    if "Traceback" in log:
        report.notes.append("last stack trace in the transformer log:\n" + traceback_excerpt(log))
    return report


def _recovered_at(served: list[Outcome], ready: float) -> float | None:
    """Start of the first request after `ready` from which every later request was answered right."""
    ordered = sorted((o for o in served if o.started >= ready), key=lambda o: o.started)
    recovered = None
    for outcome in ordered:
        if not outcome.ok:
            recovered = None
        elif recovered is None:
            recovered = outcome.started
    return recovered


def detector_outage(stack: LocalStack, phases: Phases, *, rate: float = 100.0) -> FaultReport:
    """The drift detector SIGKILLed for the outage, then started again (as Kubernetes would)."""
    drops_before = stack.payload_drops()
    log_from = len(stack.log("transformer"))
    with _traffic(stack, rate, seed=2) as pacer:
        time.sleep(phases.before_s)
        pacer.mark("kill")
        stack.kill("detector")
        time.sleep(phases.outage_s)
        pacer.mark("restart")
        stack.restart("detector")
        pacer.mark("detector_ready")
        time.sleep(phases.after_s)
    pacer.mark("traffic_end")
    settle_store(stack)
    stored = stored_rows(stack.store_url())
    drops = drops_since(stack, drops_before)
    outcomes, marks = pacer.outcomes, pacer.marks
    kill, ready = marks["kill"], marks["detector_ready"]
    served = serving(outcomes)
    before, during, after = (
        between(served, 0, kill),
        between(served, kill, ready),
        between(served, ready, 1e18),
    )
    report = FaultReport("drift detector killed", outcomes, marks)
    lost_before, lost_during, lost_after = (account(part, stored) for part in (before, during, after))
    # Events the transformer submitted while the detector could not take them: a request event per
    # answer whose body was read, and a response event per 200.
    outage_events = sum(2 if o.status == 200 else 1 for o in during if o.status is not None)
    report.figures |= {
        "requests": len(outcomes),
        "serving before": summarize(before).line(),
        "serving while the detector was down": summarize(during).line(),
        "serving after": summarize(after).line(),
        "feedback while down": summarize(between(feedback(outcomes), kill, ready)).line(),
        "payload log events submitted while the detector was away": outage_events,
        "payload log events dropped by the transformer's logger (its /metrics, by reason)": drops,
        "predictions served before the kill / not stored": f"{lost_before.expected_rows} / {lost_before.lost_rows}",
        "predictions served while down / not stored": f"{lost_during.expected_rows} / {lost_during.lost_rows}",
        "predictions served after the restart / not stored": f"{lost_after.expected_rows} / {lost_after.lost_rows}",
    }
    report.notes.append(
        f"the transformer's payload logger retries a failed post for up to {PAYLOAD_RETRY_S:g} s while the queue holds "
        f"{PAYLOAD_QUEUE_EVENTS:,} events, shedding the oldest past that (KServe's agent in the cluster posts "
        "each event once); a SIGKILLed detector also loses the rows it had taken but not yet written"
    )
    report.checks = {
        "serving answered every request as expected, outage or not": all(o.ok for o in served),
        "logging resumed by itself: every prediction served after the restart is stored": bool(after)
        and lost_after.lost_rows == 0,
        f"no payload event dropped while the outage fits the logger's queue ({PAYLOAD_QUEUE_EVENTS:,} events)": (
            outage_events > PAYLOAD_QUEUE_EVENTS or unrefused_drops(drops) == 0
        ),
        "events refused by the detector are only those of requests answered 4xx": refused_only_for_refused_requests(
            stack, outcomes, log_from
        ),
        "nothing stored twice": all(a.duplicate_rows == 0 for a in (lost_before, lost_during, lost_after)),
    }
    return report


def postgres_outage(stack: LocalStack, phases: Phases, *, rate: float = 100.0) -> FaultReport:
    """The store's PostgreSQL unreachable (our proxy cut: open connections reset, new ones refused)."""
    proxy = stack.proxies["postgres"]
    taken_before = detector_counter(stack, "churn_logged_predictions_total")
    inserted_before = detector_counter(stack, "churn_store_rows_total", outcome="inserted")
    duplicate_before = detector_counter(stack, "churn_store_rows_total", outcome="duplicate")
    drops_before = stack.payload_drops()
    log_from = len(stack.log("transformer"))
    with _traffic(stack, rate, seed=3) as pacer:
        time.sleep(phases.before_s)
        pacer.mark("cut")
        proxy.cut()
        time.sleep(phases.outage_s / 2)
        during = httpx.get(f"{stack.detector_direct_url}/readyz", timeout=5).json()
        time.sleep(phases.outage_s / 2)
        pacer.mark("restore")
        proxy.restore()
        time.sleep(phases.after_s)
    pacer.mark("traffic_end")
    final = settle_store(stack)
    stored = stored_rows(stack.store_url())
    drops = drops_since(stack, drops_before)

    def counters() -> tuple[float, float, float]:
        return (
            detector_counter(stack, "churn_logged_predictions_total") - taken_before,
            detector_counter(stack, "churn_store_rows_total", outcome="inserted") - inserted_before,
            detector_counter(stack, "churn_store_rows_total", outcome="duplicate") - duplicate_before,
        )

    # The counters move after the commit: give them time to catch up; a lost row never does. A batch whose
    # commit reached PostgreSQL but whose answer the cut lost is written again and finds its rows there
    # (ON CONFLICT DO NOTHING): counted `duplicate`, not `inserted`, though stored once.
    _wait(lambda: sum(counters()[1:]) >= counters()[0], 30.0, interval_s=1.0)
    taken, inserted, duplicate = counters()
    outcomes, marks = pacer.outcomes, pacer.marks
    cut, restore = marks["cut"], marks["restore"]
    served = serving(outcomes)
    books = account(outcomes, stored)
    report = FaultReport("PostgreSQL unreachable", outcomes, marks)
    report.figures |= {
        "requests": len(outcomes),
        "serving before": summarize(between(served, 0, cut)).line(),
        "serving during": summarize(between(served, cut, restore)).line(),
        "serving after": summarize(between(served, restore, 1e18)).line(),
        "feedback during (503 expected: the labels are refused, not lost)": summarize(
            between(feedback(outcomes), cut, restore)
        ).line(),
        "store during the outage (readyz)": during.get("store"),
        "store at the end (readyz)": final.get("store"),
        "payload log events dropped by the transformer's logger (its /metrics, by reason)": drops,
        "predictions served (200 answers)": books.expected_rows,
        "predictions the detector took (churn_logged_predictions)": int(taken),
        "rows the store inserted (churn_store_rows inserted)": int(inserted),
        "rows written again, found stored (churn_store_rows duplicate)": int(duplicate),
        "served predictions found in the store": books.stored_rows,
        "served but not stored (end to end)": books.lost_rows,
        "stored twice": books.duplicate_rows,
    }
    report.notes.append(
        "served but not stored, end to end, = events the transformer's local payload logger dropped + rows "
        "the store lost; the store's own share is taken minus found (counted in the store itself: a batch "
        "whose commit landed but whose answer was cut is written again and counted duplicate)"
    )
    report.checks = {
        "serving answered every request as expected, outage or not": all(o.ok for o in served),
        "the outage was real (store down, rows held back)": not during.get("store", {}).get("up", True)
        and during.get("store", {}).get("backlog_rows", 0) > 0,
        "0 predictions lost in the store (every row the detector took is in it)": taken > 0
        and books.stored_rows >= taken,
        "every payload event reached the detector (none dropped by the transformer's logger)": unrefused_drops(
            drops
        )
        == 0,
        "events refused by the detector are only those of requests answered 4xx": refused_only_for_refused_requests(
            stack, outcomes, log_from
        ),
        "end to end: every served prediction is in the store": books.lost_rows == 0,
        "none stored twice": books.duplicate_rows == 0,
        "labels sent during the outage were refused (503), not silently dropped": all(
            o.ok or o.status == 503 for o in feedback(outcomes)
        ),
    }
    return report


def redis_outage(stack: LocalStack, phases: Phases, *, rate: float = 100.0) -> FaultReport:
    """Redis unreachable under the authorizer (our proxy cut); clients go through the gateway with a key."""
    failure_mode = stack.redis_failure_mode
    proxy = stack.proxies["redis"]
    with _traffic(stack, rate, seed=4, gateway=True) as pacer:
        time.sleep(phases.before_s)
        pacer.mark("cut")
        proxy.cut()
        time.sleep(phases.outage_s)
        pacer.mark("restore")
        proxy.restore()
        time.sleep(phases.after_s)
    metrics = httpx.get(f"{_authorizer_url(stack)}/metrics", timeout=5).text
    outcomes, marks = pacer.outcomes, pacer.marks
    cut, restore = marks["cut"], marks["restore"]
    report = FaultReport(f"Redis unreachable (failure mode {failure_mode})", outcomes, marks)
    decisions = {
        line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("churnops_authz_decisions_total{") and not line.endswith(" 0.0")
    }
    report.figures |= {
        "requests": len(outcomes),
        "before": summarize(between(outcomes, 0, cut)).line(),
        "during": summarize(between(outcomes, cut, restore)).line(),
        "after": summarize(between(outcomes, restore, 1e18)).line(),
        "authorizer decisions": decisions or "(metric not found)",
    }
    sent = [o for o in outcomes if o.error != "skipped"]
    report.figures["not sent (load loop's in-flight bound full)"] = not_sent(outcomes)
    fivexx = [o for o in sent if o.status >= 500 or o.status == 0]
    during_valid = [o for o in between(sent, cut, restore) if not o.expect_4xx]
    expected_during = 200 if failure_mode == "open" else 429
    report.checks = {
        "no 5xx and no cut connection, outage or not": not fivexx,
        "answered before the outage: every request as expected": all(
            o.ok for o in answered_between(sent, 0, cut)
        ),
        f"during the outage: valid requests get {expected_during} ({failure_mode} mode)": all(
            o.status in (200, expected_during) for o in during_valid
        )
        and any(o.status == expected_during for o in during_valid),
    }
    if failure_mode == "closed":
        report.checks["429s only during the outage (and the retry interval after it)"] = all(
            o.ended >= cut and o.started < restore + 5.0 for o in sent if o.status == 429
        )
    return report


def _authorizer_url(stack: LocalStack) -> str:
    return stack.running["authorizer"].component.ready_url.removesuffix("/readyz")


def transformer_sigterm(
    stack: LocalStack, phases: Phases, *, rate: float = 100.0, hold_s: float = 0.3, grace_s: float = 30.0
) -> FaultReport:
    """SIGTERM to the transformer while predictor calls are held `hold_s` by our proxy, so that requests
    are certainly in flight; they must all be answered, and the process must exit by itself. The
    transformer is not started again: run this scenario last on a stack."""
    process = stack.running["transformer"].process
    with _traffic(stack, rate, seed=5) as pacer:
        time.sleep(phases.before_s)
        pacer.mark("hold")
        stack.proxies["predictor"].delay_s = hold_s
        time.sleep(max(1.0, 3 * hold_s))
        sigterm = pacer.mark("sigterm")
        stack.signal("transformer", signal.SIGTERM)
        exited = _wait(lambda: process.poll() is not None, grace_s)
        pacer.mark("exited" if exited else "grace_period_over")
        time.sleep(1.0)
    exit_code = process.poll()
    log = stack.log("transformer")
    outcomes, marks = pacer.outcomes, pacer.marks
    served = serving(outcomes)
    # In flight: fully written to a connection before SIGTERM (with a margin for the server to read it)
    # and not answered before it. Requests still queued in our client's pool are not: the listener is
    # closed at SIGTERM and they are refused, as Kubernetes would have routed them elsewhere.
    in_flight = [o for o in served if 0 < o.sent <= sigterm - IN_FLIGHT_MARGIN_S and o.ended > sigterm]
    handled = _logged_requests(log)  # request id -> status, as the transformer logged each answer
    lost_answers = [o for o in served if o.request_id in handled and o.status != handled[o.request_id]]
    race = [o for o in served if o.status == 0 and o.sent > 0 and o.request_id not in handled]
    later = between(served, sigterm + 1e-9, 1e18)
    report = FaultReport("transformer SIGTERM (graceful drain)", outcomes, marks)
    report.figures |= {
        "requests": len(outcomes),
        "in flight at SIGTERM (written >= 100 ms before it, not yet answered)": len(in_flight),
        "their answers": summarize(in_flight).line() if in_flight else "-",
        "answered by the transformer (its log) but not received by the client": len(lost_answers),
        "written to a connection the transformer closed without reading it": len(race),
        "sent after SIGTERM": summarize(later).line() if later else "-",
        "exit code": exit_code if exited else f"still running after {grace_s:g} s (SIGKILLed at teardown)",
        "exited after SIGTERM (s)": (marks["exited"] - sigterm) if exited else "-",
    }
    report.notes.append(
        "after SIGTERM Kubernetes takes the pod out of the endpoints: new requests go elsewhere; refused "
        "connections here are those, not requests cut in flight"
    )
    report.checks = {
        "requests were in flight at SIGTERM (the scenario held some)": len(in_flight) > 0,
        "every request in flight at SIGTERM was answered 200 (none cut)": all(
            o.status == 200 for o in in_flight
        ),
        "every answer the transformer logged reached its client": not lost_answers,
        f"the transformer exited by itself within {grace_s:g} s, exit code 0": exited and exit_code == 0,
        "no stack trace in the transformer log": "Traceback" not in log,
    }
    if "Traceback" in log:
        report.notes.append("last stack trace in the transformer log:\n" + traceback_excerpt(log))
    return report


def _logged_requests(log: str) -> dict[str, int]:
    """request_id -> status of every inference request line of the transformer's JSON log."""
    import json

    handled = {}
    for line in log.splitlines():
        if '"request_id"' not in line or not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "status" in record:
            handled[str(record["request_id"])] = int(record["status"])
    return handled


SCENARIOS: dict[str, Callable[..., FaultReport]] = {
    "predictor": predictor_restart,
    "detector": detector_outage,
    "postgres": postgres_outage,
    "redis": redis_outage,
    "sigterm": transformer_sigterm,  # last: it stops the transformer
}

# What each scenario needs of the stack besides the defaults.
NEEDS: dict[str, dict[str, Any]] = {
    "predictor": {},
    "detector": {},
    "postgres": {"store": "postgres"},
    "redis": {"authorizer": True},
    "sigterm": {"predictor_proxy": True},
}


def stack_for(names: list[str], base: StackOptions, **overrides: Any) -> StackOptions:
    """Options of one stack that can host every scenario in `names`."""
    merged: dict[str, Any] = dict(base.__dict__)
    for name in names:
        merged.update(NEEDS[name])
    merged.update(overrides)
    return StackOptions(**merged)


def run_alone(
    name: str, artefact: Path, version: str, scratch: Path, phases: Phases, base: StackOptions, **kwargs: Any
) -> FaultReport:
    """One scenario on a stack of its own (scripts/faults.py: each fault meets a fresh stack)."""
    with local_stack(artefact, version, scratch, stack_for([name], base)) as stack:
        return SCENARIOS[name](stack, phases, **kwargs)
