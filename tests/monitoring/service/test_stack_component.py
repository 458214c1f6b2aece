"""The detector as a component of the local stack (`churnops.stack`)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from churnops.stack import ServingPorts, detector_component, serving_stack, start_component, stop_component
from tests.support.services import drift_python, free_port

pytestmark = pytest.mark.integration


def test_stack_with_detector_points_the_payload_logger_at_it(artefact_dir):
    ports = ServingPorts(detector=free_port())
    components = serving_stack(
        artefact_dir, "1", Path("/nonexistent/python"), ports, with_detector=True, detector_python=None
    )
    assert [c.name for c in components] == ["detector", "predictor", "transformer"]
    transformer = components[-1]
    assert transformer.env["CHURNOPS_TRANSFORMER_PAYLOAD_LOGGER_URL"] == f"http://127.0.0.1:{ports.detector}/"
    assert [c.name for c in serving_stack(artefact_dir, "1", Path("/x"), ports)] == [
        "predictor",
        "transformer",
    ]


def test_detector_component_starts_from_the_drift_environment(artefact_dir, tmp_path):
    ports = ServingPorts(detector=free_port())
    component = detector_component(artefact_dir, ports, python=drift_python())
    component = component.with_env(CHURNOPS_DETECTOR_HOME=str(tmp_path)).logging_to(tmp_path / "detector.log")
    running = start_component(component, log=lambda _: None)
    try:
        ready = httpx.get(component.ready_url, timeout=5).json()
        assert ready["drift_detector"] is True
        assert ready["store"]["schema_ready"] is True
    finally:
        code = stop_component(running)
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete: -15 is a clean stop.
    assert code in {0, -15}
    assert "Application shutdown complete" in (tmp_path / "detector.log").read_text()
