"""The deadline table's timer and its reconciliation, against a real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from agents.common.agent import Inbound, RequestMeta
from agents.common.relay import Effects
from agents.payments import handlers
from agents.payments.deadlines import Deadlines, adopt_missing, expire_due, read_event
from topics.orders import OrderAwaitingPayment
from topics.payments import PaymentCreated

pytestmark = pytest.mark.integration


async def _payments(pool: asyncpg.Pool, n: int, ttl_s: float = 900.0) -> list[PaymentCreated]:
    """n new pending payments: their PaymentCreated events, as the table reads them."""
    base = uuid.uuid4().int % 10**12 * 100
    batch = [
        Inbound(
            OrderAwaitingPayment(
                event_id=uuid.uuid4(),
                occurred_at=datetime.now(UTC),
                order_id=base + i,
                user_id=1,
                total=Decimal("5.00"),
            ),
            RequestMeta(),
        )
        for i in range(n)
    ]
    fx = Effects()
    async with pool.acquire() as conn, conn.transaction():
        await handlers.create_payments(conn, batch, fx, ttl_s)
        await fx.flush(conn, "payments")
    events = [read_event(row.value) for row in fx.rows]
    assert all(isinstance(e, PaymentCreated) for e in events)
    return [e for e in events if isinstance(e, PaymentCreated)]


async def _status(pool: asyncpg.Pool, payment_id: int) -> str:
    status: str = await pool.fetchval("SELECT status FROM payments WHERE id = $1", payment_id)
    return status


async def test_created_events_carry_the_deadline_postgres_keeps(pool: asyncpg.Pool) -> None:
    (event,) = await _payments(pool, 1, ttl_s=120)
    expires = await pool.fetchval("SELECT expires_at FROM payments WHERE id = $1", event.payment_id)
    assert event.expires_at == expires


async def test_only_the_due_pending_payments_expire(pool: asyncpg.Pool) -> None:
    due, paid, later = await _payments(pool, 3)
    book = Deadlines({}, ttl_s=900)
    for event in (due, paid, later):
        book.apply(event)
    await pool.execute(
        "UPDATE payments SET expires_at = now() - interval '1 second' WHERE id = ANY($1)",
        [due.payment_id, paid.payment_id],
    )
    # Paid in the meantime: the status guard leaves it alone.
    await pool.execute("UPDATE payments SET status = 'succeeded' WHERE id = $1", paid.payment_id)
    now = datetime.now(UTC).timestamp() + 1000
    assert book.due(now) == sorted(e.payment_id for e in (due, paid, later))
    # The table said `later` is due (a clock ahead): Postgres's deadline decides.
    assert await expire_due(book, pool, now) == 1
    assert [await _status(pool, p.payment_id) for p in (due, paid, later)] == [
        "failed",
        "succeeded",
        "pending",
    ]
    failed = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE payload->>'type' = 'PaymentFailed' "
        "AND (payload->>'payment_id')::bigint = $1",
        due.payment_id,
    )
    assert failed == 1
    # Expired and paid wait for their events to leave the table; `later` stays due.
    assert book.due(now) == [later.payment_id]
    assert await expire_due(book, pool, now) == 0


async def test_pending_payments_missing_from_the_table_are_adopted(pool: asyncpg.Pool) -> None:
    held, lost = await _payments(pool, 2)
    book = Deadlines({}, ttl_s=900)
    book.apply(held)
    assert await adopt_missing(book, pool) >= 1
    assert held.payment_id not in book.adopted
    assert lost.expires_at is not None
    assert book.adopted[lost.payment_id] == lost.expires_at.timestamp()
    await pool.execute(
        "UPDATE payments SET expires_at = now() - interval '1 second' WHERE id = $1",
        lost.payment_id,
    )
    assert await expire_due(book, pool, datetime.now(UTC).timestamp() + 1000) >= 1
    assert await _status(pool, lost.payment_id) == "failed"
    assert lost.payment_id not in book.adopted
