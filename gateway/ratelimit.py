"""Per-key rate limits (aiolimiter leaky buckets) whose memory stays bounded."""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict

from aiolimiter import AsyncLimiter


def client_key(address: str) -> str:
    """The bucket of a client address: an IPv6 client by its /64, which one subscriber usually
    holds whole (RFC 6177), an IPv4-mapped IPv6 address as the IPv4 address it is."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def pod_share(per_minute: int, replicas: int) -> int:
    """One pod's share of a service-wide budget, when `replicas` pods each count alone."""
    return max(1, per_minute // replicas)


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
