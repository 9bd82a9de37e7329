"""Workers SIGKILLed again and again during a run of orders and payments lose nothing.

The processes run one by one (tests/e2e/saga_world.py); a killer SIGKILLs the gateway once and a
random saga worker (its outbox publisher and sweeper with it) the other times, every few seconds,
and starts it again, while buyers place and pay
orders, retrying with their Idempotency-Key as a real client would. After quiescence the
invariants of DESIGN.md are checked in PostgreSQL. It runs on Tansu and on a 3-node Apache
Kafka cluster.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator, Iterator

import aiohttp
import asyncpg
import pytest

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
)

pytestmark = pytest.mark.e2e

ORDERS = 300
BUYERS = 12
IN_FLIGHT = 16
KILL_EVERY_S = 4.0
KILLS = 6


@pytest.fixture(scope="module", params=["tansu", "kafka"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    with running_world("crash-", env=BUYERS_ENV, broker=request.param) as w:
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
    """Place one order (and pay two of three), retrying through crashes; return its id."""
    key = uuid.uuid4().hex
    items = order_lines(products, rng)
    headers = {**buyer, "Idempotency-Key": key}
    status, body = await retry_until(
        http,
        "POST",
        f"{world.url}/api/v1/orders",
        {201, 202, 409, 504},
        headers=headers,
        json={"items": items},
    )
    while status in (202, 504) or (status == 409 and "order" not in body):
        status, body = await retry_until(
            http,
            "POST",
            f"{world.url}/api/v1/orders",
            {201, 202, 409, 504},
            headers=headers,
            json={"items": items},
        )
    order = body["order"]
    if order["status"] != "awaiting_payment" or rng.random() < 1 / 3:
        return int(order["id"])
    await pay(world.url, http, buyer, int(order["id"]), key)
    return int(order["id"])


async def _killer(world: World, rng: random.Random) -> None:
    """SIGKILL KILLS times, a first one at once, and start it again: the gateway once (the
    requests it held in flight, its reply reader), saga workers (with their outbox publisher and
    sweeper) the other times."""
    plan = ["gateway"] + [rng.choice(["products", "orders", "payments"]) for _ in range(KILLS - 1)]
    rng.shuffle(plan)
    for i, victim in enumerate(plan):
        await asyncio.sleep(0.5 if i == 0 else KILL_EVERY_S)
        proc = world.procs[victim]
        await asyncio.to_thread(proc.kill)
        proc.start()


@pytest.mark.timeout(600)
async def test_sigkilled_workers_lose_no_order_and_charge_none_twice(
    world: World, http: aiohttp.ClientSession
) -> None:
    rng = random.Random(int(os.environ.get("CRASH_SEED", "7")))
    products = await create_products(world, http, "crash")
    buyers = [await new_buyer(world.url, http) for _ in range(BUYERS)]

    killer = asyncio.create_task(_killer(world, rng))
    accepted: list[int] = []

    async def buyer(n: int) -> None:
        # Orders go on until there are enough of them and every crash has happened.
        while len(accepted) < ORDERS or not killer.done():
            accepted.append(await _checkout(world, http, buyers[n % BUYERS], products, rng))

    try:
        await asyncio.gather(*(buyer(n) for n in range(IN_FLIGHT)))
    finally:
        killer.cancel()
        await asyncio.gather(killer, return_exceptions=True)
    assert sum(p.kills for p in world.procs.values()) == KILLS
    assert len(accepted) >= ORDERS

    await settle_and_check(world, set(accepted), products)
    conn = await asyncpg.connect(world.dsn)
    try:
        paid = await conn.fetchval("SELECT count(*) FROM orders WHERE status = 'paid'")
    finally:
        await conn.close()
    assert paid > 0
