"""The request validator in-process: built from the contract, exact about what it accepts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from churn_core.contract import CategoryField, Encoder, FeatureContract
from churn_transformer.validation import InvalidRequestError, RequestValidator, customer_model
from tests.support.customers import customer_from_row


@pytest.fixture(scope="module")
def contract(trained_model) -> FeatureContract:
    return trained_model.contract


@pytest.fixture(scope="module")
def validator(contract) -> RequestValidator:
    return RequestValidator(contract, Encoder(contract), max_batch=1000)


@pytest.fixture(scope="module")
def customer(telco_rows) -> dict[str, Any]:
    return customer_from_row(telco_rows[0])


def test_customer_model_is_generated_from_the_contract(contract):
    fields = list(customer_model(contract).model_fields)
    assert fields == [*contract.field_names, contract.id_field]


def test_customer_model_follows_the_contract_values_not_a_hard_coded_list(contract, customer):
    narrowed = tuple(
        CategoryField(name=f.name, values=("Month-to-month",), description=f.description)
        if f.name == "Contract"
        else f
        for f in contract.fields
    )
    model = customer_model(contract.model_copy(update={"fields": narrowed}))
    model.model_validate({**customer, "Contract": "Month-to-month"})
    with pytest.raises(ValidationError):
        model.model_validate({**customer, "Contract": "One year"})


def test_v1_batch_is_encoded_in_contract_order(validator, customer, contract):
    parsed = validator.parse_v1({"instances": [customer, {**customer, "tenure": 5}]})
    assert parsed.ids == [customer["customerID"], customer["customerID"]]
    tenure = [f.name for f in contract.number_fields].index("tenure")
    assert parsed.batch.numbers[:, tenure].tolist() == [float(customer["tenure"]), 5.0]
    rows = Encoder(contract).encode(parsed.batch)
    assert rows.shape == (2, len(contract.features))
    assert np.isfinite(rows).all()


def test_v2_and_v1_parse_to_the_same_batch(validator, customer):
    inputs = [(name, "BYTES", [1], [value]) for name, value in customer.items()]
    datatypes = {
        "SeniorCitizen": "INT64",
        "tenure": "INT64",
        "MonthlyCharges": "FP64",
        "TotalCharges": "FP64",
    }
    inputs = [(n, datatypes.get(n, d), s, v) for n, d, s, v in inputs]
    v2 = validator.parse_v2(inputs)
    v1 = validator.parse_v1({"instances": [customer]})
    assert np.array_equal(v2.batch.categories, v1.batch.categories)
    assert np.array_equal(v2.batch.numbers, v1.batch.numbers)


def test_ids_are_absent_when_no_customer_sends_one(validator, customer):
    anonymous = {k: v for k, v in customer.items() if k != "customerID"}
    assert validator.parse_v1({"instances": [anonymous]}).ids is None


def test_error_lists_every_problem_up_to_five(validator, customer):
    broken = {
        **customer,
        "gender": "x",
        "Partner": "x",
        "Dependents": "x",
        "tenure": -1,
        "Contract": "x",
        "TechSupport": "x",
    }
    with pytest.raises(InvalidRequestError) as caught:
        validator.parse_v1({"instances": [broken]})
    assert caught.value.message.count("instances[0].") == 5
    assert "1 more problem" in caught.value.message


def test_integer_fields_accept_int32_and_numbers_accept_integers(validator, customer):
    inputs = []
    for name, value in customer.items():
        if name in ("SeniorCitizen", "tenure"):
            inputs.append((name, "INT32", [1], [value]))
        elif name in ("MonthlyCharges", "TotalCharges"):
            inputs.append((name, "INT64", [1], [int(value)]))
        else:
            inputs.append((name, "BYTES", [1], [value]))
    assert len(validator.parse_v2(inputs)) == 1


def test_bytes_values_from_binary_tensors_are_decoded(validator, customer):
    inputs = []
    for name, value in customer.items():
        if isinstance(value, str):
            inputs.append((name, "BYTES", [1], np.array([value.encode()], dtype=object)))
        else:
            dtype = np.int64 if isinstance(value, int) else np.float64
            inputs.append(
                (name, "INT64" if dtype is np.int64 else "FP64", [1], np.array([value], dtype=dtype))
            )
    assert len(validator.parse_v2(inputs)) == 1


def test_factor_formatter_gives_what_the_explainer_gives(validator, contract, telco_rows):
    from churn_core.explain import Explainer
    from churn_transformer.engine import FactorFormatter

    parsed = validator.parse_v1({"instances": [customer_from_row(row) for row in telco_rows[:700]]})
    explainer = Explainer(contract)
    contributions = explainer.contributions(parsed.batch)
    top = explainer.top_indices(contributions)
    expected = [
        [factor.as_dict() for factor in row] for row in explainer.factors(parsed.batch, contributions, top)
    ]
    got = FactorFormatter(contract).format(parsed.batch, contributions, top)
    assert got == expected  # 1 == 1.0 in Python: integer fields only change how JSON shows them
    integers = {f.name for f in contract.number_fields if f.kind == "integer"}
    for row in got:
        for factor in row:
            if factor["feature"] in integers:
                assert type(factor["value"]) is int


def test_column_validation_builds_the_encoders_batch(validator, contract, telco_rows):
    customers = [customer_from_row(row) for row in telco_rows[:500]]
    parsed = validator.parse_v1({"instances": customers})
    expected = Encoder(contract).batch_from_records(
        [{k: v for k, v in c.items() if k != "customerID"} for c in customers]
    )
    assert np.array_equal(parsed.batch.categories, expected.categories)
    assert np.array_equal(parsed.batch.numbers, expected.numbers)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("churn-predictor.ns", "churn-predictor.ns:80"),
        ("127.0.0.1:8081", "127.0.0.1:8081"),
        ("[::1]:9000", "[::1]:9000"),
    ],
)
def test_grpc_address_gets_kserves_default_port(host, address):
    from churn_transformer.engine import grpc_address

    assert grpc_address(host) == address
