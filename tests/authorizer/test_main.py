"""The authorizer's process entry point hands uvicorn the settings that matter under load."""

from __future__ import annotations

import pytest

from churn_authorizer import app as authorizer_app
from churn_authorizer import main
from churn_authorizer.settings import get_settings
from tests.support.uvicorn_options import uvicorn_options


def test_serve_keeps_idle_connections_longer_than_envoy_reuses_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Envoy pools its ext_authz connections; a server closing them after uvicorn's 5 s default races
    the next check on the same connection (a failed check: 403 or fail-open, by mesh setting)."""
    monkeypatch.setenv("CHURNOPS_AUTHORIZER_KEEP_ALIVE_TIMEOUT_S", "75")
    options = uvicorn_options(monkeypatch, lambda: main.serve(port=18000), authorizer_app, get_settings)
    assert options["timeout_keep_alive"] == 75
    assert options["port"] == 18000
