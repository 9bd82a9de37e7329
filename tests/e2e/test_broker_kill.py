"""The broker leading `orders.commands` SIGKILLed during a run of orders loses nothing.

On a 3-node Apache Kafka cluster (replication 3, min.insync.replicas 2, acks=all with
idempotent producers), buyers place and pay orders as real clients do; once a third of the
orders are placed, the node that leads most of the `orders.commands` partitions the buyers use
is SIGKILLed, and started again a few seconds later. Every request is answered (or answered
202 with a Location that resolves), and after quiescence the invariants of DESIGN.md hold.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner

from agents.common import tokens
from agents.common.kafka import KafkaCluster
from agents.common.settings import Settings
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
from topics import ORDERS_COMMANDS, reply_topic

pytestmark = pytest.mark.e2e

ORDERS = 300
BUYERS = 32
IN_FLIGHT = 32
# The killed node stays down this long: longer than a request's deadline (3 s).
DOWN_S = 5.0
# A client gives an order this long to be decided, the broker's outage included.
PATIENCE_S = 90.0


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with running_world("broker-kill-", env=BUYERS_ENV, broker="kafka") as w:
        yield w


@dataclass
class Calls:
    """Every HTTP call the buyers made: its status, or the error that left it unanswered."""

    statuses: Counter[int] = field(default_factory=Counter)
    unanswered: list[str] = field(default_factory=list)
    slowest_s: float = 0.0

    def trace(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig()

        async def start(_: aiohttp.ClientSession, ctx: SimpleNamespace, __: Any) -> None:
            ctx.started = time.monotonic()

        async def end(
            _: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestEndParams
        ) -> None:
            self.statuses[params.response.status] += 1
            self.slowest_s = max(self.slowest_s, time.monotonic() - ctx.started)

        async def failed(
            _: aiohttp.ClientSession,
            __: SimpleNamespace,
            params: aiohttp.TraceRequestExceptionParams,
        ) -> None:
            self.unanswered.append(f"{params.method} {params.url}: {params.exception!r}")

        config.on_request_start.append(start)
        config.on_request_end.append(end)
        config.on_request_exception.append(failed)
        return config


@dataclass
class Told:
    orders: set[int] = field(default_factory=set)
    # A 202's Location -> the buyer whose it is.
    locations: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def commands(self) -> set[uuid.UUID]:
        return {uuid.UUID(location.rsplit("/", 1)[-1]) for location in self.locations}


@pytest.fixture(scope="module")
def calls() -> Calls:
    return Calls()


@pytest.fixture(scope="module")
async def http(calls: Calls) -> AsyncIterator[aiohttp.ClientSession]:
    async with http_client(trace_configs=[calls.trace()]) as s:
        yield s


async def _follow(
    http: aiohttp.ClientSession, url: str, buyer: dict[str, str], deadline: float
) -> dict[str, Any]:
    """Poll a 202's Location, and only it, until its order is decided."""
    while True:
        status, body = await request_json(http, "GET", url, headers=buyer)
        if status == 200 and body["status"] != "pending":
            return body
        # 404: the command is not handled yet.
        assert status in {200, 404} | RETRY_LATER, (url, status, body)
        assert time.monotonic() < deadline, f"{url} still {status} {body}"
        await asyncio.sleep(0.2)


async def _place(
    world: World,
    http: aiohttp.ClientSession,
    buyer: dict[str, str],
    items: list[dict[str, int]],
    told: Told,
) -> dict[str, Any]:
    """One order, as a real client places it: a 5xx retried with the same key, a 202 followed."""
    headers = {**buyer, "Idempotency-Key": uuid.uuid4().hex}
    deadline = time.monotonic() + PATIENCE_S
    while True:
        status, body = await request_json(
            http, "POST", f"{world.url}/api/v1/orders", headers=headers, json={"items": items}
        )
        if status in (201, 409) and "order" in body:
            order: dict[str, Any] = body["order"]
            break
        if status == 202:
            location = body["location"]
            told.locations[location] = buyer
            order = await _follow(http, f"{world.url}{location}", buyer, deadline)
            break
        # A 409 without an order: the first attempt is still being placed.
        assert status in RETRY_LATER or status == 409, (status, body)
        assert time.monotonic() < deadline, (status, body)
        await asyncio.sleep(0.2)
    told.orders.add(int(order["id"]))
    return order


def _user_id(world: World, buyer: dict[str, str]) -> int:
    token = buyer["Authorization"].removeprefix("Bearer ")
    return int(tokens.decode(Settings.from_env(world.env), token, "access")["sub"])


def _victim(world: World, buyers: list[dict[str, str]]) -> tuple[int, set[int]]:
    """The node leading most of the `orders.commands` partitions the buyers' orders go to
    (the gateway keys them by user id), and those partitions."""
    assert isinstance(world.kafka, KafkaCluster)
    partitioner = DefaultPartitioner()
    every = list(range(ORDERS_COMMANDS.partitions))
    used = {partitioner(str(_user_id(world, b)).encode(), every, every) for b in buyers}
    leaders = Counter(world.kafka.leader_of(ORDERS_COMMANDS.name, p) for p in sorted(used))
    return leaders.most_common(1)[0][0], used


async def _replicas(world: World, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=world.kafka.bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [len(p["replicas"]) for p in described["partitions"]]


async def _kill_and_restart(
    world: World, victim: int, used: set[int], third: asyncio.Event
) -> dict[int, int]:
    """SIGKILL the node once a third of the orders are placed, start it again DOWN_S later;
    the leaders of the used partitions once the cluster is whole again."""
    assert isinstance(world.kafka, KafkaCluster)
    async with asyncio.timeout(120):
        await third.wait()
    await asyncio.to_thread(world.kafka.kill, victim)
    try:
        # Part of the scenario: the node stays dead for a while, then comes back.
        await asyncio.sleep(DOWN_S)
    finally:
        await asyncio.to_thread(world.kafka.restart, victim)
    return {p: world.kafka.leader_of(ORDERS_COMMANDS.name, p) for p in sorted(used)}


async def _buyers(world: World, http: aiohttp.ClientSession) -> list[dict[str, str]]:
    """BUYERS accounts, a few registered at a time (hashing passwords is slow on purpose)."""
    gate = asyncio.Semaphore(4)

    async def one() -> dict[str, str]:
        async with gate:
            return await new_buyer(world.url, http)

    return list(await asyncio.gather(*(one() for _ in range(BUYERS))))


@pytest.mark.timeout(480)
async def test_killed_partition_leader_loses_no_order_and_leaves_no_request_hanging(
    world: World, http: aiohttp.ClientSession, calls: Calls
) -> None:
    assert isinstance(world.kafka, KafkaCluster)
    rng = random.Random(11)
    # A broker's loss must not take a gateway's replies with it.
    instance = world.procs["gateway"].env["GATEWAY_INSTANCE"]
    assert await _replicas(world, reply_topic(instance)) == [world.kafka.replication]

    products = await create_products(world, http, "broker-kill")
    buyers = await _buyers(world, http)
    victim, used = _victim(world, buyers)
    told = Told()
    third = asyncio.Event()
    outage = asyncio.create_task(_kill_and_restart(world, victim, used, third))
    placed = 0

    async def buyer(n: int) -> None:
        nonlocal placed
        me = buyers[n % BUYERS]
        while placed < ORDERS or not outage.done():
            order = await _place(world, http, me, order_lines(products, rng), told)
            placed += 1
            if placed >= ORDERS // 3:
                third.set()
            if order["status"] == "awaiting_payment" and rng.random() < 2 / 3:
                await pay(world.url, http, me, int(order["id"]), uuid.uuid4().hex, PATIENCE_S)

    started = time.monotonic()
    try:
        await asyncio.gather(*(buyer(n) for n in range(IN_FLIGHT)))
    finally:
        if third.is_set():
            await outage
        else:
            outage.cancel()
            await asyncio.gather(outage, return_exceptions=True)
    run_s = time.monotonic() - started
    assert placed >= ORDERS
    leaders = outage.result()

    await settle_and_check(world, told.orders, products, commands=told.commands)
    settle_s = time.monotonic() - started - run_s
    for location, who in told.locations.items():
        status, body = await request_json(http, "GET", f"{world.url}{location}", headers=who)
        assert status == 200, (location, status, body)
        assert body["status"] in FINAL, (location, body)
    assert calls.unanswered == [], calls.unanswered[:10]
    conn = await asyncpg.connect(world.dsn)
    try:
        paid = await conn.fetchval("SELECT count(*) FROM orders WHERE status = 'paid'")
    finally:
        await conn.close()
    assert paid > 0
    print(
        f"killed node {victim} (leader of orders.commands among {sorted(used)}) for {DOWN_S} s,"
        f" leaders after {leaders}; {placed} orders in {run_s:.1f} s, settled in"
        f" {settle_s:.1f} s; {len(told.locations)} answered 202;"
        f" HTTP {dict(calls.statuses)}, slowest {calls.slowest_s:.2f} s"
    )
