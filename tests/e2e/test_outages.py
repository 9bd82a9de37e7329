"""Outages lose nothing and block nothing (issue 8, reliability items 1 and 2).

On the real processes, broker and PostgreSQL (tests/e2e/saga_world.py), with buyers placing
and paying orders as real clients do (an Idempotency-Key on every order; a 202 followed by
polling its Location; a 5xx or a dropped connection retried with the same key):

- PostgreSQL stopped for a minute, or restarted at once, in the middle of a run of orders:
  every message is acted upon once it is back, none is acknowledged without its effect.
- A gateway's reply topic deleted while its orders are in flight, and a partner naming a
  reply topic that never existed: the replies that cannot be delivered hold up nothing else.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from agents.common.dlq import summarize
from tests.e2e.saga_world import (
    BUYERS_ENV,
    FINAL,
    RETRY_LATER,
    World,
    create_products,
    http_client,
    new_buyer,
    order_lines,
    pay,
    request_json,
    running_world,
    settle_and_check,
)
from tests.helpers import eventually
from tests.infra import grpc_serving
from tests.trust import signed
from topics import ORDERS_COMMANDS, reply_topic
from topics.admin import delete_topic
from topics.envelope import Headers
from topics.orders import PlaceOrder
from topics.products import OrderLine

pytestmark = pytest.mark.e2e

# How long PostgreSQL stays down: the issue asks for a minute.
OUTAGE_S = 60.0
ORDERS = 200
BUYERS = 12
IN_FLIGHT = 16
# Gateway A's reply topic is deleted; gateway B's orders must not notice.
GATEWAY_A, GATEWAY_B = "gateway-a", "gateway-b"
B_ORDERS = 100
B_IN_FLIGHT = 8
A_IN_FLIGHT = 6
# "Within normal time": a reply held up behind an undeliverable one would take the request
# deadline (REQUEST_TIMEOUT_S, 3 s) and be answered 202; the machine may be busy, too.
B_P99_LIMIT_S = 2.5
PARTNER_ORDERS = 3
# A client gives an order this long to be answered, however long the outage.
PATIENCE_S = OUTAGE_S + 90.0


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with running_world(
        "outage-",
        gateways=(GATEWAY_B, GATEWAY_A),
        env=BUYERS_ENV,
    ) as w:
        yield w


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with http_client() as s:
        yield s


@dataclass
class Told:
    """What clients were told: the orders they saw, the 202s' Locations (with whose token)."""

    orders: set[int] = field(default_factory=set)
    locations: dict[str, dict[str, str]] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)

    @property
    def commands(self) -> set[uuid.UUID]:
        return {uuid.UUID(location.rsplit("/", 1)[-1]) for location in self.locations}


async def _follow(
    http: aiohttp.ClientSession, url: str, buyer: dict[str, str], deadline: float
) -> dict[str, Any]:
    """Poll a 202's Location until its order is decided."""
    while True:
        status, body = await request_json(http, "GET", url, headers=buyer)
        if status == 200 and body["status"] != "pending":
            return body
        # 404: the command is not handled yet; 5xx: PostgreSQL or a worker is away.
        assert status in {200, 404} | RETRY_LATER, (url, status, body)
        assert time.monotonic() < deadline, f"{url} still {status} {body}"
        await asyncio.sleep(0.2)


async def _place(
    http: aiohttp.ClientSession,
    post_url: str,
    poll_url: str,
    buyer: dict[str, str],
    items: list[dict[str, int]],
    told: Told,
) -> dict[str, Any]:
    """Place one order as a real client: same key on every retry, a 202 followed to its end."""
    headers = {**buyer, "Idempotency-Key": uuid.uuid4().hex}
    deadline = time.monotonic() + PATIENCE_S
    while True:
        status, body = await request_json(
            http, "POST", f"{post_url}/api/v1/orders", headers=headers, json={"items": items}
        )
        told.statuses[status] += 1
        if status in (201, 409) and "order" in body:
            order: dict[str, Any] = body["order"]
            told.orders.add(int(order["id"]))
            return order
        if status == 202:
            location = body["location"]
            told.locations[location] = buyer
            order = await _follow(http, f"{poll_url}{location}", buyer, deadline)
            told.orders.add(int(order["id"]))
            return order
        # A 409 without an order: the first attempt is still being placed.
        assert status in RETRY_LATER or status == 409, (status, body)
        assert time.monotonic() < deadline, (status, body)
        await asyncio.sleep(0.2)


async def _serving(world: World) -> list[bool]:
    return await asyncio.gather(
        *(asyncio.to_thread(grpc_serving, world.grpc_addr(p.name)) for p in world.workers)
    )


async def _outage(
    world: World,
    http: aiohttp.ClientSession,
    half_way: asyncio.Event,
    down_s: float,
    reader: dict[str, str],
) -> None:
    """Once half the orders are placed, stop PostgreSQL (fast shutdown) for `down_s`."""
    async with asyncio.timeout(120):
        await half_way.wait()
    stopped = False
    try:
        await asyncio.to_thread(world.pg.stop)
        stopped = True
        down_since = time.monotonic()
        if down_s > 0:
            # The workers wait for it; their health says so, and reads answer 503.
            async def not_serving() -> bool:
                return not any(await _serving(world))

            await eventually(not_serving, timeout=min(down_s, 15), what="NOT_SERVING")
            status, body = await request_json(
                http, "GET", f"{world.urls[GATEWAY_B]}/order/", headers=reader
            )
            assert status == 503, (status, body)
            await asyncio.sleep(down_s - (time.monotonic() - down_since))
        await asyncio.to_thread(world.pg.start)
        stopped = False
    finally:
        if stopped:
            world.pg.start()

    async def serving() -> bool:
        return all(await _serving(world))

    await eventually(serving, timeout=30, what="SERVING again")
    assert all(p.running for p in world.procs.values()), "a process died of the outage"


async def _orders_through_an_outage(
    world: World, http: aiohttp.ClientSession, down_s: float, seed: int
) -> Told:
    rng = random.Random(seed)
    url = world.urls[GATEWAY_B]
    products = await create_products(world, http, f"outage{seed}", url)
    buyers = [await new_buyer(url, http) for _ in range(BUYERS)]
    told = Told()
    dead_before = await _dead_letters(world)
    half_way = asyncio.Event()
    outage = asyncio.create_task(_outage(world, http, half_way, down_s, buyers[0]))
    placed = 0

    async def buyer(n: int) -> None:
        nonlocal placed
        while placed < ORDERS or not outage.done():
            me = buyers[n % BUYERS]
            order = await _place(http, url, url, me, order_lines(products, rng), told)
            placed += 1
            if placed >= ORDERS // 2:
                half_way.set()
            if order["status"] == "awaiting_payment" and rng.random() < 2 / 3:
                await pay(url, http, me, int(order["id"]), uuid.uuid4().hex, PATIENCE_S)

    try:
        await asyncio.gather(*(buyer(n) for n in range(IN_FLIGHT)))
    finally:
        if half_way.is_set():
            await outage
        else:
            outage.cancel()
            await asyncio.gather(outage, return_exceptions=True)
    assert placed >= ORDERS

    await settle_and_check(world, told.orders, products, commands=told.commands)
    for location, who in told.locations.items():
        status, body = await request_json(http, "GET", f"{url}{location}", headers=who)
        assert status == 200, (location, status, body)
        assert body["status"] in FINAL, (location, body)
    conn = await asyncpg.connect(world.dsn)
    try:
        # The sweeper gives up on an order whose stock answer never came: none may need it.
        given_up = await conn.fetchval(
            "SELECT count(*) FROM orders WHERE reason LIKE 'no stock answer%'"
        )
    finally:
        await conn.close()
    assert given_up == 0, f"{given_up} orders were given up"
    # A message dead-lettered because PostgreSQL was away would be one acknowledged without
    # its effect (and its caller answered 500).
    grown = _grown(dead_before, await _dead_letters(world))
    assert grown == {}, f"dead-lettered while PostgreSQL was away: {grown}"
    return told


@pytest.mark.timeout(OUTAGE_S + 240)
async def test_postgres_down_for_a_minute_acknowledges_nothing_without_its_effect(
    world: World, http: aiohttp.ClientSession
) -> None:
    told = await _orders_through_an_outage(world, http, OUTAGE_S, seed=8)
    # The orders caught by the outage were answered 202, and their Locations resolved.
    assert told.statuses[202] > 0, told.statuses


@pytest.mark.timeout(180)
async def test_postgres_restarted_acknowledges_nothing_without_its_effect(
    world: World, http: aiohttp.ClientSession
) -> None:
    await _orders_through_an_outage(world, http, 0.0, seed=9)


async def _dead_letters(world: World) -> dict[str, tuple[int, str | None]]:
    """How many messages each dead-letter topic holds, and the newest one's reason."""
    summaries = await summarize(world.kafka.bootstrap, timeout_s=20)
    return {s.topic: (s.messages, s.newest_reason) for s in summaries}


def _grown(
    before: dict[str, tuple[int, str | None]], after: dict[str, tuple[int, str | None]]
) -> dict[str, tuple[int, str | None]]:
    """The dead-letter topics that got messages, with how many and the newest reason."""
    return {
        topic: (n - before.get(topic, (0, None))[0], reason)
        for topic, (n, reason) in after.items()
        if n != before.get(topic, (0, None))[0]
    }


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * 0.99) - 1)]


async def _partner_orders(world: World, product_id: int) -> set[uuid.UUID]:
    """PlaceOrders from a partner, each naming a reply topic that never existed."""
    producer = AIOKafkaProducer(bootstrap_servers=world.kafka.bootstrap, acks="all")
    await producer.start()
    commands = set()
    try:
        for i in range(PARTNER_ORDERS):
            user_id = 10**9 + i
            cmd = PlaceOrder(
                command_id=uuid.uuid4(),
                user_id=user_id,
                items=[OrderLine(product_id=product_id, quantity=1)],
                request_hash="partner",
            )
            headers = [
                (Headers.REPLY_TO, f"gateway.replies.nobody-{uuid.uuid4().hex}".encode()),
                (Headers.CORRELATION_ID, uuid.uuid4().hex.encode()),
                (Headers.TYPE, b"PlaceOrder"),
            ]
            async with asyncio.timeout(10):
                raw, key = cmd.model_dump_json().encode(), str(user_id).encode()
                await producer.send_and_wait(
                    ORDERS_COMMANDS.name,
                    raw,
                    key=key,
                    headers=signed(ORDERS_COMMANDS.name, key, raw, headers, producer="partner"),
                )
            commands.add(cmd.command_id)
    finally:
        await producer.stop()
    return commands


@pytest.mark.timeout(180)
async def test_a_reply_whose_topic_is_gone_blocks_nothing_behind_it(
    world: World, http: aiohttp.ClientSession
) -> None:
    rng = random.Random(10)
    url_a, url_b = world.urls[GATEWAY_A], world.urls[GATEWAY_B]
    products = await create_products(world, http, "gone", url_b)
    buyers = [await new_buyer(url_b, http) for _ in range(BUYERS)]
    told_a, told_b = Told(), Told()
    dead_before = await _dead_letters(world)
    # Gateway B's orders: (status, seconds, placed after the deletion began).
    b_orders: list[tuple[int, float, bool]] = []
    a_placed = 0
    ready = asyncio.Event()
    deleting = asyncio.Event()
    done = asyncio.Event()
    partners: set[uuid.UUID] = set()

    def after() -> int:
        return sum(1 for _, _, late in b_orders if late)

    async def via_b(n: int) -> None:
        me = buyers[n % BUYERS]
        while not done.is_set():
            late = deleting.is_set()
            key = uuid.uuid4().hex
            started = time.monotonic()
            status, body = await request_json(
                http,
                "POST",
                f"{url_b}/order/",
                headers={**me, "Idempotency-Key": key},
                json={"items": order_lines(products, rng)},
            )
            b_orders.append((status, time.monotonic() - started, late))
            told_b.statuses[status] += 1
            if "order" in body:
                told_b.orders.add(int(body["order"]["id"]))
            elif status == 202:
                told_b.locations[body["location"]] = me
            if len(b_orders) >= 20 and a_placed >= 5:
                ready.set()
            if after() >= B_ORDERS:
                done.set()

    async def via_a(n: int) -> None:
        nonlocal a_placed
        me = buyers[(n + B_IN_FLIGHT) % BUYERS]
        while not done.is_set():
            # A 202 from gateway A is followed through gateway B.
            await _place(http, url_a, url_b, me, order_lines(products, rng), told_a)
            a_placed += 1

    async def saboteur() -> None:
        async with asyncio.timeout(60):
            await ready.wait()
        deleting.set()
        await delete_topic(world.kafka.bootstrap, reply_topic(_instance(world, GATEWAY_A)))
        partners.update(await _partner_orders(world, products[0]))

    clients = [via_b(n) for n in range(B_IN_FLIGHT)] + [via_a(n) for n in range(A_IN_FLIGHT)]
    await asyncio.gather(saboteur(), *clients)

    late = [seconds for _, seconds, was_late in b_orders if was_late]
    early = [seconds for _, seconds, was_late in b_orders if not was_late]
    b_statuses = Counter(status for status, _, _ in b_orders)
    assert set(b_statuses) <= {201, 409}, f"gateway B answered {b_statuses}"
    assert len(late) >= B_ORDERS
    assert _p99(late) < B_P99_LIMIT_S, (
        f"gateway B's p99 {_p99(late):.2f} s, max {max(late):.2f} s after the deletion; "
        f"before it p99 {_p99(early):.2f} s, max {max(early):.2f} s"
    )
    assert set(told_a.statuses) <= {201, 202, 409}, f"gateway A answered {told_a.statuses}"

    orders = told_a.orders | told_b.orders
    commands = told_a.commands | told_b.commands | partners
    await settle_and_check(world, orders, products, commands=commands)
    for location, who in told_a.locations.items():
        status, body = await request_json(http, "GET", f"{url_b}{location}", headers=who)
        assert status == 200, (location, status, body)
        assert body["status"] in FINAL, (location, body)
    conn = await asyncpg.connect(world.dsn)
    try:
        dead = await conn.fetch("SELECT topic, dead_reason FROM outbox WHERE dead_at IS NOT NULL")
    finally:
        await conn.close()
    # Replies that could not be delivered may be recorded as dead rows, each with its reason;
    # no message was dead-lettered.
    assert all(r["dead_reason"] for r in dead), dead
    grown = _grown(dead_before, await _dead_letters(world))
    assert grown == {}, f"dead-lettered: {grown}"


def _instance(world: World, gateway: str) -> str:
    return world.procs[gateway].env["GATEWAY_INSTANCE"]
