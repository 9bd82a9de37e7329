"""Paying through the sandbox provider on the real platform: a session for the server's amount,
the hosted page's approve or decline, the report on payments.provider-events, the order."""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.e2e.client import call
from tests.e2e.platform import Platform
from tests.e2e.test_checkout import new_product, new_user
from tests.helpers import eventually
from topics.payments import sign_report

pytestmark = pytest.mark.e2e


async def placed_order(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str], buyer: dict[str, str]
) -> tuple[dict[str, Any], int]:
    product = await new_product(platform, http, admin, 5, 7.25)
    body = {"items": [{"product_id": product, "quantity": 2}]}
    placed = await call(
        http, "POST", f"{platform.url}/api/v1/orders", 201, headers=buyer, json=body
    )
    return placed["order"], product


async def order_status(
    platform: Platform, http: aiohttp.ClientSession, buyer: dict[str, str], order_id: int, want: str
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        order = await call(
            http, "GET", f"{platform.url}/api/v1/orders/{order_id}", 200, headers=buyer
        )
        return order if order["status"] == want else None

    return await eventually(probe, timeout=20, what=f"order {order_id} {want}")


async def test_approve_on_the_hosted_page_pays_the_order(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    url, buyer = platform.url, await new_user(platform, http)
    order, _ = await placed_order(platform, http, admin, buyer)
    seed = await call(
        http,
        "POST",
        f"{url}/payment/initiate",
        200,
        headers=buyer,
        json={
            "order_id": order["id"],
            "customer_name": "Some Buyer",
            "customer_email": "buyer@example.com",
            "amount": 0.01,
        },
    )
    assert set(seed) == {"payment_id", "token", "redirect_url", "expired_at", "status"}
    assert seed["status"] == "pending"
    assert seed["redirect_url"] == f"{url}/sandbox/pay/{seed['token']}"
    again = await call(
        http,
        "POST",
        f"{url}/api/v1/payments/sessions",
        201,
        headers=buyer,
        json={"order_id": order["id"], "return_path": "/#/orders"},
    )
    assert (again["token"], again["amount"]) == (seed["token"], 14.5)
    payment = await call(http, "GET", f"{url}/payment/order/{order['id']}", 200, headers=buyer)
    assert payment["token"] == payment["gateway_token"] == seed["token"]

    async with http.get(seed["redirect_url"]) as page:
        assert page.status == 200
        assert '<dd id="amount">14.50</dd>' in await page.text()
    async with http.post(
        seed["redirect_url"], data={"decision": "approve"}, allow_redirects=False
    ) as done:
        assert done.status == 303
        assert done.headers["Location"] == f"/#/orders/{order['id']}"
    paid = await order_status(platform, http, buyer, order["id"], "paid")
    assert [h["status"] for h in paid["status_history"]][-1] == "paid"
    # The seed's route in the seed's words, shopstream's in its own.
    payment = await call(http, "GET", f"{url}/payment/order/{order['id']}", 200, headers=buyer)
    assert payment["status"] == "paid"
    own = await call(http, "GET", f"{url}/api/v1/orders/{order['id']}/payment", 200, headers=buyer)
    assert (own["status"], own["token"]) == ("succeeded", seed["token"])
    async with http.get(seed["redirect_url"]) as page:
        assert page.status == 409
    await call(
        http,
        "POST",
        f"{url}/api/v1/payments/sessions",
        409,
        headers=buyer,
        json={"order_id": order["id"]},
    )


async def test_decline_on_the_hosted_page_fails_the_payment_and_cancels_the_order(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    url, buyer = platform.url, await new_user(platform, http)
    order, product = await placed_order(platform, http, admin, buyer)
    session = await call(
        http,
        "POST",
        f"{url}/api/v1/payments/sessions",
        201,
        headers=buyer,
        json={"order_id": order["id"]},
    )
    async with http.post(
        session["redirect_url"], data={"decision": "decline"}, allow_redirects=False
    ) as done:
        assert done.status == 303
    await order_status(platform, http, buyer, order["id"], "cancelled")
    payment = await call(http, "GET", f"{url}/payment/order/{order['id']}", 200, headers=buyer)
    assert (payment["status"], payment["reason"]) == ("failed", "declined by the shopper")

    async def released() -> bool:
        got = await call(http, "GET", f"{url}/api/v1/products/{product}", 200)
        return bool(got["stock"] == 5)

    await eventually(released, what="the declined order's stock released")


async def test_only_the_buyer_may_open_a_session(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    buyer, stranger = await new_user(platform, http), await new_user(platform, http)
    order, _ = await placed_order(platform, http, admin, buyer)
    body = {"order_id": order["id"]}
    await call(
        http, "POST", f"{platform.url}/api/v1/payments/sessions", 404, headers=stranger, json=body
    )
    await call(http, "POST", f"{platform.url}/api/v1/payments/sessions", 401, json=body)
    await call(
        http,
        "POST",
        f"{platform.url}/api/v1/payments/sessions",
        422,
        headers=buyer,
        json={**body, "return_path": "//evil.example/"},
    )


async def open_session(
    platform: Platform, http: aiohttp.ClientSession, buyer: dict[str, str], order_id: int
) -> dict[str, Any]:
    return await call(
        http,
        "POST",
        f"{platform.url}/api/v1/payments/sessions",
        201,
        headers=buyer,
        json={"order_id": order_id},
    )


async def report_success(platform: Platform, session: dict[str, Any], amount: str) -> None:
    """What the provider sends for its session: signed with its secret, twice (a redelivery)."""
    report = sign_report(
        {
            "event_id": str(uuid.uuid4()),
            "payment_id": session["payment_id"],
            "outcome": "succeeded",
            "amount": amount,
            "reference": f"psp-{uuid.uuid4().hex[:12]}",
            "session_reference": session["reference"],
        },
        platform.sandbox_secret,
    )
    producer = AIOKafkaProducer(bootstrap_servers=platform.kafka, acks="all")
    await producer.start()
    try:
        for _ in range(2):
            await producer.send_and_wait(
                "payments.provider-events",
                report.model_dump_json().encode(),
                key=str(session["payment_id"]).encode(),
            )
    finally:
        await producer.stop()


async def review_events(platform: Platform, order_ids: set[int]) -> list[dict[str, Any]]:
    """The PaymentNeedsReview events of these orders on payments.events, once they are all
    there."""
    consumer = AIOKafkaConsumer(
        "payments.events",
        bootstrap_servers=platform.kafka,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:

        async def all_there() -> bool:
            for batch in (await consumer.getmany(timeout_ms=100)).values():
                for m in batch:
                    event = json.loads(m.value)
                    if event.get("type") == "PaymentNeedsReview" and event["order_id"] in order_ids:
                        found.append(event)
            return {e["order_id"] for e in found} == order_ids

        await eventually(all_there, timeout=20, what="PaymentNeedsReview on payments.events")
    finally:
        await consumer.stop()
    return found


async def test_money_the_payment_cannot_take_is_a_case_for_an_admin(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    """A correctly signed success for another amount, and one after the payment expired: the
    money is a reconciliation case with a refund to make (on payments.events and at the admin
    route), and neither order is paid: the first is cancelled (a payment that got the wrong
    amount fails), the expired one stays cancelled. Each report came twice: one case each."""
    url, buyer = platform.url, await new_user(platform, http)
    late_order, _ = await placed_order(platform, http, admin, buyer)
    late = await open_session(platform, http, buyer, late_order["id"])
    short_order, short_product = await placed_order(platform, http, admin, buyer)
    short = await open_session(platform, http, buyer, short_order["id"])
    await report_success(platform, short, "14.00")
    await order_status(platform, http, buyer, short_order["id"], "cancelled")
    payment = await call(
        http, "GET", f"{url}/payment/order/{short_order['id']}", 200, headers=buyer
    )
    assert (payment["status"], payment["reason"]) == ("failed", "amount mismatch")

    # PAYMENT_TTL_S is 8 on this platform: the other payment expires, its order is cancelled.
    await order_status(platform, http, buyer, late_order["id"], "cancelled")
    await report_success(platform, late, "14.50")

    events = await review_events(platform, {late_order["id"], short_order["id"]})
    by_order = {e["order_id"]: e for e in events}
    assert len(events) == 2, events
    assert (by_order[short_order["id"]]["reason"], by_order[late_order["id"]]["reason"]) == (
        "amount_mismatch",
        "paid_after_expiry",
    )
    assert all(e["refund_required"] for e in events)

    async def listed() -> list[dict[str, Any]] | None:
        page = await call(
            http, "GET", f"{url}/api/v1/admin/payments/reviews?limit=100", 200, headers=admin
        )
        mine = [r for r in page["reviews"] if r["order_id"] in by_order]
        return mine if len(mine) >= 2 else None

    cases = {r["order_id"]: r for r in await eventually(listed, what="the cases listed")}
    assert len(cases) == 2
    short_case, late_case = cases[short_order["id"]], cases[late_order["id"]]
    assert (short_case["reason"], short_case["amount"], short_case["expected_amount"]) == (
        "amount_mismatch",
        14.0,
        14.5,
    )
    assert (late_case["reason"], late_case["payment_status"]) == ("paid_after_expiry", "failed")
    assert short_case["session_reference"] == short["reference"]
    assert short_case["refund_required"]
    assert late_case["refund_required"]
    await call(http, "GET", f"{url}/api/v1/admin/payments/reviews", 403, headers=buyer)
    await call(http, "GET", f"{url}/api/v1/admin/payments/reviews", 401)

    # The saga ignores the case: neither order was paid, nor un-cancelled.
    for order in (short_order, late_order):
        got = await call(http, "GET", f"{url}/api/v1/orders/{order['id']}", 200, headers=buyer)
        assert got["status"] == "cancelled"
        assert "paid" not in [h["status"] for h in got["status_history"]]

    async def released() -> bool:
        got = await call(http, "GET", f"{url}/api/v1/products/{short_product}", 200)
        return bool(got["stock"] == 5)

    await eventually(released, what="the short-paid order's stock released")
