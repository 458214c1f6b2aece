"""KServe payload-log events: the CloudEvents the InferenceService's agent posts, and what they carry.

KServe's agent (`pkg/logger`: handler.go, worker.go) wraps the transformer and, for every call, posts a
binary-mode CloudEvent 1.0 of the request and, only when the answer was HTTP 200, one of the response:
`ce-type` `org.kubeflow.serving.inference.request|response`, one `ce-id` shared by both (the caller's
`Ce-Id` header, else a fresh UUID), `ce-source` the agent (`--source-uri`, default `http://localhost:9081/`),
`ce-time`, extensions `inferenceservicename`, `namespace`, `component`, `endpoint`, `metadata` (JSON of the
logged headers) and maybe `annotations`; the body is the raw payload and `Content-Type` the *request's*
content type on both events. Five workers send them concurrently, so a response may arrive first.

The `cloudevents` package would parse the envelope, but it would add a dependency for six headers and still
leave the payload (KServe v1 and open-inference v2, both of which the transformer speaks) to this module.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote

import orjson

from churn_core.errors import bounded, quoted

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
EVENT_TYPES: dict[str, Literal["request", "response"]] = {REQUEST_TYPE: "request", RESPONSE_TYPE: "response"}
SPEC_VERSION = "1.0"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
ID_FIELD = "customerID"
# ce-id, ce-source and the extensions are kept at most this long (the prediction store's id columns).
MAX_ID_CHARS = 255

EventKind = Literal["request", "response"]


# The stable `code` of an EventError raised without one, by status: payload problems are 400 (not JSON,
# not the v1/v2 shape), 415 (not JSON at all), 422 (request and response of one call disagree).
DEFAULT_CODES = {400: "invalid_payload", 415: "unsupported_media_type", 422: "pair_mismatch"}


class EventError(ValueError):
    """An unusable event: `status` is the 4xx the sender gets, `code` its stable name (see DEFAULT_CODES),
    the message names the problem."""

    def __init__(self, message: str, status: int = 400, code: str | None = None) -> None:
        super().__init__(bounded(message))
        self.status = status
        self.code = code or DEFAULT_CODES.get(status, "invalid_event")


def _envelope_error(message: str) -> EventError:
    return EventError(message, 400, "invalid_cloudevent")


@dataclass(frozen=True)
class PayloadEvent:
    """One payload-log event, envelope decoded, body still raw."""

    id: str
    kind: EventKind
    source: str
    time: datetime | None
    inference_service: str | None
    namespace: str | None
    component: str | None
    endpoint: str | None
    content_type: str
    body: bytes


@dataclass(frozen=True)
class Answer:
    """One row of the transformer's answer."""

    probability: float
    prediction: bool
    risk_level: str | None
    model_version: str | None
    customer_id: str | None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    # The HTTP binding percent-encodes attribute values (spec 3.1.3.2); decoding a plain value is a no-op.
    return unquote(value) if value is not None and "%" in value else value


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise _envelope_error(f"ce-time {quoted(text)} is not an RFC 3339 timestamp") from error
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


ATTRIBUTES = (
    "specversion",
    "id",
    "type",
    "source",
    "time",
    "inferenceservicename",
    "namespace",
    "component",
    "endpoint",
)


def parse_event(headers: Mapping[str, str], body: bytes) -> PayloadEvent:
    """Decode a binary- or structured-mode CloudEvent from its HTTP headers (any case) and body."""
    # One pass into a dict: Starlette's Headers scans its whole list on every lookup.
    headers = {name.lower(): value for name, value in headers.items()}
    content_type = (headers.get("content-type") or "").strip()
    if content_type.split(";")[0].strip().lower() == STRUCTURED_CONTENT_TYPE:
        return _parse_structured(body)
    spec = _header(headers, "ce-specversion")
    if spec is None:
        raise EventError(
            "not a CloudEvent: header ce-specversion is missing (binary mode expected)",
            code="not_a_cloudevent",
        )
    attributes = {name: _header(headers, f"ce-{name}") for name in ATTRIBUTES}
    return _build(attributes, content_type, body)


def _structured_data(envelope: Mapping[str, Any]) -> bytes:
    if "data_base64" in envelope:
        try:
            return base64.b64decode(str(envelope["data_base64"]), validate=True)
        except ValueError as error:
            raise _envelope_error("structured CloudEvent data_base64 is not base64") from error
    data = envelope.get("data")
    return data.encode() if isinstance(data, str) else orjson.dumps(data)


def _parse_structured(body: bytes) -> PayloadEvent:
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise _envelope_error(f"structured CloudEvent body is not JSON: {error}") from error
    if not isinstance(envelope, dict):
        raise _envelope_error("structured CloudEvent body is not a JSON object")
    # Only the attributes this module reads are turned into text (never `data`, which may be megabytes).
    attributes = {
        name: str(envelope[name]) if isinstance(envelope.get(name), str | int | float) else None
        for name in ATTRIBUTES
    }
    content_type = envelope.get("datacontenttype")
    return _build(
        attributes,
        content_type if isinstance(content_type, str) else "application/json",
        _structured_data(envelope),
    )


def _kind(event_type: str | None) -> EventKind:
    kind = EVENT_TYPES.get(event_type or "")
    if kind is None:
        raise _envelope_error(f"ce-type {quoted(event_type or '')} is not one of {sorted(EVENT_TYPES)}")
    return kind


def _build(attributes: Mapping[str, str | None], content_type: str, body: bytes) -> PayloadEvent:
    if attributes.get("specversion") != SPEC_VERSION:
        raise _envelope_error(
            f"ce-specversion {quoted(attributes.get('specversion'))} is not {SPEC_VERSION!r}"
        )
    event_id = (attributes.get("id") or "").strip()
    if not event_id:
        raise _envelope_error("ce-id is missing or empty")
    if len(event_id) > MAX_ID_CHARS:
        raise _envelope_error(f"ce-id is longer than {MAX_ID_CHARS} characters")
    kind = _kind(attributes.get("type"))
    source = (attributes.get("source") or "").strip()
    if not source:
        raise _envelope_error("ce-source is missing or empty")
    return PayloadEvent(
        id=event_id,
        kind=kind,
        source=source[:MAX_ID_CHARS],
        time=_parse_time(attributes.get("time")),
        inference_service=_cut(attributes.get("inferenceservicename")),
        namespace=_cut(attributes.get("namespace")),
        component=_cut(attributes.get("component")),
        endpoint=_cut(attributes.get("endpoint")),
        content_type=content_type[:MAX_ID_CHARS],
        body=body,
    )


def _cut(value: str | None) -> str | None:
    return value[:MAX_ID_CHARS] if value else None


def _json_body(event: PayloadEvent) -> dict[str, Any]:
    media = event.content_type.split(";")[0].strip().lower()
    # KServe copies the request's Content-Type, which clients often leave out: sniff JSON then.
    if media and media != "application/json" and not media.endswith("+json"):
        raise EventError(
            f"{event.kind} payload content type {media!r} is not JSON (binary tensors are not supported)",
            status=415,
        )
    try:
        document = orjson.loads(event.body)
    except orjson.JSONDecodeError as error:
        raise EventError(f"{event.kind} payload is not valid JSON: {error}") from error
    if not isinstance(document, dict):
        raise EventError(f"{event.kind} payload is not a JSON object")
    return document


def _flatten(data: object) -> list[Any]:
    if isinstance(data, list):
        flat: list[Any] = []
        for item in data:
            flat.extend(_flatten(item) if isinstance(item, list) else [item])
        return flat
    return [data]


def _v2_columns(tensors: object, what: str) -> tuple[dict[str, list[Any]], int]:
    """Named tensors of an open-inference (v2) body as columns of equal length."""
    if not isinstance(tensors, list) or not tensors:
        raise EventError(f"v2 {what} must be a non-empty list of tensors")
    columns: dict[str, list[Any]] = {}
    rows: int | None = None
    for position, tensor in enumerate(tensors):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise EventError(f"v2 {what}[{position}] is not a tensor with a name")
        name = tensor["name"]
        data = _flatten(tensor.get("data"))
        shape = tensor.get("shape")
        if shape is not None:
            if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
                raise EventError(f"v2 {what} tensor {name!r}: shape {shape!r} is not a list of sizes")
            expected = math.prod(shape)
            if expected != len(data):
                raise EventError(
                    f"v2 {what} tensor {name!r}: shape {shape} does not match {len(data)} values"
                )
        if rows is None:
            rows = len(data)
        elif len(data) != rows:
            raise EventError(f"v2 {what} tensor {name!r} has {len(data)} values, the others {rows}")
        columns[name] = data
    return columns, rows or 0


def parse_request(event: PayloadEvent) -> list[dict[str, Any]]:
    """Customers of a logged request, one dict of raw field values each (with `customerID` if sent)."""
    document = _json_body(event)
    if "instances" in document:
        instances = document["instances"]
        if not isinstance(instances, list) or not instances:
            raise EventError("v1 request: 'instances' must be a non-empty list")
        customers = []
        for index, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise EventError(f"v1 request: instances[{index}] is not an object of customer fields")
            customers.append(dict(instance))
        return customers
    if "inputs" in document:
        columns, rows = _v2_columns(document["inputs"], "request inputs")
        if rows == 0:
            raise EventError("v2 request: inputs hold no customers")
        return [{name: values[row] for name, values in columns.items()} for row in range(rows)]
    raise EventError("request payload has neither 'instances' (v1) nor 'inputs' (v2)")


def _as_bool(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in {"true", "false", "yes", "no", "1", "0"}:
        return value.lower() in {"true", "yes", "1"}
    raise EventError(f"{where}: churn_prediction {value!r} is not a boolean")


def _answer(values: Mapping[str, Any], where: str, default_version: str | None) -> Answer:
    probability = values.get("churn_probability")
    if isinstance(probability, bool) or not isinstance(probability, int | float):
        raise EventError(f"{where}: churn_probability is missing or not a number")
    if not 0.0 <= float(probability) <= 1.0:
        raise EventError(f"{where}: churn_probability {probability} is outside [0, 1]")
    if "churn_prediction" not in values:
        raise EventError(f"{where}: churn_prediction is missing")
    risk = values.get("risk_level")
    version = values.get("model_version", default_version)
    # v1 answers echo the id as `customerID` (the request field), v2 as a `customer_id` output.
    customer = values.get("customer_id", values.get(ID_FIELD))
    return Answer(
        probability=float(probability),
        prediction=_as_bool(values["churn_prediction"], where),
        risk_level=str(risk) if risk is not None else None,
        model_version=str(version) if version is not None else None,
        customer_id=str(customer) if customer not in (None, "") else None,
    )


def parse_response(event: PayloadEvent) -> list[Answer]:
    """Answers of a logged response, in the order of the request's customers."""
    document = _json_body(event)
    if "predictions" in document:
        predictions = document["predictions"]
        if not isinstance(predictions, list) or not predictions:
            raise EventError("v1 response: 'predictions' must be a non-empty list")
        answers = []
        for index, prediction in enumerate(predictions):
            if not isinstance(prediction, dict):
                raise EventError(f"v1 response: predictions[{index}] is not an object")
            answers.append(_answer(prediction, f"v1 response predictions[{index}]", None))
        return answers
    if "outputs" in document:
        columns, rows = _v2_columns(document["outputs"], "response outputs")
        version = document.get("model_version")
        default_version = str(version) if version not in (None, "") else None
        return [
            _answer(
                {name: values[row] for name, values in columns.items()},
                f"v2 response row {row}",
                default_version,
            )
            for row in range(rows)
        ]
    raise EventError("response payload has neither 'predictions' (v1) nor 'outputs' (v2)")


def now_utc() -> datetime:
    return datetime.now(UTC)
