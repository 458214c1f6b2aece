"""Per-key rate limits shared by every authorizer replica: GCRA in one Redis Lua script.

Why GCRA (the generic cell rate algorithm, i.e. a token bucket kept as one timestamp) rather than a sliding
window: one small string per key instead of a sorted set with an entry per request, O(1) work per check,
no double burst at window edges as with fixed windows, and the exact wait for the next allowed request falls
out of the arithmetic, which is what `Retry-After` needs. Semantics: a key may send `limit` requests per
`period` on average and at most `burst` (default: `limit`) back to back after resting.

The script reads the clock from Redis (`TIME`) so that replicas need no synchronised clocks, and runs
atomically, so concurrent checks from any number of replicas cannot both take the last slot. Why not a
library: `limits` (the maintained one) offers fixed, moving (one sorted-set entry per request) and
sliding-window-counter strategies but no GCRA or token bucket, and would bring its own Redis connection
handling where we need fail-fast timeouts; the script is 20 lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from churn_authorizer.breaker import CircuitBreaker

# KEYS[1]: bucket; ARGV[1]: emission interval T (µs); ARGV[2]: burst. Returns {allowed, remaining,
# retry_after_us, reset_after_us}. Numbers are Lua doubles: µs since the epoch (~2^51) stay exact.
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
local ttl_ms = math.ceil((new_tat - now) / 1000)
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ttl_ms)
return {1, math.floor((now - allow_at) / interval), 0, new_tat - now}
"""


class RateLimiterUnavailableError(Exception):
    """Redis could not be asked: it failed or timed out (`__cause__` set), or the circuit is open."""


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: float  # 0 when allowed
    reset_after_s: float  # until the bucket is full again

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, rounded up (a client retrying on time must succeed), at least 1."""
        return str(max(1, math.ceil(self.retry_after_s)))


def redis_client(url: str, timeout_s: float) -> Redis:
    """A client that fails fast and NEVER retries: short connect and read timeouts, no retry.

    A charge that timed out may still have run in Redis (the command was sent; only the answer was late),
    so a retry could charge the key twice. Making the charge idempotent instead (Envoy's `x-request-id` as
    the key of the charge) was rejected: inside the mesh a caller sets `x-request-id` itself, and replaying
    one id would then pass for free. A lost answer therefore costs that one request its limit check (the
    failure mode decides it), and the circuit breaker keeps a dead Redis from costing a timeout per request.
    `from_url` hands `retry` to every connection (redis/asyncio/connection.py, AbstractConnection: the
    connection retries ConnectionError and TimeoutError per its `retry`); `Retry(NoBackoff(), 0)` means one
    attempt. (redis-py 8's own client default is 10 retries with backoff: redis/_defaults.py.)
    """
    return Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )


class RateLimiter:
    def __init__(self, redis: Redis, *, prefix: str, period_s: float, breaker: CircuitBreaker) -> None:
        self.redis = redis
        self.prefix = prefix
        self.period_s = period_s
        self.breaker = breaker
        self._script = redis.register_script(GCRA_LUA)

    def bucket(self, key_id: str) -> str:
        return f"{self.prefix}rl:{key_id}"

    async def hit(self, key_id: str, limit: int, burst: int | None = None) -> RateDecision:
        """Charge one request of `key_id` against `limit` per period, exactly once.

        Raises RateLimiterUnavailableError when Redis fails or times out (with the error as `__cause__`),
        and without trying while the circuit breaker is open.
        """
        if not self.breaker.allow():
            raise RateLimiterUnavailableError("redis circuit open")
        interval_us = max(1, round(self.period_s * 1_000_000 / limit))
        capacity = burst if burst is not None else limit
        try:
            result: Any = await self._script(keys=[self.bucket(key_id)], args=[interval_us, capacity])
        except (RedisError, OSError) as exc:
            self.breaker.record_failure()
            raise RateLimiterUnavailableError(type(exc).__name__) from exc
        self.breaker.record_success()
        allowed, remaining, retry_us, reset_us = (int(v) for v in result)
        return RateDecision(
            allowed=bool(allowed),
            limit=limit,
            remaining=max(0, remaining),
            retry_after_s=retry_us / 1_000_000,
            reset_after_s=max(0, reset_us) / 1_000_000,
        )
