"""The authorizer's process entry point hands uvicorn the settings that matter under load."""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn

from churn_authorizer import app as authorizer_app
from churn_authorizer import main
from churn_authorizer.settings import get_settings


def test_serve_keeps_idle_connections_longer_than_envoy_reuses_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Envoy pools its ext_authz connections; a server closing them after uvicorn's 5 s default races
    the next check on the same connection (a failed check: 403 or fail-open, by mesh setting)."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setenv("CHURNOPS_AUTHORIZER_KEEP_ALIVE_TIMEOUT_S", "75")
    monkeypatch.setattr(authorizer_app, "create_app", lambda settings: object())
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append(options))
    get_settings.cache_clear()
    try:
        main.serve(port=18000)
    finally:
        get_settings.cache_clear()
    assert calls
    assert calls[0]["timeout_keep_alive"] == 75
    assert calls[0]["port"] == 18000
