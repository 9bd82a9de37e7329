"""Events to Kafka: published right after their commit; the outbox is for what a failure left.

Every event is written to the outbox in the transaction that decides it. Once that transaction
has committed, the Publisher sends the events and the replies at once. The OutboxSweeper
publishes, in order, what was not sent: after a crash (at start), after a publish failure
(woken locally or by NOTIFY from another process), and every minute in case. A message that
can never be published (its topic is gone, it is too large) is kept as dead with the reason,
and the ones behind it flow on. No transaction stays open while Kafka acknowledges.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import BaseModel

from agents.common.failures import is_transient, retry_while_transient
from topics.envelope import Headers, Reply

log = logging.getLogger(__name__)

WRITE_EVENTS = """
INSERT INTO outbox (domain, topic, key, payload, headers)
SELECT $1, t, k, p::jsonb, h::jsonb FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])
    AS e(t, k, p, h)
RETURNING id
"""
# Losing this mark in a crash only publishes the events again: no need to wait for the disk.
MARK_PUBLISHED = """
UPDATE outbox SET published_at = now()
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
WHERE id = ANY($1::bigint[])
"""
MARK_DEAD = "UPDATE outbox SET dead_at = now(), dead_reason = $2 WHERE id = $1"
RECORD_DEAD = """
INSERT INTO outbox (domain, topic, key, payload, headers, dead_at, dead_reason)
VALUES ($1, $2, $3, $4::jsonb, '{}'::jsonb, now(), $5)
"""
# A sweep takes the rows written before it began (less `min_age`): what commits meanwhile is
# the Publisher's, which would otherwise send it a second time.
CUTOFF = "SELECT now() - make_interval(secs => $1)"
PENDING = """
SELECT id, topic, key, payload::text AS payload, headers FROM outbox
WHERE domain = $1 AND published_at IS NULL AND dead_at IS NULL AND created_at < $2
ORDER BY id LIMIT $3
"""
# One sweeper per domain at a time keeps each key's events in order; a session lock, so no
# transaction is open while Kafka acknowledges.
TAKE_TURN = "SELECT pg_try_advisory_lock(hashtext('outbox:' || $1))"
GIVE_TURN = "SELECT pg_advisory_unlock(hashtext('outbox:' || $1))"
PRUNE = """
DELETE FROM outbox WHERE domain = $1 AND published_at < now() - make_interval(secs => $2)
"""
CHANNEL = "outbox"
KEEP_PUBLISHED_S = 7 * 24 * 3600
PRUNE_EVERY_S = 600.0
SWEEP_EVERY_S = 60.0
# A row younger than this may still be on its way through the Publisher.
SWEEP_GRACE_S = 5.0
SEND_TIMEOUT_S = 10.0
REPLY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Outgoing:
    """One outbox row, ready for Kafka."""

    id: int
    topic: str
    key: str
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


def event_type(event: BaseModel) -> str:
    return str(getattr(event, "type", type(event).__name__))


async def write_events(
    conn: asyncpg.Connection,
    domain: str,
    events: Sequence[tuple[str, str, BaseModel]],
    headers: dict[str, str] | None = None,
) -> list[Outgoing]:
    """Add (topic, key, event) rows to the outbox in one statement; return them with their ids."""
    if not events:
        return []
    values = [e.model_dump_json() for _, _, e in events]
    all_headers = [{**(headers or {}), Headers.TYPE: event_type(e)} for _, _, e in events]
    ids = await conn.fetch(
        WRITE_EVENTS,
        domain,
        [t for t, _, _ in events],
        [k for _, k, _ in events],
        values,
        [json.dumps(h) for h in all_headers],
    )
    return [
        Outgoing(r["id"], t, k, v.encode(), tuple((name, str(x).encode()) for name, x in h.items()))
        for r, (t, k, _), v, h in zip(ids, events, values, all_headers, strict=True)
    ]


def reply_envelope(correlation_id: str, reply: Reply) -> bytes:
    """Faust's ReqRepResponse, as an agent's `yield` would send it: what the gateway reads."""
    value = reply.model_dump_json()
    return (
        f'{{"key":null,"value":{value},"correlation_id":{json.dumps(correlation_id)},'
        '"__faust":{"ns":"@ReqRepResponse"}}'
    ).encode()


@dataclass
class Effects:
    """What one transaction publishes once it has committed: outbox rows and replies."""

    rows: list[Outgoing] = field(default_factory=list)
    replies: list[tuple[str, str, Reply]] = field(default_factory=list)
    _events: list[tuple[str, str, BaseModel]] = field(default_factory=list)

    def emit(self, topic: str, key: str, event: BaseModel) -> None:
        """An event, written to the outbox by `flush` in the same transaction."""
        self._events.append((topic, key, event))

    def reply(self, reply_to: str | None, correlation_id: str | None, reply: Reply) -> None:
        if reply_to and correlation_id:
            self.replies.append((reply_to, correlation_id, reply))

    async def flush(self, conn: asyncpg.Connection, domain: str) -> None:
        events, self._events = self._events, []
        self.rows += await write_events(conn, domain, events)


async def topic_exists(producer: AIOKafkaProducer, topic: str) -> bool:
    """Ask the broker; raises a KafkaError when it cannot be asked."""
    metadata = await producer.client.fetch_all_metadata()
    return topic in metadata.topics()


async def _queue(producer: AIOKafkaProducer, rows: Sequence[Outgoing]) -> list[Any]:
    """Hand the rows to the producer in order; the futures of their acknowledgements."""
    async with asyncio.timeout(SEND_TIMEOUT_S):
        return [
            await producer.send(r.topic, r.value, key=r.key.encode(), headers=list(r.headers))
            for r in rows
        ]


async def _send_all(producer: AIOKafkaProducer, rows: Sequence[Outgoing]) -> list[Any]:
    """Send in order; each row's outcome: its record metadata or the exception."""
    futures = await _queue(producer, rows)
    return list(await asyncio.gather(*futures, return_exceptions=True))


async def why_unpublishable(producer: AIOKafkaProducer, topic: str, e: BaseException) -> str | None:
    """The reason a message can never be published, or None when a retry can succeed."""
    if isinstance(e, KafkaError) and type(e).__name__ in (
        "MessageSizeTooLargeError",
        "RecordTooLargeError",
        "InvalidTopicError",
        "TopicAuthorizationFailedError",
    ):
        return f"{type(e).__name__}: {e}"
    try:
        if not await topic_exists(producer, topic):
            return f"topic {topic} does not exist"
    except (KafkaError, OSError, TimeoutError):
        return None
    return None


class OutboxSweeper:
    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        domain: str,
        *,
        dsn: str | None = None,
        batch: int = 500,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._domain = domain
        self._dsn = dsn
        self._batch = batch
        self._wake = asyncio.Event()
        # The age of the youngest rows the next sweep may take (see `wake`).
        self._min_age_s = 0.0
        # Set while rows wait for the sweeper: the Publisher then leaves new ones to it too,
        # so that each key's events still go out in order.
        self.behind = False

    def wake(self, min_age_s: float = 0.0) -> None:
        """Sweep now. Rows younger than `min_age_s` are left to the Publisher, which may still be
        marking them: a wake that only guesses something is waiting should not send them twice."""
        self._min_age_s = min(self._min_age_s, min_age_s) if self._wake.is_set() else min_age_s
        self._wake.set()

    async def sweep_once(self, min_age_s: float = 0.0) -> int:
        """Publish the unpublished rows older than `min_age_s`, in order; return how many."""
        async with self._pool.acquire() as conn:
            if not await conn.fetchval(TAKE_TURN, self._domain):
                return 0
            try:
                return await self._sweep(conn, min_age_s)
            finally:
                try:
                    await conn.fetchval(GIVE_TURN, self._domain)
                except BaseException:
                    # The pool does not reset connections: never hand one on with the lock.
                    conn.terminate()
                    raise

    async def _sweep(self, conn: asyncpg.Connection, min_age_s: float) -> int:
        done = 0
        cutoff = await conn.fetchval(CUTOFF, min_age_s)
        while True:
            rows = await conn.fetch(PENDING, self._domain, cutoff, self._batch)
            if not rows:
                self.behind = False
                return done
            outgoing = [
                Outgoing(
                    r["id"],
                    r["topic"],
                    r["key"],
                    r["payload"].encode(),
                    tuple((k, str(v).encode()) for k, v in r["headers"].items()),
                )
                for r in rows
            ]
            try:
                results = await _send_all(self._producer, outgoing)
            except (KafkaError, OSError, TimeoutError) as e:
                results = [e] * len(outgoing)
            published = []
            for row, result in zip(outgoing, results, strict=True):
                if not isinstance(result, BaseException):
                    published.append(row.id)
                    continue
                reason = await why_unpublishable(self._producer, row.topic, result)
                if reason is None:
                    # Kafka is down or busy: stop here, keep the order, try again later.
                    await conn.execute(MARK_PUBLISHED, published)
                    raise result
                log.error("outbox %s row %d is dead: %s", self._domain, row.id, reason)
                await conn.execute(MARK_DEAD, row.id, reason[:1000])
            await conn.execute(MARK_PUBLISHED, published)
            done += len(published)
            if len(rows) < self._batch:
                self.behind = False
                return done

    async def prune(self) -> int:
        """Forget events published more than a week ago."""
        status: str = await self._pool.execute(PRUNE, self._domain, float(KEEP_PUBLISHED_S))
        return int(status.split()[-1])

    async def _listen(self) -> None:
        """Wake on `NOTIFY outbox, '<domain>'` from any process; reconnect when Postgres drops."""
        assert self._dsn is not None

        def notified(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            if payload == self._domain:
                self.wake()

        while True:
            try:
                conn = await asyncpg.connect(self._dsn)
            except Exception as e:
                if not is_transient(e):
                    raise
                await asyncio.sleep(1.0)
                continue
            try:
                await conn.add_listener(CHANNEL, notified)
                self.wake(SWEEP_GRACE_S)  # what was notified while we were not listening
                closed = asyncio.Event()
                conn.add_termination_listener(lambda _c, done=closed: done.set())
                await closed.wait()
            finally:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def run(self) -> None:
        if self._dsn is not None:
            listener = asyncio.create_task(self._listen(), name=f"outbox-listen-{self._domain}")
        backoff = 0.1
        next_prune = 0.0
        # At start, everything unpublished was left behind; a periodic sweep leaves the youngest
        # rows to the Publisher.
        min_age = 0.0
        try:
            while True:
                self._wake.clear()
                try:
                    if time.monotonic() >= next_prune:
                        await self.prune()
                        next_prune = time.monotonic() + PRUNE_EVERY_S
                    await self.sweep_once(0.0 if self.behind else min_age)
                    backoff = 0.1
                except Exception as e:
                    if not is_transient(e):
                        log.exception("outbox sweeper of %s failed", self._domain)
                    else:
                        log.warning("outbox sweeper of %s: %s; retrying", self._domain, e)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                try:
                    await asyncio.wait_for(self._wake.wait(), SWEEP_EVERY_S)
                    min_age = self._min_age_s
                except TimeoutError:
                    min_age = SWEEP_GRACE_S
        finally:
            if self._dsn is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)


class Publisher:
    """Sends a committed transaction's events and replies; what fails is left to the sweeper.

    `publish` only queues the sends, in order, so an agent goes on with its next batch while
    Kafka acknowledges: the events are in the outbox already, so a crash loses none of them.
    Acknowledged rows are marked published a batch of batches at a time."""

    MARK_EVERY_S = 0.05

    def __init__(
        self, pool: asyncpg.Pool, producer: AIOKafkaProducer, domain: str, sweeper: OutboxSweeper
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._domain = domain
        self._sweeper = sweeper
        self._tasks: set[asyncio.Task[None]] = set()
        self._acked: list[int] = []
        self._marker: asyncio.Task[None] | None = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def publish(self, fx: Effects) -> None:
        for reply_to, correlation_id, reply in fx.replies:
            self._spawn(self._reply(reply_to, correlation_id, reply))
        if not fx.rows:
            return
        if self._sweeper.behind:
            self._sweeper.wake()
            return
        try:
            futures = await _queue(self._producer, fx.rows)
        except (KafkaError, OSError, TimeoutError) as e:
            self._left_to_sweeper(e)
            return
        self._spawn(self._acknowledged(fx.rows, futures))

    async def _acknowledged(self, rows: list[Outgoing], futures: list[Any]) -> None:
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [res for res in results if isinstance(res, BaseException)]
        if failed:
            self._left_to_sweeper(failed[0])
        self._acked += [
            r.id for r, res in zip(rows, results, strict=True) if not isinstance(res, BaseException)
        ]
        if self._marker is None or self._marker.done():
            self._marker = asyncio.create_task(self._mark_soon())

    def _left_to_sweeper(self, error: BaseException) -> None:
        log.warning("publishing %s events failed (%s): left to the sweeper", self._domain, error)
        self._sweeper.behind = True
        self._sweeper.wake()

    async def _mark_soon(self) -> None:
        """Mark what Kafka acknowledged, retrying while PostgreSQL is away: a row left unmarked
        waits for the periodic sweep (up to SWEEP_EVERY_S) to be published a second time."""
        await asyncio.sleep(self.MARK_EVERY_S)
        while self._acked:
            ids, self._acked = self._acked, []
            try:
                await retry_while_transient(
                    functools.partial(self._pool.execute, MARK_PUBLISHED, ids),
                    f"marking {len(ids)} {self._domain} events published",
                )
            except Exception as e:
                # Unmarked rows are published again by the sweeper: a duplicate, never a loss.
                log.warning("could not mark %d events published: %s", len(ids), e)
                self._sweeper.wake()

    async def _reply(self, reply_to: str, correlation_id: str, reply: Reply) -> None:
        """A reply goes straight to its topic; one that cannot go is recorded as dead."""
        value = reply_envelope(correlation_id, reply)
        try:
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                await self._producer.send_and_wait(reply_to, value)
            return
        except (KafkaError, OSError, TimeoutError) as e:
            reason = f"reply not delivered: {type(e).__name__}: {e}"
        log.warning("reply %s to %s: %s", correlation_id, reply_to, reason)
        try:
            await self._pool.execute(
                RECORD_DEAD, self._domain, reply_to, correlation_id, value.decode(), reason[:1000]
            )
        except Exception as e:
            log.warning("could not record the dead reply %s: %s", correlation_id, e)

    async def stop(self) -> None:
        """Wait a moment for sends under way; what is left, the next start's sweep publishes."""
        pending = set(self._tasks)
        if self._marker is not None:
            pending.add(self._marker)
        if pending:
            await asyncio.wait(pending, timeout=2.0)
        if self._marker is not None and not self._marker.done():
            # Still waiting for PostgreSQL: the next start's sweep publishes those rows again.
            self._marker.cancel()
            await asyncio.gather(self._marker, return_exceptions=True)


async def notify_sweepers(conn: asyncpg.Connection, domain: str) -> None:
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, domain)
