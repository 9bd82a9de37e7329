"""Baselines answered by aiohttp + asyncpg alone, in one process, against the platform's Postgres.

`GET /product/?page=N` (bench.catalogue, bench.issue8): the same SQL as the products worker
(LIST_PAGE: the page and the count in one statement), the same JSON as the gateway, without
the gateway, gRPC or the worker.

`POST /order/` (bench.issue8): the order insert of the orders agent (sql/0005_orders.sql), in
one transaction: the unit prices read from `products`, one row in a scratch copy of `orders`
and one per line in a scratch copy of `order_items` (schema `bench_direct`, made by
`create_scratch`, so that the platform's own tables stay clean). The bearer token is checked
as the gateway checks it (`agents.common.tokens.decode`), `Idempotency-Key` gives the same
command id as the gateway's (a retry returns the first order), the answer is the gateway's
201 `{"order": ...}`. No stock is reserved; no event, outbox, status history or Kafka.

    python -m bench.direct --port PORT --dsn postgresql://...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
from aiohttp import web

from agents.common import tokens
from agents.common.db import create_pool
from agents.common.settings import Settings
from agents.products.repository import LIST_PAGE, page_args, split_page

MAX_PAGE_SIZE = 100
MAX_LINES = 100
# The gateway's namespace for command ids derived from an Idempotency-Key (gateway/routes).
IDEMPOTENCY_NS = uuid.UUID("6f1c1a52-6a8e-4d5e-9f55-1b7f3c1f0a11")

# The scratch copy of the orders tables of sql/0005_orders.sql (their columns, checks, keys
# and indexes; the updated_at trigger is left out: nothing here updates a row).
SCHEMA = "bench_direct"
CREATE_SCRATCH = f"""
CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.orders (
    id             BIGSERIAL PRIMARY KEY,
    user_id        BIGINT NOT NULL,
    status         TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'awaiting_payment', 'paid', 'rejected', 'cancelled')),
    total_price    NUMERIC(14, 2),
    reason         TEXT,
    command_id     UUID NOT NULL UNIQUE,
    request_hash   TEXT NOT NULL,
    reply_to       TEXT,
    correlation_id TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX orders_by_user ON {SCHEMA}.orders (user_id, id DESC);
CREATE TABLE {SCHEMA}.order_items (
    id         BIGSERIAL PRIMARY KEY,
    order_id   BIGINT NOT NULL REFERENCES {SCHEMA}.orders (id),
    product_id BIGINT NOT NULL,
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    price      NUMERIC(12, 2),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX order_items_order ON {SCHEMA}.order_items (order_id);
"""
DROP_SCRATCH = f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"
COUNT_SCRATCH = f"""
SELECT (SELECT count(*) FROM {SCHEMA}.orders) AS orders,
       (SELECT count(*) FROM {SCHEMA}.order_items) AS items
"""

PRICES = "SELECT id, price FROM products WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL"
ORDER_COLUMNS = "id, user_id, status, total_price, reason, created_at, updated_at"
INSERT_ORDER = f"""
INSERT INTO {SCHEMA}.orders (user_id, status, total_price, command_id, request_hash)
VALUES ($1, 'awaiting_payment', $2, $3, $4)
ON CONFLICT (command_id) DO NOTHING
RETURNING {ORDER_COLUMNS}
"""
INSERT_ITEMS = f"""
INSERT INTO {SCHEMA}.order_items (order_id, product_id, quantity, price)
SELECT $1, l.product_id, l.quantity, l.price
FROM unnest($2::bigint[], $3::integer[], $4::numeric[]) AS l (product_id, quantity, price)
RETURNING id, order_id, product_id, quantity, price
"""
BY_COMMAND = f"SELECT {ORDER_COLUMNS} FROM {SCHEMA}.orders WHERE command_id = $1 AND user_id = $2"
ITEMS = f"""
SELECT id, order_id, product_id, quantity, price FROM {SCHEMA}.order_items
WHERE order_id = $1 ORDER BY id
"""


async def create_scratch(dsn: str) -> None:
    """A fresh `bench_direct` schema with the scratch orders tables (dropped first)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(DROP_SCRATCH)
        await conn.execute(CREATE_SCRATCH)
    finally:
        await conn.close()


async def drop_scratch(dsn: str) -> dict[str, int]:
    """Drop the scratch schema; how many orders and items it held."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(COUNT_SCRATCH)
        await conn.execute(DROP_SCRATCH)
    finally:
        await conn.close()
    return {k: int(v) for k, v in dict(row).items()}


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _product(row: asyncpg.Record) -> dict[str, Any]:
    price: Decimal = row["price"]
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "price": float(price),
        "stock": row["stock"],
        "image_url": row["image_url"],
        "created_at": _timestamp(row["created_at"]),
        "updated_at": _timestamp(row["updated_at"]),
    }


def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise web.HTTPUnprocessableEntity(text=f"{name} must be {lo}..{hi}")
    return int(raw)


class Catalogue:
    def __init__(self, dsn: str, page_size: int, pool_max: int) -> None:
        self.dsn = dsn
        self.page_size = page_size
        self.pool_max = pool_max
        self.pool: Any = None

    async def context(self, app: web.Application) -> AsyncIterator[None]:
        self.pool = await create_pool(self.dsn, max_size=self.pool_max)
        yield
        await self.pool.close()

    async def list_products(self, request: web.Request) -> web.Response:
        page = _int(request, "page", 0, 0, 1_000_000)
        size = _int(request, "limit", self.page_size, 1, MAX_PAGE_SIZE)
        total, rows = split_page(await self.pool.fetch(LIST_PAGE, *page_args(page, size)))
        return web.json_response(
            {
                "total": total,
                "page": page,
                "total_page": math.ceil(total / size),
                "products": [_product(r) for r in rows],
            }
        )


_ERRORS: dict[int, type[web.HTTPException]] = {
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    409: web.HTTPConflict,
    422: web.HTTPUnprocessableEntity,
}


def _error(status: int, detail: str) -> web.HTTPException:
    body = json.dumps({"status": status, "detail": detail, "error": detail})
    return _ERRORS[status](text=body, content_type="application/problem+json")


def _lines(body: Any) -> list[tuple[int, int]]:
    """The order's lines, one per product (quantities of a repeated product added up)."""
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_LINES:
        raise _error(422, f"items must be a list of 1..{MAX_LINES} lines")
    merged: dict[int, int] = {}
    for item in items:
        product = item.get("product_id") if isinstance(item, dict) else None
        quantity = item.get("quantity") if isinstance(item, dict) else None
        if not isinstance(product, int) or not isinstance(quantity, int):
            raise _error(422, "each line needs an integer product_id and quantity")
        if product < 1 or quantity < 1:
            raise _error(422, "product_id and quantity must be at least 1")
        merged[product] = merged.get(product, 0) + quantity
    return sorted(merged.items())


def _order(row: asyncpg.Record, items: list[asyncpg.Record]) -> dict[str, Any]:
    """The gateway's order JSON (without a status history: none is kept here)."""
    total: Decimal | None = row["total_price"]
    return {
        "id": row["id"],
        "user_id": row["user_id"],
        "total_price": float(total) if total is not None else None,
        "status": row["status"],
        "reason": row["reason"],
        "created_at": _timestamp(row["created_at"]),
        "updated_at": _timestamp(row["updated_at"]),
        "order_items": [
            {
                "id": i["id"],
                "order_id": i["order_id"],
                "product_id": i["product_id"],
                "quantity": i["quantity"],
                "price": float(i["price"]),
            }
            for i in items
        ],
        "status_history": [],
    }


class Orders:
    """`POST /order/`: check the token, read the prices, insert the order and its lines."""

    def __init__(self, settings: Settings, catalogue: Catalogue) -> None:
        self.settings = settings
        self.catalogue = catalogue

    def _user(self, request: web.Request) -> int:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _error(401, "a bearer token is required")
        try:
            claims = tokens.decode(self.settings, token.strip(), "access")
        except tokens.InvalidToken as e:
            raise _error(401, f"invalid token: {e}") from None
        if claims.get("role") not in ("user", "admin") or not str(claims["sub"]).isdigit():
            raise _error(403, "orders need an account")
        return int(claims["sub"])

    async def place(self, request: web.Request) -> web.Response:
        user_id = self._user(request)
        try:
            body = await request.json()
        except ValueError:
            raise _error(422, "the body is not JSON") from None
        lines = _lines(body)
        key = request.headers.get("Idempotency-Key")
        if key is not None and len(key) > 255:
            raise _error(422, "Idempotency-Key is longer than 255 characters")
        command_id = (
            uuid.uuid5(IDEMPOTENCY_NS, f"{user_id}:{request.method}:{request.path}:{key}")
            if key
            else uuid.uuid4()
        )
        request_hash = hashlib.sha256(json.dumps(lines).encode()).hexdigest()
        products = [p for p, _ in lines]
        async with self.catalogue.pool.acquire() as conn, conn.transaction():
            prices: dict[int, Decimal] = {
                r["id"]: r["price"] for r in await conn.fetch(PRICES, products)
            }
            missing = [p for p in products if p not in prices]
            if missing:
                raise _error(409, f"no such product: {missing}")
            unit = [prices[p] for p in products]
            total = sum((u * q for u, (_, q) in zip(unit, lines, strict=True)), Decimal(0))
            row = await conn.fetchrow(INSERT_ORDER, user_id, total, command_id, request_hash)
            if row is None:  # a retry: the first order
                row = await conn.fetchrow(BY_COMMAND, command_id, user_id)
                if row is None:
                    raise _error(409, "this Idempotency-Key was used by another user")
                items = await conn.fetch(ITEMS, row["id"])
            else:
                items = await conn.fetch(
                    INSERT_ITEMS, row["id"], products, [q for _, q in lines], unit
                )
        order = _order(row, items)
        return web.json_response(
            {"order": order}, status=201, headers={"Location": f"/api/v1/orders/{order['id']}"}
        )


def create_app(dsn: str, page_size: int, pool_max: int) -> web.Application:
    catalogue = Catalogue(dsn, page_size, pool_max)
    orders = Orders(Settings.from_env(), catalogue)
    app = web.Application()
    app.cleanup_ctx.append(catalogue.context)
    app.router.add_get("/product/", catalogue.list_products)
    app.router.add_post("/order/", orders.place)
    return app


def cli(argv: list[str] | None = None) -> None:
    defaults = Settings.from_env()
    p = argparse.ArgumentParser(prog="python -m bench.direct", description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dsn", required=True)
    p.add_argument("--page-size", type=int, default=defaults.page_size)
    p.add_argument("--pool-max", type=int, default=defaults.db_pool_max)
    args = p.parse_args(argv)
    web.run_app(
        create_app(args.dsn, args.page_size, args.pool_max),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    cli()
