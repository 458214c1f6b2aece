"""Everything a request body must pass before scoring: bytes to JSON, JSON to v2 tensors, tensors (or v1
instances) to a validated, columnar batch of customers.

Body decoding (`decode_json`, `decode_v2`): the nesting depth and the number of values are measured
before any parser runs (`json_too_deep`, `json_too_many_values`), then orjson; on failure the standard library, which
accepts NaN/Infinity, so that validation can name the field holding one. The v2 document is read into
plain tuples (name, datatype, shape, data): no pydantic model of the whole request. KServe's binary tensor
extension (`inference-header-content-length`) is checked here (header JSON, shapes, sizes within the body)
before KServe's `InferRequest.from_bytes` reads it.

Customers: the pydantic model of one customer is generated once at start from the feature contract in the
artefact (`pydantic.create_model`: `Literal[...]` for category fields, strict and bounded numbers), so the
transformer accepts exactly the fields, values and ranges the served model was trained with. Every
rejection is an `InvalidRequestError` with a stable `code` (the error body's, and the `reason` label of
churn_invalid_requests_total) and a message naming the field; names the client sent are `quoted()`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from churn_core.contract import CategoryField, CustomerBatch, Encoder, FeatureContract, NumberField
from churn_core.errors import quoted
from churn_core.jsonshape import JsonLimits, json_depth, json_shape, values_at_most
from churn_transformer.internals import InferRequest

MAX_REPORTED_ERRORS = 5
ID_MAX_LENGTH = 128

# Datatypes accepted per kind of field on the v2 protocol. Integers are exact in FP64, so number fields
# take them too; FP32 is refused because it would change the probability (the model is fitted on FP64).
INTEGER_DATATYPES = frozenset({"INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8"})
NUMBER_DATATYPES = INTEGER_DATATYPES | {"FP64"}
TEXT_DATATYPES = frozenset({"BYTES"})

# pydantic error type -> the `reason` label of churn_invalid_requests_total.
_REASONS = {
    "missing": "missing_field",
    "extra_forbidden": "extra_field",
    "literal_error": "unknown_value",
    "greater_than_equal": "out_of_range",
    "less_than_equal": "out_of_range",
    "greater_than": "out_of_range",
    "less_than": "out_of_range",
    "finite_number": "not_finite",
    "string_too_long": "invalid_value",
    "value_error": "unknown_value",
}


class InvalidRequestError(ValueError):
    """A request the transformer refuses: HTTP `status` (400, or 413 for a body too big to parse) with
    `message`, counted under `code`."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message


# ---- body decoding ------------------------------------------------------------------------------------------

BINARY_HEADER = "inference-header-content-length"
V2_FIELDS = frozenset({"id", "inputs", "outputs", "parameters"})
Tensor = tuple[str, str, list[int], Any]


def decode_json(body: bytes, limits: JsonLimits, what: str = "body") -> Any:
    depth = json_depth(body)
    if depth > limits.max_depth:
        raise InvalidRequestError(
            "json_too_deep", f"{what} nests {depth} levels deep; at most {limits.max_depth}"
        )
    # The body's byte cap does not bound the parse: `[[],[],...]` grows twenty times in orjson (4 MiB ->
    # ~80 MB). Every request of the contract is far under the bound, so only a suspect body is scanned.
    if values_at_most(body) > limits.max_values and (values := json_shape(body).values) > limits.max_values:
        raise InvalidRequestError(
            "json_too_many_values", f"{what} holds {values} JSON values; at most {limits.max_values}", 413
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        first = str(error)
    try:
        return json.loads(body)  # accepts NaN and Infinity: validation then names the field
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequestError("malformed_json", f"{what} is not valid JSON: {first}") from None


@dataclass(frozen=True)
class V2Request:
    """A decoded v2 request: tensors as (name, datatype, shape, data), as cheap as it gets."""

    inputs: list[Tensor]
    id: str | None = None
    outputs: list[str] | None = None


def _malformed(message: str) -> InvalidRequestError:
    return InvalidRequestError("malformed_request", message)


def _v2_input(index: int, tensor: Any, *, binary: bool = False) -> Tensor:
    """One input tensor's (name, datatype, shape, data); messages are built only for a refusal."""
    if not isinstance(tensor, dict):
        raise _malformed(f"inputs[{index}]: must be a tensor object")
    name, datatype, shape, data = (
        tensor.get("name"),
        tensor.get("datatype"),
        tensor.get("shape"),
        tensor.get("data"),
    )
    if not isinstance(name, str):
        raise _malformed(f"inputs[{index}].name: required, a string")
    if not isinstance(datatype, str):
        raise _malformed(f"input {quoted(name)}: datatype required, a string")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise _malformed(f"input {quoted(name)}: shape required, a list of non-negative integers")
    if not binary and not isinstance(data, list):
        raise _malformed(f"input {quoted(name)}: data required, a list")
    return name, datatype, shape, data


def _v2_document(document: Any, what: str) -> tuple[list[Any], str | None, list[str] | None]:
    if not isinstance(document, dict):
        raise _malformed(f'{what} must be a JSON object {{"inputs": [...]}}')
    unknown = sorted(str(key) for key in set(document) - V2_FIELDS)
    if unknown:
        raise InvalidRequestError(
            "extra_field", f"unknown top-level field(s) {quoted(unknown)} in the v2 request"
        )
    inputs = document.get("inputs")
    if not isinstance(inputs, list):
        raise _malformed("inputs: required, a list of input tensors")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _malformed("id: must be a string")
    outputs = document.get("outputs")
    requested = None
    if outputs is not None:
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
        ):
            raise _malformed('outputs: must be a list of {"name": ...}')
        requested = [str(o["name"]) for o in outputs]
    parameters = document.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise _malformed("parameters: must be an object")
    return inputs, request_id, requested


def decode_v2(body: bytes, headers: Mapping[str, str], model_name: str, limits: JsonLimits) -> V2Request:
    """A v2 request body (JSON, or KServe's binary tensor extension) as a `V2Request`."""
    if BINARY_HEADER in headers:
        return _decode_binary(body, headers[BINARY_HEADER], model_name, limits)
    inputs, request_id, outputs = _v2_document(decode_json(body, limits), "body")
    return V2Request([_v2_input(i, tensor) for i, tensor in enumerate(inputs)], request_id, outputs)


def _binary_size(index: int, tensor: Any) -> int:
    """Bytes of binary data one input of the binary extension takes after the header (0: JSON data)."""
    _v2_input(index, tensor, binary=True)
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise _malformed(f"inputs[{index}].parameters: must be an object")
    size = parameters.get("binary_data_size")
    if size is None:
        if not isinstance(tensor.get("data"), list):
            raise _malformed(f"inputs[{index}]: data (a list) or parameters.binary_data_size required")
        return 0
    if type(size) is not int or size < 0:
        raise _malformed(f"inputs[{index}].parameters.binary_data_size: must be a non-negative integer")
    return size


def _decode_binary(body: bytes, header_length: str, model_name: str, limits: JsonLimits) -> V2Request:
    text = header_length.strip()
    if not text.isascii() or not text.isdigit():
        raise _malformed(f"{BINARY_HEADER} must be a non-negative integer, got {quoted(header_length)}")
    json_length = int(text)
    if json_length > len(body):
        raise _malformed(f"{BINARY_HEADER} is {json_length} but the body has {len(body)} bytes")
    try:
        document = decode_json(body[:json_length], limits, "the binary v2 header")
    except InvalidRequestError as error:
        if error.code == "malformed_json":  # the request is not JSON: its header is malformed
            raise _malformed(error.message) from None
        raise
    inputs, _, _ = _v2_document(document, "the binary v2 header")
    binary_bytes = sum(_binary_size(index, tensor) for index, tensor in enumerate(inputs))
    if json_length + binary_bytes > len(body):
        raise _malformed(
            f"binary v2 request declares {json_length + binary_bytes} bytes but the body has {len(body)}"
        )
    try:
        request = InferRequest.from_bytes(body, json_length, model_name)
        tensors = [
            (i.name, i.datatype, list(i.shape), i.data if i.data is not None else i.as_numpy())
            for i in request.inputs
        ]
    except Exception as error:
        raise _malformed(f"binary v2 request: {type(error).__name__}") from None
    outputs = [o.name for o in request.request_outputs] if request.request_outputs else None
    return V2Request(tensors, request.id, outputs)


# ---- customers --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedRequest:
    """Validated customers of one request, in request order, with their ids when the client sent them."""

    batch: CustomerBatch
    ids: list[str] | None

    def __len__(self) -> int:
        return len(self.batch)


def _one_of(values: Sequence[int]) -> AfterValidator:
    allowed = frozenset(values)

    def check(value: int) -> int:
        if value not in allowed:
            raise ValueError(f"Input should be one of {sorted(allowed)}")
        return value

    return AfterValidator(check)


def _field_type(spec: CategoryField | NumberField) -> Any:
    if isinstance(spec, CategoryField):
        return Literal[spec.values]
    if spec.kind == "integer":
        # bool is an int in Python; strict mode refuses it (and refuses 3.0 and "3").
        constraints: list[Any] = [Field(strict=True, ge=int(spec.minimum), le=int(spec.maximum))]
        if spec.values is not None:
            constraints.append(_one_of(spec.values))
        return Annotated[int, *constraints]
    return Annotated[float, Field(strict=True, ge=spec.minimum, le=spec.maximum, allow_inf_nan=False)]


def customer_model(contract: FeatureContract) -> type[Any]:
    """The pydantic model of one customer as the contract defines it (plus the optional id field)."""
    fields: dict[str, Any] = {spec.name: (_field_type(spec), ...) for spec in contract.fields}
    fields[contract.id_field] = (Annotated[str | None, Field(max_length=ID_MAX_LENGTH)], None)
    model: type[Any] = create_model(
        "Customer",
        __config__=ConfigDict(extra="forbid", strict=True, frozen=True),
        **fields,
    )
    return model


def _field_annotation(field: Any) -> Any:
    """A model field's type with its constraints, usable on its own (the adapter makes it strict)."""
    return Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation


def _describe(value: Any) -> str:
    return quoted(value)


class RequestValidator:
    """Built once per contract; turns v1 instances or v2 input tensors into a `ParsedRequest`."""

    def __init__(self, contract: FeatureContract, encoder: Encoder, max_batch: int) -> None:
        self.contract = contract
        self.encoder = encoder
        self.max_batch = max_batch
        self.model = customer_model(contract)
        self._adapter: TypeAdapter[list[Any]] = TypeAdapter(list[self.model])  # type: ignore[name-defined]
        self._specs: dict[str, CategoryField | NumberField] = {spec.name: spec for spec in contract.fields}
        self._id_field = contract.id_field
        # The same field types, one adapter per column: a batch is validated field by field in pydantic's
        # Rust loop (a 1,000-customer batch in under 1 ms instead of ~8 ms of model instances).
        self._columns: dict[str, TypeAdapter[list[Any]]] = {
            name: TypeAdapter(list[_field_annotation(field)], config=ConfigDict(strict=True))  # type: ignore[arg-type,misc]
            for name, field in self.model.model_fields.items()
        }
        self._required = frozenset(self._specs)
        self._allowed = self._required | {self._id_field}
        self._codes = {
            spec.name: {v: code for code, v in enumerate(spec.values)} for spec in contract.category_fields
        }
        # The contract computes these on each access: once here, not twice per request.
        self._category_fields = contract.category_fields
        self._number_fields = contract.number_fields

    # ---- shared -------------------------------------------------------------------------------------

    def _check_size(self, size: int, what: str) -> None:
        if size == 0:
            raise InvalidRequestError("empty_batch", f"{what} is empty: send at least one customer")
        if size > self.max_batch:
            raise InvalidRequestError(
                "batch_too_large", f"{what} has {size} customers; at most {self.max_batch} per request"
            )

    def _validated(self, records: Sequence[Mapping[str, Any]], where: str) -> ParsedRequest:
        """Customers as records (v1): the customer model names missing and unknown fields; records with
        exactly the contract's fields go column by column."""
        for record in records:
            keys = record.keys()
            if not (self._required <= keys <= self._allowed):
                try:
                    self._adapter.validate_python(records)
                except ValidationError as error:
                    raise self._rejection(error, where) from None
        columns = {name: [record.get(name) for record in records] for name in self._allowed}
        return self._from_columns(columns, len(records), where)

    def _from_columns(self, columns: Mapping[str, list[Any]], rows: int, where: str) -> ParsedRequest:
        """Validate each field's column with the customer model's type for it, then build the columnar
        batch exactly as `Encoder.batch_from_records` would (value codes in contract order, float64)."""
        problems: list[dict[str, Any]] = []
        valid: dict[str, list[Any]] = {}
        for name, values in columns.items():
            try:
                valid[name] = self._columns[name].validate_python(values)
            except ValidationError as error:
                for problem in error.errors(include_url=False):
                    problems.append({**problem, "loc": (problem["loc"][0], name)})  # noqa: PERF401
        if problems:
            problems.sort(key=lambda p: (p["loc"][0], list(self._allowed_order).index(p["loc"][1])))
            raise self._rejection_from(problems, where)
        categories = np.empty((rows, len(self._category_fields)), dtype=np.int64)
        for index, spec in enumerate(self._category_fields):
            codes = self._codes[spec.name]
            categories[:, index] = [codes[value] for value in valid[spec.name]]
        numbers = np.empty((rows, len(self._number_fields)), dtype=np.float64)
        for index, number_spec in enumerate(self._number_fields):
            numbers[:, index] = valid[number_spec.name]
        ids = valid.get(self._id_field)
        has_ids = ids is not None and any(i is not None for i in ids)
        return ParsedRequest(
            batch=CustomerBatch(categories=categories, numbers=numbers),
            ids=[i or "" for i in ids] if has_ids and ids is not None else None,
        )

    def _rejection(self, error: ValidationError, where: str) -> InvalidRequestError:
        return self._rejection_from(list(error.errors(include_url=False)), where)

    @property
    def _allowed_order(self) -> tuple[str, ...]:
        return (*self.contract.field_names, self._id_field)

    def _rejection_from(self, problems: Sequence[Mapping[str, Any]], where: str) -> InvalidRequestError:
        reasons = [self._reason(p) for p in problems]
        lines = []
        for problem in problems[:MAX_REPORTED_ERRORS]:
            location = problem["loc"]
            index, field = (location[0], location[1]) if len(location) >= 2 else (location[0], "?")
            if field not in self._allowed:
                field = quoted(field)  # an unknown key the client chose: bounded
            text = f"{where}[{index}].{field}: {problem['msg']}"
            if problem["type"] != "missing":
                text += f" (got {_describe(problem.get('input'))})"
            lines.append(text)
        more = len(problems) - MAX_REPORTED_ERRORS
        if more > 0:
            lines.append(f"... and {more} more problem(s)")
        return InvalidRequestError(reasons[0], "; ".join(lines))

    def _reason(self, problem: Mapping[str, Any]) -> str:
        kind = str(problem["type"])
        value = problem.get("input")
        if isinstance(value, float) and not math.isfinite(value):
            return "not_finite"
        if kind in _REASONS:
            return _REASONS[kind]
        if kind.endswith("_type") or kind.endswith("_parsing") or kind == "int_from_float":
            return "wrong_type"
        return "invalid_value"

    # ---- v1: {"instances": [ {customer}, ... ]} ------------------------------------------------------

    def parse_v1(self, body: Any) -> ParsedRequest:
        if not isinstance(body, Mapping):
            raise InvalidRequestError("malformed_request", 'body must be a JSON object {"instances": [...]}')
        unknown = sorted(str(k) for k in body if k != "instances")
        if unknown:
            raise InvalidRequestError(
                "extra_field",
                f"unknown top-level field(s) {quoted(unknown)}: the v1 body is {{'instances': [...]}}",
            )
        if "instances" not in body:
            raise InvalidRequestError("missing_field", "instances: field required (a list of customers)")
        instances = body["instances"]
        if not isinstance(instances, list):
            raise InvalidRequestError("wrong_type", "instances: must be a list of customer objects")
        self._check_size(len(instances), "instances")
        for index, instance in enumerate(instances):
            if not isinstance(instance, Mapping):
                raise InvalidRequestError(
                    "wrong_type",
                    f"instances[{index}]: must be an object of customer fields, got {_describe(instance)}",
                )
        return self._validated(instances, "instances")

    # ---- v2: one named input tensor per customer field ------------------------------------------------

    def parse_v2(self, inputs: Sequence[tuple[str, str, Sequence[int], Any]]) -> ParsedRequest:
        """`inputs`: (name, datatype, shape, data) per input tensor, as the request sent them."""
        columns: dict[str, list[Any]] = {}
        size: int | None = None
        size_from = ""
        for name, datatype, shape, data in inputs:
            if name in columns:
                raise InvalidRequestError("duplicate_input", f"input {quoted(name)} is sent more than once")
            spec = self._specs.get(name)
            if spec is None and name != self._id_field:
                raise InvalidRequestError(
                    "extra_field",
                    f"input {quoted(name)} is not a customer field (expected {list(self._specs)})",
                )
            self._check_datatype(name, spec, datatype)
            rows = self._rows(name, shape, data)
            if size is None:
                size, size_from = rows, name
                self._check_size(rows, f"input {quoted(name)}")
            elif rows != size:
                raise InvalidRequestError(
                    "shape_mismatch",
                    f"input {quoted(name)} has {rows} rows but {quoted(size_from)} has {size}: every input carries one "
                    "value per customer",
                )
            columns[name] = self._flat(name, data, rows)
        missing = [name for name in self._specs if name not in columns]
        if missing:
            raise InvalidRequestError("missing_field", f"missing input(s) {missing}")
        assert size is not None
        return self._from_columns(columns, size, "inputs")

    def _check_datatype(self, name: str, spec: CategoryField | NumberField | None, datatype: str) -> None:
        if spec is None or isinstance(spec, CategoryField):
            allowed, kind = TEXT_DATATYPES, "text"
        elif spec.kind == "integer":
            allowed, kind = INTEGER_DATATYPES, "an integer"
        else:
            allowed, kind = NUMBER_DATATYPES, "a number"
        if datatype not in allowed:
            raise InvalidRequestError(
                "wrong_datatype",
                f"input {quoted(name)} has datatype {quoted(datatype)}; {name} is {kind}: use {sorted(allowed)[0]}"
                if len(allowed) == 1
                else f"input {quoted(name)} has datatype {quoted(datatype)}; {name} is {kind}: use one of {sorted(allowed)}",
            )

    @staticmethod
    def _rows(name: str, shape: Sequence[int], data: Any) -> int:
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or shape[0] < 0:
            raise InvalidRequestError(
                "shape_mismatch",
                f"input {quoted(name)} has shape {quoted(list(shape))}; expected [n] or [n, 1]",
            )
        rows = int(shape[0])
        count = _count(data)
        if count != rows:
            raise InvalidRequestError(
                "shape_mismatch", f"input {quoted(name)} has shape {quoted(list(shape))} but {count} value(s)"
            )
        return rows

    @staticmethod
    def _flat(name: str, data: Any, rows: int) -> list[Any]:
        """One value per customer. Non-finite numbers are left to the customer model (it names them)."""
        if isinstance(data, np.ndarray):
            values: list[Any] = data.reshape(rows).tolist()
            if data.dtype == object:  # BYTES of the binary extension
                for index, value in enumerate(values):
                    if isinstance(value, bytes):
                        try:
                            values[index] = value.decode("utf-8")
                        except UnicodeDecodeError:
                            raise InvalidRequestError(
                                "wrong_type", f"inputs[{index}].{name}: BYTES value is not UTF-8 text"
                            ) from None
            return values
        if rows and isinstance(data[0], list):
            return [item[0] if isinstance(item, list) and len(item) == 1 else item for item in data]
        return list(data)


def _count(data: Any) -> int:
    """Number of scalar values in v2 tensor data (flat list, nested [[v], ...] lists, or an array)."""
    if isinstance(data, np.ndarray):
        return int(data.size)
    if not isinstance(data, list):
        raise InvalidRequestError("wrong_type", "tensor data must be a list")
    total = 0
    for item in data:
        if isinstance(item, list):
            if len(item) != 1 or isinstance(item[0], list):
                raise InvalidRequestError("shape_mismatch", "tensor data must be flat or one value per row")
            total += 1
        else:
            total += 1
    return total
