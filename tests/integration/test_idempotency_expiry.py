"""Idempotency keys expire: the command ledger and the orders' keys are pruned by age, a batch at
a time, and an expired key can be used again for a new request."""

from __future__ import annotations

import uuid
from decimal import Decimal

import asyncpg

from agents.common.agent import Inbound, RequestMeta
from agents.common.ledger import KEY_REUSED, prune_ledger
from agents.common.relay import Effects
from agents.orders import handlers as orders
from agents.orders.repository import forget_keys
from agents.products.handlers import handle_command
from agents.products.repository import PgProductsUnitOfWork
from tests.helpers import random_name
from topics.envelope import ErrorType, Reply
from topics.orders import PlaceOrder
from topics.products import NewProduct, OrderLine, ProductChanges, UpdateProduct

TTL_S = 86400.0
BACK_DATE_LEDGER = """
UPDATE processed_commands SET created_at = now() - interval '2 days'
WHERE domain = $1 AND command_id = $2
"""


async def _product(pool: asyncpg.Pool) -> int:
    async with PgProductsUnitOfWork(pool) as uow:
        p = await uow.products.add(NewProduct(name=random_name(), price=Decimal(1), stock=0))
        await uow.commit()
    return p.id


def _update(key: uuid.UUID, product_id: int, stock: int) -> UpdateProduct:
    return UpdateProduct(command_id=key, product_id=product_id, changes=ProductChanges(stock=stock))


async def test_an_expired_key_is_pruned_and_can_be_used_again(pool: asyncpg.Pool) -> None:
    product_id = await _product(pool)
    key, fresh = uuid.uuid4(), uuid.uuid4()
    assert (await handle_command(_update(key, product_id, 5), PgProductsUnitOfWork(pool))).ok
    assert (await handle_command(_update(fresh, product_id, 5), PgProductsUnitOfWork(pool))).ok
    reused = await handle_command(_update(key, product_id, 6), PgProductsUnitOfWork(pool))
    assert reused == Reply.failure(ErrorType.INVALID, KEY_REUSED)

    await pool.execute(BACK_DATE_LEDGER, "products", key)
    assert await prune_ledger(pool, "products", TTL_S) >= 1
    kept = "SELECT command_id FROM processed_commands WHERE command_id = ANY($1::uuid[])"
    assert [r["command_id"] for r in await pool.fetch(kept, [key, fresh])] == [fresh]

    again = await handle_command(_update(key, product_id, 6), PgProductsUnitOfWork(pool))
    assert again.ok
    assert again.result is not None
    assert again.result["product"]["stock"] == 6


async def test_pruning_goes_a_batch_at_a_time_and_keeps_the_young(pool: asyncpg.Pool) -> None:
    domain = f"test-{uuid.uuid4().hex}"
    insert = """
    INSERT INTO processed_commands (domain, command_id, reply, created_at)
    VALUES ($1, $2, '{"ok": true}', now() - make_interval(secs => $3))
    """
    ages = [TTL_S + 60] * 5 + [TTL_S - 60]
    for age in ages:
        await pool.execute(insert, domain, uuid.uuid4(), age)
    assert await prune_ledger(pool, domain, TTL_S, batch=2) == 5
    left = "SELECT count(*) FROM processed_commands WHERE domain = $1"
    assert await pool.fetchval(left, domain) == 1


async def _place(pool: asyncpg.Pool, cmd: PlaceOrder) -> Effects:
    fx = Effects()
    async with pool.acquire() as conn, conn.transaction():
        meta = RequestMeta(reply_to="gateway.replies.test", correlation_id=uuid.uuid4().hex)
        await orders.place_orders(conn, [Inbound(cmd, meta)], fx)
        await fx.flush(conn, "orders")
    return fx


def _order(key: uuid.UUID, request_hash: str) -> PlaceOrder:
    return PlaceOrder(
        command_id=key,
        user_id=7,
        request_hash=request_hash,
        items=[OrderLine(product_id=1, quantity=1)],
    )


async def test_an_order_key_expires_once_the_order_is_decided(pool: asyncpg.Pool) -> None:
    decided, pending = uuid.uuid4(), uuid.uuid4()
    for key in (decided, pending):
        await _place(pool, _order(key, "h1"))
    [(_, _, reused)] = (await _place(pool, _order(decided, "h2"))).replies
    assert reused == Reply.failure(ErrorType.INVALID, KEY_REUSED)

    await pool.execute(
        "UPDATE orders SET created_at = now() - interval '2 days', "
        "status = CASE WHEN command_id = $1 THEN 'rejected' ELSE status END "
        "WHERE command_id = ANY($2::uuid[])",
        decided,
        [decided, pending],
    )
    assert await forget_keys(pool, TTL_S) >= 1
    keys = "SELECT command_id FROM orders WHERE command_id = ANY($1::uuid[])"
    assert [r["command_id"] for r in await pool.fetch(keys, [decided, pending])] == [pending]

    await _place(pool, _order(decided, "h2"))
    count = "SELECT count(*) FROM orders WHERE command_id = $1 AND request_hash = 'h2'"
    assert await pool.fetchval(count, decided) == 1
