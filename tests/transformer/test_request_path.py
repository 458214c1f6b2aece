"""One v2 request's path through the transformer's own code: at most five modules (issue 9).

The app runs in this process (httpx's ASGI transport) against the session's real predictor; a profile
hook records every function of `churn_transformer` and `churn_core` that runs while one v2 request is
answered. The list is printed (`pytest -s`) so a reader sees the path.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import pytest

from tests.transformer.conftest import v2_outputs, v2_request

pytestmark = pytest.mark.integration

MAX_TRANSFORMER_MODULES = 5
PACKAGES = ("churn_transformer", "churn_core")


def _module_of(filename: str) -> str | None:
    parts = Path(filename).with_suffix("").parts
    for package in PACKAGES:
        if package in parts:
            return ".".join(parts[parts.index(package) :])
    return None


async def _one_request(app: Any, body: dict[str, Any]) -> tuple[httpx.Response, dict[str, set[str]]]:
    transport = httpx.ASGITransport(app=app)
    ran: dict[str, set[str]] = {}

    def profile(frame: FrameType, event: str, _: Any) -> None:
        if event == "call":
            module = _module_of(frame.f_code.co_filename)
            if module is not None:
                ran.setdefault(module, set()).add(frame.f_code.co_name)

    async with httpx.AsyncClient(transport=transport, base_url="http://transformer") as client:
        warm = await client.post("/v2/models/churn/infer", json=body)  # lazy starts (channel, batcher)
        assert warm.status_code == 200, warm.text
        sys.setprofile(profile)
        try:
            response = await client.post("/v2/models/churn/infer", json=body)
        finally:
            sys.setprofile(None)
    return response, ran


def test_one_v2_request_runs_in_at_most_five_transformer_modules(artefact_dir, predictor, customers):
    from churn_transformer.app import TransformerApp
    from churn_transformer.model import ChurnTransformer
    from churn_transformer.settings import TransformerSettings

    settings = TransformerSettings(model_dir=artefact_dir, predictor_host=f"127.0.0.1:{predictor.grpc_port}")
    model = ChurnTransformer("churn", settings, settings.predictor_host or "")
    model.mark_ready()
    app = TransformerApp(model, settings)

    async def run() -> tuple[httpx.Response, dict[str, set[str]]]:
        try:
            return await _one_request(app, v2_request(customers[:1]))
        finally:
            await model.scorer.close()

    response, ran = asyncio.run(run())
    assert response.status_code == 200, response.text
    assert len(v2_outputs(response.json())["churn_probability"]) == 1
    print("\nmodules whose functions ran for one v2 request:")
    for module in sorted(ran):
        print(f"  {module}: {', '.join(sorted(ran[module]))}")
    ours = sorted(m for m in ran if m.startswith("churn_transformer."))
    assert len(ours) <= MAX_TRANSFORMER_MODULES, ours
    assert {"churn_transformer.app", "churn_transformer.model", "churn_transformer.engine"} <= set(ours)
