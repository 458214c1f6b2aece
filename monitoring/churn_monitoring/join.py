"""Joining the request and response halves of one logged call by their shared CloudEvent id.

KServe's agent sends the two halves from a pool of workers, so either may come first, the response never
comes when the call failed, and a caller that sets `Ce-Id` itself may reuse an id. The pending map is
therefore bounded (oldest half evicted first) and timed (a half waits `ttl` seconds), and ids joined
recently are remembered so that a re-delivered pair is not counted twice.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from churn_monitoring.events import Answer, EventError, PayloadEvent, customer_id_of, feature_values


@dataclass(frozen=True)
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
class Half:
    event: PayloadEvent
    customers: list[dict[str, Any]] | None = None
    answers: list[Answer] | None = None


@dataclass(frozen=True)
class JoinOutcome:
    """What adding one half did: `predictions` when it completed a pair, and the halves it pushed out."""

    status: str  # "pending" | "joined" | "duplicate"
    predictions: list[LoggedPrediction]
    evicted: int = 0


def join_pair(
    request: Half, response: Half, fields: Sequence[str], received_at: datetime
) -> list[LoggedPrediction]:
    """Rows of a request/response pair; raises EventError when the two do not describe the same call."""
    customers = request.customers or []
    answers = response.answers or []
    if len(customers) != len(answers):
        raise EventError(
            f"event {request.event.id}: request has {len(customers)} customers but response "
            f"{len(answers)} answers",
            status=422,
        )
    predicted_at = request.event.time or response.event.time or received_at
    rows = []
    for index, (customer, answer) in enumerate(zip(customers, answers, strict=True)):
        rows.append(
            LoggedPrediction(
                event_id=request.event.id,
                row_index=index,
                customer_id=customer_id_of(customer, answer),
                model_version=answer.model_version or "unknown",
                features=feature_values(customer, fields),
                probability=answer.probability,
                prediction=answer.prediction,
                risk_level=answer.risk_level,
                predicted_at=predicted_at,
                source=request.event.source,
            )
        )
    return rows


class PendingJoin:
    """Halves waiting for their other half; not thread-safe (the service uses it from the event loop)."""

    def __init__(
        self,
        fields: Sequence[str],
        *,
        max_pending: int,
        ttl_seconds: float,
        remember_joined: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fields = tuple(fields)
        self.max_pending = max_pending
        self.ttl = ttl_seconds
        self._clock = clock
        self._pending: OrderedDict[str, tuple[float, Half]] = OrderedDict()
        self._joined: OrderedDict[str, None] = OrderedDict()
        self._remember = remember_joined

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, half: Half, received_at: datetime) -> JoinOutcome:
        event_id = half.event.id
        if event_id in self._joined:
            return JoinOutcome("duplicate", [])
        waiting = self._pending.get(event_id)
        if waiting is not None and waiting[1].event.kind != half.event.kind:
            del self._pending[event_id]
            other = waiting[1]
            request, response = (half, other) if half.event.kind == "request" else (other, half)
            self._remember_joined(event_id)
            return JoinOutcome("joined", join_pair(request, response, self.fields, received_at))
        if waiting is not None:
            # Same half again (re-delivery or a reused Ce-Id): keep the newest, as one pending entry.
            del self._pending[event_id]
        self._pending[event_id] = (self._clock(), half)
        evicted = 0
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
            evicted += 1
        return JoinOutcome("pending", [], evicted)

    def expire(self) -> list[Half]:
        """Drop halves older than the TTL; returns them (a request whose call failed ends here)."""
        deadline = self._clock() - self.ttl
        expired = []
        while self._pending:
            event_id, (arrived, half) = next(iter(self._pending.items()))
            if arrived > deadline:
                break
            del self._pending[event_id]
            expired.append(half)
        return expired

    def _remember_joined(self, event_id: str) -> None:
        self._joined[event_id] = None
        while len(self._joined) > self._remember:
            self._joined.popitem(last=False)
