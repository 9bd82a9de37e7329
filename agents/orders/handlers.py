"""The orders side of the checkout saga: place, then follow stock and payment outcomes."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from agents.common.agent import RequestMeta
from agents.common.ledger import handle_once
from agents.orders.repository import OrderRow, OrdersUnitOfWork
from agents.products.stock import merge
from topics.envelope import ErrorType, Reply
from topics.orders import (
    OrderAwaitingPayment,
    OrderCancelled,
    OrderPaid,
    OrderPlaced,
    OrderRejected,
    PlaceOrder,
)
from topics.payments import PaymentCreated, PaymentFailed, PaymentSucceeded
from topics.products import StockRejected, StockReserved

FINAL = ("awaiting_payment", "paid", "rejected", "cancelled")


def _now() -> datetime:
    return datetime.now(UTC)


def order_reply(order: OrderRow) -> Reply:
    return Reply.success({"order": order.to_json()})


async def place_order(
    cmd: PlaceOrder, meta: RequestMeta, uow_factory: Callable[[], OrdersUnitOfWork]
) -> Reply | None:
    """Create the order `pending` and emit OrderPlaced; the reply waits for the stock answer.

    The command id is the idempotency key: the same body again answers as the first did (now,
    if the order is decided; later, if this is the same request redelivered), another body is
    refused, and a second request while the first is undecided is a conflict.
    """
    async with uow_factory() as uow:
        existing = await uow.orders.by_command(cmd.command_id)
        if existing is not None:
            if existing.request_hash != cmd.request_hash:
                return Reply.failure(
                    ErrorType.INVALID, "this Idempotency-Key was used for another order"
                )
            if existing.status in FINAL:
                return order_reply(await uow.orders.detailed(existing.id))
            if meta.correlation_id and existing.correlation_id == meta.correlation_id:
                return None
            return Reply.failure(ErrorType.CONFLICT, "this order is still being placed")
        lines = merge(list(cmd.items))
        order = await uow.orders.add(
            cmd.user_id, cmd.command_id, cmd.request_hash, lines, meta.reply_to, meta.correlation_id
        )
        event = OrderPlaced(
            event_id=uuid.uuid4(),
            occurred_at=_now(),
            order_id=order.id,
            user_id=cmd.user_id,
            items=list(cmd.items),
        )
        await uow.orders_outbox(event)
        await uow.commit()
    return None


async def _answer(uow: OrdersUnitOfWork, order: OrderRow) -> None:
    """Send the deferred reply of the PlaceOrder that made this order, with its outcome."""
    if order.reply_to and order.correlation_id:
        detailed = await uow.orders.detailed(order.id)
        await uow.outbox.add_reply(order.reply_to, order.correlation_id, order_reply(detailed))


Act = Callable[[OrdersUnitOfWork, OrderRow], Awaitable[None]]


async def _advance(
    uow: OrdersUnitOfWork, event_id: uuid.UUID, order_id: int, expected: str, act: Act
) -> Reply:
    """Apply `act` once per event, and only to an order still in status `expected`.

    An order already past that status (an event arriving late or twice) is left as it is."""

    async def apply(u: OrdersUnitOfWork) -> Reply:
        order = await u.orders.lock(order_id)
        if order is None or order.status != expected:
            return Reply.success({"order_id": order_id, "changed": False})
        await act(u, order)
        return Reply.success({"order_id": order.id, "changed": True})

    return await handle_once(uow, event_id, apply)


async def on_stock_reserved(event: StockReserved, uow: OrdersUnitOfWork) -> Reply:
    async def act(u: OrdersUnitOfWork, order: OrderRow) -> None:
        unit_prices = [(line.product_id, line.unit_price) for line in event.lines]
        await u.orders.price(order.id, event.total, unit_prices)
        await u.orders.move(order.id, "awaiting_payment")
        await u.orders_outbox(
            OrderAwaitingPayment(
                event_id=uuid.uuid4(),
                occurred_at=_now(),
                order_id=order.id,
                user_id=order.user_id,
                total=event.total,
            )
        )
        # The reply waits for PaymentCreated: a client may ask for the payment right after.

    return await _advance(uow, event.event_id, event.order_id, "pending", act)


async def on_stock_rejected(event: StockRejected, uow: OrdersUnitOfWork) -> Reply:
    async def act(u: OrdersUnitOfWork, order: OrderRow) -> None:
        await u.orders.move(order.id, "rejected", event.reason)
        await u.orders_outbox(
            OrderRejected(
                event_id=uuid.uuid4(),
                occurred_at=_now(),
                order_id=order.id,
                reason=event.reason,
            )
        )
        await _answer(u, order)

    return await _advance(uow, event.event_id, event.order_id, "pending", act)


async def on_payment_created(event: PaymentCreated, uow: OrdersUnitOfWork) -> Reply:
    """The order's payment exists: now the order is answered (awaiting payment)."""
    return await _advance(uow, event.event_id, event.order_id, "awaiting_payment", _answer)


async def on_payment_succeeded(event: PaymentSucceeded, uow: OrdersUnitOfWork) -> Reply:
    async def act(u: OrdersUnitOfWork, order: OrderRow) -> None:
        await u.orders.move(order.id, "paid")
        await u.orders_outbox(
            OrderPaid(event_id=uuid.uuid4(), occurred_at=_now(), order_id=order.id)
        )

    return await _advance(uow, event.event_id, event.order_id, "awaiting_payment", act)


async def on_payment_failed(event: PaymentFailed, uow: OrdersUnitOfWork) -> Reply:
    async def act(u: OrdersUnitOfWork, order: OrderRow) -> None:
        await u.orders.move(order.id, "cancelled", event.reason)
        await u.orders_outbox(
            OrderCancelled(
                event_id=uuid.uuid4(),
                occurred_at=_now(),
                order_id=order.id,
                reason=event.reason,
            )
        )

    return await _advance(uow, event.event_id, event.order_id, "awaiting_payment", act)
