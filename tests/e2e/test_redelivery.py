"""Every message delivered again changes nothing (DESIGN.md: at-least-once, idempotent handlers).

On a 3-node Apache Kafka cluster, buyers place and pay orders until the saga has settled and
every consumer group has read everything. The workers are stopped, every consumer group of the
platform (`shopstream-<domain>`, one per Faust app) is moved back to the beginning of its
topics, and the workers are started again: they read every message a second time. Once they
have read everything again, the records are what they were, and the invariants hold.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from agents.common.dlq import summarize
from tests.e2e.saga_world import (
    BUYERS_ENV,
    World,
    create_products,
    http_client,
    new_buyer,
    order_lines,
    pay,
    retry_until,
    running_world,
    settle_and_check,
    start_workers,
)
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

ORDERS = 80
BUYERS = 8
IN_FLIGHT = 16
# The groups of the domains whose agents read topics (users has none: its reads are gRPC).
SAGA_GROUPS = {f"shopstream-{domain}" for domain in ("products", "orders", "payments")}
# What a redelivered message must leave as it found it, each read in one snapshot.
STATE = {
    "users": "SELECT id, email, role FROM users",
    "orders": "SELECT id, user_id, status, total_price, reason, command_id FROM orders",
    "order_items": "SELECT order_id, product_id, quantity, price FROM order_items",
    "order_status_history": "SELECT order_id, status, reason FROM order_status_history",
    "payments": "SELECT id, order_id, amount, status, reason, expires_at FROM payments",
    "payment_transactions": "SELECT payment_id, money, outcome, source FROM payment_transactions",
    "products": "SELECT id, stock, reserved, sold, deleted_at FROM products",
    "stock_reservations": "SELECT order_id, status, lines, total, reason FROM stock_reservations",
    "processed_commands": "SELECT domain, command_id, reply FROM processed_commands",
}


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with running_world("redelivery-", env=BUYERS_ENV, broker="kafka") as w:
        yield w


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with http_client() as s:
        yield s


async def _checkout(
    world: World,
    http: aiohttp.ClientSession,
    buyer: dict[str, str],
    products: list[int],
    rng: random.Random,
) -> int:
    """Place one order (and pay two of three), retrying with the same key; return its id."""
    key = uuid.uuid4().hex
    headers = {**buyer, "Idempotency-Key": key}
    items = order_lines(products, rng)
    while True:
        status, body = await retry_until(
            http,
            "POST",
            f"{world.url}/api/v1/orders",
            {201, 202, 409, 504},
            headers=headers,
            json={"items": items},
        )
        if status in (201, 409) and "order" in body:
            break
    order = body["order"]
    if order["status"] == "awaiting_payment" and rng.random() < 2 / 3:
        await pay(world.url, http, buyer, int(order["id"]), key)
    return int(order["id"])


async def _state(world: World) -> dict[str, list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(world.dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return {
                table: sorted(tuple(r) for r in await conn.fetch(sql))
                for table, sql in STATE.items()
            }
    finally:
        await conn.close()


async def _outbox_since(world: World, last: int) -> tuple[dict[str, int], int]:
    """The outbox rows after id `last` by topic and type, and the newest id."""
    conn = await asyncpg.connect(world.dsn)
    try:
        rows = await conn.fetch(
            "SELECT topic || ' ' || coalesce(payload->>'type', '-') AS what, count(*) AS n,"
            " max(id) AS newest FROM outbox WHERE id > $1 GROUP BY 1",
            last,
        )
    finally:
        await conn.close()
    return {r["what"]: r["n"] for r in rows}, max([last, *(r["newest"] for r in rows)])


async def _dead_letters(world: World) -> dict[str, int]:
    return {s.topic: s.messages for s in await summarize(world.kafka.bootstrap, timeout_s=20)}


def _admin(world: World) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(bootstrap_servers=world.kafka.bootstrap, request_timeout_ms=10000)


async def _groups(admin: AIOKafkaAdminClient) -> list[str]:
    """The platform's consumer groups: one per Faust app, `shopstream-<domain>`."""
    groups = sorted(
        g[0] for g in await admin.list_consumer_groups() if g[0].startswith("shopstream-")
    )
    assert set(groups) >= SAGA_GROUPS, groups
    return groups


async def _committed(world: World) -> dict[str, dict[TopicPartition, int]]:
    """Each platform group's committed offsets."""
    admin = _admin(world)
    await admin.start()
    try:
        return {
            group: {
                tp: meta.offset
                for tp, meta in (await admin.list_consumer_group_offsets(group)).items()
            }
            for group in await _groups(admin)
        }
    finally:
        await admin.close()


async def _ends(world: World, tps: set[TopicPartition]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=world.kafka.bootstrap, group_id=None)
    await consumer.start()
    try:
        ends: dict[TopicPartition, int] = await consumer.end_offsets(list(tps))
        return ends
    finally:
        await consumer.stop()


async def _lags(world: World) -> dict[str, dict[TopicPartition, tuple[int, int]]]:
    """Each platform group's partitions not read to the end yet: (committed, end)."""
    committed = await _committed(world)
    tps = {tp for offsets in committed.values() for tp in offsets}
    ends = await _ends(world, tps)
    return {
        group: {tp: (offset, ends[tp]) for tp, offset in offsets.items() if offset < ends[tp]}
        for group, offsets in committed.items()
    }


async def _caught_up(world: World) -> None:
    """Until every group has read everything, twice in a row (a reply or event sent again
    while reading moves the end)."""
    seen: list[int] = []
    behind: dict[str, dict[TopicPartition, tuple[int, int]]] = {}

    async def read_all() -> bool:
        behind.clear()
        behind.update({g: tps for g, tps in (await _lags(world)).items() if tps})
        seen.append(sum(end - offset for tps in behind.values() for offset, end in tps.values()))
        return seen[-2:] == [0, 0]

    try:
        await eventually(read_all, timeout=120, what="consumer groups caught up")
    except AssertionError as e:
        detail = {
            group: {f"{tp.topic}[{tp.partition}]": f"{c}/{end}" for tp, (c, end) in tps.items()}
            for group, tps in behind.items()
        }
        raise AssertionError(f"{e}; still behind (committed/end): {detail}") from None


async def _rewind_group(world: World, group: str, offsets: dict[TopicPartition, int]) -> int:
    """Commit the group's partitions back to their first offsets; the messages to read again.

    A commit from outside a group is taken once the group is empty, that is once the stopped
    workers have left it."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=world.kafka.bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        firsts = await consumer.beginning_offsets(list(offsets))

        async def commit() -> bool:
            try:
                await consumer.commit({tp: firsts[tp] for tp in offsets})
            except KafkaError:
                return False
            return True

        await eventually(commit, timeout=60, what=f"{group} rewound")
    finally:
        await consumer.stop()
    return sum(offsets[tp] - firsts[tp] for tp in offsets)


async def _rewind(world: World) -> int:
    """Every platform group back to the beginning of its topics; the messages to read again."""
    committed = await _committed(world)
    again = sum([await _rewind_group(world, g, offsets) for g, offsets in committed.items()])
    rewound = await _committed(world)
    assert all(o == 0 for offsets in rewound.values() for o in offsets.values()), rewound
    return again


@pytest.mark.timeout(420)
async def test_every_message_delivered_again_changes_nothing(
    world: World, http: aiohttp.ClientSession
) -> None:
    rng = random.Random(12)
    products = await create_products(world, http, "redelivery")
    buyers = [await new_buyer(world.url, http) for _ in range(BUYERS)]
    accepted: list[int] = []

    async def buyer(n: int) -> None:
        while len(accepted) < ORDERS:
            accepted.append(await _checkout(world, http, buyers[n % BUYERS], products, rng))

    await asyncio.gather(*(buyer(n) for n in range(IN_FLIGHT)))
    await settle_and_check(world, set(accepted), products)
    await _caught_up(world)
    before = await _state(world)
    dead_before, last = await _dead_letters(world), (await _outbox_since(world, 0))[1]
    assert any(r[2] == "paid" for r in before["orders"])

    for proc in world.workers:
        proc.terminate()
    for proc in world.workers:
        proc.stop()
    again = await _rewind(world)

    started = time.monotonic()
    await asyncio.to_thread(start_workers, world)
    await _caught_up(world)
    await settle_and_check(world, set(accepted), products)
    after = await _state(world)
    changed = {t: (len(before[t]), len(after[t])) for t in STATE if before[t] != after[t]}
    assert changed == {}, f"changed by redelivery (rows before, after): {changed}"
    assert await _dead_letters(world) == dead_before
    print(
        f"{again} messages delivered again, read in {time.monotonic() - started:.1f} s;"
        f" sent again: {(await _outbox_since(world, last))[0]}"
    )
