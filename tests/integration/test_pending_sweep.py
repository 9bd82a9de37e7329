"""Orders stuck `pending` past a deadline: re-driven, then rejected with a reason.

handlers.sweep_pending and the products side of a given-up order (abandon_stock, reserve_batch)
on the real PostgreSQL; then the orders and products workers as real processes, sweeping.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from agents.common.agent import Inbound, RequestMeta
from agents.common.embedded import EmbeddedPostgres, EmbeddedTansu
from agents.common.relay import MARK_PUBLISHED, Effects
from agents.orders import handlers as orders
from agents.products.stock import on_order_event, reserve_batch
from tests.helpers import eventually
from tests.infra import base_env, shared_tmpdir
from tests.integration.reliability import (
    ReplyTopic,
    buckets,
    new_product,
    produce,
    read_topic,
    ready,
    reply_topic_of_our_own,
    worker,
)
from topics import ORDERS_EVENTS, PRODUCTS_EVENTS
from topics.envelope import Headers
from topics.orders import OrderPlaced, OrderRejected, PlaceOrder
from topics.products import OrderLine

# Far beyond the age of any order the other tests leave pending.
REDRIVE_S = 3600.0
GIVE_UP_S = 7200.0
NO_DOMAIN = "test"


async def _place(
    pool: asyncpg.Pool, product_id: int, quantity: int, meta: RequestMeta, age_s: float
) -> int:
    """A pending order placed `age_s` ago whose OrderPlaced was lost (never published)."""
    cmd = PlaceOrder(
        command_id=uuid.uuid4(),
        user_id=31,
        request_hash=f"sweep-{quantity}",
        items=[OrderLine(product_id=product_id, quantity=quantity)],
    )
    async with pool.acquire() as conn, conn.transaction():
        await orders.place_orders(conn, [Inbound(cmd, meta)], Effects())
        order_id: int = await conn.fetchval(
            """UPDATE orders SET created_at = now() - make_interval(secs => $2)
               WHERE command_id = $1 RETURNING id""",
            cmd.command_id,
            age_s,
        )
    return order_id


async def _order(pool: asyncpg.Pool, order_id: int) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT status, reason, redriven_at FROM orders WHERE id = $1", order_id
    )
    assert row is not None
    return row


def _events(fx: Effects, order_id: int) -> list[dict[str, Any]]:
    return [
        json.loads(r.value)
        for r in fx.rows
        if r.key == str(order_id) and r.topic == "orders.events"
    ]


async def _published(pool: asyncpg.Pool, fx: Effects) -> None:
    """What the Publisher does once the events are sent (here they are not: no worker runs)."""
    await pool.execute(MARK_PUBLISHED, [r.id for r in fx.rows])


async def test_the_sweeper_redrives_then_gives_up(pool: asyncpg.Pool) -> None:
    product_id = await new_product(pool, 10)
    redrive_meta = RequestMeta(reply_to="gateway.replies.sweep", correlation_id=uuid.uuid4().hex)
    give_up_meta = RequestMeta(reply_to="gateway.replies.sweep", correlation_id=uuid.uuid4().hex)
    fresh = await _place(pool, product_id, 1, RequestMeta(), 0)
    stuck = await _place(pool, product_id, 2, redrive_meta, REDRIVE_S + 100)
    lost = await _place(pool, product_id, 3, give_up_meta, GIVE_UP_S + 100)

    fx = Effects()
    touched = await orders.sweep_pending(pool, fx, REDRIVE_S, GIVE_UP_S)
    await _published(pool, fx)
    assert touched >= 2

    # Past the first deadline: OrderPlaced again, in the outbox, and the order still pending.
    redriven = await _order(pool, stuck)
    assert redriven["status"] == "pending"
    assert redriven["redriven_at"] is not None
    [placed] = _events(fx, stuck)
    assert placed["type"] == "OrderPlaced"
    assert (placed["user_id"], placed["items"]) == (31, [{"product_id": product_id, "quantity": 2}])
    outbox = await pool.fetchval(
        "SELECT payload FROM outbox WHERE id = $1",
        next(r.id for r in fx.rows if r.key == str(stuck)),
    )
    assert outbox["event_id"] == placed["event_id"]
    assert not [r for r in fx.replies if r[1] == redrive_meta.correlation_id], "still waits"

    # Past the last one: rejected with the reason, OrderRejected, and its caller answered.
    rejected = await _order(pool, lost)
    reason = f"no stock answer within {GIVE_UP_S:.0f} s"
    assert (rejected["status"], rejected["reason"]) == ("rejected", reason)
    [event] = _events(fx, lost)
    assert (event["type"], event["reason"]) == ("OrderRejected", reason)
    [(reply_to, _, reply)] = [r for r in fx.replies if r[1] == give_up_meta.correlation_id]
    assert reply_to == give_up_meta.reply_to
    assert reply.result is not None
    assert (reply.result["order"]["status"], reply.result["order"]["reason"]) == (
        "rejected",
        reason,
    )
    history = await pool.fetch(
        "SELECT status, reason FROM order_status_history WHERE order_id = $1 ORDER BY id", lost
    )
    assert [tuple(h) for h in history] == [("pending", None), ("rejected", reason)]

    # A young order is left alone; a second sweep re-drives nothing before the next deadline.
    assert (await _order(pool, fresh))["redriven_at"] is None
    again = Effects()
    await orders.sweep_pending(pool, again, REDRIVE_S, GIVE_UP_S)
    await _published(pool, again)
    assert _events(again, stuck) == _events(again, lost) == _events(again, fresh) == []


async def _abandon(pool: asyncpg.Pool, order_id: int, event_id: uuid.UUID) -> Effects:
    """OrderRejected on the products side, as its agent handles it in a batch."""
    fx = Effects()
    rejected = OrderRejected(
        event_id=event_id, occurred_at=datetime.now(UTC), order_id=order_id, reason="given up"
    )
    async with pool.acquire() as conn, conn.transaction():
        await on_order_event(rejected, RequestMeta(), conn, fx)
        await fx.flush(conn, NO_DOMAIN)
    return fx


async def _reserve(pool: asyncpg.Pool, order_id: int, product_id: int, quantity: int) -> Effects:
    fx = Effects()
    placed = OrderPlaced(
        event_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        order_id=order_id,
        user_id=31,
        items=[OrderLine(product_id=product_id, quantity=quantity)],
    )
    async with pool.acquire() as conn, conn.transaction():
        await reserve_batch(conn, [Inbound(placed, RequestMeta())], fx)
        await fx.flush(conn, NO_DOMAIN)
    return fx


def _order_id() -> int:
    return uuid.uuid4().int % 2**62


async def _reservation(pool: asyncpg.Pool, order_id: int) -> str | None:
    status: str | None = await pool.fetchval(
        "SELECT status FROM stock_reservations WHERE order_id = $1", order_id
    )
    return status


async def test_a_given_up_order_with_its_stock_reserved_releases_it_once(
    pool: asyncpg.Pool,
) -> None:
    product_id, order_id = await new_product(pool, 5), _order_id()
    await _reserve(pool, order_id, product_id, 2)
    assert await buckets(pool, product_id) == (3, 2, 0)

    event_id = uuid.uuid4()
    fx = await _abandon(pool, order_id, event_id)
    assert [json.loads(r.value)["type"] for r in fx.rows] == ["StockReleased"]
    assert await buckets(pool, product_id) == (5, 0, 0)
    assert await _reservation(pool, order_id) == "released"
    # The same event again, or another OrderRejected for it, releases nothing more.
    for again in (event_id, uuid.uuid4()):
        assert (await _abandon(pool, order_id, again)).rows == []
        assert await buckets(pool, product_id) == (5, 0, 0)
    # And a late OrderPlaced (a re-drive still on its way) takes nothing.
    late = await _reserve(pool, order_id, product_id, 2)
    assert late.rows == []
    assert await buckets(pool, product_id) == (5, 0, 0)


async def test_a_given_up_order_never_reserved_holds_nothing_later(pool: asyncpg.Pool) -> None:
    product_id, order_id = await new_product(pool, 5), _order_id()
    fx = await _abandon(pool, order_id, uuid.uuid4())
    assert fx.rows == []
    assert await _reservation(pool, order_id) == "abandoned"

    late = await _reserve(pool, order_id, product_id, 2)
    assert late.rows == [], "an abandoned order is told nothing"
    assert await buckets(pool, product_id) == (5, 0, 0)
    assert await _reservation(pool, order_id) == "abandoned"


# End to end: the orders worker sweeps every 5 s (agents/orders/app.py SWEEP_EVERY_S).


@pytest.fixture(scope="module")
def sweep_env(postgres: EmbeddedPostgres, kafka: EmbeddedTansu) -> Iterator[dict[str, str]]:
    with shared_tmpdir("shopstream-sweep-") as tmp:
        env = base_env(postgres.dsn, kafka.bootstrap, tmp)
        env |= {"ORDER_PENDING_REDRIVE_S": "1", "ORDER_PENDING_GIVE_UP_S": str(GIVE_UP_S)}
        yield env


def _typed(event: OrderPlaced) -> list[tuple[str, bytes]]:
    return [(Headers.TYPE, event.type.encode())]


def _key_and_type(records: list[Any], order_id: int) -> list[str]:
    return [json.loads(r.value)["type"] for r in records if r.key == str(order_id).encode()]


async def _answer(replies: ReplyTopic, correlation_id: str) -> list[Any]:
    return [r.result["order"] for r in await replies.replies(correlation_id) if r.result]


async def test_the_workers_sweep_stuck_orders(
    sweep_env: dict[str, str], kafka: EmbeddedTansu, pool: asyncpg.Pool
) -> None:
    state = Path(sweep_env["SHOPSTREAM_STATE_DIR"])
    product_id = await new_product(pool, 10, "2.00")
    async with (
        reply_topic_of_our_own(kafka.bootstrap) as replies,
        worker("products", sweep_env, state / "products.log") as products,
        worker("orders", sweep_env, state / "orders.log") as orders_worker,
    ):
        await ready("products", sweep_env, products, state / "products.log")
        await ready("orders", sweep_env, orders_worker, state / "orders.log")

        def meta() -> RequestMeta:
            return RequestMeta(reply_to=replies.name, correlation_id=uuid.uuid4().hex)

        stuck_meta, lost_meta = meta(), meta()
        # Its OrderPlaced was lost: re-driven, its stock is reserved, its caller answered.
        stuck = await _place(pool, product_id, 2, stuck_meta, 30)
        # Past the last deadline: rejected, its caller answered, the products side told.
        lost = await _place(pool, product_id, 3, lost_meta, GIVE_UP_S + 100)
        assert stuck_meta.correlation_id is not None
        assert lost_meta.correlation_id is not None

        async def answered(correlation_id: str) -> list[Any]:
            return await _answer(replies, correlation_id)

        [stuck_answer] = await eventually(
            lambda: answered(str(stuck_meta.correlation_id)), timeout=30, what="the re-drive"
        )
        assert (stuck_answer["id"], stuck_answer["status"]) == (stuck, "awaiting_payment")
        assert stuck_answer["total_price"] == 4.0
        assert (await _order(pool, stuck))["redriven_at"] is not None
        assert await _reservation(pool, stuck) == "reserved"

        [lost_answer] = await eventually(
            lambda: answered(str(lost_meta.correlation_id)), timeout=30, what="the give-up"
        )
        reason = f"no stock answer within {GIVE_UP_S:.0f} s"
        assert (lost_answer["id"], lost_answer["status"]) == (lost, "rejected")
        assert lost_answer["reason"] == reason

        async def abandoned() -> bool:
            return await _reservation(pool, lost) == "abandoned"

        await eventually(abandoned, timeout=30, what="the products side told of the give-up")
        assert "OrderRejected" in _key_and_type(
            await read_topic(kafka.bootstrap, ORDERS_EVENTS.name), lost
        )

        # A late OrderPlaced for the given-up order takes nothing. An OrderPlaced for another
        # order, after it on the same partition, shows when it has been handled.
        marker = _order_id()
        late, after = (
            OrderPlaced(
                event_id=uuid.uuid4(),
                occurred_at=datetime.now(UTC),
                order_id=order_id,
                user_id=31,
                items=[OrderLine(product_id=product_id, quantity=3)],
            )
            for order_id in (lost, marker)
        )
        await produce(
            kafka.bootstrap,
            ORDERS_EVENTS.name,
            [
                (str(e.order_id).encode(), e.model_dump_json().encode(), _typed(e), 0)
                for e in (late, after)
            ],
        )

        async def marker_handled() -> bool:
            return await _reservation(pool, marker) == "reserved"

        await eventually(marker_handled, timeout=30, what="the OrderPlaced after the late one")
        assert await _reservation(pool, lost) == "abandoned"
        assert await buckets(pool, product_id) == (5, 5, 0), "2 for `stuck`, 3 for `marker`"
        decisions = _key_and_type(await read_topic(kafka.bootstrap, PRODUCTS_EVENTS.name), lost)
        assert decisions == [], "the given-up order was told nothing"
        assert len(await answered(str(lost_meta.correlation_id))) == 1

    for log in ("products.log", "orders.log"):
        text = (state / log).read_text()
        assert "Traceback" not in text, text[-3000:]
        assert "dead-lettered" not in text, text[-3000:]
