"""Publishes a domain's outbox rows to Kafka, in order, at least once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import asyncpg
from aiokafka import AIOKafkaProducer

log = logging.getLogger(__name__)

# One relay per domain at a time keeps each key's events in order.
TAKE_TURN = "SELECT pg_try_advisory_xact_lock(hashtext('outbox:' || $1))"
PENDING = """
SELECT id, topic, key, payload, headers FROM outbox
WHERE domain = $1 AND published_at IS NULL ORDER BY id LIMIT $2
"""
MARK_PUBLISHED = "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])"
PRUNE = """
DELETE FROM outbox WHERE domain = $1 AND published_at < now() - make_interval(secs => $2)
"""
KEEP_PUBLISHED_S = 7 * 24 * 3600
PRUNE_EVERY_S = 600.0


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        domain: str,
        *,
        batch: int = 200,
        idle_poll_s: float = 1.0,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._domain = domain
        self._batch = batch
        self._idle_poll_s = idle_poll_s
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Tell the relay that a transaction with events has just committed."""
        self._wake.set()

    async def relay_once(self) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(TAKE_TURN, self._domain):
                return 0
            rows = await conn.fetch(PENDING, self._domain, self._batch)
            if not rows:
                return 0
            sends = [
                await self._producer.send(
                    r["topic"],
                    key=r["key"].encode(),
                    value=json.dumps(r["payload"]).encode(),
                    headers=[(k, str(v).encode()) for k, v in r["headers"].items()],
                )
                for r in rows
            ]
            await asyncio.gather(*sends)
            await conn.execute(MARK_PUBLISHED, [r["id"] for r in rows])
        return len(rows)

    async def prune(self) -> int:
        """Forget events published more than a week ago."""
        status: str = await self._pool.execute(PRUNE, self._domain, float(KEEP_PUBLISHED_S))
        return int(status.split()[-1])

    async def run(self) -> None:
        backoff = 0.1
        next_prune = 0.0
        while True:
            self._wake.clear()
            try:
                if time.monotonic() >= next_prune:
                    await self.prune()
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                sent = await self.relay_once()
                backoff = 0.1
            except Exception as e:
                log.warning("outbox relay failed, retrying in %.1f s: %s", backoff, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if sent < self._batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._idle_poll_s)
