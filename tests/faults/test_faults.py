"""Invariants of the stack under load when a part of it fails (short runs of scripts/load/faults.py).

The real stack (MLServer, transformer, detector with its PostgreSQL store; the authorizer behind the
gateway for Redis) takes the client mix at ~100 requests/s from an open loop that records every request;
one fault is injected for a few seconds, and what must hold whatever the timing is asserted: nothing lost,
no 5xx outside the stated outage, recovery without a restart, nothing in flight cut. Figures are printed,
never asserted: scripts/faults.py runs the same scenarios at full length and reports them. Tests run in
file order on one stack; the SIGTERM test, which ends the transformer, is last.
"""

from __future__ import annotations

import pytest

from scripts.load.faults import (
    FaultReport,
    Phases,
    detector_outage,
    postgres_outage,
    predictor_restart,
    redis_outage,
    transformer_sigterm,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHORT = Phases(before_s=3.0, outage_s=8.0, after_s=4.0)
RATE = 100.0


def assert_invariants(report: FaultReport) -> None:
    text = "\n".join(report.lines())
    print(text)
    assert report.failed() == [], f"invariants failed under '{report.name}':\n{text}"


def test_predictor_kill_gives_503s_only_while_down_and_the_transformer_recovers_alone(healthy):
    report = predictor_restart(healthy, SHORT, rate=RATE)
    assert report.figures["503 answers"] > 0, "the kill was felt by clients"
    assert_invariants(report)


def test_detector_kill_costs_serving_nothing_and_payload_logging_resumes(healthy):
    report = detector_outage(healthy, SHORT, rate=RATE)
    assert_invariants(report)


def test_postgres_outage_loses_no_prediction_and_serving_is_unaffected(healthy):
    report = postgres_outage(healthy, SHORT, rate=RATE)
    assert report.figures["predictions served (200 answers)"] > 0
    assert_invariants(report)


def test_redis_outage_under_the_authorizer_fails_open_and_never_answers_5xx(healthy):
    assert healthy.redis_failure_mode == "open", "the configured (default) failure mode"
    report = redis_outage(healthy, SHORT, rate=RATE)
    assert_invariants(report)


def test_transformer_sigterm_answers_every_request_in_flight_and_exits(healthy):
    report = transformer_sigterm(healthy, Phases(before_s=3.0, outage_s=0.0, after_s=0.0), rate=RATE)
    assert_invariants(report)
