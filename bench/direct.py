"""The baseline of bench.catalogue: `GET /product/?page=N` answered by aiohttp + asyncpg alone.

The same SQL as the products worker (COUNT_LIVE and PAGE in one read-only repeatable-read
transaction), the same JSON as the gateway, without the gateway, gRPC or the worker.

    python -m bench.direct --port PORT --dsn postgresql://...
"""

from __future__ import annotations

import argparse
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
from aiohttp import web

from agents.common.db import create_pool
from agents.common.settings import Settings
from agents.products.repository import COUNT_LIVE, PAGE

MAX_PAGE_SIZE = 100


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
        async with (
            self.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            total: int = await conn.fetchval(COUNT_LIVE)
            rows = await conn.fetch(PAGE, size, page * size)
        return web.json_response(
            {
                "total": total,
                "page": page,
                "total_page": math.ceil(total / size),
                "products": [_product(r) for r in rows],
            }
        )


def create_app(dsn: str, page_size: int, pool_max: int) -> web.Application:
    catalogue = Catalogue(dsn, page_size, pool_max)
    app = web.Application()
    app.cleanup_ctx.append(catalogue.context)
    app.router.add_get("/product/", catalogue.list_products)
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
