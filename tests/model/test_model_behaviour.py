"""Behavioural tests of the trained model: what a churn model must and must not do."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from churn_core.artefact import load_model
from churn_core.contract import CustomerBatch, Encoder, FeatureContract
from churn_core.data import CustomerReader
from churn_model.training import TrainingConfig, _calibrated_validation, build_ensemble, fit_model
from tests.support.services import predictor_python


@pytest.fixture(scope="module")
def customers(trained_model, telco_csv):
    return CustomerReader(trained_model.contract, require_target=True).read_all(telco_csv)


@pytest.fixture(scope="module")
def model(trained_model):
    return load_model(trained_model.artefact)


def _set_category(contract, batch: CustomerBatch, field: str, value: str) -> CustomerBatch:
    column = [f.name for f in contract.category_fields].index(field)
    code = next(f for f in contract.category_fields if f.name == field).values.index(value)
    categories = batch.categories.copy()
    categories[:, column] = code
    return CustomerBatch(categories=categories, numbers=batch.numbers)


def _probabilities(model, contract, batch):
    return model.predict_proba(Encoder(contract).encode(batch))[:, 1]


def test_two_year_contract_lowers_churn_versus_month_to_month(trained_model, customers, model):
    contract = trained_model.contract
    monthly = _probabilities(
        model, contract, _set_category(contract, customers.batch, "Contract", "Month-to-month")
    )
    two_year = _probabilities(
        model, contract, _set_category(contract, customers.batch, "Contract", "Two year")
    )
    assert np.all(two_year < monthly)
    assert float(np.mean(monthly - two_year)) > 0.1


def test_gender_alone_moves_probability_less_than_five_points(trained_model, customers, model):
    contract = trained_model.contract
    female = _probabilities(model, contract, _set_category(contract, customers.batch, "gender", "Female"))
    male = _probabilities(model, contract, _set_category(contract, customers.batch, "gender", "Male"))
    assert float(np.max(np.abs(female - male))) < 0.05


def test_test_split_quality_is_in_the_expected_range(trained_model):
    test = trained_model.metrics["test"]
    assert test["roc_auc"] > 0.82
    assert test["f1"] > 0.58
    assert test["brier"] < 0.145


def test_same_seed_gives_identical_model(customers, trained_model):
    features = Encoder(trained_model.contract).encode(customers.batch)[:3000]
    churned = customers.churned[:3000]
    config = TrainingConfig(cv_repeats=0, n_jobs=1)
    first = fit_model(features, churned, config)
    second = fit_model(features, churned, config)
    assert first.threshold == second.threshold
    np.testing.assert_array_equal(first.model.predict_proba(features), second.model.predict_proba(features))


def test_threshold_comes_from_calibrated_out_of_fold_predictions(customers, trained_model):
    """The calibrator applied to out-of-fold predictions is the one the model serves with."""
    features = Encoder(trained_model.contract).encode(customers.batch)[:2000]
    churned = customers.churned[:2000]
    config = TrainingConfig(cv_repeats=0, n_jobs=1)
    fitted = fit_model(features, churned, config)
    folds = StratifiedKFold(config.calibration_folds, shuffle=True, random_state=config.seed)
    raw = cross_val_predict(build_ensemble(config.seed), features, churned, cv=folds, method="predict_proba")[
        :, 1
    ]
    np.testing.assert_allclose(fitted.validation_probabilities, _calibrated_validation(fitted.model, raw))
    # The served model maps its own raw ensemble output through the same calibrator.
    own_raw = fitted.model.calibrated_classifiers_[0].estimator.predict_proba(features)[:, 1]
    np.testing.assert_allclose(
        fitted.model.predict_proba(features)[:, 1], _calibrated_validation(fitted.model, own_raw), rtol=1e-12
    )


def test_model_file_loads_and_predicts_with_scikit_learn_alone(artefact_dir):
    """The stock MLServer sklearn runtime has no ChurnOps code: load the file where none is installed."""
    python = predictor_python()
    script = (
        "import importlib.util, sys, joblib, numpy as np\n"
        "assert importlib.util.find_spec('churn_model') is None, 'ChurnOps is installed here'\n"
        "model = joblib.load(sys.argv[1])\n"
        "print(model.predict_proba(np.zeros((2, int(sys.argv[2]))))[:, 1].tolist())\n"
    )
    width = str(len(FeatureContract.load(artefact_dir).features))
    result = subprocess.run(
        [str(python), "-c", script, str(artefact_dir / "model.joblib"), width],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert len(eval(result.stdout)) == 2
