"""What a service's `serve()` hands uvicorn, without serving: its app factory and uvicorn.run replaced."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import uvicorn


def uvicorn_options(
    monkeypatch: pytest.MonkeyPatch,
    serve: Callable[[], None],
    app_module: ModuleType,
    settings_cache: Any,
) -> dict[str, Any]:
    """The keyword options `serve()` passes to uvicorn.run, its settings read afresh (the cached object is
    cleared before and after, so the environment `monkeypatch` set is the one read)."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(app_module, "create_app", lambda settings: object())
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append(options))
    settings_cache.cache_clear()
    try:
        serve()
    finally:
        settings_cache.cache_clear()
    assert len(calls) == 1, "serve() runs uvicorn once"
    return calls[0]
