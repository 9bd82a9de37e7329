"""Idempotency keys on the real processes, per the IETF idempotency-key draft: the same key with
the same request replays its answer; with another target or body it is 422 and changes nothing;
the aliases of a route are one command; a refused (422) request does not pin its key."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest

from tests.e2e.client import call
from tests.e2e.platform import Platform
from tests.e2e.test_checkout import new_product, new_user, stock_of
from tests.helpers import eventually

pytestmark = pytest.mark.e2e


def keyed(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "Idempotency-Key": uuid.uuid4().hex}


async def test_put_and_delete_with_a_used_key_and_another_id_are_422(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    url = platform.url
    one, two = [await new_product(platform, http, admin, 3) for _ in range(2)]
    put = keyed(admin)
    first = await call(http, "PUT", f"{url}/product/?id={one}", 200, headers=put, json={"stock": 7})
    assert first["id"] == one
    await call(http, "PUT", f"{url}/product/?id={two}", 422, headers=put, json={"stock": 7})
    assert await stock_of(platform, http, two) == 3
    # The refusal is not recorded: the first request still replays.
    again = await call(http, "PUT", f"{url}/product/?id={one}", 200, headers=put, json={"stock": 7})
    assert again == first
    await call(http, "PUT", f"{url}/product/?id={one}", 422, headers=put, json={"stock": 8})
    assert await stock_of(platform, http, one) == 7

    delete = keyed(admin)
    await call(http, "DELETE", f"{url}/product/?id={one}", 200, headers=delete)
    await call(http, "DELETE", f"{url}/product/?id={two}", 422, headers=delete)
    assert await stock_of(platform, http, two) == 3
    await call(http, "GET", f"{url}/api/v1/products/{one}", 404)


async def _payment(
    platform: Platform, http: aiohttp.ClientSession, buyer: dict[str, str], product: int
) -> dict[str, Any]:
    url = platform.url
    body = {"items": [{"product_id": product, "quantity": 1}]}
    placed = await call(http, "POST", f"{url}/api/v1/orders", 201, headers=buyer, json=body)
    order_id = placed["order"]["id"]
    return await call(http, "GET", f"{url}/api/v1/orders/{order_id}/payment", 200, headers=buyer)


async def test_paying_payment_2_with_payment_1s_key_is_422(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    url = platform.url
    buyer = await new_user(platform, http)
    product = await new_product(platform, http, admin, 5, 4.0)
    first, second = [await _payment(platform, http, buyer, product) for _ in range(2)]
    headers = keyed(buyer)
    paid = await call(
        http,
        "POST",
        f"{url}/payment/transaction",
        200,
        headers=headers,
        json={"payment_id": first["id"], "money": 4.0},
    )
    assert paid["payment_id"] == first["id"]
    again = await call(
        http,
        "POST",
        f"{url}/api/v1/payments/transaction",
        200,
        headers=headers,
        json={"payment_id": first["id"], "money": 4.0},
    )
    assert again == paid
    await call(
        http,
        "POST",
        f"{url}/payment/transaction",
        422,
        headers=headers,
        json={"payment_id": second["id"], "money": 4.0},
    )
    now = await call(
        http, "GET", f"{url}/api/v1/orders/{second['order_id']}/payment", 200, headers=buyer
    )
    assert now["status"] == "pending"


async def test_an_order_retried_through_the_other_alias_is_the_same_order(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    url = platform.url
    buyer = await new_user(platform, http)
    product = await new_product(platform, http, admin, 5)
    headers = keyed(buyer)
    body = {"items": [{"product_id": product, "quantity": 1}]}
    seed = await call(http, "POST", f"{url}/order/", 201, headers=headers, json=body)
    retry = await call(http, "POST", f"{url}/api/v1/orders", 201, headers=headers, json=body)
    assert retry["order"]["id"] == seed["order"]["id"]
    other = {"items": [{"product_id": product, "quantity": 2}]}
    await call(http, "POST", f"{url}/api/v1/orders", 422, headers=headers, json=other)
    orders = await call(http, "GET", f"{url}/api/v1/orders", 200, headers=buyer)
    assert [o["id"] for o in orders["orders"]] == [seed["order"]["id"]]
    assert await stock_of(platform, http, product) == 4


async def test_a_422_does_not_pin_the_key_of_a_corrected_retry(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    url = platform.url
    headers = keyed(admin)
    name = f"idem-{uuid.uuid4().hex[:8]}"
    await call(
        http,
        "POST",
        f"{url}/api/v1/products",
        422,
        headers=headers,
        json={"name": name, "price": -1, "stock": 1},
    )
    corrected = {"name": name, "price": 1, "stock": 1}
    created = await call(
        http, "POST", f"{url}/api/v1/products", 201, headers=headers, json=corrected
    )
    replayed = await call(http, "POST", f"{url}/product/", 201, headers=headers, json=corrected)
    assert replayed["id"] == created["id"]
    buyer = await new_user(platform, http)
    order_key = keyed(buyer)
    await call(http, "POST", f"{url}/order/", 422, headers=order_key, json={"items": []})
    body = {"items": [{"product_id": created["id"], "quantity": 1}]}
    placed = await call(http, "POST", f"{url}/order/", 201, headers=order_key, json=body)

    async def one_order() -> list[Any] | None:
        orders = await call(http, "GET", f"{url}/api/v1/orders", 200, headers=buyer)
        return [o["id"] for o in orders["orders"]] or None

    assert await eventually(one_order, what="the order listed") == [placed["order"]["id"]]
