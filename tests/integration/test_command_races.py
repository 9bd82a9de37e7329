"""Two workers on one command (a rebalance): one effect, one answer, never an error.

Each race runs the same message in two real transactions on two connections, overlapping: the
first does its work and holds its transaction open until the second waits on its locks (or is
done), then commits (tests/integration/reliability.py `overlapping`). The end-to-end test runs
two orders workers in one consumer group while they rebalance, with the same command on every
partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from agents.common.agent import Inbound, RequestMeta
from agents.common.embedded import EmbeddedPostgres, EmbeddedTansu
from agents.common.relay import Effects
from agents.orders import handlers as orders
from agents.products.handlers import handle_command
from agents.products.repository import PgProductsUnitOfWork
from agents.products.stock import reserve_batch
from tests.helpers import eventually, random_name
from tests.infra import base_env, shared_tmpdir
from tests.integration.reliability import (
    buckets,
    committed_everything,
    dead_letters_of,
    new_product,
    overlapping,
    produce,
    read_topic,
    ready,
    reply_topic_of_our_own,
    stable_members,
    with_own_ports,
    worker,
)
from topics import ORDERS_COMMANDS, ORDERS_EVENTS, PRODUCTS_EVENTS
from topics.envelope import ErrorType, Reply
from topics.orders import OrderPlaced, PlaceOrder
from topics.products import (
    CreateProduct,
    DeleteProduct,
    NewProduct,
    OrderLine,
    ReservedLine,
    StockReserved,
)

GROUP = "shopstream-orders"
# Copies of a command sent to every partition while a worker joins: a round every 0.1 s.
ROUND_EVERY_S = 0.1
MAX_ROUNDS = 200
# Events written by these tests stay out of every domain's outbox sweeper.
NO_DOMAIN = "test"


def _place(product_id: int, quantity: int = 1) -> PlaceOrder:
    return PlaceOrder(
        command_id=uuid.uuid4(),
        user_id=4242,
        request_hash=f"h-{product_id}-{quantity}",
        items=[OrderLine(product_id=product_id, quantity=quantity)],
    )


def _meta() -> RequestMeta:
    return RequestMeta(reply_to="gateway.replies.race", correlation_id=uuid.uuid4().hex)


def _bodies(fx: Effects) -> list[dict[str, Any]]:
    """The events a transaction wrote, without what differs between two equal decisions."""
    bodies = [json.loads(row.value) for row in fx.rows]
    return [{k: v for k, v in b.items() if k not in ("event_id", "occurred_at")} for b in bodies]


# PlaceOrder: INSERT … ON CONFLICT (command_id) DO NOTHING.


@pytest.mark.parametrize("second_batch", ["the same command", "another command first"])
async def test_two_batches_with_one_place_order_make_one_order(
    pool: asyncpg.Pool, second_batch: str
) -> None:
    product_id = await new_product(pool, 10)
    cmd, meta = _place(product_id, 2), _meta()
    other = _place(product_id, 1)
    fx1, fx2 = Effects(), Effects()

    async def first(conn: asyncpg.Connection) -> None:
        await orders.place_orders(conn, [Inbound(cmd, meta)], fx1)
        await fx1.flush(conn, NO_DOMAIN)

    async def second(conn: asyncpg.Connection) -> None:
        batch = [Inbound(cmd, meta)]
        if second_batch == "another command first":
            batch.insert(0, Inbound(other, _meta()))
        await orders.place_orders(conn, batch, fx2)
        await fx2.flush(conn, NO_DOMAIN)

    _, _, waited = await overlapping(pool, first, second)
    assert waited, "the second insert waited on the first transaction's row"

    rows = await pool.fetch("SELECT id, status FROM orders WHERE command_id = $1", cmd.command_id)
    assert [r["status"] for r in rows] == ["pending"]
    order_id = rows[0]["id"]
    items = await pool.fetch(
        "SELECT product_id, quantity FROM order_items WHERE order_id = $1", order_id
    )
    assert [tuple(i) for i in items] == [(product_id, 2)]
    # One OrderPlaced for the order; the same message again answers nothing (its answer is the
    # stock decision's, which comes once).
    placed = [b for b in _bodies(fx1) if b["type"] == "OrderPlaced"]
    assert [b["order_id"] for b in placed] == [order_id]
    assert fx1.replies == []
    assert [b["order_id"] for b in _bodies(fx2) if b["order_id"] == order_id] == []
    assert fx2.replies == []
    if second_batch == "another command first":
        [other_order] = await pool.fetch(
            "SELECT id FROM orders WHERE command_id = $1", other.command_id
        )
        assert [b["order_id"] for b in _bodies(fx2)] == [other_order["id"]]


async def test_a_retried_request_racing_the_first_is_told_to_wait(pool: asyncpg.Pool) -> None:
    """The same Idempotency-Key sent again by the client (another correlation id) while the
    first is being placed: one order, and the retry gets a typed conflict, not an error."""
    cmd, first_meta, retry_meta = _place(await new_product(pool, 10)), _meta(), _meta()
    fx1, fx2 = Effects(), Effects()

    async def first(conn: asyncpg.Connection) -> None:
        await orders.place_orders(conn, [Inbound(cmd, first_meta)], fx1)
        await fx1.flush(conn, NO_DOMAIN)

    async def second(conn: asyncpg.Connection) -> None:
        await orders.place_orders(conn, [Inbound(cmd, retry_meta)], fx2)
        await fx2.flush(conn, NO_DOMAIN)

    _, _, waited = await overlapping(pool, first, second)
    assert waited
    assert len(await pool.fetch("SELECT id FROM orders WHERE command_id = $1", cmd.command_id)) == 1
    assert [b["type"] for b in _bodies(fx1)] == ["OrderPlaced"]
    assert fx2.rows == []
    [(reply_to, correlation_id, reply)] = fx2.replies
    assert (reply_to, correlation_id) == (retry_meta.reply_to, retry_meta.correlation_id)
    assert reply.error is not None
    assert reply.error.type is ErrorType.CONFLICT


async def test_two_workers_on_one_stock_decision_answer_alike(pool: asyncpg.Pool) -> None:
    product_id = await new_product(pool, 10, "2.00")
    cmd, meta = _place(product_id, 3), _meta()
    async with pool.acquire() as conn, conn.transaction():
        await orders.place_orders(conn, [Inbound(cmd, meta)], Effects())
    order_id: int = await pool.fetchval(
        "SELECT id FROM orders WHERE command_id = $1", cmd.command_id
    )

    def decision() -> StockReserved:
        return StockReserved(
            event_id=uuid.uuid4(),
            occurred_at=datetime.now(UTC),
            order_id=order_id,
            lines=[ReservedLine(product_id=product_id, quantity=3, unit_price=Decimal("2.00"))],
            total=Decimal("6.00"),
        )

    fx1, fx2 = Effects(), Effects()

    async def first(conn: asyncpg.Connection) -> None:
        await orders.stock_decided(conn, [Inbound(decision(), RequestMeta())], fx1)
        await fx1.flush(conn, NO_DOMAIN)

    async def second(conn: asyncpg.Connection) -> None:
        await orders.stock_decided(conn, [Inbound(decision(), RequestMeta())], fx2)
        await fx2.flush(conn, NO_DOMAIN)

    _, _, waited = await overlapping(pool, first, second)
    assert waited, "the second worker waited on the first one's lock of the order"

    assert await pool.fetchval("SELECT status FROM orders WHERE id = $1", order_id) == (
        "awaiting_payment"
    )
    history = await pool.fetch(
        "SELECT status FROM order_status_history WHERE order_id = $1 ORDER BY id", order_id
    )
    assert [h["status"] for h in history] == ["pending", "awaiting_payment"]
    assert [b["type"] for b in _bodies(fx1)] == ["OrderAwaitingPayment"]
    assert _bodies(fx2) == []
    # The caller's one answer, and the same answer again.
    assert len(fx1.replies) == 1
    assert fx2.replies == fx1.replies
    [(reply_to, correlation_id, reply)] = fx1.replies
    assert (reply_to, correlation_id) == (meta.reply_to, meta.correlation_id)
    assert reply.result is not None
    assert reply.result["order"]["status"] == "awaiting_payment"


# A catalogue command: handle_once, with a unit of work nested in each worker's batch.


@pytest.mark.parametrize("command", ["CreateProduct", "DeleteProduct"])
async def test_two_workers_on_one_catalogue_command_answer_alike(
    pool: asyncpg.Pool, command: str
) -> None:
    name = random_name("race")
    cmd: CreateProduct | DeleteProduct
    if command == "CreateProduct":
        cmd = CreateProduct(
            command_id=uuid.uuid4(),
            product=NewProduct(name=name, price=Decimal("9.99"), stock=3),
        )
    else:
        cmd = DeleteProduct(command_id=uuid.uuid4(), product_id=await new_product(pool, 1))
    fx1, fx2 = Effects(), Effects()

    async def first(conn: asyncpg.Connection) -> Reply:
        return await handle_command(cmd, PgProductsUnitOfWork(conn, fx1))

    async def second(conn: asyncpg.Connection) -> Reply:
        return await handle_command(cmd, PgProductsUnitOfWork(conn, fx2))

    reply1, reply2, waited = await overlapping(pool, first, second)
    assert waited, "the second worker waited on the first one's ledger row"

    assert reply1.ok, reply1
    assert reply2 == reply1
    ledger = await pool.fetch(
        "SELECT reply FROM processed_commands WHERE domain = 'products' AND command_id = $1",
        cmd.command_id,
    )
    assert [Reply.model_validate(r["reply"]) for r in ledger] == [reply1]
    # One effect, and its one event; the loser's work was rolled back with its savepoint.
    assert len(fx1.rows) == 1
    assert fx2.rows == []
    if isinstance(cmd, CreateProduct):
        assert await pool.fetchval("SELECT count(*) FROM products WHERE name = $1", name) == 1
        assert json.loads(fx1.rows[0].value)["type"] == "ProductCreated"
    else:
        assert json.loads(fx1.rows[0].value)["type"] == "ProductDeleted"


# OrderPlaced on the products side: reserve_batch.


@pytest.mark.parametrize(
    ("stock", "exists", "decision"),
    [
        (10, True, "StockReserved"),
        (1, True, "StockRejected"),
        (0, False, "StockRejected"),
    ],
    ids=["in stock", "short", "no such product"],
)
async def test_two_workers_on_one_order_placed_take_stock_once(
    pool: asyncpg.Pool, stock: int, exists: bool, decision: str
) -> None:
    product_id = await new_product(pool, stock, "1.25") if exists else 2**62 + 7
    order_id = uuid.uuid4().int % 2**62
    placed = OrderPlaced(
        event_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        order_id=order_id,
        user_id=1,
        items=[OrderLine(product_id=product_id, quantity=2)],
    )
    fx1, fx2 = Effects(), Effects()

    async def first(conn: asyncpg.Connection) -> None:
        await reserve_batch(conn, [Inbound(placed, RequestMeta())], fx1)
        await fx1.flush(conn, NO_DOMAIN)

    async def second(conn: asyncpg.Connection) -> None:
        await reserve_batch(conn, [Inbound(placed, RequestMeta())], fx2)
        await fx2.flush(conn, NO_DOMAIN)

    _, _, waited = await overlapping(pool, first, second)
    assert waited, "the second worker waited on the first one's locks"

    [reservation] = await pool.fetch(
        "SELECT status, total FROM stock_reservations WHERE order_id = $1", order_id
    )
    if decision == "StockReserved":
        assert (reservation["status"], reservation["total"]) == ("reserved", Decimal("2.50"))
        assert await buckets(pool, product_id) == (stock - 2, 2, 0)
    else:
        assert reservation["status"] == "rejected"
        if exists:
            assert await buckets(pool, product_id) == (stock, 0, 0)
    # Both workers tell the order the same thing.
    [told] = _bodies(fx1)
    assert told["type"] == decision
    assert told["order_id"] == order_id
    assert _bodies(fx2) == [told]
    assert [row.topic for row in fx1.rows + fx2.rows] == [PRODUCTS_EVENTS.name] * 2


# End to end: two orders workers in one consumer group, rebalancing.


@pytest.fixture(scope="module")
def race_env(postgres: EmbeddedPostgres, kafka: EmbeddedTansu) -> Iterator[dict[str, str]]:
    with shared_tmpdir("shopstream-races-") as tmp:
        env = base_env(postgres.dsn, kafka.bootstrap, tmp)
        # No sweep of pending orders meddles while the workers rebalance.
        env |= {"ORDER_PENDING_REDRIVE_S": "600", "ORDER_PENDING_GIVE_UP_S": "1200"}
        yield env


def _log(env: dict[str, str], name: str) -> Path:
    return Path(env["SHOPSTREAM_STATE_DIR"]) / name


async def _order_of(pool: asyncpg.Pool, cmd: PlaceOrder) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT id, status FROM orders WHERE command_id = $1", cmd.command_id
    )
    return rows


async def test_two_orders_workers_rebalancing_give_one_order_and_one_answer(
    race_env: dict[str, str], kafka: EmbeddedTansu, pool: asyncpg.Pool
) -> None:
    """The same PlaceOrder on every partition of orders.commands, once while a second worker
    joins the group (each message may be taken by the old owner and again by the new one), and
    once after, when both workers own partitions and race on the same command."""
    product_id = await new_product(pool, 10, "5.00")
    during, after = _place(product_id), _place(product_id)
    env_b = with_own_ports(race_env, Path(race_env["SHOPSTREAM_STATE_DIR"]) / "second")
    partitions = range(ORDERS_COMMANDS.partitions)
    logs = [_log(race_env, "products.log"), _log(race_env, "orders-a.log"), _log(env_b, "b.log")]

    def copies(cmd: PlaceOrder, headers: list[tuple[str, bytes]]) -> list[Any]:
        raw = cmd.model_dump_json().encode()
        return [(str(cmd.user_id).encode(), raw, headers, p) for p in partitions]

    async with (
        reply_topic_of_our_own(kafka.bootstrap) as replies,
        worker("products", race_env, logs[0]) as products,
        worker("orders", race_env, logs[1]) as orders_a,
    ):
        await ready("products", race_env, products, logs[0])
        await ready("orders", race_env, orders_a, logs[1])
        during_cid, after_cid = uuid.uuid4().hex, uuid.uuid4().hex
        async with worker("orders", env_b, logs[2]) as orders_b:
            # While the second worker joins and the group rebalances, the same command keeps
            # coming on every partition: copies taken by the old owner of a partition, not yet
            # committed, are taken again by its new owner.
            joined = asyncio.Event()

            async def keep_sending() -> int:
                rounds = 0
                while not joined.is_set() and rounds < MAX_ROUNDS:
                    await produce(
                        kafka.bootstrap,
                        ORDERS_COMMANDS.name,
                        copies(during, replies.headers(during_cid)),
                    )
                    rounds += 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(joined.wait(), ROUND_EVERY_S)
                return rounds

            async def both_in_the_group() -> bool:
                return await stable_members(kafka.bootstrap, GROUP) == 2

            sending = asyncio.create_task(keep_sending())
            try:
                await ready("orders", env_b, orders_b, logs[2])
                await eventually(both_in_the_group, timeout=30, what="both workers in the group")
            finally:
                joined.set()
                rounds = await sending
            assert rounds >= 2, "copies were sent while the group rebalanced"
            await produce(
                kafka.bootstrap, ORDERS_COMMANDS.name, copies(after, replies.headers(after_cid))
            )

            for cmd, cid in ((during, during_cid), (after, after_cid)):

                async def answered(cmd: PlaceOrder = cmd, cid: str = cid) -> list[Reply]:
                    rows = await _order_of(pool, cmd)
                    decided = rows and rows[0]["status"] != "pending"
                    return await replies.replies(cid) if decided else []

                got = await eventually(answered, timeout=60, what=f"an answer to {cmd.command_id}")
                [order] = await _order_of(pool, cmd)
                assert order["status"] == "awaiting_payment"
                assert all(r.ok and r.result is not None for r in got), got
                assert {r.result["order"]["id"] for r in got if r.result} == {order["id"]}
                assert {r.result["order"]["status"] for r in got if r.result} == {
                    "awaiting_payment"
                }

            async def all_taken() -> bool:
                return await committed_everything(kafka.bootstrap, GROUP, ORDERS_COMMANDS.name)

            await eventually(all_taken, timeout=60, what="every copy of the commands handled")
            # Every answer that was sent, and every one is the same: what the gateway turns
            # into one 201.
            for cid in (during_cid, after_cid):
                got = await replies.replies(cid)
                assert len({r.model_dump_json() for r in got}) == 1, got

    assert await buckets(pool, product_id) == (8, 2, 0), "one reservation per order"
    for cmd in (during, after):
        [order] = await _order_of(pool, cmd)
        [reservation] = await pool.fetch(
            "SELECT status FROM stock_reservations WHERE order_id = $1", order["id"]
        )
        assert reservation["status"] == "reserved"
        assert (
            dead_letters_of(
                await read_topic(kafka.bootstrap, ORDERS_COMMANDS.dlq), str(cmd.command_id)
            )
            == []
        )
        for topic in (ORDERS_EVENTS.dlq, PRODUCTS_EVENTS.dlq):
            assert [
                m
                for m in await read_topic(kafka.bootstrap, topic)
                if m.key == str(order["id"]).encode()
            ] == []
    for log in logs:
        text = log.read_text()
        assert "dead-lettered" not in text, text[-3000:]
        assert "Traceback" not in text, text[-3000:]
