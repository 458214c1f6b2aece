"""Code tests of the feature contract: encoding, persistence, reason codes, decisions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from churn_core.contract import (
    CONTRACT_FILE,
    CustomerBatch,
    Encoder,
    FeatureContract,
    telco_contract,
)
from churn_core.decision import NO_ACTION, DecisionMaker
from churn_core.explain import Explainer

CUSTOMER = {
    "gender": "Female",
    "SeniorCitizen": 0,
    "Partner": "Yes",
    "Dependents": "No",
    "tenure": 1,
    "PhoneService": "No",
    "MultipleLines": "No phone service",
    "InternetService": "Fiber optic",
    "OnlineSecurity": "No",
    "OnlineBackup": "Yes",
    "DeviceProtection": "No",
    "TechSupport": "No",
    "StreamingTV": "No",
    "StreamingMovies": "No",
    "Contract": "Month-to-month",
    "PaperlessBilling": "Yes",
    "PaymentMethod": "Electronic check",
    "MonthlyCharges": 29.85,
    "TotalCharges": 29.85,
}


def test_contract_lists_the_19_telco_fields():
    contract = telco_contract()
    assert len(contract.fields) == 19
    assert "customerID" not in contract.field_names
    assert "Churn" not in contract.field_names


def test_encoder_one_hot_marks_exactly_the_customer_value():
    contract = telco_contract()
    encoder = Encoder(contract)
    row = encoder.encode(encoder.batch_from_records([CUSTOMER]))[0]
    columns = dict(zip(contract.feature_names, row, strict=True))
    assert columns["Contract=Month-to-month"] == 1.0
    assert columns["Contract=One year"] == 0.0
    assert columns["Contract=Two year"] == 0.0
    assert columns["tenure"] == 1.0
    assert columns["log1p(tenure)"] == pytest.approx(np.log(2.0))
    assert columns["MonthlyCharges"] == 29.85
    one_hot_sum = sum(v for name, v in columns.items() if name.startswith("PaymentMethod="))
    assert one_hot_sum == 1.0


def test_encoder_is_row_independent_within_a_batch():
    contract = telco_contract()
    encoder = Encoder(contract)
    other = {**CUSTOMER, "Contract": "Two year", "tenure": 60, "TotalCharges": 1800.0}
    together = encoder.encode(encoder.batch_from_records([CUSTOMER, other]))
    alone = encoder.encode(encoder.batch_from_records([other]))
    np.testing.assert_array_equal(together[1], alone[0])


def test_contract_round_trips_through_its_file(tmp_path: Path):
    contract = telco_contract(threshold=0.37).with_model(version="4", run_id="abc")
    contract.save(tmp_path)
    loaded = FeatureContract.load(tmp_path)
    assert loaded == contract
    assert loaded.model.version == "4"


def test_contract_with_unknown_schema_version_is_refused(tmp_path: Path):
    telco_contract().save(tmp_path)
    document = json.loads((tmp_path / CONTRACT_FILE).read_text())
    document["schema_version"] = 99
    (tmp_path / CONTRACT_FILE).write_text(json.dumps(document))
    with pytest.raises(ValueError, match="schema_version"):
        FeatureContract.load(tmp_path)


def test_explainer_refuses_a_contract_without_reason_code_tables():
    with pytest.raises(ValueError, match="reason-code table"):
        Explainer(telco_contract())


def _batch(contract: FeatureContract, records: list[dict[str, object]]) -> CustomerBatch:
    return Encoder(contract).batch_from_records(records)


@pytest.mark.parametrize(
    ("probability", "level"),
    [
        (0.0, "Low"),
        (0.2999, "Low"),
        (0.3, "Medium"),
        (0.4999, "Medium"),
        (0.5, "High"),
        (0.6999, "High"),
        (0.7, "Very High"),
        (1.0, "Very High"),
    ],
)
def test_risk_bands_follow_the_roadmap_boundaries(trained_model, probability, level):
    contract = trained_model.contract
    maker = DecisionMaker(contract)
    assert maker.band_levels[maker.risk_band(np.array([probability]))[0]] == level


def test_action_follows_top_factors_not_risk_alone(trained_model):
    contract = trained_model.contract
    explainer = Explainer(contract)
    maker = DecisionMaker(contract)
    month_to_month = {**CUSTOMER, "tenure": 30, "TotalCharges": 30 * 29.85, "InternetService": "DSL"}
    fibre_on_contract = {
        **CUSTOMER,
        "Contract": "One year",
        "tenure": 30,
        "TotalCharges": 30 * 95.0,
        "MonthlyCharges": 95.0,
        "PaymentMethod": "Credit card (automatic)",
    }
    batch = _batch(contract, [month_to_month, fibre_on_contract])
    contributions = explainer.contributions(batch)
    top = explainer.top_indices(contributions)
    same_risk = np.array([0.6, 0.6])  # both "High": only the factors can tell them apart
    actions = maker.decide(batch, same_risk, contributions, top).actions
    assert "contract" in actions[0]
    assert "tech support" in actions[1]


def test_low_risk_gets_no_action(trained_model):
    contract = trained_model.contract
    explainer = Explainer(contract)
    batch = _batch(contract, [CUSTOMER])
    contributions = explainer.contributions(batch)
    decided = DecisionMaker(contract).decide(
        batch, np.array([0.1]), contributions, explainer.top_indices(contributions)
    )
    assert decided.actions[0] == NO_ACTION
    assert not decided.predictions[0]


def test_top_factors_are_the_largest_contributions_in_order(trained_model):
    contract = trained_model.contract
    explainer = Explainer(contract)
    batch = _batch(contract, [CUSTOMER])
    contributions = explainer.contributions(batch)
    factors = explainer.factors(batch, contributions, explainer.top_indices(contributions))[0]
    values = [f.contribution for f in factors]
    assert values == sorted(values, reverse=True)
    assert values[0] == pytest.approx(contributions[0].max())
    by_field = {f.field: f.value for f in factors}
    if "Contract" in by_field:
        assert by_field["Contract"] == "Month-to-month"
