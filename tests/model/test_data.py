"""Data-contract tests: the Telco file as published, and every way a file can break the contract."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from churn_core.contract import telco_contract
from churn_core.data import CustomerReader, DataNotFoundError, DataValidationError, resolve_data_path
from churn_model.settings import ModelSettings


def _read(path: Path, *, require_target: bool = True):
    return CustomerReader(telco_contract(), require_target=require_target).read_all(path)


def _rewrite(source: Path, target: Path, edit) -> Path:
    with source.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    fieldnames = list(rows[0])
    rows, fieldnames = edit(rows, fieldnames)
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return target


def test_published_file_has_7043_customers_and_1869_churners(telco_csv):
    customers = _read(telco_csv)
    assert len(customers.batch) == 7043
    assert int(customers.churned.sum()) == 1869
    assert len(set(customers.ids.to_pylist())) == 7043


def test_blank_total_charges_of_new_customers_reads_as_zero(telco_csv):
    contract = telco_contract()
    customers = _read(telco_csv)
    tenure = customers.batch.numbers[:, [f.name for f in contract.number_fields].index("tenure")]
    total = customers.batch.numbers[:, [f.name for f in contract.number_fields].index("TotalCharges")]
    assert int((tenure == 0).sum()) == 11
    assert np.all(total[tenure == 0] == 0.0)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("Contract", "Weekly", "is not one of"),
        ("tenure", "-3", "between"),
        ("tenure", "2.5", "whole number"),
        ("MonthlyCharges", "abc", "is not a number"),
        ("MonthlyCharges", "nan", "is not a number"),
        ("MonthlyCharges", "inf", "is not a number"),
        ("TotalCharges", "-1", "between"),
        ("SeniorCitizen", "2", "is not one of"),
        ("Churn", "Maybe", "is not Yes or No"),
    ],
)
def test_invalid_value_is_reported_with_column_line_and_value(telco_csv, tmp_path, column, value, reason):
    def edit(rows, fieldnames):
        rows[41][column] = value
        return rows, fieldnames

    broken = _rewrite(telco_csv, tmp_path / "broken.csv", edit)
    with pytest.raises(DataValidationError) as caught:
        _read(broken)
    problem = caught.value.problems[0]
    assert (problem.column, problem.line, problem.value) == (column, 43, value)
    assert reason in str(caught.value)


def test_blank_total_charges_with_tenure_is_rejected(telco_csv, tmp_path):
    def edit(rows, fieldnames):
        rows[0]["TotalCharges"] = " "
        return rows, fieldnames

    with pytest.raises(DataValidationError, match="TotalCharges"):
        _read(_rewrite(telco_csv, tmp_path / "blank.csv", edit))


def test_missing_and_unknown_columns_are_named(telco_csv, tmp_path):
    def edit(rows, fieldnames):
        for row in rows:
            row.pop("Contract")
            row["Region"] = "north"
        return rows, [*(f for f in fieldnames if f != "Contract"), "Region"]

    with pytest.raises(DataValidationError) as caught:
        _read(_rewrite(telco_csv, tmp_path / "columns.csv", edit))
    message = str(caught.value)
    assert "'Contract'" in message
    assert "column is missing" in message
    assert "'Region'" in message


def test_scoring_files_need_no_churn_column(telco_csv, tmp_path):
    def edit(rows, fieldnames):
        for row in rows:
            row.pop("Churn")
        return rows, [f for f in fieldnames if f != "Churn"]

    customers = _read(_rewrite(telco_csv, tmp_path / "no-label.csv", edit), require_target=False)
    assert customers.churned is None
    assert len(customers.batch) == 7043


def test_training_needs_the_churn_column(telco_csv, tmp_path):
    def edit(rows, fieldnames):
        for row in rows:
            row.pop("Churn")
        return rows, [f for f in fieldnames if f != "Churn"]

    with pytest.raises(DataValidationError, match="'Churn'"):
        _read(_rewrite(telco_csv, tmp_path / "no-label.csv", edit))


def test_errors_are_counted_beyond_the_reported_twenty(telco_csv, tmp_path):
    def edit(rows, fieldnames):
        for row in rows[:50]:
            row["gender"] = "Other"
        return rows, fieldnames

    with pytest.raises(DataValidationError, match=r"50 invalid value\(s\)") as caught:
        _read(_rewrite(telco_csv, tmp_path / "many.csv", edit))
    assert len(caught.value.problems) == 20


def test_data_path_prefers_option_then_environment_then_local_data(tmp_path, monkeypatch, telco_csv):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    local = tmp_path / "data" / "telco-customer-churn.csv"
    local.write_bytes(telco_csv.read_bytes())
    from_env = tmp_path / "env.csv"
    from_env.write_bytes(b"x")
    explicit = tmp_path / "explicit.csv"
    explicit.write_bytes(b"x")
    assert resolve_data_path(explicit, ModelSettings(data=from_env)) == explicit
    assert resolve_data_path(None, ModelSettings(data=from_env)) == from_env
    assert resolve_data_path(None, ModelSettings()) == Path("data/telco-customer-churn.csv")
    with pytest.raises(DataNotFoundError):
        resolve_data_path(tmp_path / "missing.csv", ModelSettings())
