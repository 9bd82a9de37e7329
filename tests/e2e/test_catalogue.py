"""The seed's product calls, verbatim, against the whole platform started by `shopstream run`."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from protos import products_pb2, products_pb2_grpc
from tests.e2e.client import bearer, call, dev_token
from tests.e2e.platform import Platform
from tests.helpers import eventually, random_name
from tests.trust import service_channel
from topics import PRODUCTS_EVENTS
from topics.admin import partitions_of

pytestmark = pytest.mark.e2e


async def problem(resp: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = await resp.json(content_type=None)
    assert {"type", "title", "status", "detail", "error"} <= body.keys()
    assert body["status"] == status
    return body


async def test_the_demo_catalogue_is_there(platform: Platform, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{platform.url}/product/?page=0") as resp:
        assert resp.status == 200
        page = await resp.json()
    # The seed's pages count from 1; page 0 is the first page too.
    assert page["page"] == 1
    assert page["total"] >= 12
    assert page["total_page"] == -(-page["total"] // 10)
    assert len(page["products"]) == 10
    assert {
        "id",
        "name",
        "description",
        "price",
        "stock",
        "image_url",
        "created_at",
        "updated_at",
    } <= page["products"][0].keys()


async def test_seed_product_writes_verbatim(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    url = platform.url
    name = random_name("Lamp")
    body = {
        "name": name,
        "description": "warm light",
        "price": 39.99,
        "stock": 7,
        "image_url": "https://img.example/lamp.png",
    }
    async with http.post(f"{url}/product/", json=body, headers=admin) as resp:
        assert resp.status == 201, await resp.text()
        created = await resp.json()
    assert {k: created[k] for k in body} == body
    pid = created["id"]

    async with http.get(f"{url}/product/?page=0") as resp:
        assert (await resp.json())["products"][0]["id"] == pid

    update = {**body, "price": 35.5, "stock": 6}
    async with http.put(f"{url}/product/?id={pid}", json=update, headers=admin) as resp:
        assert resp.status == 200, await resp.text()
        updated = await resp.json()
    assert (updated["price"], updated["stock"], updated["name"]) == (35.5, 6, name)

    async with http.get(f"{url}/api/v1/products/{pid}") as resp:
        assert (await resp.json())["price"] == 35.5

    async with http.delete(f"{url}/product/?id={pid}", headers=admin) as resp:
        assert resp.status == 200
    async with http.get(f"{url}/api/v1/products/{pid}") as resp:
        await problem(resp, 404)
    async with http.delete(f"{url}/product/?id={pid}", headers=admin) as resp:
        await problem(resp, 404)


async def test_writes_are_admin_only(platform: Platform, http: aiohttp.ClientSession) -> None:
    body = {"name": "x", "price": 1, "stock": 1}
    async with http.post(f"{platform.url}/product/", json=body) as resp:
        await problem(resp, 401)
    user = {"Authorization": f"Bearer {dev_token(platform, 'user')}"}
    async with http.post(f"{platform.url}/product/", json=body, headers=user) as resp:
        await problem(resp, 403)


async def test_errors_are_problem_json(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    url = platform.url
    async with http.get(f"{url}/no/such/route") as resp:
        await problem(resp, 404)
    async with http.patch(f"{url}/product/") as resp:
        await problem(resp, 405)
    async with http.post(f"{url}/product/", json={"price": "cheap"}, headers=admin) as resp:
        body = await problem(resp, 422)
    assert {"name", "price", "stock"} <= {e["path"] for e in body["errors"]}
    big = json.dumps({"name": "x", "price": 1, "stock": 1, "description": "y" * 2_000_000})
    async with http.post(f"{url}/product/", data=io.BytesIO(big.encode()), headers=admin) as resp:
        await problem(resp, 413)


async def test_a_write_reaches_products_events(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    name = random_name("Evented")
    body = {"name": name, "price": 2, "stock": 2}
    async with http.post(f"{platform.url}/product/", json=body, headers=admin) as resp:
        pid = (await resp.json())["id"]
    consumer = AIOKafkaConsumer(bootstrap_servers=platform.kafka, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        partitions = await partitions_of(platform.kafka, PRODUCTS_EVENTS.name)
        assert partitions, "products.events has no partitions"
        tps = [TopicPartition(PRODUCTS_EVENTS.name, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)

        async def found() -> dict[str, Any] | None:
            for messages in (await consumer.getmany(timeout_ms=100)).values():
                for m in messages:
                    event = json.loads(m.value)
                    if m.key == str(pid).encode() and event["type"] == "ProductCreated":
                        return dict(event)
            return None

        event = await eventually(found, what="ProductCreated")
    finally:
        await consumer.stop()
    assert event["product"]["name"] == name


async def test_reads_over_grpc_and_health(platform: Platform, http: aiohttp.ClientSession) -> None:
    addr, secret = platform.addr("PRODUCT_SERVICE_ADDR"), platform.internal_secret
    async with service_channel(addr, "products", secret=secret) as channel:
        stub = products_pb2_grpc.ProductServiceStub(channel)
        page = await stub.ListProducts(products_pb2.ListProductsRequest(page=0), timeout=5)
        got = await stub.GetProduct(
            products_pb2.GetProductRequest(id=page.products[0].id), timeout=5
        )
        assert got.name == page.products[0].name
    async with http.get(f"{platform.url}/healthz") as resp:
        assert resp.status == 200
    async with http.get(f"{platform.url}/readyz") as resp:
        assert resp.status == 200
        checks = (await resp.json())["checks"]
    assert set(checks.values()) == {"ok"}
    assert set(checks) == {"kafka", "users", "products", "orders", "payments"}


async def test_idempotency_key_makes_a_retry_safe(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    name = random_name("Once")
    body = {"name": name, "price": 3, "stock": 3}
    headers = {**admin, "Idempotency-Key": uuid.uuid4().hex}
    ids = set()
    for _ in range(2):
        async with http.post(f"{platform.url}/product/", json=body, headers=headers) as resp:
            ids.add((await resp.json())["id"])
    assert len(ids) == 1


async def test_many_writes_in_flight(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    async def one(i: int) -> int:
        body = {"name": random_name(f"bulk{i}"), "price": 1, "stock": i}
        async with http.post(f"{platform.url}/product/", json=body, headers=admin) as resp:
            return resp.status

    assert set(await asyncio.gather(*(one(i) for i in range(64)))) == {201}


async def stock_on_page(platform: Platform, http: aiohttp.ClientSession, pid: int) -> int | None:
    """The stock `GET /product/?page=0` shows for product `pid`; None when it is not there."""
    page = await call(http, "GET", f"{platform.url}/product/?page=0", 200)
    return next((int(p["stock"]) for p in page["products"] if p["id"] == pid), None)


async def test_a_write_shows_on_the_very_next_page_read(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    url = platform.url
    body = {"name": random_name("Cached"), "price": 4, "stock": 9}
    pid = (await call(http, "POST", f"{url}/product/", 201, json=body, headers=admin))["id"]
    for stock in (8, 7, 6):
        # Read twice, so that the page is in the gateway's cache when the write comes.
        assert await stock_on_page(platform, http, pid) == stock + 1
        assert await stock_on_page(platform, http, pid) == stock + 1
        change = {"stock": stock}
        await call(http, "PUT", f"{url}/product/?id={pid}", 200, json=change, headers=admin)
        assert await stock_on_page(platform, http, pid) == stock
    await call(http, "DELETE", f"{url}/product/?id={pid}", 200, headers=admin)
    assert await stock_on_page(platform, http, pid) is None
    # The reads above went through the gateway's page cache, not around it.
    platform.found(r"(following) products\.events")


async def test_stock_taken_by_an_order_shows_on_the_page(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    url = platform.url
    email, password = f"{random_name('shopper')}@example.com", uuid.uuid4().hex
    account = {"full_name": "A Shopper", "email": email, "password": password}
    await call(http, "POST", f"{url}/api/v1/auth/register", 201, json=account)
    login = {"email": email, "password": password}
    buyer = bearer((await call(http, "POST", f"{url}/api/v1/auth/login", 200, json=login))["token"])
    body = {"name": random_name("Ordered"), "price": 3, "stock": 5}
    pid = (await call(http, "POST", f"{url}/product/", 201, json=body, headers=admin))["id"]
    assert await stock_on_page(platform, http, pid) == 5
    assert await stock_on_page(platform, http, pid) == 5
    order = {"items": [{"product_id": pid, "quantity": 2}]}
    async with http.post(f"{url}/order/", json=order, headers=buyer) as resp:
        assert resp.status in (201, 202), await resp.text()

    async def taken() -> bool:
        return await stock_on_page(platform, http, pid) == 3

    # The order's stock reaches the page through StockReserved on products.events.
    await eventually(taken, what="the order's stock on the page")
