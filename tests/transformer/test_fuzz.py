"""Fuzzing both protocols with generated requests: whatever arrives, the answer is never a 5xx."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.transformer.conftest import v2_request

pytestmark = pytest.mark.integration

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
DATATYPES = ["BOOL", "UINT8", "INT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES", "bogus", ""]
FIELDS = [
    "gender", "SeniorCitizen", "Partner", "Dependents", "tenure", "PhoneService", "MultipleLines",
    "InternetService", "OnlineSecurity", "OnlineBackup", "DeviceProtection", "TechSupport", "StreamingTV",
    "StreamingMovies", "Contract", "PaperlessBilling", "PaymentMethod", "MonthlyCharges", "TotalCharges",
    "customerID",
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["Yes", "No", "Month-to-month", "Weekly", "", "NaN", "1e309", "DSL"])
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _dumps(document: Any) -> bytes:
    return json.dumps(document, allow_nan=True).encode()  # NaN/Infinity tokens on purpose


def _check(response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert response.json()["error"]


@st.composite
def v1_bodies(draw, customer: dict[str, Any]) -> bytes:
    kind = draw(st.sampled_from(["mutate", "mutate", "mutate", "random", "shape"]))
    if kind == "random":
        return _dumps(draw(json_values))
    instance = dict(customer)
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        action = draw(st.sampled_from(["drop", "replace", "replace"]))
        if action == "drop":
            instance.pop(name, None)
        else:
            instance[name] = draw(json_values)
    if draw(st.booleans()):
        instance[draw(st.text(max_size=10))] = draw(json_values)
    count = draw(st.integers(min_value=0, max_value=3))
    if kind == "shape":
        return _dumps(
            draw(st.sampled_from([{"instances": instance}, [instance], {"instances": [instance], "x": 1}]))
        )
    return _dumps({"instances": [instance] * count})


@st.composite
def v2_bodies(draw, customer: dict[str, Any]) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return _dumps(draw(json_values))
    body = v2_request([customer, customer])
    inputs = body["inputs"]
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        if not inputs:
            break
        index = draw(st.integers(min_value=0, max_value=len(inputs) - 1))
        tensor = dict(inputs[index])
        action = draw(
            st.sampled_from(["datatype", "shape", "data", "name", "drop", "duplicate", "key", "value"])
        )
        if action == "datatype":
            tensor["datatype"] = draw(st.sampled_from(DATATYPES) | json_values)
        elif action == "shape":
            tensor["shape"] = draw(st.lists(st.integers(-2, 4), max_size=3) | json_values)
        elif action == "data":
            tensor["data"] = draw(st.lists(json_values, max_size=4) | json_values)
        elif action == "value":
            data = tensor.get("data")
            rest = data[1:] if isinstance(data, list) else []
            tensor["data"] = [draw(json_values), *rest]
        elif action == "name":
            tensor["name"] = draw(st.sampled_from(FIELDS) | st.text(max_size=10) | json_values)
        elif action == "drop":
            inputs.pop(index)
            continue
        elif action == "duplicate":
            inputs.append(tensor)
            continue
        else:
            tensor.pop(draw(st.sampled_from(["name", "datatype", "shape", "data"])), None)
        inputs[index] = tensor
    if draw(st.booleans()):
        body[draw(st.sampled_from(["id", "outputs", "parameters", "extra"]))] = draw(json_values)
    return _dumps(body)


def test_fuzz_v1_never_answers_with_a_server_error(client, customers):
    @FUZZ
    @given(body=v1_bodies(customers[0]))
    def run(body: bytes) -> None:
        _check(
            client.post(
                "/v1/models/churn:predict", content=body, headers={"content-type": "application/json"}
            )
        )

    run()


def test_fuzz_v2_never_answers_with_a_server_error(client, customers):
    @FUZZ
    @given(body=v2_bodies(customers[0]))
    def run(body: bytes) -> None:
        _check(
            client.post("/v2/models/churn/infer", content=body, headers={"content-type": "application/json"})
        )

    run()


@given(data=st.data())
@FUZZ
def test_fuzz_valid_customers_are_always_answered(client, trained_model, data):
    customer: dict[str, Any] = {}
    for spec in trained_model.contract.fields:
        if spec.kind == "category":
            customer[spec.name] = data.draw(st.sampled_from(spec.values))
        elif spec.kind == "integer":
            customer[spec.name] = data.draw(st.integers(int(spec.minimum), int(spec.maximum)))
        else:
            customer[spec.name] = data.draw(st.floats(spec.minimum, spec.maximum, allow_nan=False))
    response = client.post("/v1/models/churn:predict", json={"instances": [customer]})
    assert response.status_code == 200, response.text
    answer = response.json()["predictions"][0]
    assert 0.0 <= answer["churn_probability"] <= 1.0
