"""The catalogue's SQL, and the unit of work that gives handlers the product repository."""

from __future__ import annotations

from typing import Protocol

import asyncpg

from agents.common.db import PgUnitOfWork
from agents.common.ledger import UnitOfWork
from agents.common.relay import Effects
from topics.products import NewProduct, Product, ProductChanges

COLUMNS = "id, name, description, price, stock, image_url, created_at, updated_at"
INSERT = f"""
INSERT INTO products (name, description, price, stock, image_url)
VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}
"""
UPDATE = f"""
UPDATE products SET
    name = COALESCE($2, name),
    description = COALESCE($3, description),
    price = COALESCE($4, price),
    stock = COALESCE($5, stock),
    image_url = COALESCE($6, image_url)
WHERE id = $1 AND deleted_at IS NULL
RETURNING {COLUMNS}
"""
SOFT_DELETE = "UPDATE products SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL"
GET = f"SELECT {COLUMNS} FROM products WHERE id = $1 AND deleted_at IS NULL"
# One page, newest first, and the count of live products: one statement, so one snapshot.
# $1 page size, $2 offset, $3 the highest id the page may hold (the keyset cursor; MAX_ID for
# none). Each row is a product with the count beside it; a page past the end is one row of
# the count and NULLs, so the count is always there.
LIST_PAGE = f"""
SELECT live.total, page.*
FROM (SELECT count(*) AS total FROM products WHERE deleted_at IS NULL) AS live
LEFT JOIN LATERAL (
    SELECT {COLUMNS} FROM products
    WHERE deleted_at IS NULL AND id <= $3
    ORDER BY id DESC LIMIT $1 OFFSET $2
) AS page ON true
ORDER BY page.id DESC
"""
MAX_ID = 2**63 - 1


def _product(row: asyncpg.Record) -> Product:
    return Product.model_validate(dict(row))


class ProductRepository(Protocol):
    async def add(self, new: NewProduct) -> Product: ...
    async def update(self, product_id: int, changes: ProductChanges) -> Product | None: ...
    async def delete(self, product_id: int) -> bool: ...


class ProductsUnitOfWork(UnitOfWork, Protocol):
    @property
    def products(self) -> ProductRepository: ...


class PgProductRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add(self, new: NewProduct) -> Product:
        row = await self._conn.fetchrow(
            INSERT, new.name, new.description, new.price, new.stock, new.image_url
        )
        assert row is not None
        return _product(row)

    async def update(self, product_id: int, changes: ProductChanges) -> Product | None:
        row = await self._conn.fetchrow(
            UPDATE,
            product_id,
            changes.name,
            changes.description,
            changes.price,
            changes.stock,
            changes.image_url,
        )
        return None if row is None else _product(row)

    async def delete(self, product_id: int) -> bool:
        status: str = await self._conn.execute(SOFT_DELETE, product_id)
        return status == "UPDATE 1"


class PgProductsUnitOfWork(PgUnitOfWork):
    def __init__(
        self, source: asyncpg.Pool | asyncpg.Connection, effects: Effects | None = None
    ) -> None:
        super().__init__(source, "products", effects)

    def bind(self, conn: asyncpg.Connection) -> None:
        super().bind(conn)
        self.products = PgProductRepository(conn)


async def get_product(pool: asyncpg.Pool, product_id: int) -> Product | None:
    row = await pool.fetchrow(GET, product_id)
    return None if row is None else _product(row)


def page_args(page: int, page_size: int, after_id: int = 0) -> tuple[int, int, int]:
    """LIST_PAGE's arguments: `after_id` 0 pages from the newest product."""
    return page_size, page * page_size, after_id - 1 if after_id > 0 else MAX_ID


def split_page(rows: list[asyncpg.Record]) -> tuple[int, list[asyncpg.Record]]:
    """LIST_PAGE's rows as (the count of live products, the page's rows)."""
    return rows[0]["total"], [r for r in rows if r["id"] is not None]


async def list_products(
    pool: asyncpg.Pool, page: int, page_size: int, after_id: int = 0
) -> tuple[int, list[Product]]:
    """One page, newest first, and the count of every live product, read in one statement."""
    total, rows = split_page(await pool.fetch(LIST_PAGE, *page_args(page, page_size, after_id)))
    return total, [_product(r) for r in rows]
