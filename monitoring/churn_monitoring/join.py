"""Joining the request and response halves of one logged call by their shared CloudEvent id and source.

KServe's agent sends the two halves from a pool of workers, so either may come first, and the response
never comes when the call failed. A caller may also set `Ce-Id` itself and reuse it, on purpose or not, so
an id does not identify a call: several halves may wait under one (id, source), a response pairs with a
request of the same size whose customer ids agree with the ones it echoes, and a re-delivered event is
recognised by its digest (`halves.event_key`), never by its id alone. Waiting halves are bounded in count
and in bytes (oldest evicted first) and in time (`ttl`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from churn_core.errors import quoted
from churn_monitoring.events import EventError
from churn_monitoring.halves import Half, call_id
from churn_monitoring.recent import RecentKeys


@dataclass(frozen=True, slots=True)
class LoggedPrediction:
    """One customer of one logged call, request and answer joined: a row of the prediction store."""

    event_id: str
    row_index: int
    customer_id: str | None
    model_version: str
    features: dict[str, Any]
    probability: float
    prediction: bool
    risk_level: str | None
    predicted_at: datetime
    source: str | None

    def to_record(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "row_index": self.row_index,
            "customer_id": self.customer_id,
            "model_version": self.model_version,
            "features": self.features,
            "probability": self.probability,
            "prediction": self.prediction,
            "risk_level": self.risk_level,
            "predicted_at": self.predicted_at.isoformat(),
            "source": self.source,
        }


@dataclass(frozen=True)
class JoinOutcome:
    """What adding one half did: `predictions` when it completed a pair, and the halves it pushed out."""

    status: str  # "pending" | "joined" | "duplicate"
    predictions: list[LoggedPrediction]
    evicted: list[Half] | None = None


def join_pair(
    request: Half, response: Half, fields: Sequence[str], received_at: datetime
) -> list[LoggedPrediction]:
    """Rows of a request/response pair; raises EventError when the two do not describe the same call."""
    if request.rows != response.rows:
        raise EventError(
            f"event {quoted(request.event_id)}: request has {request.rows} customers but response "
            f"{response.rows} answers",
            status=422,
        )
    predicted_at = request.time or response.time or received_at
    stored_id = call_id(request, response)
    rows = []
    for index, ((customer_id, values), answer) in enumerate(
        zip(request.customers, response.answers, strict=True)
    ):
        probability, prediction, risk_level, version, echoed_id = answer
        rows.append(
            LoggedPrediction(
                event_id=stored_id,
                row_index=index,
                customer_id=customer_id or echoed_id,
                model_version=version or "unknown",
                features=dict(zip(fields, values, strict=True)),
                probability=probability,
                prediction=prediction,
                risk_level=risk_level,
                predicted_at=predicted_at,
                source=request.source,
            )
        )
    return rows


def pairs(request: Half, response: Half) -> bool:
    """Whether a response can answer a request: as many rows, and the same customer ids where both
    halves name one (the transformer echoes the ids it was sent)."""
    if request.rows != response.rows:
        return False
    return all(
        a is None or b is None or a == b
        for a, b in zip(request.customer_ids(), response.customer_ids(), strict=True)
    )


@dataclass
class _Waiting:
    arrived: float
    half: Half


class PendingJoin:
    """Halves waiting for their other half; not thread-safe (the service uses it from the event loop)."""

    def __init__(
        self,
        fields: Sequence[str],
        *,
        max_pending: int,
        max_bytes: int,
        ttl_seconds: float,
        recent: RecentKeys,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fields = tuple(fields)
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self.ttl = ttl_seconds
        self.recent = recent
        self.bytes = 0
        self._clock = clock
        self._sequence = 0
        self._waiting: OrderedDict[int, _Waiting] = OrderedDict()  # oldest first
        self._calls: dict[tuple[str, str], list[int]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, half: Half, received_at: datetime) -> JoinOutcome:
        """Pair `half` with a waiting one, or keep it waiting; EventError 422 when the halves waiting
        under its id cannot be its partners, 413 when it alone is larger than the whole bound."""
        if half.key in self.recent:
            return JoinOutcome("duplicate", [])
        partner = self._partner(half)
        if partner is not None:
            other = self._remove(partner)
            request, response = (half, other) if half.kind == "request" else (other, half)
            predictions = join_pair(request, response, self.fields, received_at)
            self.recent.add(other.key)
            self.recent.add(half.key)
            return JoinOutcome("joined", predictions)
        if half.size > self.max_bytes:
            raise EventError(
                f"a {half.kind} of {half.rows} customers holds about {half.size} bytes; the join holds "
                f"at most {self.max_bytes}",
                status=413,
                code="event_too_large_to_join",
            )
        self._insert(half)
        return JoinOutcome("pending", [], self._evict())

    def expire(self) -> list[Half]:
        """Drop halves older than the TTL; returns them (a request whose call failed ends here)."""
        deadline = self._clock() - self.ttl
        expired = []
        while self._waiting:
            sequence, waiting = next(iter(self._waiting.items()))
            if waiting.arrived > deadline:
                break
            expired.append(self._remove(sequence))
        return expired

    def drain(self) -> list[Half]:
        """Every waiting half, removed (at shutdown: they can no longer be joined)."""
        return [self._remove(sequence) for sequence in list(self._waiting)]

    def _partner(self, half: Half) -> int | None:
        others = [s for s in self._calls.get(half.call, ()) if self._waiting[s].half.kind != half.kind]
        for sequence in others:
            candidate = self._waiting[sequence].half
            request, response = (half, candidate) if half.kind == "request" else (candidate, half)
            if pairs(request, response):
                return sequence
        if others:
            # No waiting half fits: this one is refused, and the waiting ones keep waiting for theirs.
            oldest = self._waiting[others[0]].half
            request, response = (half, oldest) if half.kind == "request" else (oldest, half)
            raise EventError(
                f"event {quoted(half.event_id)}: request has {request.rows} customers but response "
                f"{response.rows} answers, or other customer ids",
                status=422,
            )
        return None

    def _insert(self, half: Half) -> None:
        self._sequence += 1
        self._waiting[self._sequence] = _Waiting(self._clock(), half)
        self._calls.setdefault(half.call, []).append(self._sequence)
        self.bytes += half.size
        self.recent.add(half.key)

    def _remove(self, sequence: int) -> Half:
        half = self._waiting.pop(sequence).half
        same_call = self._calls[half.call]
        same_call.remove(sequence)
        if not same_call:
            del self._calls[half.call]
        self.bytes -= half.size
        # Forgotten, so that a re-delivery of an evicted or expired half can still be joined.
        self.recent.discard(half.key)
        return half

    def _evict(self) -> list[Half]:
        evicted = []
        while self._waiting and (len(self._waiting) > self.max_pending or self.bytes > self.max_bytes):
            evicted.append(self._remove(next(iter(self._waiting))))
        return evicted
