"""Ground truth fed back: a customer churned (or not) by a date, joined to the prediction it judges.

A label judges the customer's latest prediction made before the label was observed and within the horizon
(default 90 days): older predictions were about another period. Each prediction carries at most one label;
a second label for it replaces the first (corrections win). Customers without such a prediction are
reported back, split into never predicted and predicted only outside the horizon.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Connection, Engine, select

from churn_monitoring.store.database import as_utc
from churn_monitoring.store.schema import labels, predictions

MAX_LABELS_PER_REQUEST = 10_000
MAX_REPORTED_IDS = 1_000
FUTURE_TOLERANCE = timedelta(minutes=5)


class Label(BaseModel):
    """One label as `POST /feedback` and the CSV carry it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    # No control characters: PostgreSQL refuses NUL in text, and an id is never meant to hold one.
    customer_id: str = Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")
    churned: bool
    observed_at: datetime | None = Field(default=None, description="when the outcome was known; default now")

    @field_validator("observed_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return as_utc(value) if value is not None else None


class FeedbackError(ValueError):
    """Input that is not a list of labels; `problems` name the label and field of each issue."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems[:20]))
        self.problems = list(problems)


@dataclass
class FeedbackResult:
    received: int = 0
    matched: int = 0
    unknown_customer_ids: list[str] = field(default_factory=list)
    outside_horizon_customer_ids: list[str] = field(default_factory=list)
    unknown: int = 0
    outside_horizon: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "matched": self.matched,
            "unknown": self.unknown,
            "outside_horizon": self.outside_horizon,
            "unknown_customer_ids": self.unknown_customer_ids,
            "outside_horizon_customer_ids": self.outside_horizon_customer_ids,
        }

    def merge(self, other: FeedbackResult) -> None:
        self.received += other.received
        self.matched += other.matched
        self.unknown += other.unknown
        self.outside_horizon += other.outside_horizon
        room = MAX_REPORTED_IDS - len(self.unknown_customer_ids)
        self.unknown_customer_ids += other.unknown_customer_ids[: max(room, 0)]
        room = MAX_REPORTED_IDS - len(self.outside_horizon_customer_ids)
        self.outside_horizon_customer_ids += other.outside_horizon_customer_ids[: max(room, 0)]


def _location(loc: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in loc) or "label"


def _label_items(document: object) -> list[Any]:
    """The list of label objects in a body: one label object, a list of them, or {"labels": [...]}."""
    items: object = document
    if isinstance(document, Mapping) and "labels" in document:
        items = document["labels"]
    elif isinstance(document, Mapping):
        items = [document]
    if not isinstance(items, list):
        raise FeedbackError(['body must be a label object, a list of labels or {"labels": [...]}'])
    if not items:
        raise FeedbackError(["labels: the list is empty"])
    if len(items) > MAX_LABELS_PER_REQUEST:
        raise FeedbackError([f"labels: more than {MAX_LABELS_PER_REQUEST} in one request; send in chunks"])
    return items


def _parse_label(index: int, item: object, moment: datetime) -> tuple[Label | None, list[str]]:
    """One label (observed now unless it says when), or the problems naming its fields."""
    try:
        label = Label.model_validate(item)
    except ValidationError as error:
        return None, [
            f"labels[{index}].{_location(e['loc'])}: {e['msg']}" for e in error.errors(include_url=False)
        ]
    if label.observed_at is None:
        return label.model_copy(update={"observed_at": moment}), []
    if label.observed_at > moment + FUTURE_TOLERANCE:
        return None, [f"labels[{index}].observed_at: {label.observed_at.isoformat()} is in the future"]
    return label, []


def parse_labels(document: object, now: datetime | None = None) -> list[Label]:
    """Labels from a JSON body: one label object, a list of them, or {"labels": [...]}."""
    moment = now or datetime.now(UTC)
    problems: list[str] = []
    parsed: list[Label] = []
    for index, item in enumerate(_label_items(document)):
        label, found = _parse_label(index, item, moment)
        problems.extend(found)
        if label is not None:
            parsed.append(label)
    if problems:
        raise FeedbackError(problems)
    return parsed


TRUE_WORDS = {"yes", "true", "1", "y"}
FALSE_WORDS = {"no", "false", "0", "n"}


def read_labels_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a labels CSV as label dicts: `customer_id` (or `customerID`), `churned` (or `Churn`),
    optional `observed_at`; problems name the line and column."""
    rows: list[dict[str, Any]] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        id_column = next((c for c in ("customer_id", "customerID") if c in header), None)
        churn_column = next((c for c in ("churned", "Churn") if c in header), None)
        missing = [
            name for name, column in (("customer_id", id_column), ("churned", churn_column)) if not column
        ]
        if missing:
            raise FeedbackError([f"{path}: line 1: column {name!r} is missing" for name in missing])
        assert id_column is not None
        assert churn_column is not None
        problems = []
        for line, record in enumerate(reader, start=2):
            churned = (record.get(churn_column) or "").strip().lower()
            if churned not in TRUE_WORDS | FALSE_WORDS:
                problems.append(f"{path}: line {line}: column {churn_column!r}: {churned!r} is not Yes or No")
                continue
            row: dict[str, Any] = {"customer_id": record.get(id_column), "churned": churned in TRUE_WORDS}
            if (record.get("observed_at") or "").strip():
                row["observed_at"] = record["observed_at"].strip()
            rows.append(row)
    if problems:
        raise FeedbackError(problems)
    return rows


def _upsert_label(connection: Connection, row: dict[str, Any]) -> None:
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    statement = insert(labels).values(**row)
    statement = statement.on_conflict_do_update(
        index_elements=["event_id", "row_index"],
        set_={
            "churned": statement.excluded.churned,
            "observed_at": statement.excluded.observed_at,
            "received_at": statement.excluded.received_at,
            "customer_id": statement.excluded.customer_id,
        },
    )
    connection.execute(statement)


def _latest_prediction(
    connection: Connection, customer_id: str, observed: datetime, horizon: timedelta
) -> tuple[str, int] | None:
    """(event_id, row_index) of the customer's latest prediction made before `observed` and within the
    horizon."""
    row = connection.execute(
        select(predictions.c.event_id, predictions.c.row_index)
        .where(
            predictions.c.customer_id == customer_id,
            predictions.c.predicted_at <= observed,
            predictions.c.predicted_at >= observed - horizon,
        )
        .order_by(
            predictions.c.predicted_at.desc(),
            predictions.c.event_id.desc(),
            predictions.c.row_index.desc(),
        )
        .limit(1)
    ).first()
    return (row.event_id, row.row_index) if row is not None else None


def _count_unmatched(connection: Connection, customer_id: str, result: FeedbackResult) -> None:
    """A label without a prediction to judge: never predicted, or predicted only outside the horizon."""
    seen = connection.execute(
        select(predictions.c.event_id).where(predictions.c.customer_id == customer_id).limit(1)
    ).first()
    if seen is None:
        result.unknown += 1
        if len(result.unknown_customer_ids) < MAX_REPORTED_IDS:
            result.unknown_customer_ids.append(customer_id)
    else:
        result.outside_horizon += 1
        if len(result.outside_horizon_customer_ids) < MAX_REPORTED_IDS:
            result.outside_horizon_customer_ids.append(customer_id)


def record_labels(
    engine: Engine, items: Iterable[Label], *, horizon_days: float, now: datetime | None = None
) -> FeedbackResult:
    """Join each label to its prediction and store it; one transaction for the whole request."""
    received_at = now or datetime.now(UTC)
    horizon = timedelta(days=horizon_days)
    result = FeedbackResult()
    with engine.begin() as connection:
        for label in items:
            result.received += 1
            observed = as_utc(label.observed_at or received_at)
            match = _latest_prediction(connection, label.customer_id, observed, horizon)
            if match is None:
                _count_unmatched(connection, label.customer_id, result)
                continue
            _upsert_label(
                connection,
                {
                    "event_id": match[0],
                    "row_index": match[1],
                    "customer_id": label.customer_id,
                    "churned": label.churned,
                    "observed_at": observed,
                    "received_at": as_utc(received_at),
                },
            )
            result.matched += 1
    return result
