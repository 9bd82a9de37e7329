"""Per-key rate limits (aiolimiter leaky buckets) whose memory stays bounded."""

from __future__ import annotations

import math
from collections import OrderedDict

from aiolimiter import AsyncLimiter


class KeyedLimiter:
    """One leaky bucket per key; the least recently used keys go first past `max_keys`.

    A bucket that has drained is the same as a new one, so dropping idle keys loses nothing.
    """

    def __init__(self, per_minute: int, max_keys: int) -> None:
        self.per_minute = per_minute
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, AsyncLimiter] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    async def try_acquire(self, key: str) -> int | None:
        """Take one unit now; or, when the bucket is full, how many seconds to wait."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = AsyncLimiter(self.per_minute, 60)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        if not bucket.has_capacity():
            return max(1, math.ceil(60 / self.per_minute))
        await bucket.acquire()  # there is capacity, so this does not wait
        return None
