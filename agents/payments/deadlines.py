"""Payment deadlines in a Faust table (payment id -> deadline), and the timer that expires them.

The table is a projection of payments.events: PaymentCreated sets a deadline, PaymentSucceeded
and PaymentFailed clear it. It is written only from that stream, so each payment's records go
to its order's partition of the changelog, in order, and a restore replays them in order.

Postgres stays the record. The timer fails a due payment through SQL that leaves a payment alone
unless it is still pending past its deadline, so a pay racing an expiry is safe. Whenever the
table has been restored, the pending payments it lacks (a lost changelog) are adopted from
Postgres in one query, so that no payment is left unexpired.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import faust
from pydantic import TypeAdapter, ValidationError

from agents.common.failures import is_transient
from agents.payments import handlers
from agents.payments.repository import PaymentsUnitOfWork, not_pending, pending_except
from topics import PAYMENTS_EVENTS
from topics.payments import (
    PaymentCreated,
    PaymentEvent,
    PaymentFailed,
    PaymentNeedsReview,
    PaymentSucceeded,
)

log = logging.getLogger(__name__)

TABLE = "deadlines"
EXPIRY_CHECK_S = 1.0

AnyPaymentEvent = PaymentCreated | PaymentSucceeded | PaymentFailed | PaymentNeedsReview
_events: TypeAdapter[AnyPaymentEvent] = TypeAdapter(PaymentEvent)


@dataclass(frozen=True)
class Deadline:
    payment_id: int
    at: float
    # Taken from Postgres at start because the table did not have it.
    adopted: bool = False


class Deadlines:
    """The deadlines of pending payments: the table's, and those adopted from Postgres."""

    def __init__(self, table: MutableMapping[int, float], ttl_s: float) -> None:
        self.table = table
        self.ttl_s = ttl_s
        self.adopted: dict[int, float] = {}
        # Due payments that Postgres says are settled: skipped until their event clears them.
        self._settled: set[int] = set()

    def apply(self, event: AnyPaymentEvent) -> None:
        """Follow one payment event; its redelivery changes nothing."""
        match event:
            case PaymentCreated():
                expires = event.expires_at or event.occurred_at + timedelta(seconds=self.ttl_s)
                self.table[event.payment_id] = expires.timestamp()
            case PaymentSucceeded() | PaymentFailed():
                self.table.pop(event.payment_id, None)
                self.adopted.pop(event.payment_id, None)
                self._settled.discard(event.payment_id)

    def adopt(self, deadlines: dict[int, float]) -> None:
        self.adopted.update({p: at for p, at in deadlines.items() if p not in self.table})

    def pending(self) -> list[Deadline]:
        held = [Deadline(p, at) for p, at in self.table.items()]
        held += [Deadline(p, at, adopted=True) for p, at in self.adopted.items()]
        return sorted(held, key=lambda d: (d.at, d.payment_id))

    def due(self, now: float) -> list[int]:
        ids = {d.payment_id for d in self.pending() if d.at <= now}
        return sorted(ids - self._settled)

    def forget(self, payment_ids: set[int]) -> None:
        """These are expired or settled in Postgres: the table's entries wait for their event."""
        for payment_id in payment_ids:
            self.adopted.pop(payment_id, None)
            if payment_id in self.table:
                self._settled.add(payment_id)


def read_event(value: bytes) -> AnyPaymentEvent | None:
    try:
        return _events.validate_json(value)
    except ValidationError as e:
        log.warning("payments.events: skipping a message that is no payment event: %s", e)
        return None


async def expire_due(deadlines: Deadlines, pool: asyncpg.Pool, now: float) -> int:
    """Fail the payments due by `now` that Postgres still has pending; how many it failed."""
    due = deadlines.due(now)
    if not due:
        return 0
    expired = set(await handlers.expire(PaymentsUnitOfWork(pool), due))
    left = [p for p in due if p not in expired]
    deadlines.forget(expired | (await not_pending(pool, left) if left else set()))
    return len(expired)


async def adopt_missing(deadlines: Deadlines, pool: asyncpg.Pool) -> int:
    missing = await pending_except(pool, list(deadlines.table))
    deadlines.adopt({p: at.timestamp() for p, at in missing.items()})
    if missing:
        log.warning("adopted %d pending payments missing from the deadline table", len(missing))
    return len(missing)


class DeadlineTimer:
    """The payments worker's deadline table, the agent that fills it, and its timer."""

    def __init__(self, app: faust.App, ttl_s: float) -> None:
        table = app.Table(
            TABLE,
            key_type=int,
            value_type=float,
            partitions=PAYMENTS_EVENTS.partitions,
            help="payment id -> deadline (epoch seconds) of each pending payment",
        )
        self.deadlines = Deadlines(table, ttl_s)
        self._restored = asyncio.Event()
        table.on_recover(self._on_restored)
        channel = app.topic(
            PAYMENTS_EVENTS.name,
            partitions=PAYMENTS_EVENTS.partitions,
            key_serializer="raw",
            value_serializer="raw",
        )
        app.agent(channel, name=f"{PAYMENTS_EVENTS.name}.{TABLE}")(self._follow)

    async def _on_restored(self) -> None:
        self._restored.set()

    async def _follow(self, stream: Any) -> None:
        async for value in stream:
            event = read_event(value)
            if event is not None:
                self.deadlines.apply(event)

    async def run(self, pool: asyncpg.Pool, wake: Callable[[], None]) -> None:
        """Expire what is due, every EXPIRY_CHECK_S, once the table has been restored."""
        restored = False
        while True:
            try:
                if self._restored.is_set():
                    await adopt_missing(self.deadlines, pool)
                    self._restored.clear()
                    restored = True
                if restored and await expire_due(self.deadlines, pool, time.time()):
                    wake()
            except Exception as e:
                if not is_transient(e):
                    log.exception("expiring payments failed")
            await asyncio.sleep(EXPIRY_CHECK_S)
