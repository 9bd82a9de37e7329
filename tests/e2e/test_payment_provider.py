"""Paying through the sandbox provider on the real platform: a session for the server's amount,
the hosted page's approve or decline, the report on payments.provider-events, the order."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.e2e.client import call
from tests.e2e.platform import Platform
from tests.e2e.test_checkout import new_product, new_user
from tests.helpers import eventually

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
