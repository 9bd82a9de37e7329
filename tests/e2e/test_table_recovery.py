"""The Faust tables come back equal after the worker that owns them is SIGKILLed.

Orders are placed and some paid, so that the payments worker's deadline table holds the unpaid
ones and the products worker's windowed table the units sold this hour; both are read through
gRPC, both workers are SIGKILLed and started again, and what they read then must be what they
read before, restored from the changelogs (a deadline the worker had to adopt from PostgreSQL
means the table came back without it).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from protos import payments_pb2, payments_pb2_grpc, products_pb2, products_pb2_grpc
from tests.e2e.saga_world import (
    BUYERS_ENV,
    World,
    create_products,
    http_client,
    new_buyer,
    pay,
    retry_until,
    running_world,
)
from tests.helpers import eventually
from tests.infra import grpc_serving
from tests.trust import service_channel

pytestmark = pytest.mark.e2e

PAID = 3
UNPAID = 3


@pytest.fixture(scope="module", params=["kafka", "tansu"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    # Deadlines far away: every unpaid payment stays pending for the whole test.
    env = BUYERS_ENV | {"PAYMENT_TTL_S": "3600"}
    with running_world("tables-", env=env, broker=request.param) as w:
        yield w


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with http_client() as s:
        yield s


async def _deadlines(world: World) -> list[tuple[int, int, bool]]:
    async with service_channel(world.grpc_addr("payments"), "payments", issuer="ops") as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        reply = await stub.ListPendingDeadlines(
            payments_pb2.ListPendingDeadlinesRequest(), timeout=5
        )
    return [(d.payment_id, d.expires_at_us, d.adopted) for d in reply.deadlines]


async def _best_sellers(world: World) -> list[tuple[int, int]]:
    async with service_channel(world.grpc_addr("products"), "products") as channel:
        stub = products_pb2_grpc.ProductServiceStub(channel)
        reply = await stub.ListBestSellers(
            products_pb2.ListBestSellersRequest(limit=100), timeout=5
        )
    return [(s.product_id, s.units) for s in reply.sellers]


async def _place(
    world: World, http: aiohttp.ClientSession, buyer: dict[str, str], items: Any
) -> int:
    _, body = await retry_until(
        http,
        "POST",
        f"{world.url}/api/v1/orders",
        {201},
        headers={**buyer, "Idempotency-Key": uuid.uuid4().hex},
        json={"items": items},
    )
    assert body["order"]["status"] == "awaiting_payment", body
    return int(body["order"]["id"])


async def _payment_id(
    world: World, http: aiohttp.ClientSession, buyer: dict[str, str], order: int
) -> int:
    _, payment = await retry_until(
        http, "GET", f"{world.url}/api/v1/orders/{order}/payment", {200}, headers=buyer
    )
    return int(payment["id"])


async def _restart(world: World, name: str) -> None:
    proc = world.procs[name]
    await asyncio.to_thread(proc.kill)
    proc.start()

    async def serving() -> bool:
        return await asyncio.to_thread(grpc_serving, world.grpc_addr(name))

    await eventually(serving, timeout=90, what=f"{name} serving again")


@pytest.mark.timeout(300)
async def test_tables_come_back_equal_after_their_worker_is_sigkilled(
    world: World, http: aiohttp.ClientSession
) -> None:
    products = await create_products(world, http, f"tables-{uuid.uuid4().hex[:6]}")
    buyer = await new_buyer(world.url, http)
    sold: dict[int, int] = {}
    unpaid: set[int] = set()
    for n in range(PAID + UNPAID):
        items = [
            {"product_id": products[n % len(products)], "quantity": 1 + n % 2},
            {"product_id": products[(n + 1) % len(products)], "quantity": 1},
        ]
        order = await _place(world, http, buyer, items)
        if n < PAID:
            await pay(world.url, http, buyer, order, uuid.uuid4().hex)
            for line in items:
                sold[line["product_id"]] = sold.get(line["product_id"], 0) + line["quantity"]
        else:
            unpaid.add(await _payment_id(world, http, buyer, order))
    expected_sellers = sorted(sold.items(), key=lambda s: (-s[1], s[0]))

    async def best_sellers_counted() -> list[tuple[int, int]] | None:
        found = await _best_sellers(world)
        return found if found == expected_sellers else None

    async def deadlines_held() -> list[tuple[int, int, bool]] | None:
        found = await _deadlines(world)
        return found if {d[0] for d in found} == unpaid else None

    sellers_before = await eventually(best_sellers_counted, timeout=30, what="units counted")
    deadlines_before = await eventually(deadlines_held, timeout=30, what="deadlines held")
    assert not any(adopted for _, _, adopted in deadlines_before)

    await _restart(world, "products")
    await _restart(world, "payments")

    assert await _best_sellers(world) == sellers_before
    assert await _deadlines(world) == deadlines_before
