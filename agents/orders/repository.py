"""Orders' SQL, and the unit of work of the orders domain."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from agents.common.db import PgUnitOfWork, rfc3339
from agents.common.relay import Effects
from agents.products.stock import merge
from topics import ORDERS_EVENTS
from topics.orders import (
    OrderAwaitingPayment,
    OrderCancelled,
    OrderPaid,
    OrderPlaced,
    OrderRejected,
    PlaceOrder,
)
from topics.products import OrderLine, StockReserved

ORDER_COLUMNS = """
id, user_id, status, total_price, reason, command_id, request_hash, reply_to, correlation_id,
created_at, updated_at
"""
INSERT_ORDER = f"""
INSERT INTO orders (user_id, command_id, request_hash, reply_to, correlation_id)
VALUES ($1, $2, $3, $4, $5) RETURNING {ORDER_COLUMNS}
"""
INSERT_ITEM = "INSERT INTO order_items (order_id, product_id, quantity) VALUES ($1, $2, $3)"
INSERT_HISTORY = "INSERT INTO order_status_history (order_id, status, reason) VALUES ($1, $2, $3)"
BY_COMMAND = f"SELECT {ORDER_COLUMNS} FROM orders WHERE command_id = $1 FOR UPDATE"
LOCK = f"SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 FOR UPDATE"
SET_STATUS = "UPDATE orders SET status = $2, reason = $3 WHERE id = $1"
SET_TOTAL = "UPDATE orders SET total_price = $2 WHERE id = $1"
SET_PRICE = "UPDATE order_items SET price = $3 WHERE order_id = $1 AND product_id = $2"
GET_FOR_USER = f"SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 AND user_id = $2"
GET_BY_COMMAND_FOR_USER = (
    f"SELECT {ORDER_COLUMNS} FROM orders WHERE command_id = $1 AND user_id = $2"
)
LIST_FOR_USER = f"""
SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3
"""
ITEMS = """
SELECT id, order_id, product_id, quantity, price FROM order_items
WHERE order_id = ANY($1::bigint[]) ORDER BY id
"""
HISTORY = """
SELECT order_id, status, reason, at FROM order_status_history
WHERE order_id = ANY($1::bigint[]) ORDER BY id
"""


@dataclass(frozen=True)
class OrderRow:
    id: int
    user_id: int
    status: str
    total_price: Decimal | None
    reason: str | None
    command_id: uuid.UUID
    request_hash: str
    reply_to: str | None
    correlation_id: str | None
    created_at: datetime
    updated_at: datetime
    items: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The seed's Order, with the status history beside it."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "total_price": float(self.total_price) if self.total_price is not None else None,
            "status": self.status,
            "reason": self.reason,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "order_items": [
                {**i, "price": float(i["price"]) if i["price"] is not None else None}
                for i in self.items
            ],
            "status_history": [
                {"status": h["status"], "reason": h["reason"], "at": rfc3339(h["at"])}
                for h in self.history
            ],
        }


def _order(row: asyncpg.Record | None) -> OrderRow | None:
    return None if row is None else OrderRow(**dict(row))


async def _with_details(conn: asyncpg.Connection, orders: list[OrderRow]) -> list[OrderRow]:
    ids = [o.id for o in orders]
    items: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    history: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    for r in await conn.fetch(ITEMS, ids):
        items[r["order_id"]].append(dict(r))
    for r in await conn.fetch(HISTORY, ids):
        history[r["order_id"]].append(dict(r))
    return [
        OrderRow(**{**o.__dict__, "items": items[o.id], "history": history[o.id]}) for o in orders
    ]


class OrderRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add(
        self,
        user_id: int,
        command_id: uuid.UUID,
        request_hash: str,
        lines: list[tuple[int, int]],
        reply_to: str | None,
        correlation_id: str | None,
    ) -> OrderRow:
        order = _order(
            await self._conn.fetchrow(
                INSERT_ORDER, user_id, command_id, request_hash, reply_to, correlation_id
            )
        )
        assert order is not None
        await self._conn.executemany(INSERT_ITEM, [(order.id, p, q) for p, q in lines])
        await self.record(order.id, "pending", None)
        return order

    async def by_command(self, command_id: uuid.UUID) -> OrderRow | None:
        return _order(await self._conn.fetchrow(BY_COMMAND, command_id))

    async def lock(self, order_id: int) -> OrderRow | None:
        return _order(await self._conn.fetchrow(LOCK, order_id))

    async def record(self, order_id: int, status: str, reason: str | None) -> None:
        await self._conn.execute(INSERT_HISTORY, order_id, status, reason)

    async def move(self, order_id: int, status: str, reason: str | None = None) -> None:
        await self._conn.execute(SET_STATUS, order_id, status, reason)
        await self.record(order_id, status, reason)

    async def price(
        self, order_id: int, total: Decimal, unit_prices: list[tuple[int, Decimal]]
    ) -> None:
        await self._conn.execute(SET_TOTAL, order_id, total)
        await self._conn.executemany(SET_PRICE, [(order_id, p, u) for p, u in unit_prices])

    async def detailed(self, order_id: int) -> OrderRow:
        order = _order(await self._conn.fetchrow(LOCK.replace(" FOR UPDATE", ""), order_id))
        assert order is not None
        return (await _with_details(self._conn, [order]))[0]


class OrdersUnitOfWork(PgUnitOfWork):
    def __init__(
        self, source: asyncpg.Pool | asyncpg.Connection, effects: Effects | None = None
    ) -> None:
        super().__init__(source, "orders", effects)

    def bind(self, conn: asyncpg.Connection) -> None:
        super().bind(conn)
        self.orders = OrderRepository(conn)

    async def orders_outbox(
        self,
        event: OrderPlaced | OrderAwaitingPayment | OrderRejected | OrderPaid | OrderCancelled,
    ) -> None:
        order_id = event.order_id
        await self.outbox.add(ORDERS_EVENTS.name, str(order_id), event)


async def order_for_user(pool: asyncpg.Pool, user_id: int, order_id: int) -> OrderRow | None:
    async with pool.acquire() as conn:
        order = _order(await conn.fetchrow(GET_FOR_USER, order_id, user_id))
        return None if order is None else (await _with_details(conn, [order]))[0]


async def order_by_command(
    pool: asyncpg.Pool, user_id: int, command_id: uuid.UUID
) -> OrderRow | None:
    async with pool.acquire() as conn:
        order = _order(await conn.fetchrow(GET_BY_COMMAND_FOR_USER, command_id, user_id))
        return None if order is None else (await _with_details(conn, [order]))[0]


async def orders_for_user(
    pool: asyncpg.Pool, user_id: int, offset: int, limit: int
) -> list[OrderRow]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(LIST_FOR_USER, user_id, limit, offset)
        return await _with_details(conn, [o for r in rows if (o := _order(r)) is not None])


# The batch statements of the saga's hot path: one round trip for the whole batch each.
# The orders, their lines and their first status in one statement; a command id that has an
# order already inserts nothing (and waits for a concurrent insert of it to commit first).
INSERT_ORDERS = f"""
WITH created AS (
    INSERT INTO orders (user_id, command_id, request_hash, reply_to, correlation_id)
    SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::text[])
    ON CONFLICT (command_id) DO NOTHING
    RETURNING {ORDER_COLUMNS}
), lines AS (
    INSERT INTO order_items (order_id, product_id, quantity)
    SELECT c.id, l.product_id, l.quantity
    FROM created c
    JOIN unnest($6::uuid[], $7::bigint[], $8::int[]) AS l(command_id, product_id, quantity)
      ON l.command_id = c.command_id
), history AS (
    INSERT INTO order_status_history (order_id, status, at)
    SELECT id, 'pending', created_at FROM created
)
SELECT * FROM created
"""
INSERT_ITEMS = """
INSERT INTO order_items (order_id, product_id, quantity)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[])
"""
INSERT_HISTORIES = """
INSERT INTO order_status_history (order_id, status, reason)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])
"""
BY_COMMANDS = f"SELECT {ORDER_COLUMNS} FROM orders WHERE command_id = ANY($1::uuid[])"
LOCK_MANY = (
    f"SELECT {ORDER_COLUMNS} FROM orders WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE"
)
SET_RESERVED = """
UPDATE orders o SET status = 'awaiting_payment', total_price = d.total
FROM unnest($1::bigint[], $2::numeric[]) AS d(id, total) WHERE o.id = d.id
"""
SET_PRICES = """
UPDATE order_items i SET price = d.price
FROM unnest($1::bigint[], $2::bigint[], $3::numeric[]) AS d(order_id, product_id, price)
WHERE i.order_id = d.order_id AND i.product_id = d.product_id
"""
SET_REJECTED = """
UPDATE orders o SET status = 'rejected', reason = d.reason
FROM unnest($1::bigint[], $2::text[]) AS d(id, reason) WHERE o.id = d.id
"""
DETAILED = f"SELECT {ORDER_COLUMNS} FROM orders WHERE id = ANY($1::bigint[]) ORDER BY id"
STUCK = """
SELECT id, user_id, extract(epoch FROM now() - created_at) AS age_s FROM orders
WHERE status = 'pending' AND created_at < now() - make_interval(secs => $1)
  AND (redriven_at IS NULL OR redriven_at < now() - make_interval(secs => $1))
ORDER BY created_at LIMIT 500 FOR UPDATE SKIP LOCKED
"""
SET_REDRIVEN = "UPDATE orders SET redriven_at = now() WHERE id = ANY($1::bigint[])"
LINES = "SELECT product_id, quantity FROM order_items WHERE order_id = $1 ORDER BY id"


@dataclass(frozen=True)
class Stuck:
    id: int
    user_id: int
    age_s: float


async def insert_orders(
    conn: asyncpg.Connection, commands: list[tuple[PlaceOrder, Any]]
) -> dict[uuid.UUID, OrderRow]:
    """The new orders by command id; a command id that has an order already is left out."""
    lines = [(c.command_id, p, q) for c, _ in commands for p, q in merge(list(c.items))]
    rows = await conn.fetch(
        INSERT_ORDERS,
        [c.user_id for c, _ in commands],
        [c.command_id for c, _ in commands],
        [c.request_hash for c, _ in commands],
        [m.reply_to for _, m in commands],
        [m.correlation_id for _, m in commands],
        *(list(column) for column in zip(*lines, strict=True)),
    )
    return {r["command_id"]: OrderRow(**dict(r)) for r in rows}


async def _record(conn: asyncpg.Connection, changes: list[tuple[int, str, str | None]]) -> None:
    if changes:
        await conn.execute(INSERT_HISTORIES, *(list(c) for c in zip(*changes, strict=True)))


async def orders_by_commands(
    conn: asyncpg.Connection, command_ids: list[uuid.UUID]
) -> dict[uuid.UUID, OrderRow]:
    rows = [OrderRow(**dict(r)) for r in await conn.fetch(BY_COMMANDS, command_ids)]
    return {o.command_id: o for o in await _with_details(conn, rows)}


async def lock_orders(conn: asyncpg.Connection, order_ids: list[int]) -> list[OrderRow]:
    return [OrderRow(**dict(r)) for r in await conn.fetch(LOCK_MANY, order_ids)]


async def mark_reserved(conn: asyncpg.Connection, decisions: list[StockReserved]) -> None:
    if not decisions:
        return
    await conn.execute(SET_RESERVED, [d.order_id for d in decisions], [d.total for d in decisions])
    prices = [(d.order_id, line.product_id, line.unit_price) for d in decisions for line in d.lines]
    if prices:
        await conn.execute(SET_PRICES, *(list(c) for c in zip(*prices, strict=True)))
    await _record(conn, [(d.order_id, "awaiting_payment", None) for d in decisions])


async def mark_rejected(conn: asyncpg.Connection, rejected: list[tuple[int, str]]) -> None:
    if not rejected:
        return
    await conn.execute(SET_REJECTED, [o for o, _ in rejected], [r for _, r in rejected])
    await _record(conn, [(o, "rejected", r) for o, r in rejected])


async def detailed_orders(conn: asyncpg.Connection, order_ids: list[int]) -> list[OrderRow]:
    if not order_ids:
        return []
    rows = [OrderRow(**dict(r)) for r in await conn.fetch(DETAILED, order_ids)]
    return await _with_details(conn, rows)


async def stuck_orders(conn: asyncpg.Connection, older_than_s: float) -> list[Stuck]:
    return [
        Stuck(r["id"], r["user_id"], float(r["age_s"]))
        for r in await conn.fetch(STUCK, older_than_s)
    ]


async def mark_redriven(conn: asyncpg.Connection, order_ids: list[int]) -> None:
    if order_ids:
        await conn.execute(SET_REDRIVEN, order_ids)


async def order_lines(conn: asyncpg.Connection, order_id: int) -> list[OrderLine]:
    return [
        OrderLine(product_id=r["product_id"], quantity=r["quantity"])
        for r in await conn.fetch(LINES, order_id)
    ]
