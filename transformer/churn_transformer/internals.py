"""Every use of KServe in the transformer, in one module: what is relied on, and why.

The transformer is a KServe transformer (KServe starts it with its model-server arguments and routes the
InferenceService's traffic to it) but serves HTTP with its own small ASGI app (app.py) instead of
KServe's ModelServer/RESTServer/DataPlane/FastAPI app: one request type from body to answer, five modules
on a request's path, no model-repository routes, and a bounded body reader. KServe still does this work:

1. `kserve.Model` (model.py subclasses it). Relied on: `Model.__init__(name)` (sets `name`, `ready`);
   `Model.__call__(body, headers)` awaits `preprocess(body, headers)`, calls `validate(payload)`, awaits
   `predict(payload, headers)` then `postprocess(result, headers)` and returns `(response, headers)`,
   timing each stage into KServe's histograms (item 5). Overridden: `preprocess`, `validate` (identity:
   preprocess validates), `predict`, `postprocess`, `load`, `get_input_types`, `get_output_types`.
2. `kserve.model_server.parser`: the model server's argparse parser. KServe's controller injects
   `--model_name`, `--predictor_host`, `--http_port`, `--workers` (and `--predictor_protocol`) into
   transformer containers; main.py takes the parser as a parent so they parse exactly as KServe means them.
3. `InferRequest.from_bytes(body, json_length, model_name)` (KServe's binary tensor extension,
   `inference-header-content-length`) and `InferInput.as_numpy()`; `InferRequest.inputs`, `.id`,
   `.request_outputs` (validation.py / model.py read them).
4. `InferResponse(response_id, model_name, model_version, infer_outputs)` and `InferOutput(name, shape,
   datatype, data)`: the v2 answer (model.py builds it, app.py writes its fields as JSON).
5. `kserve.metrics`: the per-stage histograms (`request_preprocess_seconds`, `request_predict_seconds`,
   `request_postprocess_seconds`) registered on import and observed by `Model.__call__`; /metrics serves
   them beside ours.
6. `kserve.protocol.grpc.grpc_predict_v2_pb2` / `grpc_predict_v2_pb2_grpc`: the Open Inference Protocol
   v2 messages and `GRPCInferenceServiceStub` for the hop to the predictor (engine.py).

tests/transformer/test_kserve_internals.py pins KServe's installed version and a sha256 of the source of each
item above (RELIED_ON): a KServe upgrade that changes one fails there, naming what to re-check.
"""

from __future__ import annotations

import argparse
from importlib import metadata

from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_services
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

KSERVE_VERSION = metadata.version("kserve")

# Dotted names of what the transformer relies on (the test hashes their source); see the docstring.
RELIED_ON = (
    "kserve.model.Model.__init__",
    "kserve.model.Model.__call__",
    "kserve.model.BaseKServeModel.__init__",
    "kserve.model_server.parser",  # its arguments (option strings, destinations, defaults) are hashed
    "kserve.protocol.infer_type.InferRequest.from_bytes",
    "kserve.protocol.infer_type.InferRequest.__init__",
    "kserve.protocol.infer_type.InferInput.as_numpy",
    "kserve.protocol.infer_type.InferResponse.__init__",
    "kserve.protocol.infer_type.InferOutput.__init__",
    "kserve.metrics",
    "kserve.protocol.grpc.grpc_predict_v2_pb2",
    "kserve.protocol.grpc.grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub",
)


def model_server_parser() -> argparse.ArgumentParser:
    """KServe's model-server argument parser (item 2), to be used as a parent parser."""
    from kserve import model_server

    parser: argparse.ArgumentParser = model_server.parser
    return parser


__all__ = [
    "KSERVE_VERSION",
    "RELIED_ON",
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "InvalidInput",
    "Model",
    "model_server_parser",
    "pb",
    "pb_services",
]
