"""Stock for orders: a batch of orders reserved in one transaction, each all or nothing; release
or sell exactly once."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from agents.common.agent import Inbound, RequestMeta
from agents.common.ledger import handle_once
from agents.common.relay import Effects
from agents.products.repository import PgProductsUnitOfWork
from topics import PRODUCTS_EVENTS
from topics.envelope import Reply
from topics.orders import OrderCancelled, OrderPaid, OrderPlaced, OrderRejected
from topics.products import (
    OrderLine,
    ReservedLine,
    StockRejected,
    StockReleased,
    StockReserved,
)

# Locked in id order, so that concurrent batches never deadlock; the decision is made on the
# locked rows, so two workers on one order (a rebalance) see each other's reservation.
# One line reserved on its own: the conditional update that guards against overselling, as the
# benchmarks' raw baseline runs it.
RESERVE_LINE = """
UPDATE products SET stock = stock - $2, reserved = reserved + $2
WHERE id = $1 AND deleted_at IS NULL AND stock >= $2
RETURNING price
"""
LOCK_PRODUCTS = """
SELECT id, stock, price FROM products
WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL ORDER BY id FOR UPDATE
"""
EXISTING = """
SELECT order_id, status, lines, total, reason FROM stock_reservations
WHERE order_id = ANY($1::bigint[])
"""
TAKE = """
UPDATE products p SET stock = p.stock - d.q, reserved = p.reserved + d.q
FROM unnest($1::bigint[], $2::int[]) AS d(id, q) WHERE p.id = d.id
"""
# An order none of whose products exists locks no product row: another worker on it (a
# rebalance) may record it first, and its decision stands (see reserve_batch).
RECORD = """
INSERT INTO stock_reservations (order_id, status, lines, total, reason)
SELECT o, s, l::jsonb, t, r
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::numeric[], $5::text[]) AS x(o, s, l, t, r)
ON CONFLICT (order_id) DO NOTHING
RETURNING order_id
"""
SETTLE = """
UPDATE stock_reservations SET status = $2 WHERE order_id = $1 AND status = 'reserved'
RETURNING lines
"""
ABANDON = """
INSERT INTO stock_reservations (order_id, status, lines, reason)
VALUES ($1, 'abandoned', '[]'::jsonb, $2) ON CONFLICT (order_id) DO NOTHING
"""
RELEASE_LINE = "UPDATE products SET stock = stock + $2, reserved = reserved - $2 WHERE id = $1"
SELL_LINE = "UPDATE products SET reserved = reserved - $2, sold = sold + $2 WHERE id = $1"


def merge(lines: list[OrderLine]) -> list[tuple[int, int]]:
    """One line per product, in product id order."""
    counts: Counter[int] = Counter()
    for line in lines:
        counts[line.product_id] += line.quantity
    return sorted(counts.items())


def _now() -> datetime:
    return datetime.now(UTC)


def _decision(order_id: int, status: str, lines: Any, total: Any, reason: str | None) -> Any:
    """The event that tells the order what became of its stock."""
    if status == "reserved":
        return StockReserved(
            event_id=uuid.uuid4(),
            occurred_at=_now(),
            order_id=order_id,
            lines=[ReservedLine.model_validate(line) for line in lines],
            total=total,
        )
    return StockRejected(
        event_id=uuid.uuid4(), occurred_at=_now(), order_id=order_id, reason=reason or status
    )


async def reserve_batch(
    conn: asyncpg.Connection, batch: list[Inbound[OrderPlaced]], fx: Effects
) -> None:
    """Decide every order of the batch in arrival order: all its lines reserved, or none.

    An order decided before (the same event again, or a re-drive of a stuck order) gets its
    decision sent again and changes nothing."""
    orders: dict[int, list[tuple[int, int]]] = {}
    for item in batch:
        orders.setdefault(item.message.order_id, merge(list(item.message.items)))
    product_ids = sorted({p for lines in orders.values() for p, _ in lines})
    on_hand = {
        r["id"]: (r["stock"], r["price"]) for r in await conn.fetch(LOCK_PRODUCTS, product_ids)
    }
    for r in await conn.fetch(EXISTING, list(orders)):
        del orders[r["order_id"]]
        _tell(fx, r)
    taken: Counter[int] = Counter()
    records: list[tuple[int, str, str, Decimal | None, str | None]] = []
    decided: dict[int, StockReserved | StockRejected] = {}
    for order_id, lines in orders.items():
        short = next(
            (p for p, q in lines if p not in on_hand or on_hand[p][0] - taken[p] < q), None
        )
        if short is not None:
            reason = f"product {short} is out of stock or gone"
            records.append((order_id, "rejected", "[]", None, reason))
            decided[order_id] = _decision(order_id, "rejected", [], None, reason)
            continue
        reserved = [
            ReservedLine(product_id=p, quantity=q, unit_price=on_hand[p][1]) for p, q in lines
        ]
        for p, q in lines:
            taken[p] += q
        total = sum((r.unit_price * r.quantity for r in reserved), Decimal(0))
        records.append(
            (
                order_id,
                "reserved",
                json.dumps([r.model_dump(mode="json") for r in reserved]),
                total,
                None,
            )
        )
        decided[order_id] = StockReserved(
            event_id=uuid.uuid4(),
            occurred_at=_now(),
            order_id=order_id,
            lines=reserved,
            total=total,
        )
    if not records:
        return
    columns = (list(column) for column in zip(*records, strict=True))
    recorded = {r["order_id"] for r in await conn.fetch(RECORD, *columns)}
    raced = [o for o in decided if o not in recorded]
    for order_id in raced:
        # Decided by another worker meanwhile: nothing is taken here, its decision is sent.
        if isinstance(decided.pop(order_id), StockReserved):
            taken.subtract(dict(orders[order_id]))
    theirs = {r["order_id"]: r for r in await conn.fetch(EXISTING, raced)} if raced else {}
    for order_id in orders:
        if order_id in decided:
            fx.emit(PRODUCTS_EVENTS.name, str(order_id), decided[order_id])
        else:
            _tell(fx, theirs[order_id])
    taken = +taken
    if taken:
        await conn.execute(TAKE, list(taken), list(taken.values()))


def _tell(fx: Effects, r: asyncpg.Record) -> None:
    """Send again the decision recorded for an order (an abandoned one is told nothing)."""
    if r["status"] in ("reserved", "rejected"):
        event = _decision(r["order_id"], r["status"], r["lines"], r["total"], r["reason"])
        fx.emit(PRODUCTS_EVENTS.name, str(r["order_id"]), event)


async def reserve_stock(
    event_id: uuid.UUID, order_id: int, lines: list[OrderLine], uow: PgProductsUnitOfWork
) -> Reply:
    """One OrderPlaced in a transaction of its own: what the batch does for each of its orders."""
    fx = Effects()
    placed = OrderPlaced(
        event_id=event_id, occurred_at=_now(), order_id=order_id, user_id=1, items=lines
    )
    async with uow:
        await reserve_batch(uow.connection, [Inbound(placed, RequestMeta())], fx)
        await fx.flush(uow.connection, uow.domain)
        await uow.commit()
    decided = [e for e in fx.rows]
    body = json.loads(decided[0].value) if decided else {}
    reserved = body.get("type") == "StockReserved"
    result: dict[str, Any] = {"order_id": order_id, "reserved": reserved}
    if reserved:
        result["total"] = body["total"]
    elif body:
        result["reason"] = body["reason"]
    return Reply.success(result)


async def _settle(order_id: int, status: str, line_sql: str, conn: asyncpg.Connection) -> bool:
    lines = await conn.fetchval(SETTLE, order_id, status)
    if lines is None:
        return False
    await conn.executemany(line_sql, [(line["product_id"], line["quantity"]) for line in lines])
    return True


async def release_stock(event_id: uuid.UUID, order_id: int, uow: PgProductsUnitOfWork) -> Reply:
    """Put an unpaid order's units back on hand, once, whatever is redelivered."""

    async def apply(u: PgProductsUnitOfWork) -> Reply:
        released = await _settle(order_id, "released", RELEASE_LINE, u.connection)
        if released:
            event = StockReleased(event_id=uuid.uuid4(), occurred_at=_now(), order_id=order_id)
            await u.outbox.add(PRODUCTS_EVENTS.name, str(order_id), event)
        return Reply.success({"order_id": order_id, "released": released})

    return await handle_once(uow, event_id, apply)


async def sell_stock(event_id: uuid.UUID, order_id: int, uow: PgProductsUnitOfWork) -> Reply:
    """A paid order's reserved units become sold, once."""

    async def apply(u: PgProductsUnitOfWork) -> Reply:
        sold = await _settle(order_id, "sold", SELL_LINE, u.connection)
        return Reply.success({"order_id": order_id, "sold": sold})

    return await handle_once(uow, event_id, apply)


async def abandon_stock(
    event_id: uuid.UUID, order_id: int, reason: str, uow: PgProductsUnitOfWork
) -> Reply:
    """An order given up before its stock answer: release what was held, or hold nothing later."""

    async def apply(u: PgProductsUnitOfWork) -> Reply:
        released = await _settle(order_id, "released", RELEASE_LINE, u.connection)
        if released:
            event = StockReleased(event_id=uuid.uuid4(), occurred_at=_now(), order_id=order_id)
            await u.outbox.add(PRODUCTS_EVENTS.name, str(order_id), event)
        else:
            await u.connection.execute(ABANDON, order_id, reason)
        return Reply.success({"order_id": order_id, "released": released})

    return await handle_once(uow, event_id, apply)


async def on_order_event(
    event: OrderCancelled | OrderPaid | OrderRejected,
    _meta: RequestMeta,
    conn: asyncpg.Connection,
    fx: Effects,
) -> Reply:
    uow = PgProductsUnitOfWork(conn, fx)
    match event:
        case OrderPaid():
            return await sell_stock(event.event_id, event.order_id, uow)
        case OrderCancelled():
            return await release_stock(event.event_id, event.order_id, uow)
        case OrderRejected():
            return await abandon_stock(event.event_id, event.order_id, event.reason, uow)
