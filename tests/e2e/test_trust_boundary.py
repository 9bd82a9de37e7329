"""The internal trust boundary on the real processes: a worker's gRPC port answers only calls
with a service token (health stays open), and a command topic takes only signed commands."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos import (
    orders_pb2,
    orders_pb2_grpc,
    products_pb2,
    products_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)
from tests.e2e.client import call
from tests.e2e.platform import Platform
from tests.e2e.test_checkout import new_product, new_user, stock_of
from tests.helpers import eventually
from tests.trust import service_channel, service_metadata, signed
from topics import ORDERS_COMMANDS, PRODUCTS_COMMANDS
from topics.envelope import Headers
from topics.orders import PlaceOrder
from topics.products import OrderLine, ProductChanges, UpdateProduct

pytestmark = pytest.mark.e2e

OTHER_SECRET = "not-the-platform-secret-" + "w" * 40


async def _code(call_: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call_
    code: grpc.StatusCode = e.value.code()
    return code


async def _me(platform: Platform, http: aiohttp.ClientSession, user: dict[str, str]) -> int:
    return int(
        (await call(http, "GET", f"{platform.url}/api/v1/users/me", 200, headers=user))["id"]
    )


async def test_a_worker_answers_only_calls_with_a_service_token(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    owner = await new_user(platform, http)
    owner_id = await _me(platform, http, owner)
    product = await new_product(platform, http, admin, 5)
    body = {"items": [{"product_id": product, "quantity": 1}]}
    order = (await call(http, "POST", f"{platform.url}/order/", 201, headers=owner, json=body))[
        "order"
    ]
    get = orders_pb2.GetOrderRequest(user_id=owner_id, order_id=order["id"])
    addr, secret = platform.addr("ORDER_SERVICE_ADDR"), platform.internal_secret
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        # No token, a token signed with another secret, a token for another service.
        assert await _code(stub.GetOrder(get, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
        forged = service_metadata("orders", user_id=owner_id, role="user", secret=OTHER_SECRET)
        code = await _code(stub.GetOrder(get, metadata=forged, timeout=5))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        elsewhere = service_metadata("payments", user_id=owner_id, role="user", secret=secret)
        code = await _code(stub.GetOrder(get, metadata=elsewhere, timeout=5))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        # Health is open, for probes and the supervisor.
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    # A valid token of another user does not read the order, whatever the request says.
    async with service_channel(
        addr, "orders", user_id=owner_id + 10**6, role="user", secret=secret
    ) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        assert await _code(stub.GetOrder(get, timeout=5)) == grpc.StatusCode.NOT_FOUND
        listed = await stub.ListOrders(orders_pb2.ListOrdersRequest(user_id=owner_id), timeout=5)
        assert list(listed.orders) == []
    async with service_channel(
        addr, "orders", user_id=owner_id, role="user", secret=secret
    ) as channel:
        mine = await orders_pb2_grpc.OrderServiceStub(channel).GetOrder(get, timeout=5)
        assert mine.id == order["id"]


async def test_credentials_and_accounts_are_not_for_any_caller(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    someone = await new_user(platform, http)
    someone_id = await _me(platform, http, someone)
    addr, secret = platform.addr("USER_SERVICE_ADDR"), platform.internal_secret
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = users_pb2_grpc.AuthServiceStub(channel)
        guess = users_pb2.LoginRequest(email="a@example.com", password="guess")
        assert await _code(stub.Login(guess, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
        who = users_pb2.GetUserRequest(id=someone_id)
        assert await _code(stub.GetUserByID(who, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
    # Another internal service may not log in or register: only the gateway, behind its limits.
    async with service_channel(addr, "users", issuer="orders", secret=secret) as channel:
        stub = users_pb2_grpc.AuthServiceStub(channel)
        assert await _code(stub.Login(guess, timeout=5)) == grpc.StatusCode.PERMISSION_DENIED
    # A user reads their own account only.
    async with service_channel(
        addr, "users", user_id=someone_id + 10**6, role="user", secret=secret
    ) as channel:
        stub = users_pb2_grpc.AuthServiceStub(channel)
        code = await _code(stub.GetUserByID(who, timeout=5))
        assert code == grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture
async def producer(platform: Platform) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=platform.kafka, acks="all")
    await p.start()
    yield p
    await p.stop()


async def _dead_letters(platform: Platform, topic: str, marker: bytes) -> list[Any]:
    """The messages of `<topic>.dlq` whose key is `marker`, once there are some."""
    consumer = AIOKafkaConsumer(bootstrap_servers=platform.kafka, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        tp = TopicPartition(f"{topic}.dlq", 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        found: list[Any] = []

        async def dead() -> list[Any]:
            for batch in (await consumer.getmany(timeout_ms=100)).values():
                found.extend(m for m in batch if m.key == marker)
            return found

        return await eventually(dead, timeout=30, what=f"the command on {topic}.dlq")
    finally:
        await consumer.stop()


async def test_an_unsigned_or_forged_command_is_dead_lettered_and_changes_nothing(
    platform: Platform,
    http: aiohttp.ClientSession,
    admin: dict[str, str],
    producer: AIOKafkaProducer,
) -> None:
    product = await new_product(platform, http, admin, 5, price=12.5)
    free = UpdateProduct(
        command_id=uuid.uuid4(), product_id=product, changes=ProductChanges(price=0)
    )
    raw, key = free.model_dump_json().encode(), str(product).encode()
    typed = [(Headers.TYPE, b"UpdateProduct")]
    await producer.send_and_wait(PRODUCTS_COMMANDS.name, raw, key=key, headers=typed)
    forged = signed(PRODUCTS_COMMANDS.name, key, raw, typed, secret=OTHER_SECRET)
    await producer.send_and_wait(PRODUCTS_COMMANDS.name, raw, key=key, headers=forged)
    # A genuine signature over another value does not carry over to this one.
    genuine = signed(PRODUCTS_COMMANDS.name, key, b"{}", typed, secret=platform.internal_secret)
    await producer.send_and_wait(PRODUCTS_COMMANDS.name, raw, key=key, headers=genuine)

    async def three() -> list[Any] | None:
        found = await _dead_letters(platform, PRODUCTS_COMMANDS.name, key)
        return found if len(found) >= 3 else None

    dead = await eventually(three, timeout=30, what="three refused commands")
    reasons = sorted(dict(m.headers)[Headers.DLQ_REASON].decode() for m in dead)
    assert [r.split(":")[0] for r in reasons] == ["forged", "forged", "unsigned"], reasons
    assert all(m.value == raw for m in dead)

    # The user's order is someone else's to place: an unsigned PlaceOrder for them is refused.
    buyer = await new_user(platform, http)
    buyer_id = await _me(platform, http, buyer)
    place = PlaceOrder(
        command_id=uuid.uuid4(),
        user_id=buyer_id,
        items=[OrderLine(product_id=product, quantity=5)],
        request_hash="forged",
    )
    order_key = str(buyer_id).encode()
    await producer.send_and_wait(
        ORDERS_COMMANDS.name,
        place.model_dump_json().encode(),
        key=order_key,
        headers=[(Headers.TYPE, b"PlaceOrder")],
    )
    [refused] = await _dead_letters(platform, ORDERS_COMMANDS.name, order_key)
    assert dict(refused.headers)[Headers.DLQ_REASON].startswith(b"unsigned:")
    assert json.loads(refused.value)["command_id"] == str(place.command_id)

    # Nothing changed, and the gateway's own commands still go through.
    shown = await call(http, "GET", f"{platform.url}/api/v1/products/{product}", 200)
    assert float(shown["price"]) == 12.5
    assert await stock_of(platform, http, product) == 5
    orders = await call(http, "GET", f"{platform.url}/order/?offset=0", 200, headers=buyer)
    assert orders == {"orders": []}
    body = {"items": [{"product_id": product, "quantity": 1}]}
    placed = await call(http, "POST", f"{platform.url}/order/", 201, headers=buyer, json=body)
    assert placed["order"]["status"] != "rejected"
    assert await stock_of(platform, http, product) == 4


async def test_products_reads_need_a_token_too(platform: Platform) -> None:
    addr = platform.addr("PRODUCT_SERVICE_ADDR")
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = products_pb2_grpc.ProductServiceStub(channel)
        page = products_pb2.ListProductsRequest(page=0)
        assert await _code(stub.ListProducts(page, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
