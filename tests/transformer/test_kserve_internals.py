"""What the transformer relies on in KServe (churn_transformer/internals.py) is what a KServe upgrade must
re-check: this test pins KServe's version and a sha256 of each relied-on object's source."""

from __future__ import annotations

import hashlib
import importlib
import inspect
from typing import Any

import pytest

from churn_transformer import internals

KSERVE_VERSION = "0.21.0"
# sha256 of each RELIED_ON object's source (the parser: of its arguments). Regenerate with
# `.venv/bin/python tests/transformer/test_kserve_internals.py` after re-checking what changed.
EXPECTED: dict[str, str] = {
    "kserve.model.Model.__init__": "e28b609033bfb771cff2ca97f2f900dff0d8287c72f7dd54d266a54920b50e41",
    "kserve.model.Model.__call__": "acf019685a2c07deba6359321ff27806fd062e86902caf72b930779867e04ee1",
    "kserve.model.BaseKServeModel.__init__": "1be8ac8228dc437a822850c661edd329ab17cc670983c1042e4bf55882f6310d",
    "kserve.model_server.parser": "8b252f4908d72f96c761ae87ff60e5200244aa6a5c925075a38d28c524f0e3c7",
    "kserve.protocol.infer_type.InferRequest.from_bytes": "5e8eda9b7377df70df6612f279ca4125748861a61a61cf0df967e462d6d736c6",
    "kserve.protocol.infer_type.InferRequest.__init__": "98ae5376e2f6915ad91829b81177a5210a84b09dace8b18de8e7af8a1d7f5709",
    "kserve.protocol.infer_type.InferInput.as_numpy": "a6783dbbe89ae1876909c550e62d1f7c566c8ee17f4332e57286b860b9689463",
    "kserve.protocol.infer_type.InferResponse.__init__": "248cfc65cc97171b56c78dc72b2cc6a306791d3b660b9500706efdc2172d9f06",
    "kserve.protocol.infer_type.InferOutput.__init__": "537a5c9206fdf782ace9f0aef078a5cb1b40929706bf9efc470563490c828b65",
    "kserve.metrics": "55ab9ea4f5ec57d7bbc838b3edd6d536ed281bf76f0c4b10e78f4026feec7532",
    "kserve.protocol.grpc.grpc_predict_v2_pb2": "3a33ea1b428f4202293cfd60afac1390c35872aa6d4c7843d6e0f7f5f9ffe3e4",
    "kserve.protocol.grpc.grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub": "44d05208d2c59ebdff36784d28dd8aea806a5526069843e37a479978b8a95287",
}
UPGRADE_HINT = (
    "KServe changed {name}, which the transformer relies on (see churn_transformer/internals.py's "
    "docstring, item by item): re-check that the transformer still uses it correctly (stage order and "
    "signatures of Model.__call__, the injected arguments, InferRequest.from_bytes' reading of binary "
    "tensors, the v2 gRPC messages), run tests/transformer, then update EXPECTED in this file."
)


def _resolve(dotted: str) -> Any:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            target = getattr(target, attribute)
        return target
    raise ImportError(dotted)


def fingerprint(dotted: str) -> str:
    target = _resolve(dotted)
    if dotted.endswith(".parser"):
        text = repr([(a.option_strings, a.dest, a.default, a.choices) for a in target._actions])
    else:
        text = inspect.getsource(target)
    return hashlib.sha256(text.encode()).hexdigest()


def test_kserve_is_the_version_the_transformer_was_checked_against():
    assert internals.KSERVE_VERSION == KSERVE_VERSION, (
        f"KServe is {internals.KSERVE_VERSION}, the transformer was checked against {KSERVE_VERSION}: "
        + UPGRADE_HINT.format(name="its version")
    )


@pytest.mark.parametrize("name", internals.RELIED_ON)
def test_what_the_transformer_relies_on_is_unchanged(name):
    assert name in EXPECTED, f"{name} has no recorded fingerprint: add {fingerprint(name)!r}"
    assert fingerprint(name) == EXPECTED[name], UPGRADE_HINT.format(name=name)


if __name__ == "__main__":
    for relied in internals.RELIED_ON:
        print(f'    "{relied}": "{fingerprint(relied)}",')
