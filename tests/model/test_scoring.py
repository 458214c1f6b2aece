"""Batch scoring: same answers as the model and the decision code, streamed, atomic output."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from churn_core.artefact import load_model
from churn_core.contract import Encoder
from churn_core.data import CustomerReader, DataValidationError
from churn_core.decision import DecisionMaker
from churn_core.explain import Explainer
from churn_model.scoring import OUTPUT_COLUMNS, BatchScorer


@pytest.fixture(scope="module")
def scored(trained_model, telco_csv, tmp_path_factory):
    output = tmp_path_factory.mktemp("scores") / "scores.csv"
    # Small blocks: many chunks, so the streaming and read-ahead paths are exercised.
    summary = BatchScorer(trained_model.artefact).score_file(telco_csv, output, block_size=64 << 10)
    with output.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return summary, rows


def test_scores_every_customer_in_input_order(scored, telco_rows):
    summary, rows = scored
    assert summary.rows == len(rows) == 7043
    assert [r["customer_id"] for r in rows] == [r["customerID"] for r in telco_rows]
    assert list(rows[0]) == list(OUTPUT_COLUMNS)


def test_scores_equal_the_models_own_predict_proba(scored, trained_model, telco_csv):
    _, rows = scored
    contract = trained_model.contract
    customers = CustomerReader(contract, require_target=False).read_all(telco_csv)
    expected = load_model(trained_model.artefact).predict_proba(Encoder(contract).encode(customers.batch))[
        :, 1
    ]
    written = np.array([float(r["churn_probability"]) for r in rows])
    # The CSV holds shortest round-trip text, so only the model's own arithmetic can differ: chunks of
    # another size may sum in another order (1 ulp seen).
    np.testing.assert_allclose(written, expected, rtol=0, atol=1e-12)


def test_predictions_levels_and_actions_follow_the_decision_rules(scored, trained_model, telco_csv):
    _, rows = scored
    contract = trained_model.contract
    customers = CustomerReader(contract, require_target=False).read_all(telco_csv)
    probabilities = np.array([float(r["churn_probability"]) for r in rows])
    explainer = Explainer(contract)
    contributions = explainer.contributions(customers.batch)
    decided = DecisionMaker(contract).decide(
        customers.batch, probabilities, contributions, explainer.top_indices(contributions)
    )
    assert [r["churn_prediction"] == "true" for r in rows] == decided.predictions.tolist()
    assert [r["risk_level"] for r in rows] == decided.risk_levels.tolist()
    assert [r["recommended_action"] for r in rows] == decided.actions.tolist()
    assert all(
        (p >= contract.model.threshold) == (r["churn_prediction"] == "true")
        for p, r in zip(probabilities, rows, strict=True)
    )


def test_invalid_input_leaves_no_output_behind(trained_model, telco_csv, tmp_path):
    lines = telco_csv.read_text(encoding="utf-8").splitlines()
    assert "Month-to-month" in lines[5045]
    lines[5045] = lines[5045].replace("Month-to-month", "Weekly")
    broken = tmp_path / "broken.csv"
    broken.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / "scores.csv"
    with pytest.raises(DataValidationError, match="line 5046"):
        BatchScorer(trained_model.artefact).score_file(broken, output, block_size=64 << 10)
    assert not output.exists()
    assert not list(tmp_path.glob("*.partial"))
