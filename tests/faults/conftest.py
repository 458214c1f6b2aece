"""Fixtures of the fault tests: one local stack for the module that can host every scenario (PostgreSQL
store behind our proxy, authorizer and gateway with Redis behind our proxy, predictor behind our proxy),
on the session's trained artefact. Starting MLServer, the transformer and the detector is most of a
scenario's cost, so the scenarios share it; each leaves the stack as it found it (or `healthy` puts it
back), and the SIGTERM scenario, which ends the transformer, runs last."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.load.faults import SCENARIOS, stack_for
from scripts.load.localstack import LocalStack, StackOptions, local_stack
from tests.support.services import ensure_postgres, ensure_redis, predictor_python, unavailable


@pytest.fixture(scope="module")
def fault_stack(trained_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    python = predictor_python()
    if not (python.parent / "mlserver").exists():
        unavailable(f"mlserver is not installed next to {python}")
    ensure_postgres()
    ensure_redis()
    base = StackOptions(
        workers=1,
        # The detector from this venv on the scipy backend: the same service, a faster start than alibi's.
        detector_python=Path(sys.executable),
        detector_env={"CHURNOPS_DETECTOR_DRIFT_BACKEND": "scipy"},
    )
    options = stack_for(list(SCENARIOS), base)
    scratch = tmp_path_factory.mktemp("fault-stack")
    with local_stack(trained_model.artefact, trained_model.version, scratch, options) as stack:
        yield stack


@pytest.fixture
def healthy(fault_stack: LocalStack) -> LocalStack:
    """The shared stack with every process running and every proxy forwarding, undelayed."""
    for name, running in list(fault_stack.running.items()):
        if running.process.poll() is not None:
            fault_stack.restart(name)
    for proxy in fault_stack.proxies.values():
        proxy.delay_s = 0.0
        if proxy.cut_off:
            proxy.restore()
    return fault_stack
