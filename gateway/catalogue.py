"""Catalogue pages the gateway answered, kept as JSON bytes until products.events says otherwise.

A page is served from here only while `ProductsEventsWatcher` follows every partition of
products.events: any message there (a product written by any gateway or a partner feed, stock
held or released for an order) empties the cache, and so does a catalogue write this gateway
sends, once its reply is in and before the client hears of it. When the watcher cannot vouch
for having seen every change (the broker is down, the consumer is starting), the cache stores
and serves nothing: reads go to gRPC.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from agents.common.kafka_auth import client_options
from agents.common.settings import KafkaSecurity
from topics import PRODUCTS_EVENTS

log = logging.getLogger(__name__)

# (the first page's number: 1 on the seed's route, 0 on /api/v1; page index, page size,
# keyset cursor or 0)
PageKey = tuple[int, int, int, int]

MAX_PAGES = 256
# Local writes empty the cache at once; the watcher brings the changes made elsewhere, so it
# can afford a long poll. The broker answers a fetch by this wait even when nothing came,
# which is what keeps the poll times fresh.
FETCH_MAX_WAIT_MS = 500
# The cache serves while every partition was polled this recently.
FRESH_FOR_S = 2.0
RETRY_S = 1.0


class PageCache:
    """ListProducts replies as the response bytes, per PageKey, least recently used out first.

    `generation` moves on every invalidation: a read notes it before fetching and passes it to
    `put`, which drops the page if it moved, as the page may predate the change.
    """

    def __init__(self, max_pages: int = MAX_PAGES) -> None:
        self._pages: OrderedDict[PageKey, bytes] = OrderedDict()
        self._max_pages = max_pages
        self._serving_until = float("-inf")
        self.generation = 0

    def __len__(self) -> int:
        return len(self._pages)

    @property
    def serving(self) -> bool:
        return time.monotonic() < self._serving_until

    def serve_until(self, deadline: float) -> None:
        """Changes are being watched: serve until `deadline` (time.monotonic()) at most."""
        self._serving_until = deadline

    def stop_serving(self) -> None:
        self._serving_until = float("-inf")

    def get(self, key: PageKey) -> bytes | None:
        if not self.serving:
            return None
        body = self._pages.get(key)
        if body is not None:
            self._pages.move_to_end(key)
        return body

    def put(self, key: PageKey, body: bytes, generation: int) -> None:
        """Keep a page fetched when the generation was `generation`, unless it has moved on."""
        if generation != self.generation or not self.serving:
            return
        self._pages[key] = body
        self._pages.move_to_end(key)
        while len(self._pages) > self._max_pages:
            self._pages.popitem(last=False)

    def invalidate(self) -> None:
        self.generation += 1
        self._pages.clear()


def events_consumer(bootstrap: str, security: KafkaSecurity | None = None) -> Any:
    """A plain consumer: no group (nothing to commit, no rebalance), a long fetch wait."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        **client_options(security or KafkaSecurity()),
    )


class ProductsEventsWatcher:
    """Empties `cache` on every message of products.events, and lets it serve while it follows."""

    def __init__(
        self,
        cache: PageCache,
        make_consumer: Callable[[], Any],
        *,
        topic: str = PRODUCTS_EVENTS.name,
        partitions: int = PRODUCTS_EVENTS.partitions,
        fresh_for_s: float = FRESH_FOR_S,
        retry_s: float = RETRY_S,
    ) -> None:
        self._cache = cache
        self._make_consumer = make_consumer
        self._topic = topic
        self._partitions = partitions
        self._fresh_for_s = fresh_for_s
        self._retry_s = retry_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="catalogue-watcher")

    async def stop(self) -> None:
        self._cache.stop_serving()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            consumer = self._make_consumer()
            try:
                await consumer.start()
                await self._follow(consumer)
            except Exception as e:
                log.warning("not following %s, again in %.1f s: %r", self._topic, self._retry_s, e)
            finally:
                self._cache.stop_serving()
                self._cache.invalidate()
                await self._close(consumer)
            await asyncio.sleep(self._retry_s)

    async def _close(self, consumer: Any) -> None:
        try:
            await consumer.stop()
        except (KafkaError, OSError) as e:
            log.warning("closing the %s consumer failed: %r", self._topic, e)

    async def _follow(self, consumer: Any) -> None:
        known = consumer.partitions_for_topic(self._topic) or range(self._partitions)
        tps = [TopicPartition(self._topic, p) for p in sorted(known)]
        consumer.assign(tps)
        # Earlier changes are in what the pages read from now on; only later ones matter.
        await consumer.seek_to_end(*tps)
        following = False
        while True:
            batches = await consumer.getmany(*tps, timeout_ms=FETCH_MAX_WAIT_MS)
            if any(batches.values()):
                self._cache.invalidate()
            left = self._fresh_for(consumer, tps)
            # Pages read while nobody was watching may be stale, whichever way it turns.
            if (left > 0) != following:
                following = left > 0
                self._cache.invalidate()
                log.info("%s %s", "following" if following else "lost", self._topic)
            if following:
                self._cache.serve_until(time.monotonic() + left)
            else:
                self._cache.stop_serving()

    def _fresh_for(self, consumer: Any, tps: list[TopicPartition]) -> float:
        """Seconds left before the oldest partition poll is too old; <= 0 when it already is."""
        polls: list[int | None] = [consumer.last_poll_timestamp(tp) for tp in tps]
        if any(p is None for p in polls):
            return 0.0
        oldest_ms = min(p for p in polls if p is not None)
        return oldest_ms / 1000 + self._fresh_for_s - time.time()
