"""Stock for orders: reserve every line in one transaction or none, release or sell exactly once."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from agents.common.ledger import handle_once
from agents.products.repository import PgProductsUnitOfWork
from topics import PRODUCTS_EVENTS
from topics.envelope import Reply
from topics.products import (
    OrderLine,
    ReservedLine,
    StockRejected,
    StockReleased,
    StockReserved,
)

# The conditional update is the whole oversell guard: it only succeeds while units are on hand.
RESERVE_LINE = """
UPDATE products SET stock = stock - $2, reserved = reserved + $2
WHERE id = $1 AND deleted_at IS NULL AND stock >= $2
RETURNING price
"""
STATUS = "SELECT status FROM stock_reservations WHERE order_id = $1 FOR UPDATE"
RECORD = """
INSERT INTO stock_reservations (order_id, status, lines, total, reason)
VALUES ($1, $2, $3, $4, $5)
"""
SETTLE = """
UPDATE stock_reservations SET status = $2 WHERE order_id = $1 AND status = 'reserved'
RETURNING lines
"""
RELEASE_LINE = "UPDATE products SET stock = stock + $2, reserved = reserved - $2 WHERE id = $1"
SELL_LINE = "UPDATE products SET reserved = reserved - $2, sold = sold + $2 WHERE id = $1"


class Shortage(Exception):
    def __init__(self, product_id: int) -> None:
        super().__init__(f"product {product_id} is out of stock or gone")


def merge(lines: list[OrderLine]) -> list[tuple[int, int]]:
    """One line per product, in product id order, so concurrent orders lock rows alike."""
    counts: Counter[int] = Counter()
    for line in lines:
        counts[line.product_id] += line.quantity
    return sorted(counts.items())


async def _reserve_lines(
    conn: asyncpg.Connection, lines: list[tuple[int, int]]
) -> list[ReservedLine]:
    reserved = []
    async with conn.transaction():  # a savepoint: a shortage undoes the lines before it
        for product_id, quantity in lines:
            price = await conn.fetchval(RESERVE_LINE, product_id, quantity)
            if price is None:
                raise Shortage(product_id)
            reserved.append(
                ReservedLine(product_id=product_id, quantity=quantity, unit_price=price)
            )
    return reserved


def _now() -> datetime:
    return datetime.now(UTC)


async def reserve_stock(
    event_id: uuid.UUID, order_id: int, lines: list[OrderLine], uow: PgProductsUnitOfWork
) -> Reply:
    """Handle OrderPlaced once: StockReserved with unit prices and total, or StockRejected."""

    async def apply(u: PgProductsUnitOfWork) -> Reply:
        conn = u.connection
        earlier = await conn.fetchval(STATUS, order_id)
        if earlier is not None:  # the same order placed again under another event id
            return Reply.success({"order_id": order_id, "reserved": earlier != "rejected"})
        try:
            reserved = await _reserve_lines(conn, merge(lines))
        except Shortage as e:
            await conn.execute(RECORD, order_id, "rejected", [], None, str(e))
            rejected = StockRejected(
                event_id=uuid.uuid4(), occurred_at=_now(), order_id=order_id, reason=str(e)
            )
            await u.outbox.add(PRODUCTS_EVENTS.name, str(order_id), rejected)
            return Reply.success({"order_id": order_id, "reserved": False, "reason": str(e)})
        total = sum((r.unit_price * r.quantity for r in reserved), Decimal(0))
        await conn.execute(
            RECORD,
            order_id,
            "reserved",
            [r.model_dump(mode="json") for r in reserved],
            total,
            None,
        )
        event = StockReserved(
            event_id=uuid.uuid4(),
            occurred_at=_now(),
            order_id=order_id,
            lines=reserved,
            total=total,
        )
        await u.outbox.add(PRODUCTS_EVENTS.name, str(order_id), event)
        return Reply.success({"order_id": order_id, "reserved": True, "total": str(total)})

    return await handle_once(uow, event_id, apply)


async def _settle(order_id: int, status: str, line_sql: str, conn: asyncpg.Connection) -> bool:
    lines = await conn.fetchval(SETTLE, order_id, status)
    if lines is None:
        return False
    for line in lines:
        await conn.execute(line_sql, line["product_id"], line["quantity"])
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
