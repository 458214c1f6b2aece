"""From the bytes of one payload-log event to the `Half` the join keeps: shape check, envelope, payload,
compaction. Pure and thread-safe: the service runs it on a worker thread of its own, one event at a time,
so that parsing a large event never stalls the event loop (health probes, other requests) and at most
one parsed payload exists at a time (the memory a parse needs is bounded by `max_json_values`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from churn_core.errors import quoted
from churn_core.jsonshape import JsonLimits
from churn_monitoring.events import EventError, PayloadEvent, parse_event, parse_request, parse_response
from churn_monitoring.halves import Compactor, Half, event_key
from churn_monitoring.service.limits import Refusal, check_json_shape

# What a payload of an unforeseen shape makes the body parsers raise: still the sender's problem (4xx).
PAYLOAD_ERRORS = (TypeError, ValueError, KeyError, AttributeError, OverflowError, RecursionError)


@dataclass(frozen=True)
class Intake:
    """The half of one event, or why it was refused; `kind` is "unknown" when the envelope was unusable."""

    kind: str
    half: Half | None = None
    error: EventError | Refusal | None = None


def take_event(headers: Mapping[str, str], body: bytes, compactor: Compactor, limits: JsonLimits) -> Intake:
    try:
        check_json_shape(body, max_depth=limits.max_depth, max_values=limits.max_values, what="event body")
        event = parse_event(headers, body)
    except (EventError, Refusal) as error:
        return Intake("unknown", error=error)
    try:
        if event.body is not body:  # a structured event's data, decoded from its envelope
            check_json_shape(
                event.body, max_depth=limits.max_depth, max_values=limits.max_values, what="event data"
            )
        return Intake(event.kind, half=_half(event, compactor))
    except (EventError, Refusal) as error:
        return Intake(event.kind, error=error)


def _half(event: PayloadEvent, compactor: Compactor) -> Half:
    key = event_key(event)
    try:
        if event.kind == "request":
            return compactor.request(event, key, parse_request(event))
        return compactor.response(event, key, parse_response(event))
    except EventError:
        raise
    except PAYLOAD_ERRORS as error:
        raise EventError(
            f"{event.kind} payload could not be read: {type(error).__name__}: {quoted(str(error), 200)}"
        ) from error
