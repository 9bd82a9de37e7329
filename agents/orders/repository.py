"""Orders' SQL, and the unit of work of the orders domain."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from agents.common.db import PgUnitOfWork, rfc3339
from topics import ORDERS_EVENTS
from topics.orders import (
    OrderAwaitingPayment,
    OrderCancelled,
    OrderPaid,
    OrderPlaced,
    OrderRejected,
)

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
    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool, "orders")

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
