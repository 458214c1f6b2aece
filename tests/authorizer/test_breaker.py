"""The Redis circuit breaker's state machine, on a clock the test moves."""

from __future__ import annotations

import pytest

from churn_authorizer.breaker import CircuitBreaker, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breaker(clock: Clock, **kw) -> tuple[CircuitBreaker, list[tuple[str, str]]]:
    changes: list[tuple[str, str]] = []
    settings = {"failures": 3, "failure_ratio": 0.5, "min_calls": 10, "window_s": 10.0, "open_s": 2.0}
    settings.update(kw)
    made = CircuitBreaker(clock=clock, on_change=lambda a, b: changes.append((a.value, b.value)), **settings)
    return made, changes


def test_isolated_failures_never_open_the_circuit(clock):
    """One slow answer costs one request its check: the next call goes to Redis again."""
    circuit, changes = breaker(clock)
    for _ in range(50):
        assert circuit.allow()
        circuit.record_failure()
        assert circuit.allow()
        circuit.record_success()
        assert circuit.allow()
        circuit.record_success()
        clock.now += 0.1
    assert circuit.state is CircuitState.CLOSED
    assert changes == []


def test_consecutive_failures_open_it_and_calls_are_refused_until_open_s(clock):
    circuit, changes = breaker(clock)
    for _ in range(3):
        assert circuit.allow()
        circuit.record_failure()
    assert circuit.state is CircuitState.OPEN
    assert changes == [("closed", "open")]
    assert not circuit.allow()
    clock.now += 1.9
    assert not circuit.allow()


def test_failure_ratio_over_the_window_opens_it(clock):
    """Alternating failures never make 3 in a row, but 50 % of 10 calls does."""
    circuit, _ = breaker(clock, failures=100)
    for index in range(10):
        assert circuit.allow()
        if index % 2:
            circuit.record_failure()
        else:
            circuit.record_success()
    assert circuit.state is CircuitState.OPEN


def test_the_ratio_forgets_calls_older_than_the_window(clock):
    circuit, _ = breaker(clock, failures=100)
    for _ in range(9):
        circuit.record_failure()
        circuit.record_success()  # 9 failures of 18 calls ...
    clock.now += 11.0  # ... all outside the window now
    for _ in range(9):
        circuit.record_success()
    circuit.record_failure()  # 1 of 10 within the window
    assert circuit.state is CircuitState.CLOSED


def test_half_open_lets_exactly_one_probe_through(clock):
    circuit, changes = breaker(clock)
    for _ in range(3):
        circuit.record_failure()
    clock.now += 2.0
    assert circuit.allow()  # the probe
    assert circuit.state is CircuitState.HALF_OPEN
    assert not circuit.allow()  # everyone else meanwhile: the failure mode, no Redis wait
    assert not circuit.allow()
    circuit.record_success()
    assert circuit.state is CircuitState.CLOSED
    assert circuit.allow()
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_a_failed_probe_opens_the_circuit_for_another_open_s(clock):
    circuit, changes = breaker(clock)
    for _ in range(3):
        circuit.record_failure()
    clock.now += 2.0
    assert circuit.allow()
    circuit.record_failure()
    assert circuit.state is CircuitState.OPEN
    assert not circuit.allow()
    clock.now += 2.0
    assert circuit.allow()
    assert changes[-2:] == [("half_open", "open"), ("open", "half_open")]


def test_window_memory_is_bounded():
    circuit = CircuitBreaker(failures=10**9, failure_ratio=1.0, min_calls=10**9, window_s=1e9)
    for _ in range(10_000):
        circuit.record_success()
    assert len(circuit._calls) <= 4096


def test_nonsense_settings_are_refused():
    with pytest.raises(ValueError, match="failure_ratio"):
        CircuitBreaker(failure_ratio=0.0)
    with pytest.raises(ValueError, match="failures"):
        CircuitBreaker(failures=0)
