"""Dead letters of a real orders worker: internal topics too, and re-driven by `shopstream dlq`.

A message that parses but whose handling fails for a reason retrying cannot fix (here a total
too large for NUMERIC(14,2)), or one that does not match its schema, goes to its topic's `.dlq`
with the reason; the agent goes on with the next message; a command's caller gets a typed error.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from agents.common import dlq
from agents.common.agent import Inbound, RequestMeta
from agents.common.embedded import EmbeddedPostgres, EmbeddedTansu
from agents.common.relay import Effects
from agents.common.settings import Settings
from agents.orders import handlers as orders
from gateway.bus import BusClient
from tests.helpers import eventually
from tests.infra import base_env, domain_process, shared_tmpdir
from tests.integration.reliability import dead_letters_of, produce, read_topic, shopstream
from topics import ORDERS_COMMANDS, PRODUCTS_EVENTS
from topics.envelope import ErrorType, Headers
from topics.orders import PlaceOrder
from topics.products import OrderLine, ReservedLine, StockReserved

# Larger than NUMERIC(14, 2) holds.
TOO_LARGE = Decimal("123456789012345.67")
PRODUCT_ID = 2**40 + 3


@pytest.fixture(scope="module")
def worker_env(postgres: EmbeddedPostgres, kafka: EmbeddedTansu) -> Iterator[dict[str, str]]:
    with shared_tmpdir("shopstream-dead-letters-") as tmp:
        env = base_env(postgres.dsn, kafka.bootstrap, tmp)
        # The orders these tests leave pending are not swept while they run.
        env |= {"ORDER_PENDING_REDRIVE_S": "600", "ORDER_PENDING_GIVE_UP_S": "1200"}
        with domain_process("orders", env, tmp / "orders.log"):
            yield env


@pytest.fixture(scope="module")
async def bus(worker_env: dict[str, str]) -> AsyncIterator[BusClient]:
    settings = replace(Settings.from_env(worker_env), gateway_instance=uuid.uuid4().hex[:8])
    client = BusClient(settings)
    await client.start()
    yield client
    await client.stop()


async def _pending_order(pool: asyncpg.Pool) -> int:
    """An order placed and waiting for its stock answer (its OrderPlaced is not published)."""
    cmd = PlaceOrder(
        command_id=uuid.uuid4(),
        user_id=77,
        request_hash="dead-letters",
        items=[OrderLine(product_id=PRODUCT_ID, quantity=1)],
    )
    async with pool.acquire() as conn, conn.transaction():
        await orders.place_orders(conn, [Inbound(cmd, RequestMeta())], Effects())
    order_id: int = await pool.fetchval(
        "SELECT id FROM orders WHERE command_id = $1", cmd.command_id
    )
    return order_id


def _reserved(order_id: int, total: Decimal) -> StockReserved:
    return StockReserved(
        event_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        order_id=order_id,
        lines=[ReservedLine(product_id=PRODUCT_ID, quantity=1, unit_price=total)],
        total=total,
    )


def _event(key: int, value: bytes, kind: str = "StockReserved") -> Any:
    return (str(key).encode(), value, [(Headers.TYPE, kind.encode())], None)


async def _status(pool: asyncpg.Pool, order_id: int) -> str:
    status: str = await pool.fetchval("SELECT status FROM orders WHERE id = $1", order_id)
    return status


async def _dead(kafka: EmbeddedTansu, topic: str, needle: str) -> list[Any]:
    return dead_letters_of(await read_topic(kafka.bootstrap, topic), needle)


async def test_an_internal_event_that_fails_is_dead_lettered_and_replayed(
    worker_env: dict[str, str], kafka: EmbeddedTansu, pool: asyncpg.Pool
) -> None:
    bad_order, good_order = await _pending_order(pool), await _pending_order(pool)
    bad = _reserved(bad_order, TOO_LARGE)
    good = _reserved(good_order, Decimal("12.50"))
    await produce(
        kafka.bootstrap,
        PRODUCTS_EVENTS.name,
        [
            _event(bad_order, bad.model_dump_json().encode()),
            _event(good_order, good.model_dump_json().encode()),
        ],
    )

    async def dead_lettered(count: int) -> list[Any]:
        found = await _dead(kafka, PRODUCTS_EVENTS.dlq, str(bad.event_id))
        return found if len(found) >= count else []

    [first] = await eventually(lambda: dead_lettered(1), what="the bad event on the DLQ")
    headers = dict(first.headers)
    reason = headers[Headers.DLQ_REASON].decode()
    assert reason.startswith("internal: NumericValueOutOfRangeError"), reason
    assert headers[Headers.DLQ_TOPIC] == PRODUCTS_EVENTS.name.encode()
    assert headers[Headers.TYPE] == b"StockReserved"
    assert first.key == str(bad_order).encode()
    assert first.value == bad.model_dump_json().encode()

    # The agent went on: the next message, for another order, was handled.
    async def reserved() -> bool:
        return await _status(pool, good_order) == "awaiting_payment"

    await eventually(reserved, what="the good event handled")
    assert await _status(pool, bad_order) == "pending", "the failed batch was rolled back"

    # `shopstream dlq` lists and shows it ...
    env = {**worker_env, "KAFKA_BROKER": kafka.bootstrap}
    code, out, err = await shopstream(env, "dlq", "list", PRODUCTS_EVENTS.dlq, "--json")
    assert code == 0, err
    [listed] = json.loads(out)
    assert listed["topic"] == PRODUCTS_EVENTS.dlq
    assert listed["messages"] >= 1
    shown, _ = await dlq.show(kafka.bootstrap, PRODUCTS_EVENTS.dlq, offset=first.offset)
    assert shown[0].to_json()["original"]["topic"] == PRODUCTS_EVENTS.name
    assert shown[0].reason == reason

    # ... and re-drives it to products.events: it fails again and is dead-lettered again.
    code, out, err = await shopstream(
        env, "dlq", "replay", PRODUCTS_EVENTS.dlq, "--offset", str(first.offset), "--json"
    )
    assert code == 0, err
    assert json.loads(out) == [
        {
            "from": f"{PRODUCTS_EVENTS.dlq}:0:{first.offset}",
            "to": PRODUCTS_EVENTS.name,
            "sent": True,
            "error": None,
        }
    ]
    again = await eventually(lambda: dead_lettered(2), what="the replayed event on the DLQ")
    assert len(again) == 2
    [second], _ = await dlq.show(
        kafka.bootstrap, PRODUCTS_EVENTS.dlq, offset=again[1].offset, limit=1
    )
    assert second.reason == reason
    assert second.header(dlq.REPLAYED_FROM) == f"{PRODUCTS_EVENTS.dlq}:0:{first.offset}"
    assert second.value == first.value
    assert await _status(pool, bad_order) == "pending"
    [summary] = await dlq.summarize(kafka.bootstrap, [PRODUCTS_EVENTS.dlq])
    assert summary.messages >= 2


async def test_an_internal_event_that_does_not_match_its_schema_is_dead_lettered(
    kafka: EmbeddedTansu, pool: asyncpg.Pool, worker_env: dict[str, str]
) -> None:
    order_id = await _pending_order(pool)
    event_id = str(uuid.uuid4())
    # A StockReserved without its lines and its total.
    raw = json.dumps({"type": "StockReserved", "event_id": event_id, "order_id": order_id})
    good = _reserved(await _pending_order(pool), Decimal("3.00"))
    await produce(
        kafka.bootstrap,
        PRODUCTS_EVENTS.name,
        [_event(order_id, raw.encode()), _event(good.order_id, good.model_dump_json().encode())],
    )

    async def dead_lettered() -> list[Any]:
        return await _dead(kafka, PRODUCTS_EVENTS.dlq, event_id)

    [dead] = await eventually(dead_lettered, what="the invalid event on the DLQ")
    reason = dict(dead.headers)[Headers.DLQ_REASON].decode()
    assert reason.startswith("invalid:"), reason
    assert "total" in reason
    assert "lines" in reason
    assert dead.value == raw.encode()

    async def reserved() -> bool:
        return await _status(pool, good.order_id) == "awaiting_payment"

    await eventually(reserved, what="the next event handled")
    assert await _status(pool, order_id) == "pending"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"type": "PlaceOrder", "user_id": 5, "request_hash": "h"}, "items"),
        ({"type": "CancelOrder", "order_id": 5}, "type"),
    ],
    ids=["missing fields", "unknown command"],
)
async def test_an_invalid_command_gets_a_typed_answer_and_is_dead_lettered(
    bus: BusClient, kafka: EmbeddedTansu, body: dict[str, Any], path: str
) -> None:
    marker = uuid.uuid4().hex
    raw = json.dumps({**body, "command_id": marker}).encode()
    reply = await bus.request(ORDERS_COMMANDS.name, marker, raw)
    assert not reply.ok
    assert reply.error is not None
    assert reply.error.type is ErrorType.INVALID
    assert any(path in e.path for e in reply.error.errors), reply.error.errors

    async def dead_lettered() -> list[Any]:
        found = await read_topic(kafka.bootstrap, ORDERS_COMMANDS.dlq)
        return [m for m in found if m.key == marker.encode()]

    [dead] = await eventually(dead_lettered, what="the command on orders.commands.dlq")
    headers = dict(dead.headers)
    assert dead.value == raw
    assert headers[Headers.DLQ_REASON].startswith(b"invalid:")
    assert path.encode() in headers[Headers.DLQ_REASON]
    assert headers[Headers.DLQ_TOPIC] == ORDERS_COMMANDS.name.encode()
    # Its reply headers are kept with it, for whoever looks at it.
    assert headers[Headers.REPLY_TO] == bus.reply_topic.encode()
