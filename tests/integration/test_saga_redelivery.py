"""The saga's handlers with every message delivered twice: the end state is the same.

A driver plays the bus: it takes each event the handlers write to the outbox, in order, and hands
it to every subscriber twice, as an at-least-once broker may after a crash.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from pydantic import BaseModel

from agents.common.agent import RequestMeta
from agents.orders import handlers as orders
from agents.orders.repository import OrdersUnitOfWork
from agents.payments import handlers as payments
from agents.payments.repository import PaymentsUnitOfWork
from agents.products.repository import PgProductsUnitOfWork
from agents.products.stock import release_stock, reserve_stock, sell_stock
from tests.helpers import random_name
from topics.orders import (
    OrderAwaitingPayment,
    OrderCancelled,
    OrderPaid,
    OrderPlaced,
    PlaceOrder,
)
from topics.payments import (
    PaymentCreated,
    PaymentFailed,
    PaymentSucceeded,
    PayPayment,
    ProviderPaymentOutcome,
)
from topics.products import NewProduct, OrderLine, StockRejected, StockReserved

Handler = Callable[[asyncpg.Pool, Any], Awaitable[object]]

SUBSCRIBERS: dict[str, tuple[type[BaseModel], list[Handler]]] = {
    "OrderPlaced": (
        OrderPlaced,
        [
            lambda p, e: reserve_stock(
                e.event_id, e.order_id, list(e.items), PgProductsUnitOfWork(p)
            )
        ],
    ),
    "StockReserved": (
        StockReserved,
        [lambda p, e: orders.on_stock_reserved(e, OrdersUnitOfWork(p))],
    ),
    "StockRejected": (
        StockRejected,
        [lambda p, e: orders.on_stock_rejected(e, OrdersUnitOfWork(p))],
    ),
    "OrderAwaitingPayment": (
        OrderAwaitingPayment,
        [lambda p, e: payments.on_order_awaiting_payment(e, PaymentsUnitOfWork(p), 900.0)],
    ),
    "PaymentCreated": (
        PaymentCreated,
        [lambda p, e: orders.on_payment_created(e, OrdersUnitOfWork(p))],
    ),
    "PaymentSucceeded": (
        PaymentSucceeded,
        [lambda p, e: orders.on_payment_succeeded(e, OrdersUnitOfWork(p))],
    ),
    "PaymentFailed": (
        PaymentFailed,
        [lambda p, e: orders.on_payment_failed(e, OrdersUnitOfWork(p))],
    ),
    "OrderPaid": (
        OrderPaid,
        [lambda p, e: sell_stock(e.event_id, e.order_id, PgProductsUnitOfWork(p))],
    ),
    "OrderCancelled": (
        OrderCancelled,
        [lambda p, e: release_stock(e.event_id, e.order_id, PgProductsUnitOfWork(p))],
    ),
}


async def deliver_twice(pool: asyncpg.Pool, order_id: int, seen: set[int]) -> None:
    """Deliver this order's events, each twice, until no new one appears."""
    while True:
        rows = await pool.fetch(
            "SELECT id, payload FROM outbox WHERE payload->>'order_id' = $1 ORDER BY id",
            str(order_id),
        )
        fresh = [r for r in rows if r["id"] not in seen]
        if not fresh:
            return
        for row in fresh:
            seen.add(row["id"])
            payload = row["payload"]
            if "type" not in payload or payload["type"] not in SUBSCRIBERS:
                continue
            model, handlers = SUBSCRIBERS[payload["type"]]
            event = model.model_validate(payload)
            for handle in handlers:
                for _ in range(2):
                    await handle(pool, event)


async def product(pool: asyncpg.Pool, stock: int) -> int:
    async with PgProductsUnitOfWork(pool) as uow:
        p = await uow.products.add(
            NewProduct(name=random_name(), price=Decimal("4.00"), stock=stock)
        )
        await uow.commit()
    return p.id


async def place(pool: asyncpg.Pool, product_id: int, quantity: int) -> int:
    cmd = PlaceOrder(
        command_id=uuid.uuid4(),
        user_id=7,
        request_hash="h",
        items=[OrderLine(product_id=product_id, quantity=quantity)],
    )
    meta = RequestMeta(reply_to="gateway.replies.test", correlation_id=uuid.uuid4().hex)
    for _ in range(2):
        assert await orders.place_order(cmd, meta, lambda: OrdersUnitOfWork(pool)) is None
    order_id: int = await pool.fetchval(
        "SELECT id FROM orders WHERE command_id = $1", cmd.command_id
    )
    return order_id


async def state(pool: asyncpg.Pool, order_id: int, product_id: int) -> dict[str, Any]:
    return {
        "order": await pool.fetchval("SELECT status FROM orders WHERE id = $1", order_id),
        "payments": await pool.fetchval(
            "SELECT count(*) FROM payments WHERE order_id = $1", order_id
        ),
        "charges": await pool.fetchval(
            """SELECT count(*) FROM payment_transactions t JOIN payments p ON p.id = t.payment_id
               WHERE p.order_id = $1 AND t.outcome = 'succeeded'""",
            order_id,
        ),
        "stock": tuple(
            await pool.fetchrow(
                "SELECT stock, reserved, sold FROM products WHERE id = $1", product_id
            )
        ),
        "replies": await pool.fetchval(
            "SELECT count(*) FROM outbox WHERE topic = 'gateway.replies.test' AND "
            "payload->'value'->'result'->'order'->>'id' = $1",
            str(order_id),
        ),
    }


async def payment_of(pool: asyncpg.Pool, order_id: int) -> tuple[int, Decimal]:
    row = await pool.fetchrow("SELECT id, amount FROM payments WHERE order_id = $1", order_id)
    assert row is not None
    return row["id"], row["amount"]


async def test_paid_order_with_every_message_twice(pool: asyncpg.Pool) -> None:
    product_id = await product(pool, 10)
    order_id = await place(pool, product_id, 3)
    seen: set[int] = set()
    await deliver_twice(pool, order_id, seen)
    payment_id, amount = await payment_of(pool, order_id)
    cmd = PayPayment(command_id=uuid.uuid4(), payment_id=payment_id, user_id=7, money=amount)
    first = await payments.pay(cmd, PaymentsUnitOfWork(pool))
    assert await payments.pay(cmd, PaymentsUnitOfWork(pool)) == first
    await deliver_twice(pool, order_id, seen)
    assert await state(pool, order_id, product_id) == {
        "order": "paid",
        "payments": 1,
        "charges": 1,
        "stock": (7, 0, 3),
        "replies": 1,
    }


@pytest.mark.parametrize("how", ["provider", "expiry"])
async def test_failed_payment_releases_stock_once(pool: asyncpg.Pool, how: str) -> None:
    product_id = await product(pool, 5)
    order_id = await place(pool, product_id, 2)
    seen: set[int] = set()
    await deliver_twice(pool, order_id, seen)
    payment_id, amount = await payment_of(pool, order_id)
    if how == "provider":
        report = ProviderPaymentOutcome(
            event_id=uuid.uuid4(),
            payment_id=payment_id,
            outcome="failed",
            amount=amount,
            reference="psp-1",
        )
        for _ in range(2):
            await payments.provider_outcome(report, PaymentsUnitOfWork(pool))
    else:
        await pool.execute(
            "UPDATE payments SET expires_at = now() - interval '1 second' WHERE id = $1", payment_id
        )
        for _ in range(2):
            await payments.expire_due(PaymentsUnitOfWork(pool))
    await deliver_twice(pool, order_id, seen)
    assert await state(pool, order_id, product_id) == {
        "order": "cancelled",
        "payments": 1,
        "charges": 0,
        "stock": (5, 0, 0),
        "replies": 1,
    }
    late = PayPayment(command_id=uuid.uuid4(), payment_id=payment_id, user_id=7, money=amount)
    reply = await payments.pay(late, PaymentsUnitOfWork(pool))
    assert reply.error is not None
    assert reply.error.type.value == "conflict"


async def test_a_rejected_order_answers_once(pool: asyncpg.Pool) -> None:
    product_id = await product(pool, 1)
    order_id = await place(pool, product_id, 2)
    await deliver_twice(pool, order_id, set())
    got = await state(pool, order_id, product_id)
    assert got == {
        "order": "rejected",
        "payments": 0,
        "charges": 0,
        "stock": (1, 0, 0),
        "replies": 1,
    }
