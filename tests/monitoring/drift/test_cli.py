"""`churnops monitor drift` and `churnops monitor drift-scenario` through the real command line."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from churnops.cli import app

runner = CliRunner()


def _drift(*args: str):
    return runner.invoke(app, ["monitor", "drift", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def monthly_charges_csv(tmp_path_factory, telco_csv):
    path = tmp_path_factory.mktemp("drift-cli") / "monthly-charges.csv"
    result = runner.invoke(
        app,
        [
            "monitor",
            "drift-scenario",
            "--shift",
            "monthly-charges",
            "--data",
            str(telco_csv),
            "--output",
            str(path),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return path


def test_drift_scenario_writes_a_customers_file_the_contract_accepts(monthly_charges_csv, trained_model):
    from churn_core.data import CustomerReader

    customers = CustomerReader(trained_model.contract, require_target=False).read_all(monthly_charges_csv)

    assert len(customers.batch) == 5000


def test_cli_json_gives_every_feature_and_the_dataset_verdict(
    monthly_charges_csv, artefact_dir, trained_model
):
    result = _drift(
        "--current",
        str(monthly_charges_csv),
        "--artefact",
        str(artefact_dir),
        "--backend",
        "scipy",
        "--format",
        "json",
    )

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["dataset_drift"] is True
    assert document["drifted"] == ["MonthlyCharges"]
    assert document["prediction"] is None
    by_name = {f["feature"]: f for f in document["features"]}
    assert list(by_name) == list(trained_model.contract.field_names)
    for item in by_name.values():
        assert {"test", "statistic", "p_value", "effect_size", "drift_detected"} <= item.keys()
    assert by_name["MonthlyCharges"]["drift_detected"] is True


def test_cli_exits_zero_when_nothing_drifts(drift_scenarios, artefact_dir):
    result = _drift(
        "--current",
        str(drift_scenarios["none"].customers),
        "--predictions",
        str(drift_scenarios["none"].predictions),
        "--artefact",
        str(artefact_dir),
        "--backend",
        "scipy",
        "--format",
        "json",
    )

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["dataset_drift"] is False
    assert document["prediction_drift"] is False


def test_cli_table_names_the_drifted_feature(monthly_charges_csv, artefact_dir):
    result = _drift(
        "--current", str(monthly_charges_csv), "--artefact", str(artefact_dir), "--backend", "scipy"
    )

    assert result.exit_code == 0, result.output
    # x1.15 prices barely move this model's output: drifted, harmless (lower case), listed first.
    assert re.search(r"MonthlyCharges .* drift ", result.stdout)
    assert result.stdout.index("MonthlyCharges") < result.stdout.index("gender")
    assert "severity: harmless" in result.stdout
    assert "dataset drift: yes (MonthlyCharges)" in result.stdout


def test_cli_html_report_is_self_contained(monthly_charges_csv, artefact_dir, tmp_path):
    html_path = tmp_path / "drift.html"
    png_path = tmp_path / "drift.png"
    result = _drift(
        "--current",
        str(monthly_charges_csv),
        "--artefact",
        str(artefact_dir),
        "--backend",
        "scipy",
        "--score",
        "--html",
        str(html_path),
        "--png",
        str(png_path),
    )

    assert result.exit_code == 0, result.output
    page = html_path.read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 20  # 19 fields and the churn probability
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert page.index("<table>") < page.index("<img")
    assert re.search(r'<tr class="drift"><td><a href="#f-MonthlyCharges">', page)
    # The verdict leads with the drifted field's estimated effect on the model's output.
    assert re.search(r'<p class="verdict[^"]*">(?i:[^<]*drift)[^<]*: MonthlyCharges \(churn rate [+-]', page)
    assert png_path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_cli_resolves_the_registered_champion(monthly_charges_csv, trained_model, monkeypatch):
    from churn_model.settings import get_settings

    monkeypatch.setenv("CHURNOPS_MODEL_HOME", str(trained_model.settings.home))
    get_settings.cache_clear()
    try:
        result = _drift("--current", str(monthly_charges_csv), "--backend", "scipy", "--format", "json")
    finally:
        get_settings.cache_clear()

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model_version"] == trained_model.version


def test_cli_rejects_an_invalid_customer_file_naming_column_and_line(
    monthly_charges_csv, artefact_dir, tmp_path
):
    lines = monthly_charges_csv.read_text(encoding="utf-8").splitlines()
    lines[3] = (
        lines[3]
        .replace("Month-to-month", "Weekly")
        .replace("One year", "Weekly")
        .replace("Two year", "Weekly")
    )
    broken = tmp_path / "broken.csv"
    broken.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = _drift("--current", str(broken), "--artefact", str(artefact_dir), "--backend", "scipy")

    assert result.exit_code == 1
    assert "'Contract', line 4: 'Weekly'" in result.output


def test_cli_rejects_predictions_that_do_not_match_the_customers(monthly_charges_csv, artefact_dir, tmp_path):
    scores = tmp_path / "scores.csv"
    scores.write_text("customer_id,churn_probability\nA,0.5\n", encoding="utf-8")

    result = _drift(
        "--current",
        str(monthly_charges_csv),
        "--artefact",
        str(artefact_dir),
        "--backend",
        "scipy",
        "--predictions",
        str(scores),
    )

    assert result.exit_code == 1
    assert "1 probabilities for 5000 customers" in result.output
