"""The detector's process entry point hands uvicorn the settings that matter under load."""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn

from churn_monitoring.service import app as service_app
from churn_monitoring.service import main
from churn_monitoring.settings import get_settings


def test_serve_keeps_idle_connections_longer_than_clients_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn's 5 s default closed pooled feedback connections just as clients reused them (the soak's
    `connection closed` errors); the detector must outlast the common 60 s client idle timeout."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(service_app, "create_app", lambda settings: object())
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append(options))
    get_settings.cache_clear()
    try:
        main.serve(port=18095)
    finally:
        get_settings.cache_clear()
    assert calls
    assert calls[0]["timeout_keep_alive"] == get_settings().keep_alive_timeout_s > 60
    assert calls[0]["port"] == 18095
