"""The products worker as a real process on Tansu: request/reply, events, dead letters."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.common.embedded import EmbeddedPostgres, EmbeddedTansu
from agents.common.settings import Settings
from gateway.bus import BusClient
from tests.helpers import eventually, random_name
from tests.infra import base_env, domain_process, shared_tmpdir
from tests.trust import signed
from topics import PRODUCTS_COMMANDS, PRODUCTS_EVENTS
from topics.envelope import ErrorType, Headers
from topics.products import CreateProduct, NewProduct, ProductChanges, UpdateProduct


@pytest.fixture(scope="module")
def worker_env(postgres: EmbeddedPostgres, kafka: EmbeddedTansu) -> Iterator[dict[str, str]]:
    with shared_tmpdir("shopstream-worker-") as tmp:
        env = base_env(postgres.dsn, kafka.bootstrap, tmp)
        with domain_process("products", env, tmp / "products.log"):
            yield env


@pytest.fixture(scope="module")
async def bus(worker_env: dict[str, str]) -> AsyncIterator[BusClient]:
    settings = replace(Settings.from_env(worker_env), gateway_instance=uuid.uuid4().hex[:8])
    client = BusClient(settings)
    await client.start()
    yield client
    await client.stop()


async def _read_topic(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[Any] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < end[tp] for tp in tps])

        while await behind():
            for messages in (await consumer.getmany(timeout_ms=100)).values():
                out.extend(messages)
        return out
    finally:
        await consumer.stop()


def _create(name: str, stock: int = 5) -> CreateProduct:
    return CreateProduct(
        command_id=uuid.uuid4(), product=NewProduct(name=name, price=Decimal("4.20"), stock=stock)
    )


async def test_create_replies_and_publishes_its_event(
    bus: BusClient, kafka: EmbeddedTansu, pool: asyncpg.Pool
) -> None:
    name = random_name()
    cmd = _create(name)
    reply = await bus.request(
        PRODUCTS_COMMANDS.name, str(cmd.command_id), cmd.model_dump_json().encode()
    )
    assert reply.ok, reply
    assert reply.result is not None
    product_id = reply.result["product"]["id"]
    assert await pool.fetchval("SELECT name FROM products WHERE id = $1", product_id) == name

    async def event_published() -> list[Any]:
        messages = await _read_topic(
            kafka.bootstrap, PRODUCTS_EVENTS.name, PRODUCTS_EVENTS.partitions
        )
        # Other tests' events on this topic are keyed by order ids, which may equal it.
        return [
            m
            for m in messages
            if m.key == str(product_id).encode() and json.loads(m.value)["type"] == "ProductCreated"
        ]

    [event] = await eventually(event_published, what="ProductCreated on products.events")
    body = json.loads(event.value)
    assert body["type"] == "ProductCreated"
    assert body["product"]["name"] == name


async def test_a_redelivered_command_answers_the_same_and_creates_once(
    bus: BusClient, pool: asyncpg.Pool
) -> None:
    name = random_name()
    raw = _create(name).model_dump_json().encode()
    first = await bus.request(PRODUCTS_COMMANDS.name, "k", raw)
    second = await bus.request(PRODUCTS_COMMANDS.name, "k", raw)
    assert first == second
    assert await pool.fetchval("SELECT count(*) FROM products WHERE name = $1", name) == 1


async def test_not_found_is_a_typed_error(bus: BusClient) -> None:
    cmd = UpdateProduct(command_id=uuid.uuid4(), product_id=2**62, changes=ProductChanges(stock=1))
    reply = await bus.request(PRODUCTS_COMMANDS.name, "x", cmd.model_dump_json().encode())
    assert reply.error is not None
    assert reply.error.type is ErrorType.NOT_FOUND


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b"not json at all", "$"),
        (
            json.dumps(
                {
                    "type": "CreateProduct",
                    "command_id": str(uuid.uuid4()),
                    "product": {"name": "x", "price": "-1", "stock": 1},
                }
            ).encode(),
            "CreateProduct.product.price",
        ),
    ],
)
async def test_invalid_messages_are_dead_lettered_with_the_reason(
    bus: BusClient, kafka: EmbeddedTansu, raw: bytes, path: str
) -> None:
    marker = uuid.uuid4().hex
    reply = await bus.request(PRODUCTS_COMMANDS.name, marker, raw)
    assert reply.error is not None
    assert reply.error.type is ErrorType.INVALID
    assert path in [e.path for e in reply.error.errors]

    async def dead_lettered() -> list[Any]:
        messages = await _read_topic(kafka.bootstrap, PRODUCTS_COMMANDS.dlq, 1)
        return [m for m in messages if m.key == marker.encode()]

    [dead] = await eventually(dead_lettered, what="message on the DLQ")
    headers = dict(dead.headers)
    assert dead.value == raw
    assert headers[Headers.DLQ_REASON].startswith(b"invalid:")
    assert headers[Headers.DLQ_TOPIC] == PRODUCTS_COMMANDS.name.encode()
    # The agent goes on with the next message.
    ok = await bus.request(
        PRODUCTS_COMMANDS.name, "n", _create(random_name()).model_dump_json().encode()
    )
    assert ok.ok


async def test_a_partner_message_without_reply_headers_is_applied(
    kafka: EmbeddedTansu, pool: asyncpg.Pool
) -> None:
    name = random_name("partner")
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        raw = _create(name).model_dump_json().encode()
        headers = signed(PRODUCTS_COMMANDS.name, b"feed", raw, producer="partner-feed")
        await producer.send_and_wait(PRODUCTS_COMMANDS.name, raw, key=b"feed", headers=headers)
    finally:
        await producer.stop()

    async def applied() -> int | None:
        count: int = await pool.fetchval("SELECT count(*) FROM products WHERE name = $1", name)
        return count or None

    assert await eventually(applied, what="the partner's product in Postgres") == 1


async def test_round_trip_latency_stays_low(bus: BusClient) -> None:
    """Guards the tuned fetch wait (Faust's own 1500 ms would make this ~750 ms)."""
    cmd = UpdateProduct(command_id=uuid.uuid4(), product_id=2**62, changes=ProductChanges(stock=1))
    timings = []
    for _ in range(40):
        raw = cmd.model_copy(update={"command_id": uuid.uuid4()}).model_dump_json().encode()
        started = time.perf_counter()
        await bus.request(PRODUCTS_COMMANDS.name, "lat", raw)
        timings.append(time.perf_counter() - started)
    assert statistics.median(timings) < 0.1, timings


async def test_concurrent_requests_all_get_their_own_reply(bus: BusClient) -> None:
    names = [random_name() for _ in range(32)]
    replies = await asyncio.gather(
        *(
            bus.request(PRODUCTS_COMMANDS.name, n, _create(n).model_dump_json().encode())
            for n in names
        )
    )
    assert [r.result["product"]["name"] for r in replies if r.result] == names


def test_worker_log_has_no_errors(worker_env: dict[str, str]) -> None:
    log = Path(worker_env["SHOPSTREAM_STATE_DIR"]) / "products.log"
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
