"""Keys of events received recently, each remembered for a bounded time and in a bounded number: how the
detector tells a re-delivered event from a new one without remembering everything it ever saw.

An `OrderedDict` in arrival order: since every key lives the same TTL, the oldest key is always first,
so expiry and the count bound both pop from the front. Keys are 16-byte digests (`halves.event_key`), so
the bound in keys is a bound in bytes (about 150 bytes a key with the dict's entry).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class RecentKeys:
    def __init__(
        self, *, ttl_seconds: float, max_keys: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl_seconds
        self.max_keys = max_keys
        self._clock = clock
        self._expires: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._expires)

    def __contains__(self, key: object) -> bool:
        self.prune()
        return key in self._expires

    def add(self, key: bytes) -> None:
        self._expires[key] = self._clock() + self.ttl
        self._expires.move_to_end(key)
        while len(self._expires) > self.max_keys:
            self._expires.popitem(last=False)

    def discard(self, key: bytes) -> None:
        self._expires.pop(key, None)

    def prune(self) -> None:
        now = self._clock()
        while self._expires:
            key, expires = next(iter(self._expires.items()))
            if expires > now:
                return
            del self._expires[key]
