"""The catalogue's SQL and handlers on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import asyncpg
import pytest

from agents.products import repository
from agents.products.handlers import handle_command
from agents.products.repository import PgProductsUnitOfWork
from tests.helpers import random_name
from topics.products import CreateProduct, NewProduct, ProductChanges, UpdateProduct


async def test_stock_can_never_go_below_zero(pool: asyncpg.Pool) -> None:
    async with PgProductsUnitOfWork(pool) as uow:
        product = await uow.products.add(NewProduct(name=random_name(), price=Decimal(1), stock=1))
        await uow.commit()
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute("UPDATE products SET stock = stock - 2 WHERE id = $1", product.id)


async def test_money_is_exact_and_updated_at_moves(pool: asyncpg.Pool) -> None:
    async with PgProductsUnitOfWork(pool) as uow:
        product = await uow.products.add(
            NewProduct(name=random_name(), price=Decimal("0.10"), stock=1)
        )
        await uow.commit()
    async with PgProductsUnitOfWork(pool) as uow:
        changed = await uow.products.update(product.id, ProductChanges(price=Decimal("0.20")))
        await uow.commit()
    assert changed is not None
    assert changed.price == Decimal("0.20")
    assert changed.updated_at > product.updated_at
    assert changed.created_at == product.created_at


async def test_deleted_products_leave_reads_but_stay_in_the_table(pool: asyncpg.Pool) -> None:
    async with PgProductsUnitOfWork(pool) as uow:
        product = await uow.products.add(NewProduct(name=random_name(), price=Decimal(1), stock=1))
        assert await uow.products.delete(product.id)
        assert not await uow.products.delete(product.id)
        await uow.commit()
    assert await repository.get_product(pool, product.id) is None
    assert await pool.fetchval("SELECT count(*) FROM products WHERE id = $1", product.id) == 1


async def test_a_command_and_its_event_commit_together_once(pool: asyncpg.Pool) -> None:
    name = random_name()
    cmd = CreateProduct(
        command_id=uuid.uuid4(), product=NewProduct(name=name, price=Decimal(2), stock=2)
    )
    ok = await asyncio.gather(*(handle_command(cmd, PgProductsUnitOfWork(pool)) for _ in range(3)))
    assert all(r == ok[0] for r in ok)
    assert await pool.fetchval("SELECT count(*) FROM products WHERE name = $1", name) == 1
    events = await pool.fetch(
        "SELECT payload FROM outbox WHERE payload->'product'->>'name' = $1", name
    )
    assert len(events) == 1
    assert events[0]["payload"]["type"] == "ProductCreated"
    again = await handle_command(cmd, PgProductsUnitOfWork(pool))
    assert again == ok[0]


async def test_a_failed_command_leaves_no_event(pool: asyncpg.Pool) -> None:
    before = await pool.fetchval("SELECT count(*) FROM outbox")
    reply = await handle_command(
        UpdateProduct(command_id=uuid.uuid4(), product_id=2**62, changes=ProductChanges(stock=1)),
        PgProductsUnitOfWork(pool),
    )
    assert reply.error is not None
    assert await pool.fetchval("SELECT count(*) FROM outbox") == before


async def test_pages_count_from_zero_newest_first(pool: asyncpg.Pool) -> None:
    total, first = await repository.list_products(pool, 0, 2)
    assert total >= len(first)
    _, second = await repository.list_products(pool, 1, 2)
    if first and second:
        assert first[-1].id > second[0].id
