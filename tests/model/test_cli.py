"""The training-side commands as users call them (typer's runner, real registry in a temp home)."""

from __future__ import annotations

import csv
import http.server
import threading
from functools import partial

import pytest
from typer.testing import CliRunner

from churn_model.settings import get_settings
from churnops.cli import app

runner = CliRunner()


@pytest.fixture
def session_home(trained_model, monkeypatch):
    """Point the CLI at the session's trained registry."""
    monkeypatch.setenv("CHURNOPS_MODEL_HOME", str(trained_model.settings.home))
    monkeypatch.setenv("CHURNOPS_MODEL_DATA", str(trained_model.settings.data))
    get_settings.cache_clear()
    yield trained_model
    get_settings.cache_clear()


def test_data_validate_accepts_the_published_file(session_home):
    result = runner.invoke(app, ["data", "validate"])
    assert result.exit_code == 0, result.output
    assert "7043 customers, 1869 churners" in result.output


def test_data_validate_names_the_broken_value(session_home, telco_csv, tmp_path):
    lines = telco_csv.read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3].replace(",Male,", ",Unknown,").replace(",Female,", ",Unknown,")
    broken = tmp_path / "broken.csv"
    broken.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["data", "validate", "--data", str(broken)])
    assert result.exit_code == 1
    assert "gender" in result.output
    assert "line 4" in result.output
    assert "Unknown" in result.output


def test_train_if_missing_does_nothing_when_a_version_exists(session_home):
    result = runner.invoke(app, ["train", "--if-missing"])
    assert result.exit_code == 0, result.output
    assert "not training" in result.output


def test_value_objective_needs_both_economics(session_home):
    result = runner.invoke(app, ["train", "--offer-cost", "10"])
    assert result.exit_code == 1
    assert "--customer-value" in result.output


def test_score_writes_the_promised_columns(session_home, telco_csv, tmp_path):
    output = tmp_path / "scores.csv"
    result = runner.invoke(
        app, ["score", "--input", str(telco_csv), "--output", str(output), "--model-version", "champion"]
    )
    assert result.exit_code == 0, result.output
    with output.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 7043
    assert set(rows[0]) == {
        "customer_id",
        "churn_probability",
        "churn_prediction",
        "risk_level",
        "recommended_action",
    }
    assert {r["risk_level"] for r in rows} <= {"Low", "Medium", "High", "Very High"}


def test_report_is_self_contained_html(session_home, tmp_path):
    output = tmp_path / "report.html"
    png = tmp_path / "report.png"
    result = runner.invoke(app, ["report", "--output", str(output), "--png", str(png)])
    assert result.exit_code == 0, result.output
    document = output.read_text(encoding="utf-8")
    assert "data:image/png;base64," in document
    assert "<script" not in document
    assert 'src="http' not in document
    assert png.read_bytes().startswith(b"\x89PNG")


def test_promote_and_rollback_report_the_alias_move(session_home):
    # Only one version in the session registry: promoting it again is a no-op, rollback has nowhere to go.
    result = runner.invoke(app, ["promote", "1"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["rollback"])
    assert result.exit_code == 1
    assert "no earlier champion" in result.output


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def file_server(telco_csv):
    handler = partial(_Quiet, directory=str(telco_csv.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{telco_csv.name}"
    server.shutdown()
    server.server_close()


def test_download_keeps_the_file_only_when_its_checksum_matches(file_server, tmp_path, monkeypatch):
    get_settings.cache_clear()
    monkeypatch.setenv("CHURNOPS_MODEL_DATA_URL", file_server)
    target = tmp_path / "data" / "telco.csv"
    result = runner.invoke(app, ["data", "download", "--to", str(target)])
    assert result.exit_code == 0, result.output
    assert target.is_file()

    get_settings.cache_clear()
    monkeypatch.setenv("CHURNOPS_MODEL_DATA_SHA256", "0" * 64)
    other = tmp_path / "data" / "tampered.csv"
    result = runner.invoke(app, ["data", "download", "--to", str(other)])
    assert result.exit_code == 1
    assert "does not match" in result.output
    assert not other.exists()
    assert not list(other.parent.glob(".download-*"))
    get_settings.cache_clear()
