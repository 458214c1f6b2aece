"""The GCRA limiter against the real Redis (each test in its own key prefix), and against a Redis of the
test's own that stalls (`DEBUG SLEEP`) or is down: one slow answer costs one request its check, a charge
is never counted twice, and only sustained failure opens the circuit."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis as redis_sync

from churn_authorizer.breaker import CircuitBreaker, CircuitState
from churn_authorizer.limiter import (
    RateDecision,
    RateLimiter,
    RateLimiterUnavailableError,
    redis_client,
)
from tests.support.services import free_port, port_open, wait_until

pytestmark = pytest.mark.integration

T = TypeVar("T")


def run(redis_url: str, body: Callable[[Callable[..., RateLimiter]], Awaitable[T]]) -> T:
    """Run `body(make_limiter)` in a fresh event loop, closing every client it made."""

    async def main() -> T:
        clients = []

        def make(
            prefix: str,
            period_s: float = 60.0,
            url: str = redis_url,
            timeout_s: float = 0.5,
            breaker: CircuitBreaker | None = None,
        ) -> RateLimiter:
            client = redis_client(url, timeout_s=timeout_s)
            clients.append(client)
            return RateLimiter(client, prefix=prefix, period_s=period_s, breaker=breaker or CircuitBreaker())

        try:
            return await body(make)
        finally:
            for client in clients:
                await client.aclose()

    return asyncio.run(main())


def test_limiter_allows_burst_then_denies_with_retry_after(redis_url, redis_prefix):
    async def body(make):
        limiter = make(redis_prefix, period_s=60.0)
        return [await limiter.hit("k1", limit=3) for _ in range(4)]

    decisions: list[RateDecision] = run(redis_url, body)
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    denied = decisions[3]
    # 3 per 60 s: one slot frees every 20 s.
    assert 19.0 < denied.retry_after_s <= 20.0
    assert denied.retry_after_header == "20"
    assert 59.0 < denied.reset_after_s <= 60.0


def test_limiter_frees_a_slot_after_one_emission_interval(redis_url, redis_prefix):
    async def body(make):
        limiter = make(redis_prefix, period_s=1.2)  # 2 per 1.2 s: a slot every 0.6 s
        first = [(await limiter.hit("k", limit=2)).allowed for _ in range(3)]
        await asyncio.sleep(0.7)
        after = [(await limiter.hit("k", limit=2)).allowed for _ in range(2)]
        return first, after

    first, after = run(redis_url, body)
    assert first == [True, True, False]
    assert after == [True, False]


def test_limiter_keeps_separate_budgets_per_key(redis_url, redis_prefix):
    async def body(make):
        limiter = make(redis_prefix)
        a = [(await limiter.hit("a", limit=1)).allowed for _ in range(2)]
        b = [(await limiter.hit("b", limit=1)).allowed for _ in range(2)]
        return a, b

    assert run(redis_url, body) == ([True, False], [True, False])


def test_limiter_is_atomic_under_concurrent_hits_from_many_clients(redis_url, redis_prefix):
    """Ten clients (as ten replicas would) race 100 hits at a budget of 25: exactly 25 get through."""

    async def body(make):
        limiters = [make(redis_prefix, timeout_s=5.0) for _ in range(10)]
        results = await asyncio.gather(*(limiters[i % 10].hit("shared", limit=25) for i in range(100)))
        return sum(d.allowed for d in results)

    assert run(redis_url, body) == 25


def test_limiter_bucket_expires_once_full_again(redis_url, redis_prefix):
    async def body(make):
        limiter = make(redis_prefix, period_s=60.0)
        await limiter.hit("k", limit=4)
        return limiter.bucket("k")

    bucket = run(redis_url, body)
    client = redis_sync.Redis.from_url(redis_url)
    try:
        ttl_ms = client.pttl(bucket)
    finally:
        client.close()
    assert 0 < ttl_ms <= 15_000  # one request of 4/min: full again after 15 s, then the key goes


def test_limiter_stops_asking_a_dead_redis_once_the_circuit_opens(redis_prefix):
    dead = f"redis://127.0.0.1:{free_port()}/0"

    async def body(make):
        breaker = CircuitBreaker(failures=3, open_s=30.0)
        limiter = make(redis_prefix, url=dead, breaker=breaker)
        started = time.monotonic()
        errors = []
        for _ in range(10):
            with pytest.raises(RateLimiterUnavailableError) as raised:
                await limiter.hit("k", limit=1)
            errors.append(raised.value)
        return time.monotonic() - started, errors, breaker.state

    elapsed, errors, state = run("unused", body)
    assert elapsed < 2.0
    assert [e.__cause__ is not None for e in errors] == [True] * 3 + [False] * 7  # 3 tries, then skipped
    assert state is CircuitState.OPEN


def test_one_stalled_answer_costs_one_request_not_everyones_limit(dedicated_redis, redis_prefix):
    """Redis stalls for 1 s: the request caught in it fails (its failure mode decides it); the next ones
    are counted again at once, the circuit never opens, and nobody's limit is lifted for a second."""

    async def body(make):
        breaker = CircuitBreaker(failures=3)
        limiter = make(redis_prefix, url=dedicated_redis.url, timeout_s=0.1, breaker=breaker)
        assert (await limiter.hit("k", limit=3)).allowed  # 1 of 3; also loads the script
        stall = dedicated_redis.stall(1.0)
        with pytest.raises(RateLimiterUnavailableError) as caught:
            await limiter.hit("k", limit=3)
        await asyncio.to_thread(stall.join, 5)
        after = [(await limiter.hit("k", limit=3)).allowed for _ in range(3)]
        return caught.value, after, breaker.state

    error, after, state = run("unused", body)
    assert isinstance(error.__cause__, Exception)
    assert "Timeout" in type(error.__cause__).__name__
    # The timed-out charge still ran once when Redis woke up: 1 + 1 of 3 spent, one left, then 429.
    assert after == [True, False, False]
    assert state is CircuitState.CLOSED


def test_a_charge_whose_answer_timed_out_is_counted_once(dedicated_redis, redis_prefix):
    """No retry after a timeout: the command already sent runs once when Redis wakes. The stall (1 s) is
    longer than the timeout (0.6 s) but shorter than two: a client that retried would reconnect, wait, and
    send the charge again right after Redis woke, charging twice (checked: with `Retry(NoBackoff(), 1)` in
    redis_client this test fails)."""

    async def body(make):
        limiter = make(redis_prefix, url=dedicated_redis.url, timeout_s=0.6)
        first = await limiter.hit("k", limit=10)
        stall = dedicated_redis.stall(1.0)
        with pytest.raises(RateLimiterUnavailableError):
            await limiter.hit("k", limit=10)
        await asyncio.to_thread(stall.join, 5)
        return first, await limiter.hit("k", limit=10)

    first, third = run("unused", body)
    assert first.remaining == 9
    assert third.remaining == 7  # first, the timed-out one, this one: exactly three charges


def test_the_circuit_closes_again_when_redis_returns(dedicated_redis, redis_prefix):
    port = dedicated_redis.port

    async def body(make):
        breaker = CircuitBreaker(failures=2, open_s=0.3)
        limiter = make(redis_prefix, url=dedicated_redis.url, timeout_s=0.2, breaker=breaker)
        assert (await limiter.hit("k", limit=100)).allowed
        dedicated_redis.stop()
        for _ in range(4):
            with pytest.raises(RateLimiterUnavailableError):
                await limiter.hit("k", limit=100)
        opened = breaker.state
        restarted = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        dedicated_redis.process = restarted  # stopped by the fixture, by its PID
        await asyncio.to_thread(wait_until, lambda: port_open("127.0.0.1", port), 10, "redis restart")
        await asyncio.sleep(0.35)
        return opened, (await limiter.hit("k", limit=100)).allowed, breaker.state

    opened, allowed, state = run("unused", body)
    assert opened is CircuitState.OPEN
    assert allowed is True  # the half-open probe reached the new Redis ...
    assert state is CircuitState.CLOSED  # ... and closed the circuit
