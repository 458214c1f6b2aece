"""The GCRA limiter against the real Redis (each test in its own key prefix)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis as redis_sync

from churn_authorizer.limiter import (
    RateDecision,
    RateLimiter,
    RateLimiterUnavailableError,
    redis_client,
)
from tests.support.services import free_port

pytestmark = pytest.mark.integration

T = TypeVar("T")


def run(redis_url: str, body: Callable[[Callable[..., RateLimiter]], Awaitable[T]]) -> T:
    """Run `body(make_limiter)` in a fresh event loop, closing every client it made."""

    async def main() -> T:
        clients = []

        def make(prefix: str, period_s: float = 60.0, url: str = redis_url, **kw: float) -> RateLimiter:
            client = redis_client(url, timeout_s=0.5)
            clients.append(client)
            return RateLimiter(client, prefix=prefix, period_s=period_s, **kw)

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
        limiters = [make(redis_prefix) for _ in range(10)]
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


def test_limiter_raises_unavailable_quickly_when_redis_is_down(redis_prefix):
    dead = f"redis://127.0.0.1:{free_port()}/0"

    async def body(make):
        limiter = make(redis_prefix, url=dead, retry_interval_s=30.0)
        started = time.monotonic()
        with pytest.raises(RateLimiterUnavailableError) as first:
            await limiter.hit("k", limit=1)
        with pytest.raises(RateLimiterUnavailableError) as second:
            await limiter.hit("k", limit=1)
        return time.monotonic() - started, first.value, second.value

    elapsed, first, second = run("unused", body)
    assert elapsed < 2.0
    assert first.__cause__ is not None  # a real Redis error ...
    assert second.__cause__ is None  # ... then skipped without trying, for retry_interval_s


def test_limiter_retries_redis_after_retry_interval(redis_url, redis_prefix):
    async def body(make):
        limiter = make(redis_prefix, retry_interval_s=0.2)
        limiter._down_until = time.monotonic() + 0.2  # as after a failure
        with pytest.raises(RateLimiterUnavailableError):
            await limiter.hit("k", limit=5)
        await asyncio.sleep(0.25)
        return (await limiter.hit("k", limit=5)).allowed

    assert run(redis_url, body) is True
