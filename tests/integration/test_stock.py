"""Stock reservations on a real PostgreSQL under real concurrency: never oversold, settled once."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from agents.products.repository import PgProductsUnitOfWork
from agents.products.stock import release_stock, reserve_stock, sell_stock
from tests.integration.reliability import buckets, new_product
from topics.products import OrderLine


def _order_id() -> int:
    return uuid.uuid4().int % 2**62


async def test_two_hundred_orders_for_fifty_units(pool: asyncpg.Pool) -> None:
    product = await new_product(pool, stock=50)
    line = [OrderLine(product_id=product, quantity=1)]
    replies = await asyncio.gather(
        *(
            reserve_stock(uuid.uuid4(), _order_id(), line, PgProductsUnitOfWork(pool))
            for _ in range(200)
        )
    )
    reserved = [r for r in replies if r.result and r.result["reserved"]]
    assert len(reserved) == 50
    assert await buckets(pool, product) == (0, 50, 0)


async def test_an_order_is_reserved_whole_or_not_at_all(pool: asyncpg.Pool) -> None:
    plenty, scarce = await new_product(pool, 10, "1.00"), await new_product(pool, 1, "3.00")
    order = _order_id()
    lines = [OrderLine(product_id=plenty, quantity=4), OrderLine(product_id=scarce, quantity=2)]
    reply = await reserve_stock(uuid.uuid4(), order, lines, PgProductsUnitOfWork(pool))
    assert reply.result is not None
    assert reply.result["reserved"] is False
    assert await buckets(pool, plenty) == (10, 0, 0)
    assert await buckets(pool, scarce) == (1, 0, 0)

    ok = await reserve_stock(
        uuid.uuid4(),
        _order_id(),
        [
            OrderLine(product_id=plenty, quantity=2),
            OrderLine(product_id=plenty, quantity=1),
            OrderLine(product_id=scarce, quantity=1),
        ],
        PgProductsUnitOfWork(pool),
    )
    assert ok.result is not None
    assert ok.result["total"] == "6.00"


async def test_redelivery_and_settlement_happen_once(pool: asyncpg.Pool) -> None:
    product = await new_product(pool, 5)
    order, placed = _order_id(), uuid.uuid4()
    line = [OrderLine(product_id=product, quantity=3)]
    first = await reserve_stock(placed, order, line, PgProductsUnitOfWork(pool))
    again = await reserve_stock(placed, order, line, PgProductsUnitOfWork(pool))
    assert first == again
    # A re-drive of the same order is answered with the same decision, and holds nothing more.
    other_event = await reserve_stock(uuid.uuid4(), order, line, PgProductsUnitOfWork(pool))
    assert other_event == first
    assert await buckets(pool, product) == (2, 3, 0)

    cancelled = uuid.uuid4()
    for event in (cancelled, cancelled, uuid.uuid4()):
        await release_stock(event, order, PgProductsUnitOfWork(pool))
    assert await buckets(pool, product) == (5, 0, 0)
    await sell_stock(uuid.uuid4(), order, PgProductsUnitOfWork(pool))
    assert await buckets(pool, product) == (5, 0, 0)

    paid = _order_id()
    await reserve_stock(uuid.uuid4(), paid, line, PgProductsUnitOfWork(pool))
    for _ in range(2):
        await sell_stock(uuid.uuid4(), paid, PgProductsUnitOfWork(pool))
    await release_stock(uuid.uuid4(), paid, PgProductsUnitOfWork(pool))
    assert await buckets(pool, product) == (2, 0, 3)
