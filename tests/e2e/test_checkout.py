"""The checkout saga on the real processes: orders, stock and payments, verbatim seed calls."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from protos import orders_pb2, orders_pb2_grpc, payments_pb2, payments_pb2_grpc
from tests.e2e.client import bearer, call, login
from tests.e2e.platform import Platform
from tests.helpers import eventually
from tests.trust import service_channel
from topics.payments import sign_report

pytestmark = pytest.mark.e2e


async def new_user(platform: Platform, http: aiohttp.ClientSession) -> dict[str, str]:
    email, password = f"buyer-{uuid.uuid4().hex[:10]}@example.com", uuid.uuid4().hex
    await call(
        http,
        "POST",
        f"{platform.url}/api/v1/auth/register",
        201,
        json={"full_name": "Some Buyer", "email": email, "password": password},
    )
    tokens = await login(platform, http, email, password)
    return bearer(tokens["token"])


async def new_product(
    platform: Platform,
    http: aiohttp.ClientSession,
    admin: dict[str, str],
    stock: int,
    price: float = 12.5,
) -> int:
    product = await call(
        http,
        "POST",
        f"{platform.url}/product/",
        201,
        headers=admin,
        json={"name": f"saga-{uuid.uuid4().hex[:8]}", "price": price, "stock": stock},
    )
    return int(product["id"])


async def stock_of(platform: Platform, http: aiohttp.ClientSession, product_id: int) -> int:
    product = await call(http, "GET", f"{platform.url}/api/v1/products/{product_id}", 200)
    return int(product["stock"])


async def test_order_then_pay(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    url = platform.url
    buyer = await new_user(platform, http)
    a, b = (
        await new_product(platform, http, admin, 10, 12.5),
        await new_product(platform, http, admin, 5, 3.0),
    )
    placed = await call(
        http,
        "POST",
        f"{url}/order/",
        201,
        headers=buyer,
        json={
            "total_price": 0.01,
            "items": [{"product_id": a, "quantity": 2}, {"product_id": b, "quantity": 1}],
        },
    )
    order = placed["order"]
    # The seed's words on the seed's route: placed and not yet paid is `pending`.
    assert order["status"] == "pending"
    assert order["total_price"] == 28.0
    assert sorted((i["product_id"], i["price"]) for i in order["order_items"]) == [
        (a, 12.5),
        (b, 3.0),
    ]
    seed = await call(http, "GET", f"{url}/order/{order['id']}", 200, headers=buyer)
    assert seed["order"]["status"] == "pending"
    assert {i["price"] for i in seed["order"]["order_items"]} == {12.5, 3.0}
    own = await call(http, "GET", f"{url}/api/v1/orders/{order['id']}", 200, headers=buyer)
    assert own["status"] == "awaiting_payment"
    assert [h["status"] for h in own["status_history"]] == ["pending", "awaiting_payment"]
    assert await stock_of(platform, http, a) == 8

    async def payment() -> dict[str, Any] | None:
        async with http.get(f"{url}/payment/order/{order['id']}", headers=buyer) as resp:
            return dict(await resp.json()) if resp.status == 200 else None

    pay = await eventually(payment, what="the order's payment")
    assert (pay["amount"], pay["total_price"], pay["status"]) == (28.0, 28.0, "pending")
    assert "expired_at" in pay
    await call(
        http,
        "POST",
        f"{url}/payment/transaction",
        409,
        headers=buyer,
        json={"payment_id": pay["id"], "money": 27.99},
    )
    done = await call(
        http,
        "POST",
        f"{url}/payment/transaction",
        200,
        headers=buyer,
        json={"payment_id": pay["id"], "money": 28.0},
    )
    assert "message" in done
    await call(
        http,
        "POST",
        f"{url}/payment/transaction",
        409,
        headers=buyer,
        json={"payment_id": pay["id"], "money": 28.0},
    )

    async def paid() -> dict[str, Any] | None:
        got = await call(http, "GET", f"{url}/order/{order['id']}", 200, headers=buyer)
        return dict(got["order"]) if got["order"]["status"] == "paid" else None

    await eventually(paid, what="the order paid")
    final = await call(http, "GET", f"{url}/api/v1/orders/{order['id']}", 200, headers=buyer)
    assert [h["status"] for h in final["status_history"]][-1] == "paid"
    paid_payment = await call(http, "GET", f"{url}/payment/order/{order['id']}", 200, headers=buyer)
    assert paid_payment["status"] == "paid"
    history = await call(http, "GET", f"{url}/order/?offset=0", 200, headers=buyer)
    assert [(o["id"], o["status"]) for o in history["orders"]] == [(order["id"], "paid")]


async def test_an_order_past_the_stock_is_rejected(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    buyer = await new_user(platform, http)
    product = await new_product(platform, http, admin, 1)
    rejected = await call(
        http,
        "POST",
        f"{platform.url}/order/",
        409,
        headers=buyer,
        json={"items": [{"product_id": product, "quantity": 2}]},
    )
    assert rejected["order"]["status"] == "failed"
    assert await stock_of(platform, http, product) == 1
    await call(http, "POST", f"{platform.url}/order/", 422, headers=buyer, json={"items": []})


async def test_two_hundred_orders_for_fifty_units(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    product = await new_product(platform, http, admin, 50)
    buyers = [await new_user(platform, http) for _ in range(8)]

    async def order(i: int) -> int:
        async with http.post(
            f"{platform.url}/order/",
            headers=buyers[i % len(buyers)],
            json={"items": [{"product_id": product, "quantity": 1}]},
        ) as r:
            return r.status

    statuses = await asyncio.gather(*(order(i) for i in range(200)))
    assert statuses.count(201) == 50
    assert statuses.count(409) == 150
    assert await stock_of(platform, http, product) == 0


async def test_an_unpaid_order_expires_and_its_stock_comes_back(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    buyer = await new_user(platform, http)
    product = await new_product(platform, http, admin, 3)
    placed = await call(
        http,
        "POST",
        f"{platform.url}/order/",
        201,
        headers=buyer,
        json={"items": [{"product_id": product, "quantity": 3}]},
    )
    assert await stock_of(platform, http, product) == 0

    async def cancelled() -> dict[str, Any] | None:
        got = await call(
            http, "GET", f"{platform.url}/order/{placed['order']['id']}", 200, headers=buyer
        )
        return dict(got["order"]) if got["order"]["status"] == "expired" else None

    order = await eventually(cancelled, timeout=30, what="the unpaid order expired")
    assert order["reason"] == "expired"
    own = await call(http, "GET", f"{platform.url}/api/v1/orders/{order['id']}", 200, headers=buyer)
    assert own["status"] == "cancelled"
    payment = await call(
        http, "GET", f"{platform.url}/payment/order/{order['id']}", 200, headers=buyer
    )
    assert payment["status"] == "expired"

    async def restored() -> bool:
        return await stock_of(platform, http, product) == 3

    await eventually(restored, what="the stock released")


async def test_orders_and_payments_are_their_owners_only(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    url = platform.url
    owner, other = await new_user(platform, http), await new_user(platform, http)
    product = await new_product(platform, http, admin, 5)
    order = (
        await call(
            http,
            "POST",
            f"{url}/order/",
            201,
            headers=owner,
            json={"items": [{"product_id": product, "quantity": 1}]},
        )
    )["order"]

    async def payment() -> dict[str, Any] | None:
        async with http.get(f"{url}/payment/order/{order['id']}", headers=owner) as resp:
            return dict(await resp.json()) if resp.status == 200 else None

    pay = await eventually(payment, what="the payment")
    await call(http, "GET", f"{url}/order/{order['id']}", 404, headers=other)
    await call(http, "GET", f"{url}/payment/order/{order['id']}", 404, headers=other)
    await call(
        http,
        "POST",
        f"{url}/payment/transaction",
        404,
        headers=other,
        json={"payment_id": pay["id"], "money": pay["amount"]},
    )
    assert (await call(http, "GET", f"{url}/order/?offset=0", 200, headers=other)) == {"orders": []}
    await call(http, "GET", f"{url}/order/{order['id']}", 401)
    owner_id = order["user_id"]
    orders_addr, payments_addr = (
        platform.addr("ORDER_SERVICE_ADDR"),
        platform.addr("PAYMENT_SERVICE_ADDR"),
    )
    secret = platform.internal_secret
    async with service_channel(
        orders_addr, "orders", user_id=owner_id, role="user", secret=secret
    ) as channel:
        orders = orders_pb2_grpc.OrderServiceStub(channel)
        mine = await orders.GetOrder(
            orders_pb2.GetOrderRequest(user_id=owner_id, order_id=order["id"]), timeout=5
        )
        assert mine.id == order["id"]
    # Another user's token gets nothing, even naming the owner in the request.
    stranger = owner_id + 1_000_000
    async with service_channel(
        orders_addr, "orders", user_id=stranger, role="user", secret=secret
    ) as channel:
        orders = orders_pb2_grpc.OrderServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await orders.GetOrder(
                orders_pb2.GetOrderRequest(user_id=owner_id, order_id=order["id"]), timeout=5
            )
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    async with service_channel(
        payments_addr, "payments", user_id=stranger, role="user", secret=secret
    ) as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.GetPaymentByOrderId(
                payments_pb2.GetPaymentByOrderIdRequest(user_id=owner_id, order_id=order["id"]),
                timeout=5,
            )
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_idempotency_keys(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    buyer = await new_user(platform, http)
    product = await new_product(platform, http, admin, 5)
    headers = {**buyer, "Idempotency-Key": uuid.uuid4().hex}
    body = {"items": [{"product_id": product, "quantity": 1}]}
    first = await call(http, "POST", f"{platform.url}/order/", 201, headers=headers, json=body)
    again = await call(http, "POST", f"{platform.url}/order/", 201, headers=headers, json=body)
    assert again["order"]["id"] == first["order"]["id"]
    await call(
        http,
        "POST",
        f"{platform.url}/order/",
        422,
        headers=headers,
        json={"items": [{"product_id": product, "quantity": 2}]},
    )
    assert await stock_of(platform, http, product) == 4


async def test_a_partner_report_pays_and_a_bad_one_is_dead_lettered(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    buyer = await new_user(platform, http)
    product = await new_product(platform, http, admin, 2, price=5.0)
    order = (
        await call(
            http,
            "POST",
            f"{platform.url}/order/",
            201,
            headers=buyer,
            json={"items": [{"product_id": product, "quantity": 1}]},
        )
    )["order"]

    async def payment() -> dict[str, Any] | None:
        async with http.get(f"{platform.url}/payment/order/{order['id']}", headers=buyer) as resp:
            return dict(await resp.json()) if resp.status == 200 else None

    pay = await eventually(payment, what="the payment")
    session = await call(
        http,
        "POST",
        f"{platform.url}/api/v1/payments/sessions",
        201,
        headers=buyer,
        json={"order_id": order["id"]},
    )
    marker = uuid.uuid4().hex
    producer = AIOKafkaProducer(bootstrap_servers=platform.kafka, acks="all")
    await producer.start()
    try:
        report = {
            "type": "ProviderPaymentOutcome",
            "event_id": str(uuid.uuid4()),
            "payment_id": pay["id"],
            "outcome": "succeeded",
            "amount": "5.00",
            "reference": "psp-42",
            "session_reference": session["reference"],
        }
        forged = sign_report(report, "not-the-sandbox-secret").model_dump_json()
        signed = sign_report(report, platform.sandbox_secret).model_dump_json()
        # Signed by the provider, but for no session the platform opened.
        unbound = sign_report(
            {**report, "event_id": str(uuid.uuid4()), "session_reference": "ps_made-up"},
            platform.sandbox_secret,
        ).model_dump_json()
        await producer.send_and_wait(
            "payments.provider-events", unbound.encode(), key=marker.encode()
        )
        await producer.send_and_wait(
            "payments.provider-events", forged.encode(), key=marker.encode()
        )
        await producer.send_and_wait(
            "payments.provider-events", signed.encode(), key=str(pay["id"]).encode()
        )
        await producer.send_and_wait(
            "payments.provider-events", b'{"type": "nonsense"}', key=marker.encode()
        )
    finally:
        await producer.stop()

    async def paid() -> bool:
        got = await call(http, "GET", f"{platform.url}/order/{order['id']}", 200, headers=buyer)
        return bool(got["order"]["status"] == "paid")

    await eventually(paid, what="the order paid by the provider's report")
    consumer = AIOKafkaConsumer(bootstrap_servers=platform.kafka, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        tp = TopicPartition("payments.provider-events.dlq", 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)

        messages: list[Any] = []

        async def dead() -> bool:
            for batch in (await consumer.getmany(timeout_ms=100)).values():
                messages.extend(m for m in batch if m.key == marker.encode())
            return len(messages) == 3

        await eventually(dead, what="the three bad reports on the DLQ")
    finally:
        await consumer.stop()
    reasons = sorted(dict(m.headers)["x-dlq-reason"] for m in messages)
    assert [r.split(b":")[0] for r in reasons] == [b"invalid", b"invalid", b"refused"], reasons
    assert any(b"signature" in r for r in reasons), reasons
    assert b"no session has the reference 'ps_made-up'" in reasons[2], reasons
