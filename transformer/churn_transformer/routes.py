"""The inference routes, served ahead of KServe's own for the same paths.

They call the same `kserve.Model` (`__call__` → preprocess → predict → postprocess, with KServe's
per-stage histograms) but skip what KServe's generic endpoints spend on every request and we do not need:
pydantic parsing of the whole v2 body into `InferenceRequest`, FastAPI's `jsonable_encoder` walk over the
`InferenceResponse` model, and matching the request against KServe's twenty-odd routes (measured: these
were about half of the transformer's CPU per request; README, benchmark). Body decoding is also where bad
JSON becomes a 400 that names what is wrong: orjson first; on failure the standard library, which accepts
NaN/Infinity, so that validation can name the field holding one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson
from kserve.errors import ModelNotReady
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferRequest, InferResponse
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from churn_transformer.validation import InvalidRequestError

BINARY_HEADER = "inference-header-content-length"
JSON = "application/json"


def decode_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        first = str(error)
    try:
        return json.loads(body)  # accepts NaN and Infinity: validation then names the field
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequestError("malformed_json", f"body is not valid JSON: {first}") from None


@dataclass(frozen=True)
class V2Request:
    """A decoded JSON v2 request: tensors as (name, datatype, shape, data), as cheap as it gets."""

    inputs: list[tuple[str, str, list[int], list[Any]]]
    id: str | None = None
    outputs: list[str] | None = None


def _v2_input(index: int, tensor: Any) -> tuple[str, str, list[int], list[Any]]:
    where = f"inputs[{index}]"
    if not isinstance(tensor, dict):
        raise InvalidRequestError("malformed_request", f"{where}: must be a tensor object")
    name, datatype, shape, data = (tensor.get(k) for k in ("name", "datatype", "shape", "data"))
    if not isinstance(name, str):
        raise InvalidRequestError("malformed_request", f"{where}.name: required, a string")
    where = f"input {name!r}"
    if not isinstance(datatype, str):
        raise InvalidRequestError("malformed_request", f"{where}: datatype required, a string")
    if not isinstance(shape, list) or not all(type(d) is int for d in shape):
        raise InvalidRequestError("malformed_request", f"{where}: shape required, a list of integers")
    if not isinstance(data, list):
        raise InvalidRequestError("malformed_request", f"{where}: data required, a list")
    return name, datatype, shape, data


def decode_v2(body: bytes, headers: dict[str, str], model_name: str) -> V2Request | InferRequest:
    if BINARY_HEADER in headers:  # KServe's binary tensor extension
        try:
            return InferRequest.from_bytes(body, int(headers[BINARY_HEADER]), model_name)
        except Exception as error:
            raise InvalidRequestError("malformed_request", f"binary v2 request: {error}") from None
    document = decode_json(body)
    if not isinstance(document, dict):
        raise InvalidRequestError("malformed_request", 'body must be a JSON object {"inputs": [...]}')
    unknown = sorted(set(document) - {"id", "inputs", "outputs", "parameters"})
    if unknown:
        raise InvalidRequestError("extra_field", f"unknown top-level field(s) {unknown} in the v2 request")
    inputs = document.get("inputs")
    if not isinstance(inputs, list):
        raise InvalidRequestError("malformed_request", "inputs: required, a list of input tensors")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequestError("malformed_request", "id: must be a string")
    outputs = document.get("outputs")
    requested = None
    if outputs is not None:
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
        ):
            raise InvalidRequestError("malformed_request", 'outputs: must be a list of {"name": ...}')
        requested = [str(o["name"]) for o in outputs]
    parameters = document.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidRequestError("malformed_request", "parameters: must be an object")
    return V2Request([_v2_input(i, tensor) for i, tensor in enumerate(inputs)], request_id, requested)


def encode_v2(response: InferResponse) -> dict[str, Any]:
    return {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "outputs": [
            {"name": o.name, "shape": o.shape, "datatype": o.datatype, "data": o.data}
            for o in response.outputs
        ],
    }


def inference_routes(dataplane: DataPlane) -> list[Route]:
    async def model_for(request: Request) -> Any:
        name = request.path_params["model_name"]
        model = dataplane.get_model_from_registry(name)  # ModelNotFound -> 404
        if not await model.healthy():
            raise ModelNotReady(name)
        return model

    async def v2_infer(request: Request) -> Response:
        model = await model_for(request)
        headers = dict(request.headers)
        infer_request = decode_v2(await request.body(), headers, model.name)
        result, response_headers = await model(infer_request, headers=headers)
        return Response(orjson.dumps(encode_v2(result)), media_type=JSON, headers=response_headers or None)

    async def v1_predict(request: Request) -> Response:
        model = await model_for(request)
        headers = dict(request.headers)
        body = await request.body()
        if any(key.startswith("ce-") for key in headers):  # a binary CloudEvent: KServe unwraps it
            payload, _ = dataplane.decode(body, headers)
        else:
            payload = decode_json(body)
        result, response_headers = await model(payload, headers=headers)
        return Response(orjson.dumps(result), media_type=JSON, headers=response_headers or None)

    return [
        Route("/v2/models/{model_name}/infer", v2_infer, methods=["POST"]),
        Route("/v1/models/{model_name}:predict", v1_predict, methods=["POST"]),
    ]
