"""The detector's process entry point hands uvicorn the settings that matter under load."""

from __future__ import annotations

import pytest

from churn_monitoring.service import app as service_app
from churn_monitoring.service import main
from churn_monitoring.settings import get_settings
from tests.support.uvicorn_options import uvicorn_options


def test_serve_keeps_idle_connections_longer_than_clients_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn's 5 s default closed pooled feedback connections just as clients reused them (the soak's
    `connection closed` errors); the detector must outlast the common 60 s client idle timeout."""
    options = uvicorn_options(monkeypatch, lambda: main.serve(port=18095), service_app, get_settings)
    assert options["timeout_keep_alive"] == get_settings().keep_alive_timeout_s > 60
    assert options["port"] == 18095
