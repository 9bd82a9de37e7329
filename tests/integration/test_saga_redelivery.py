"""The saga's handlers with every message delivered twice: the end state is the same.

A driver plays the bus: it takes each event the handlers write to the outbox, in order, and hands
it to every subscriber twice, as an at-least-once broker may after a crash; PlaceOrder comes
twice in one batch and twice in two. An answer sent again is the same answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from pydantic import BaseModel

from agents.common.agent import Inbound, RequestMeta
from agents.common.relay import Effects
from agents.orders import handlers as orders
from agents.orders.repository import OrdersUnitOfWork
from agents.payments import handlers as payments
from agents.payments.repository import PaymentsUnitOfWork, list_reviews
from agents.products.repository import PgProductsUnitOfWork
from agents.products.stock import release_stock, reserve_batch, sell_stock
from tests.helpers import random_name
from tests.infra import TEST_SANDBOX_SECRET
from topics.envelope import Reply
from topics.orders import (
    OrderAwaitingPayment,
    OrderCancelled,
    OrderPaid,
    OrderPlaced,
    PlaceOrder,
)
from topics.payments import (
    PaymentFailed,
    PaymentSucceeded,
    PayPayment,
    sign_report,
)
from topics.products import NewProduct, OrderLine, StockRejected, StockReserved

Delivery = Callable[[asyncpg.Connection, Any, Effects], Awaitable[None]]


def one_by_one(handle: Callable[[Any, Any], Awaitable[object]], uow: Any) -> Delivery:
    async def deliver(conn: asyncpg.Connection, event: Any, fx: Effects) -> None:
        await handle(event, uow(conn, fx))

    return deliver


def batched(handle: Any) -> Delivery:
    async def deliver(conn: asyncpg.Connection, event: Any, fx: Effects) -> None:
        await handle(conn, [Inbound(event, RequestMeta())], fx)

    return deliver


SUBSCRIBERS: dict[str, tuple[type[BaseModel], list[Delivery]]] = {
    "OrderPlaced": (OrderPlaced, [batched(reserve_batch)]),
    "StockReserved": (StockReserved, [batched(orders.stock_decided)]),
    "StockRejected": (StockRejected, [batched(orders.stock_decided)]),
    "OrderAwaitingPayment": (
        OrderAwaitingPayment,
        [batched(lambda c, b, fx: payments.create_payments(c, b, fx, 900.0))],
    ),
    "PaymentSucceeded": (
        PaymentSucceeded,
        [one_by_one(orders.on_payment_succeeded, OrdersUnitOfWork)],
    ),
    "PaymentFailed": (PaymentFailed, [one_by_one(orders.on_payment_failed, OrdersUnitOfWork)]),
    "OrderPaid": (
        OrderPaid,
        [one_by_one(lambda e, u: sell_stock(e.event_id, e.order_id, u), PgProductsUnitOfWork)],
    ),
    "OrderCancelled": (
        OrderCancelled,
        [one_by_one(lambda e, u: release_stock(e.event_id, e.order_id, u), PgProductsUnitOfWork)],
    ),
}
REPLIES: list[tuple[str, str, Reply]] = []


async def handled(pool: asyncpg.Pool, deliver: Delivery, event: Any) -> None:
    """One delivery in a batch transaction of its own, as the agent runs it."""
    fx = Effects()
    async with pool.acquire() as conn, conn.transaction():
        await deliver(conn, event, fx)
        await fx.flush(conn, "test")
    REPLIES.extend(fx.replies)


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
            model, deliveries = SUBSCRIBERS[payload["type"]]
            event = model.model_validate(payload)
            for deliver in deliveries:
                for _ in range(2):
                    await handled(pool, deliver, event)


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
        fx = Effects()
        async with pool.acquire() as conn, conn.transaction():
            await orders.place_orders(conn, [Inbound(cmd, meta), Inbound(cmd, meta)], fx)
            await fx.flush(conn, "orders")
        assert fx.replies == [], "the reply waits for the stock"
    order_id: int = await pool.fetchval(
        "SELECT id FROM orders WHERE command_id = $1", cmd.command_id
    )
    return order_id


def replies_of(order_id: int) -> set[str]:
    """The statuses the PlaceOrder of this order was answered with (each answer, once)."""
    return {
        r.result["order"]["status"]
        for _, _, r in REPLIES
        if r.result and r.result.get("order", {}).get("id") == order_id
    }


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
        "replies": replies_of(order_id),
    }


async def payment_of(pool: asyncpg.Pool, order_id: int) -> tuple[int, Decimal]:
    row = await pool.fetchrow("SELECT id, amount FROM payments WHERE order_id = $1", order_id)
    assert row is not None
    return row["id"], row["amount"]


async def open_session(pool: asyncpg.Pool, payment_id: int, amount: Decimal) -> str:
    """A session the platform opened for the payment; its reference."""
    await pool.execute(
        "INSERT INTO payment_sessions (token, reference, payment_id, provider, amount,"
        " redirect_url, return_path, expires_at)"
        " VALUES ($1, $2, $3, 'sandbox', $4, '', '/', now() + interval '1 hour')",
        f"token-{payment_id}",
        f"ps_{payment_id}",
        payment_id,
        amount,
    )
    return f"ps_{payment_id}"


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
        "replies": {"awaiting_payment"},
    }


@pytest.mark.parametrize("how", ["provider", "expiry"])
async def test_failed_payment_releases_stock_once(pool: asyncpg.Pool, how: str) -> None:
    product_id = await product(pool, 5)
    order_id = await place(pool, product_id, 2)
    seen: set[int] = set()
    await deliver_twice(pool, order_id, seen)
    payment_id, amount = await payment_of(pool, order_id)
    if how == "provider":
        await open_session(pool, payment_id, amount)
        report = sign_report(
            {
                "event_id": uuid.uuid4(),
                "payment_id": payment_id,
                "outcome": "failed",
                "amount": amount,
                "reference": "psp-1",
                "session_reference": f"ps_{payment_id}",
            },
            TEST_SANDBOX_SECRET,
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
        "replies": {"awaiting_payment"},
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
        "replies": {"rejected"},
    }


async def test_money_the_payment_cannot_take_is_one_case_and_leaves_the_saga_alone(
    pool: asyncpg.Pool,
) -> None:
    """A second charge of a paid order and a charge for another amount: each report twice, and
    again under a new event id; one case each, the paid order stays paid, the other is
    cancelled with its stock released."""
    product_id = await product(pool, 10)
    paid_order, short_order = await place(pool, product_id, 1), await place(pool, product_id, 2)
    seen: set[int] = set()
    for order_id in (paid_order, short_order):
        await deliver_twice(pool, order_id, seen)
    paid_id, paid_amount = await payment_of(pool, paid_order)
    short_id, short_amount = await payment_of(pool, short_order)
    pay = PayPayment(command_id=uuid.uuid4(), payment_id=paid_id, user_id=7, money=paid_amount)
    assert (await payments.pay(pay, PaymentsUnitOfWork(pool))).ok
    cases = [(paid_id, paid_amount, "psp-second"), (short_id, short_amount - 1, "psp-short")]
    for payment_id, money, reference in cases:
        session_reference = await open_session(pool, payment_id, money)
        fields = {
            "payment_id": payment_id,
            "outcome": "succeeded",
            "amount": money,
            "reference": reference,
            "session_reference": session_reference,
        }
        report = sign_report({"event_id": uuid.uuid4(), **fields}, TEST_SANDBOX_SECRET)
        retried = sign_report({"event_id": uuid.uuid4(), **fields}, TEST_SANDBOX_SECRET)
        for event in (report, report, retried):
            assert (await payments.provider_outcome(event, PaymentsUnitOfWork(pool))).ok
    for order_id in (paid_order, short_order):
        await deliver_twice(pool, order_id, seen)
    assert (await state(pool, paid_order, product_id))["order"] == "paid"
    assert await state(pool, short_order, product_id) == {
        "order": "cancelled",
        "payments": 1,
        "charges": 0,
        "stock": (9, 0, 1),
        "replies": {"awaiting_payment"},
    }
    reviews = [r for r in await list_reviews(pool, 0, 100) if r.payment_id in (paid_id, short_id)]
    assert [(r.payment_id, r.reason, r.refund_required) for r in reviews] == [
        (short_id, "amount_mismatch", True),
        (paid_id, "duplicate_success", True),
    ]
    events = await pool.fetch(
        "SELECT payload FROM outbox WHERE payload->>'type' = 'PaymentNeedsReview'"
        " AND (payload->>'payment_id')::bigint = ANY($1::bigint[])",
        [paid_id, short_id],
    )
    assert len(events) == 2
