"""What the detector keeps of one payload-log event while it waits for the other half of its call: the
ids, the time, a digest, and per customer only what the join and the store need, never the payload.

A parsed request keeps every field the caller sent as Python objects (a 2.6 MB event became 64 MB); a
`Half` keeps, per customer, the contract's fields in a tuple, with category values replaced by the
contract's own string objects (shared, nothing per row), other text cut to a bound, and containers where
a scalar belongs replaced by a marker. Its `size` is an estimate of the bytes it holds, which is what the
pending join is bounded by.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from churn_core.contract import CategoryField, FeatureContract
from churn_monitoring.events import ID_FIELD, Answer, EventKind, PayloadEvent

MAX_VALUE_CHARS = 64  # a field value longer than this (never a valid one) is cut
MAX_CUSTOMER_ID_CHARS = 255  # churn_predictions.customer_id
MAX_VERSION_CHARS = 64  # churn_predictions.model_version
MAX_RISK_CHARS = 32  # churn_predictions.risk_level
POINTER = 8
TUPLE = sys.getsizeof(())  # 40: a tuple's header, plus a pointer per item
CONTAINER_MARK = "<container>"
ENTRY = 200  # what a pending entry costs besides its rows (the Half, its key, the maps that find it)

CustomerRow = tuple[str | None, tuple[Any, ...]]  # (customer id, contract field values in order)
AnswerRow = tuple[float, bool, str | None, str | None, str | None]  # probability .. customer id


@dataclass(frozen=True, slots=True)
class Half:
    """One event of a logged call, as the join keeps it."""

    event_id: str
    source: str
    kind: EventKind
    key: bytes  # digest of kind, id, source, time and body: equal only for a re-delivery of this event
    time: datetime | None
    customers: tuple[CustomerRow, ...] = ()
    answers: tuple[AnswerRow, ...] = ()
    size: int = ENTRY

    @property
    def call(self) -> tuple[str, str]:
        """What the two halves of one call share: KServe's agent gives both the same id and source."""
        return (self.event_id, self.source)

    @property
    def rows(self) -> int:
        return len(self.customers) if self.kind == "request" else len(self.answers)

    def customer_ids(self) -> list[str | None]:
        if self.kind == "request":
            return [customer for customer, _ in self.customers]
        return [answer[4] for answer in self.answers]


def event_key(event: PayloadEvent) -> bytes:
    """The de-duplication key of an event: a re-delivery (an HTTP retry resends the same headers and
    body) has the same key; two calls that reuse one ce-id do not, unless every byte and the time match."""
    digest = hashlib.blake2b(digest_size=16)
    time = event.time.isoformat() if event.time else ""
    for part in (event.kind, event.id, event.source, time):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\0")
    digest.update(event.body)
    return digest.digest()


def call_id(request: Half, response: Half) -> str:
    """The id a joined call is stored under: its ce-id and a digest of both halves, so that calls which
    reuse a ce-id are stored apart while a re-delivered pair is stored once (same id, same rows)."""
    digest = hashlib.blake2b(request.key + response.key, digest_size=16).hexdigest()
    return f"{request.event_id[:200]}~{digest}"


def _text(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[:limit]


class Compactor:
    """Turns parsed payloads into Halves, sharing the contract's category strings across all rows."""

    def __init__(self, contract: FeatureContract, versions: Iterable[str] = ()) -> None:
        self.fields = contract.field_names
        self._categories: list[dict[str, str] | None] = [
            {value: value for value in spec.values} if isinstance(spec, CategoryField) else None
            for spec in contract.fields
        ]
        self._lookups = list(zip(self.fields, self._categories, strict=True))
        self._levels = {band.level: band.level for band in contract.risk_bands}
        self._versions = {version: version for version in (contract.model.version, *versions)}

    def request(self, event: PayloadEvent, key: bytes, customers: Sequence[Mapping[str, Any]]) -> Half:
        rows = []
        size = ENTRY + TUPLE + POINTER * len(customers)
        for customer in customers:
            row, cost = self._customer(customer)
            rows.append(row)
            size += cost
        return Half(event.id, event.source, "request", key, event.time, customers=tuple(rows), size=size)

    def response(self, event: PayloadEvent, key: bytes, answers: Sequence[Answer]) -> Half:
        rows = []
        size = ENTRY + TUPLE + POINTER * len(answers)
        local: dict[str, str] = {}  # one string object per distinct version of this event
        for answer in answers:
            row, cost = self._answer(answer, local)
            rows.append(row)
            size += cost
        return Half(event.id, event.source, "response", key, event.time, answers=tuple(rows), size=size)

    def _customer(self, customer: Mapping[str, Any]) -> tuple[CustomerRow, int]:
        cost = 2 * TUPLE + (2 + len(self.fields)) * POINTER
        values = []
        for name, categories in self._lookups:
            value = customer.get(name)
            if categories is not None and value.__class__ is str and value in categories:
                values.append(categories[value])  # the contract's own string: nothing held per row
                continue
            kept, held = _field_value(value, categories)
            values.append(kept)
            cost += held
        raw_id = customer.get(ID_FIELD)
        customer_id = None if raw_id in (None, "") else _text(str(raw_id), MAX_CUSTOMER_ID_CHARS)
        cost += _held(customer_id)
        return (customer_id, tuple(values)), cost

    def _answer(self, answer: Answer, local: dict[str, str]) -> tuple[AnswerRow, int]:
        cost = TUPLE + 5 * POINTER + sys.getsizeof(0.5)  # the row and its probability
        risk = None
        if answer.risk_level is not None:
            risk = self._levels.get(answer.risk_level)
            if risk is None:
                risk = _text(answer.risk_level, MAX_RISK_CHARS)
                cost += _held(risk)
        version = None
        if answer.model_version is not None:
            cut = _text(answer.model_version, MAX_VERSION_CHARS)
            version = self._versions.get(cut)
            if version is None:
                cost += 0 if cut in local else _held(cut)
                version = local.setdefault(cut, cut)
        customer = None
        if answer.customer_id is not None:
            customer = _text(answer.customer_id, MAX_CUSTOMER_ID_CHARS)
            cost += _held(customer)
        return (answer.probability, answer.prediction, risk, version, customer), cost


def _field_value(value: object, categories: dict[str, str] | None) -> tuple[Any, int]:
    """A field value as kept (scalars as sent, categories shared, long text cut, no containers) and the
    bytes it holds of its own."""
    if isinstance(value, str):
        if categories is not None and value in categories:
            return categories[value], 0
        kept = _text(value, MAX_VALUE_CHARS)
        return kept, _held(kept)
    if value is None or isinstance(value, bool | int | float):
        return value, _held(value)
    return CONTAINER_MARK, 0  # an array or object where a value belongs: never valid, kept as a mark


def _held(value: object) -> int:
    """Bytes an object holds of its own: 0 for the ones Python shares (None, booleans, small integers)."""
    if value is None or isinstance(value, bool):
        return 0
    if isinstance(value, int) and -5 <= value <= 256:
        return 0
    return sys.getsizeof(value)
