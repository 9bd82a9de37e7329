"""The orders side of the checkout saga: place, then follow stock and payment outcomes.

PlaceOrder and the stock answers are on the client's path: they are handled a batch at a time
with set-based SQL. The client is answered as soon as the stock is decided; the payment follows
as an event.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg

from agents.common.agent import Inbound, RequestMeta
from agents.common.ledger import KEY_REUSED, handle_once
from agents.common.relay import Effects
from agents.orders import repository as sql
from agents.orders.repository import OrderRow, OrdersUnitOfWork
from topics import ORDERS_EVENTS
from topics.envelope import ErrorType, Reply
from topics.orders import (
    OrderAwaitingPayment,
    OrderCancelled,
    OrderPaid,
    OrderPlaced,
    OrderRejected,
    PlaceOrder,
)
from topics.payments import PaymentFailed, PaymentSucceeded
from topics.products import StockRejected, StockReserved

DECIDED = ("awaiting_payment", "paid", "rejected", "cancelled")


def _now() -> datetime:
    return datetime.now(UTC)


def order_reply(order: OrderRow) -> Reply:
    return Reply.success({"order": order.to_json()})


def _duplicate(cmd: PlaceOrder, meta: RequestMeta, existing: OrderRow) -> Reply | None:
    """The answer to a PlaceOrder whose command id has an order already; None: it comes later.

    The same body again answers as the first did (now, if the order is decided; later, if this
    is the same request redelivered); another body is refused (422, as the IETF draft says);
    a second request while the first is undecided is a conflict."""
    if existing.request_hash != cmd.request_hash:
        return Reply.failure(ErrorType.INVALID, KEY_REUSED)
    if existing.status in DECIDED:
        return order_reply(existing)
    if meta.correlation_id and existing.correlation_id == meta.correlation_id:
        return None
    return Reply.failure(ErrorType.CONFLICT, "this order is still being placed")


async def place_orders(
    conn: asyncpg.Connection, batch: list[Inbound[PlaceOrder]], fx: Effects
) -> None:
    """Record each new order `pending` and emit OrderPlaced; the reply waits for the stock."""
    first: dict[uuid.UUID, Inbound[PlaceOrder]] = {}
    for item in batch:
        first.setdefault(item.message.command_id, item)
    new = list(first.values())
    created = await sql.insert_orders(conn, [(i.message, i.meta) for i in new])
    for item in new:
        order = created.get(item.message.command_id)
        if order is None:
            continue
        fx.emit(
            ORDERS_EVENTS.name,
            str(order.id),
            OrderPlaced(
                event_id=uuid.uuid4(),
                occurred_at=_now(),
                order_id=order.id,
                user_id=item.message.user_id,
                items=list(item.message.items),
            ),
        )
    duplicates = [
        i
        for i in batch
        if i.message.command_id not in created or first[i.message.command_id] is not i
    ]
    if not duplicates:
        return
    existing = await sql.orders_by_commands(conn, [i.message.command_id for i in duplicates])
    for item in duplicates:
        order = existing[item.message.command_id]
        reply = _duplicate(item.message, item.meta, order)
        if reply is not None:
            fx.reply(item.meta.reply_to, item.meta.correlation_id, reply)


async def stock_decided(
    conn: asyncpg.Connection, batch: list[Inbound[StockReserved | StockRejected]], fx: Effects
) -> None:
    """Move each pending order to awaiting_payment or rejected, and answer its PlaceOrder."""
    decisions = {i.message.order_id: i.message for i in batch}
    reserved = [d for d in decisions.values() if isinstance(d, StockReserved)]
    rejected = [d for d in decisions.values() if isinstance(d, StockRejected)]
    moved = await sql.decide(conn, reserved, [(r.order_id, r.reason) for r in rejected])
    for d in reserved:
        if d.order_id in moved:
            fx.emit(
                ORDERS_EVENTS.name,
                str(d.order_id),
                OrderAwaitingPayment(
                    event_id=uuid.uuid4(),
                    occurred_at=_now(),
                    order_id=d.order_id,
                    user_id=moved[d.order_id],
                    total=d.total,
                ),
            )
    for r in rejected:
        if r.order_id in moved:
            fx.emit(
                ORDERS_EVENTS.name,
                str(r.order_id),
                OrderRejected(
                    event_id=uuid.uuid4(),
                    occurred_at=_now(),
                    order_id=r.order_id,
                    reason=r.reason,
                ),
            )
    # An answer sent again (a redelivered decision) is one the gateway no longer waits for.
    for order in await sql.detailed_orders(conn, list(decisions)):
        if order.status in DECIDED:
            fx.reply(order.reply_to, order.correlation_id, order_reply(order))


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


async def on_payment_event(
    event: PaymentSucceeded | PaymentFailed,
    _meta: RequestMeta,
    conn: asyncpg.Connection,
    fx: Effects,
) -> Reply:
    uow = OrdersUnitOfWork(conn, fx)
    if isinstance(event, PaymentSucceeded):
        return await on_payment_succeeded(event, uow)
    return await on_payment_failed(event, uow)


async def sweep_pending(
    pool: asyncpg.Pool, fx: Effects, redrive_after_s: float, give_up_after_s: float
) -> int:
    """Orders still `pending` past a deadline: OrderPlaced again (the stock answer was lost),
    then, past the last deadline, rejected with the reason. Returns how many it touched."""
    async with pool.acquire() as conn, conn.transaction():
        stuck = await sql.stuck_orders(conn, redrive_after_s)
        if not stuck:
            return 0
        given_up = [o for o in stuck if o.age_s >= give_up_after_s]
        redriven = [o for o in stuck if o.age_s < give_up_after_s]
        reason = f"no stock answer within {give_up_after_s:.0f} s"
        await sql.mark_rejected(conn, [(o.id, reason) for o in given_up])
        await sql.mark_redriven(conn, [o.id for o in redriven])
        for o in redriven:
            items = await sql.order_lines(conn, o.id)
            fx.emit(
                ORDERS_EVENTS.name,
                str(o.id),
                OrderPlaced(
                    event_id=uuid.uuid4(),
                    occurred_at=_now(),
                    order_id=o.id,
                    user_id=o.user_id,
                    items=items,
                ),
            )
        for o in given_up:
            fx.emit(
                ORDERS_EVENTS.name,
                str(o.id),
                OrderRejected(
                    event_id=uuid.uuid4(), occurred_at=_now(), order_id=o.id, reason=reason
                ),
            )
        for order in await sql.detailed_orders(conn, [o.id for o in given_up]):
            fx.reply(order.reply_to, order.correlation_id, order_reply(order))
        await fx.flush(conn, "orders")
    return len(stuck)
