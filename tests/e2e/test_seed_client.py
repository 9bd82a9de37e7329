"""A client written for the seed's API, unchanged, against `shopstream run`.

Every request is one the seed's storefront sends (../shared/seed/API-CONTRACT.md), on the seed's
paths, from its origin, and every field it reads is checked in the seed's words: browse from
page 1, register, log in, refresh, order, the order page, the order list, and paying through
the provider (`POST /payment/initiate`, then the provider's hosted page).
"""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest

from tests.e2e.client import bearer, call
from tests.e2e.platform import Platform
from tests.e2e.test_checkout import new_product
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

STOREFRONT = "http://localhost:3000"


async def seed_call(
    http: aiohttp.ClientSession, method: str, url: str, status: int, **kw: Any
) -> dict[str, Any]:
    """A call from the seed's storefront: cross-origin from :3000, allowed by CORS."""
    headers = {"Origin": STOREFRONT, **kw.pop("headers", {})}
    async with http.request(method, url, headers=headers, **kw) as resp:
        body: dict[str, Any] = await resp.json(content_type=None)
        assert resp.status == status, body
        assert resp.headers.get("Access-Control-Allow-Origin") in (STOREFRONT, "*")
    return body


async def test_the_seed_storefronts_journey_works_unchanged(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    url = platform.url
    product = await new_product(platform, http, admin, 10, 4.5)

    preflight = {
        "Origin": STOREFRONT,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    async with http.options(f"{url}/order/", headers=preflight) as resp:
        assert resp.status in (200, 204)
        allowed = resp.headers["Access-Control-Allow-Headers"].lower()
        assert "authorization" in allowed
        assert "content-type" in allowed

    first = await seed_call(http, "GET", f"{url}/product/?page=1", 200)
    assert first["page"] == 1
    assert first["total"] >= 1
    assert first["total_page"] >= 1
    assert {"id", "name", "price", "stock", "image_url"} <= set(first["products"][0])
    assert (await seed_call(http, "GET", f"{url}/product/?page=0", 200))["page"] == 1

    email = f"seed-{uuid.uuid4().hex[:12]}@example.com"
    account = {"full_name": "Seed Client", "email": email, "password": "correct horse 42"}
    await seed_call(http, "POST", f"{url}/api/v1/auth/register", 201, json=account)
    login = {"email": email, "password": account["password"]}
    tokens = await seed_call(http, "POST", f"{url}/api/v1/auth/login", 200, json=login)
    assert tokens["message"] == "success"
    assert not tokens["token"].startswith("Bearer ")
    for field in ("token", "expired_at", "refresh_token", "refresh_token_expired_at", "role"):
        assert tokens[field], field
    refreshed = await seed_call(
        http,
        "GET",
        f"{url}/api/v1/auth/refresh-token",
        200,
        headers=bearer(tokens["refresh_token"]),
    )
    buyer = bearer(refreshed["token"])

    items = {"items": [{"product_id": product, "quantity": 2}], "total_price": 9.0}
    placed = await seed_call(http, "POST", f"{url}/order/", 201, headers=buyer, json=items)
    order_id = placed["order"]["id"]
    page = await seed_call(http, "GET", f"{url}/order/{order_id}", 200, headers=buyer)
    order = page["order"]
    assert order["status"] == "pending"
    assert float(order["total_price"]) == 9.0
    assert [(i["product_id"], i["quantity"], float(i["price"])) for i in order["order_items"]] == [
        (product, 2, 4.5)
    ]
    listed = await seed_call(http, "GET", f"{url}/order/?offset=0", 200, headers=buyer)
    assert [o["id"] for o in listed["orders"]] == [order_id]

    customer = {"order_id": order_id, "customer_name": "Seed Client", "customer_email": email}
    session = await seed_call(
        http, "POST", f"{url}/payment/initiate", 200, headers=buyer, json=customer
    )
    assert session["status"] == "pending"
    assert session["token"]
    assert session["expired_at"]
    payment = await seed_call(http, "GET", f"{url}/payment/order/{order_id}", 200, headers=buyer)
    assert payment["status"] == "pending"
    assert payment["expired_at"]
    assert float(payment["amount"]) == float(payment["total_price"]) == 9.0

    async with http.get(session["redirect_url"]) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
    async with http.post(
        session["redirect_url"], data={"decision": "approve"}, allow_redirects=False
    ) as resp:
        assert resp.status == 303

    async def paid() -> dict[str, Any] | None:
        body = await call(http, "GET", f"{url}/order/{order_id}", 200, headers=buyer)
        return body if body["order"]["status"] == "paid" else None

    await eventually(paid, timeout=30, what=f"order {order_id} paid")
    payment = await seed_call(http, "GET", f"{url}/payment/order/{order_id}", 200, headers=buyer)
    assert payment["status"] == "paid"
