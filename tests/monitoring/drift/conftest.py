"""Drift scenarios shared by the drift tests: reference-like and shifted windows of the Telco data, written
as customer CSVs with the model's probabilities, and the alibi backend's verdicts on them from .venv-drift.

Windows are 5,000 customers drawn with a fixed seed from all 7,043 rows of the data (not only from the
4/5 that form the reference), so "a resample flags nothing" compares the reference with customers it has
partly never seen.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from churn_core.artefact import load_model, reference_columns
from churn_core.contract import CustomerBatch, Encoder
from churn_core.data import CustomerReader
from churn_model.training import predict_churn
from churn_monitoring.drift import scenarios
from churn_monitoring.drift.detector import DriftDetector
from tests.support.services import REPO, drift_python

SEED = 7
WINDOW_ROWS = 5000
SHIFTS = ("none", "monthly-charges", "contract")
ALIBI_TIMEOUT_S = 180


@dataclass(frozen=True)
class Scenario:
    name: str
    customers: Path  # Telco-shaped CSV, no Churn
    predictions: Path  # churn_probability per customer, as `churnops score` writes it
    columns: dict[str, list[Any]]  # the window as read back from the CSV
    probabilities: list[float]  # the trained model's, for these customers


@pytest.fixture(scope="session")
def telco_columns(trained_model, telco_csv: Path) -> dict[str, list[Any]]:
    return scenarios.read_customers(trained_model.contract, telco_csv, require_target=True)


@pytest.fixture(scope="session")
def churn_probabilities(trained_model) -> Callable[[CustomerBatch], list[float]]:
    """The trained model's churn probability for each customer of a batch."""
    model = load_model(trained_model.artefact)
    encoder = Encoder(trained_model.contract)

    def predict(batch: CustomerBatch) -> list[float]:
        return [float(p) for p in predict_churn(model, encoder.encode(batch))]

    return predict


@pytest.fixture(scope="session")
def drift_scenarios(
    tmp_path_factory, trained_model, telco_columns, churn_probabilities
) -> dict[str, Scenario]:
    contract = trained_model.contract
    directory = tmp_path_factory.mktemp("drift-scenarios")
    built = {}
    for shift in SHIFTS:
        window = scenarios.scenario(telco_columns, shift, rows=WINDOW_ROWS, seed=SEED)
        path = scenarios.write_customers(contract, window, directory / f"{shift}.csv")
        customers = CustomerReader(contract, require_target=False).read_all(path)
        probabilities = churn_probabilities(customers.batch)
        predictions = directory / f"{shift}-scores.csv"
        with predictions.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["customer_id", "churn_probability"])
            writer.writerows(zip(map(str, customers.ids), probabilities, strict=True))
        built[shift] = Scenario(
            shift, path, predictions, reference_columns(contract, customers.batch), probabilities
        )
    return built


@pytest.fixture(scope="session")
def scipy_detector(artefact_dir: Path) -> DriftDetector:
    return DriftDetector.from_artefact(artefact_dir, backend="scipy")


def _drift_command(python: Path, scenario: Scenario, artefact: Path) -> list[str]:
    return [
        str(python),
        "-c",
        "from churnops.cli import main; main()",
        "monitor",
        "drift",
        "--current",
        str(scenario.customers),
        "--predictions",
        str(scenario.predictions),
        "--artefact",
        str(artefact),
        "--backend",
        "alibi",
        "--format",
        "json",
    ]


@pytest.fixture(scope="session")
def alibi_reports(drift_scenarios: dict[str, Scenario], artefact_dir: Path) -> dict[str, dict[str, Any]]:
    """`churnops monitor drift --backend alibi --format json` run by .venv-drift (alibi-detect, numpy 1.26)
    on every scenario, all at once; key "contract-fdr" is the contract shift under FDR correction."""
    python = drift_python()
    runs = {name: ({}, scenario) for name, scenario in drift_scenarios.items()}
    runs["contract-fdr"] = ({"CHURNOPS_DETECTOR_DRIFT_CORRECTION": "fdr"}, drift_scenarios["contract"])
    processes = {}
    for name, (extra_env, scenario) in runs.items():
        env = {**os.environ, "CHURNOPS_DETECTOR_DRIFT_BACKEND": "alibi", **extra_env}
        processes[name] = subprocess.Popen(
            _drift_command(python, scenario, artefact_dir),
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    reports = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=ALIBI_TIMEOUT_S)
        if process.returncode != 0:
            pytest.fail(
                f"alibi drift run {name!r} failed ({process.returncode}); is the project installed in "
                f".venv-drift (`.venv-drift/bin/pip install -e '.[monitoring,alibi]'`)?\n{stderr[-3000:]}"
            )
        reports[name] = json.loads(stdout)
    return reports
