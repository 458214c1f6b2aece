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
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

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
    """Redis could not be asked (down, timed out, or skipped after a recent failure)."""


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
    """A client that fails fast: no backoff, one immediate retry (a pooled connection may have gone stale
    when Redis restarted), short connect and read timeouts."""
    return Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
    )


class RateLimiter:
    def __init__(self, redis: Redis, *, prefix: str, period_s: float, retry_interval_s: float = 1.0) -> None:
        self.redis = redis
        self.prefix = prefix
        self.period_s = period_s
        self.retry_interval_s = retry_interval_s
        self._script = redis.register_script(GCRA_LUA)
        self._down_until = float("-inf")

    def bucket(self, key_id: str) -> str:
        return f"{self.prefix}rl:{key_id}"

    async def hit(self, key_id: str, limit: int, burst: int | None = None) -> RateDecision:
        """Count one request of `key_id` against `limit` per period.

        Raises RateLimiterUnavailableError when Redis fails, and for `retry_interval_s` after a failure
        without trying (so an outage costs one timeout per interval, not one per request).
        """
        if time.monotonic() < self._down_until:
            raise RateLimiterUnavailableError("redis marked down after a recent error")
        interval_us = max(1, round(self.period_s * 1_000_000 / limit))
        capacity = burst if burst is not None else limit
        try:
            result: Any = await self._script(keys=[self.bucket(key_id)], args=[interval_us, capacity])
        except (RedisError, OSError) as exc:
            self._down_until = time.monotonic() + self.retry_interval_s
            raise RateLimiterUnavailableError(type(exc).__name__) from exc
        self._down_until = float("-inf")
        allowed, remaining, retry_us, reset_us = (int(v) for v in result)
        return RateDecision(
            allowed=bool(allowed),
            limit=limit,
            remaining=max(0, remaining),
            retry_after_s=retry_us / 1_000_000,
            reset_after_s=max(0, reset_us) / 1_000_000,
        )
