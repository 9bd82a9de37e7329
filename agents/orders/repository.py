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
INSERT_HISTORY = "INSERT INTO order_status_history (order_id, status, reason) VALUES ($1, $2, $3)"
LOCK = f"SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 FOR UPDATE"
SET_STATUS = "UPDATE orders SET status = $2, reason = $3 WHERE id = $1"
# An order with its lines and its history, read in the same round trip (see `_detailed`).
DETAILED_COLUMNS = f"""
{ORDER_COLUMNS},
ARRAY(SELECT ROW(i.id, i.product_id, i.quantity, i.price) FROM order_items i
      WHERE i.order_id = orders.id ORDER BY i.id) AS item_rows,
ARRAY(SELECT ROW(h.status, h.reason, h.at) FROM order_status_history h
      WHERE h.order_id = orders.id ORDER BY h.id) AS history_rows
"""
GET_FOR_USER = f"SELECT {DETAILED_COLUMNS} FROM orders WHERE id = $1 AND user_id = $2"
GET_BY_COMMAND_FOR_USER = (
    f"SELECT {DETAILED_COLUMNS} FROM orders WHERE command_id = $1 AND user_id = $2"
)
LIST_FOR_USER = f"""
SELECT {DETAILED_COLUMNS} FROM orders WHERE user_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3
"""


@dataclass(frozen=True)
class OrderRow:
    id: int
    user_id: int
    status: str
    total_price: Decimal | None
    reason: str | None
    # None once the PlaceOrder's Idempotency-Key has expired (`forget_keys`).
    command_id: uuid.UUID | None
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


def _detailed(row: asyncpg.Record) -> OrderRow:
    columns = dict(row)
    order_id = columns["id"]
    items = [
        {"id": i, "order_id": order_id, "product_id": p, "quantity": q, "price": price}
        for i, p, q, price in columns.pop("item_rows")
    ]
    history = [{"status": s, "reason": why, "at": at} for s, why, at in columns.pop("history_rows")]
    return OrderRow(**columns, items=items, history=history)


class OrderRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def lock(self, order_id: int) -> OrderRow | None:
        return _order(await self._conn.fetchrow(LOCK, order_id))

    async def record(self, order_id: int, status: str, reason: str | None) -> None:
        await self._conn.execute(INSERT_HISTORY, order_id, status, reason)

    async def move(self, order_id: int, status: str, reason: str | None = None) -> None:
        await self._conn.execute(SET_STATUS, order_id, status, reason)
        await self.record(order_id, status, reason)


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
    row = await pool.fetchrow(GET_FOR_USER, order_id, user_id)
    return None if row is None else _detailed(row)


async def order_by_command(
    pool: asyncpg.Pool, user_id: int, command_id: uuid.UUID
) -> OrderRow | None:
    row = await pool.fetchrow(GET_BY_COMMAND_FOR_USER, command_id, user_id)
    return None if row is None else _detailed(row)


async def orders_for_user(
    pool: asyncpg.Pool, user_id: int, offset: int, limit: int
) -> list[OrderRow]:
    return [_detailed(r) for r in await pool.fetch(LIST_FOR_USER, user_id, limit, offset)]


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
INSERT_HISTORIES = """
INSERT INTO order_status_history (order_id, status, reason)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])
"""
BY_COMMANDS = f"SELECT {DETAILED_COLUMNS} FROM orders WHERE command_id = ANY($1::uuid[])"
SET_REJECTED = """
UPDATE orders o SET status = 'rejected', reason = d.reason
FROM unnest($1::bigint[], $2::text[]) AS d(id, reason) WHERE o.id = d.id
"""
DETAILED = f"SELECT {DETAILED_COLUMNS} FROM orders WHERE id = ANY($1::bigint[]) ORDER BY id"
# The stock's answers for a batch of orders, applied to those still pending, in one statement:
# status, total and reason, unit prices, history. The status condition is the guard: a worker
# racing on an order waits for its row, then finds it moved on and changes nothing.
DECIDE = """
WITH moved AS (
    UPDATE orders o SET status = d.status, total_price = d.total, reason = d.reason
    FROM unnest($1::bigint[], $2::text[], $3::numeric[], $4::text[]) AS d(id, status, total, reason)
    WHERE o.id = d.id AND o.status = 'pending'
    RETURNING o.id, o.user_id, o.status, o.reason
), priced AS (
    UPDATE order_items i SET price = p.price
    FROM unnest($5::bigint[], $6::bigint[], $7::numeric[]) AS p(order_id, product_id, price)
    WHERE i.order_id = p.order_id AND i.product_id = p.product_id
      AND p.order_id IN (SELECT id FROM moved)
), history AS (
    INSERT INTO order_status_history (order_id, status, reason)
    SELECT id, status, reason FROM moved
)
SELECT id, user_id FROM moved
"""
STUCK = """
SELECT id, user_id, extract(epoch FROM now() - created_at) AS age_s FROM orders
WHERE status = 'pending' AND created_at < now() - make_interval(secs => $1)
  AND (redriven_at IS NULL OR redriven_at < now() - make_interval(secs => $1))
ORDER BY created_at LIMIT 500 FOR UPDATE SKIP LOCKED
"""
SET_REDRIVEN = "UPDATE orders SET redriven_at = now() WHERE id = ANY($1::bigint[])"
LINES = "SELECT product_id, quantity FROM order_items WHERE order_id = $1 ORDER BY id"
FORGET_KEYS = """
UPDATE orders SET command_id = NULL WHERE id IN (
    SELECT id FROM orders
    WHERE command_id IS NOT NULL AND status <> 'pending'
      AND created_at < now() - make_interval(secs => $1)
    ORDER BY created_at LIMIT $2
)
"""
FORGET_BATCH = 1000


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
    orders = [_detailed(r) for r in await conn.fetch(BY_COMMANDS, command_ids)]
    return {o.command_id: o for o in orders if o.command_id is not None}


async def forget_keys(pool: asyncpg.Pool, ttl_s: float, batch: int = FORGET_BATCH) -> int:
    """Forget the PlaceOrder ids of decided orders placed more than `ttl_s` ago, so that an
    expired Idempotency-Key places a new order; return how many."""
    forgotten = 0
    while True:
        status: str = await pool.execute(FORGET_KEYS, float(ttl_s), batch)
        done = int(status.split()[-1])
        forgotten += done
        if done < batch:
            return forgotten


async def mark_rejected(conn: asyncpg.Connection, rejected: list[tuple[int, str]]) -> None:
    if not rejected:
        return
    await conn.execute(SET_REJECTED, [o for o, _ in rejected], [r for _, r in rejected])
    await _record(conn, [(o, "rejected", r) for o, r in rejected])


async def detailed_orders(conn: asyncpg.Connection, order_ids: list[int]) -> list[OrderRow]:
    if not order_ids:
        return []
    return [_detailed(r) for r in await conn.fetch(DETAILED, order_ids)]


async def decide(
    conn: asyncpg.Connection,
    reserved: list[StockReserved],
    rejected: list[tuple[int, str]],
) -> dict[int, int]:
    """Apply the stock's answers to the orders still pending; their user ids by order id."""
    ids = [d.order_id for d in reserved] + [o for o, _ in rejected]
    if not ids:
        return {}
    prices = [(d.order_id, line.product_id, line.unit_price) for d in reserved for line in d.lines]
    rows = await conn.fetch(
        DECIDE,
        ids,
        ["awaiting_payment"] * len(reserved) + ["rejected"] * len(rejected),
        [d.total for d in reserved] + [None] * len(rejected),
        [None] * len(reserved) + [r for _, r in rejected],
        [o for o, _, _ in prices],
        [p for _, p, _ in prices],
        [u for _, _, u in prices],
    )
    return {r["id"]: r["user_id"] for r in rows}


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
