"""A circuit breaker for the rate limiter's Redis: opens on SUSTAINED failure only, probes one call at a time.

Why it exists: one slow Redis answer must cost one request its limit check, not lift every key's limit on
the replica (the previous behaviour: any error skipped Redis for a second). The breaker stays closed
through isolated errors and opens when Redis is really gone:
- `failures` consecutive failures, or
- a failure ratio of at least `failure_ratio` among at least `min_calls` calls in the last `window_s`.
Open, it refuses calls for `open_s` (the limiter applies the failure mode without waiting on Redis), then
lets exactly ONE probe through (half-open); the probe's success closes it, its failure opens it again.

Why not a library: `circuitbreaker` 2.1.3 counts consecutive failures only, keeps every breaker in a
process-wide registry by name, and in half-open lets every concurrent call through (its `state` property
turns OPEN into HALF_OPEN on read, with no probe gate): under asyncio that is every in-flight check paying
the Redis timeout at once. `pybreaker` drives coroutines through tornado only, `aiobreaker` is unmaintained
since 2021. The state machine below is small and fully tested (tests/authorizer/test_breaker.py).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# Calls remembered for the ratio, at most: the window is a few seconds of checks, and a bound in memory
# holds whatever the request rate.
MAX_WINDOW_CALLS = 4096


class CircuitBreaker:
    def __init__(
        self,
        *,
        failures: int = 5,
        failure_ratio: float = 0.5,
        min_calls: int = 20,
        window_s: float = 10.0,
        open_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitState, CircuitState], None] | None = None,
    ) -> None:
        if failures < 1 or not 0.0 < failure_ratio <= 1.0 or min_calls < 1:
            raise ValueError("failures and min_calls must be >= 1, failure_ratio in (0, 1]")
        self.failures = failures
        self.failure_ratio = failure_ratio
        self.min_calls = min_calls
        self.window_s = window_s
        self.open_s = open_s
        self._clock = clock
        self._on_change = on_change
        self._state = CircuitState.CLOSED
        self._consecutive = 0
        self._calls: deque[tuple[float, bool]] = deque(maxlen=MAX_WINDOW_CALLS)
        self._open_until = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> CircuitState:
        return self._state

    def allow(self) -> bool:
        """May the caller try Redis now? In half-open, True for exactly one caller until it reports."""
        if self._state is CircuitState.CLOSED:
            return True
        if self._state is CircuitState.OPEN:
            if self._clock() < self._open_until:
                return False
            self._set(CircuitState.HALF_OPEN)
        if self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def record_success(self) -> None:
        self._consecutive = 0
        if self._state is not CircuitState.CLOSED:
            self._probe_in_flight = False
            self._calls.clear()
            self._set(CircuitState.CLOSED)
            return
        self._remember(ok=True)

    def record_failure(self) -> None:
        self._consecutive += 1
        if self._state is not CircuitState.CLOSED:
            self._probe_in_flight = False
            self._trip()
            return
        self._remember(ok=False)
        if self._consecutive >= self.failures or self._ratio_exceeded():
            self._trip()

    def _remember(self, *, ok: bool) -> None:
        now = self._clock()
        self._calls.append((now, ok))
        while self._calls and self._calls[0][0] < now - self.window_s:
            self._calls.popleft()

    def _ratio_exceeded(self) -> bool:
        if len(self._calls) < self.min_calls:
            return False
        failed = sum(1 for _, ok in self._calls if not ok)
        return failed / len(self._calls) >= self.failure_ratio

    def _trip(self) -> None:
        self._open_until = self._clock() + self.open_s
        self._calls.clear()
        self._set(CircuitState.OPEN)

    def _set(self, state: CircuitState) -> None:
        previous, self._state = self._state, state
        if previous is not state and self._on_change is not None:
            self._on_change(previous, state)
