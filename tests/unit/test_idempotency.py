"""Idempotency keys per the IETF draft: the key's scope (gateway) and the fingerprint the worker
compares (agents/common/ledger.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any, cast

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import TypeAdapter

from agents.common.errors import Invalid
from agents.common.ledger import KEY_REUSED, fingerprint, handle_once
from agents.common.runtime import prune_every
from agents.common.settings import Settings, SettingsError
from agents.products.handlers import handle_command
from gateway.app import create_app
from gateway.auth import mint_token
from tests.unit.fakes import FakeProductsUnitOfWork
from tests.unit.test_gateway import SETTINGS, FakeBus, FakeGrpc, product_reply
from topics.envelope import ErrorType, Reply
from topics.orders import PlaceOrder
from topics.payments import PayPayment
from topics.products import (
    CreateProduct,
    DeleteProduct,
    NewProduct,
    ProductChanges,
    ProductCommand,
    UpdateProduct,
)

PRODUCT_COMMAND: TypeAdapter[ProductCommand] = TypeAdapter(ProductCommand)
KEY = {"Idempotency-Key": "key-1"}


@pytest.fixture
def bus() -> FakeBus:
    return FakeBus()


@pytest.fixture
async def client(bus: FakeBus) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(SETTINGS, bus=bus, grpc=FakeGrpc(SETTINGS.grpc))
    async with TestClient(TestServer(app)) as c:
        yield c


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SETTINGS, sub='u1', role='admin')}", **KEY}


def shopper(user_id: str = "7") -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SETTINGS, sub=user_id, role='user')}", **KEY}


def product_commands(bus: FakeBus) -> list[ProductCommand]:
    return [PRODUCT_COMMAND.validate_python(body) for _, _, body, _ in bus.sent]


def same_key_same_request(
    a: ProductCommand | PayPayment, b: ProductCommand | PayPayment
) -> tuple[bool, bool]:
    return a.command_id == b.command_id, fingerprint(a) == fingerprint(b)


async def test_the_query_string_is_the_target_of_put_and_delete(
    client: TestClient[Any, Any], bus: FakeBus
) -> None:
    bus.reply = product_reply(1)
    for target in ("?id=1", "?id=2"):
        await client.put(f"/product/{target}", json={"stock": 1}, headers=admin())
    bus.reply = Reply.success({"product_id": 1})
    for target in ("?id=1", "?id=2"):
        await client.delete(f"/product/{target}", headers=admin())
    put_1, put_2, delete_1, delete_2 = product_commands(bus)
    assert same_key_same_request(put_1, put_2) == (True, False)
    assert same_key_same_request(delete_1, delete_2) == (True, False)


async def test_the_body_is_in_the_fingerprint(client: TestClient[Any, Any], bus: FakeBus) -> None:
    bus.reply = product_reply(1)
    for stock in (1, 2):
        await client.put("/api/v1/products/1", json={"stock": stock}, headers=admin())
    for price in (1, 2):
        await client.post(
            "/api/v1/products", json={"name": "a", "price": price, "stock": 1}, headers=admin()
        )
    update_1, update_2, create_1, create_2 = product_commands(bus)
    assert same_key_same_request(update_1, update_2) == (True, False)
    assert same_key_same_request(create_1, create_2) == (True, False)


async def test_aliases_and_the_query_order_make_the_same_request(
    client: TestClient[Any, Any], bus: FakeBus
) -> None:
    bus.reply = product_reply(1)
    for path in ("/product/?id=1", "/product/?x=y&id=01", "/api/v1/products/1"):
        resp = await client.put(path, json={"stock": 1}, headers=admin())
        assert resp.status == 200
    first, *others = product_commands(bus)
    for other in others:
        assert same_key_same_request(first, other) == (True, True)


async def test_another_operation_or_user_is_another_key(
    client: TestClient[Any, Any], bus: FakeBus
) -> None:
    bus.reply = product_reply(1)
    await client.put("/product/?id=1", json={}, headers=admin())
    bus.reply = Reply.success({"product_id": 1})
    await client.delete("/product/?id=1", headers=admin())
    other_admin = {
        **admin(),
        "Authorization": f"Bearer {mint_token(SETTINGS, sub='u2', role='admin')}",
    }
    await client.delete("/product/?id=1", headers=other_admin)
    update, delete, other = product_commands(bus)
    assert len({update.command_id, delete.command_id, other.command_id}) == 3


async def test_paying_another_payment_with_the_key_is_another_request(
    client: TestClient[Any, Any], bus: FakeBus
) -> None:
    bus.reply = Reply.success({"message": "payment successful", "payment_id": 1, "order_id": 1})
    for path, payment_id in (
        ("/payment/transaction", 1),
        ("/api/v1/payments/transaction", 1),
        ("/payment/transaction", 2),
    ):
        body = {"payment_id": payment_id, "money": 10}
        assert (await client.post(path, json=body, headers=shopper())).status == 200
    first, alias, other = (PayPayment.model_validate(body) for _, _, body, _ in bus.sent)
    assert same_key_same_request(first, alias) == (True, True)
    assert same_key_same_request(first, other) == (True, False)


async def test_an_order_through_either_alias_is_the_same_command(
    client: TestClient[Any, Any], bus: FakeBus
) -> None:
    # No reply: each placement answers 202, after sending its command.
    items = [{"product_id": 2, "quantity": 1}, {"product_id": 1, "quantity": 3}]
    for path, lines in (("/order/", items), ("/api/v1/orders", items[::-1])):
        assert (await client.post(path, json={"items": lines}, headers=shopper())).status == 202
    await client.post("/order/", json={"items": items[:1]}, headers=shopper())
    first, alias, other = (PlaceOrder.model_validate(body) for _, _, body, _ in bus.sent)
    assert first.command_id == alias.command_id == other.command_id
    assert first.request_hash == alias.request_hash != other.request_hash


def update(command_id: uuid.UUID, product_id: int, stock: int) -> UpdateProduct:
    return UpdateProduct(
        command_id=command_id, product_id=product_id, changes=ProductChanges(stock=stock)
    )


async def _catalogue(uow: FakeProductsUnitOfWork, products: int) -> None:
    for n in range(products):
        new = NewProduct(name=f"p{n}", price=Decimal("1.00"), stock=0)
        assert (await handle_command(CreateProduct(command_id=uuid.uuid4(), product=new), uow)).ok


async def test_a_used_key_with_another_target_is_422_and_changes_nothing() -> None:
    uow = FakeProductsUnitOfWork()
    await _catalogue(uow, 2)
    key = uuid.uuid4()
    first = await handle_command(update(key, 1, 5), uow)
    assert first.ok
    assert await handle_command(update(key, 1, 5), uow) == first
    for reused in (
        update(key, 2, 5),
        update(key, 1, 6),
        DeleteProduct(command_id=key, product_id=2),
    ):
        reply = await handle_command(reused, uow)
        assert reply.error is not None
        assert (reply.error.type, reply.error.detail) == (ErrorType.INVALID, KEY_REUSED)
    assert [p.stock for p in uow.committed_products.rows.values()] == [5, 0]
    assert uow.committed_products.deleted == set()


async def test_an_invalid_command_is_not_recorded_so_a_corrected_retry_is_handled() -> None:
    uow = FakeProductsUnitOfWork()
    key = uuid.uuid4()

    async def refuse(_: FakeProductsUnitOfWork) -> Reply:
        raise Invalid("no such provider")

    async def accept(_: FakeProductsUnitOfWork) -> Reply:
        return Reply.success({"done": True})

    refused = await handle_once(uow, key, refuse, "first body")
    assert refused.error is not None
    assert refused.error.type is ErrorType.INVALID
    assert key not in uow.committed_ledger.replies
    assert await handle_once(uow, key, accept, "corrected body") == Reply.success({"done": True})
    assert await handle_once(uow, key, refuse, "corrected body") == Reply.success({"done": True})


async def test_a_recorded_refusal_replays_to_the_same_request_only() -> None:
    uow = FakeProductsUnitOfWork()
    key = uuid.uuid4()
    missing = await handle_command(update(key, 9, 1), uow)
    assert missing.error is not None
    assert missing.error.type is ErrorType.NOT_FOUND
    assert await handle_command(update(key, 9, 1), uow) == missing
    reused = await handle_command(update(key, 8, 1), uow)
    assert reused.error is not None
    assert reused.error.type is ErrorType.INVALID


def test_keys_live_a_day_unless_set() -> None:
    assert Settings.from_env({}).idempotency_key_ttl_s == 86400
    env = {"IDEMPOTENCY_KEY_TTL_S": "172800", "IDEMPOTENCY_PRUNE_EVERY_S": "60"}
    settings = Settings.from_env(env)
    assert (settings.idempotency_key_ttl_s, settings.idempotency_prune_every_s) == (172800, 60)
    with pytest.raises(SettingsError):
        Settings.from_env({"IDEMPOTENCY_KEY_TTL_S": "0"})


async def test_the_worker_prunes_every_table_periodically_and_survives_a_failure() -> None:
    pool = cast(asyncpg.Pool, object())
    calls: list[tuple[str, float]] = []
    twice = asyncio.Event()

    async def ledger(p: asyncpg.Pool, ttl_s: float) -> int:
        assert p is pool
        calls.append(("ledger", ttl_s))
        if len(calls) == 1:
            raise OSError("postgres restarting")
        return 3

    async def keys(p: asyncpg.Pool, ttl_s: float) -> int:
        calls.append(("keys", ttl_s))
        if calls.count(("keys", ttl_s)) == 2:
            twice.set()
        return 0

    task = asyncio.create_task(
        prune_every(pool, "orders", [ledger, keys], every_s=0.001, ttl_s=86400)
    )
    try:
        async with asyncio.timeout(5):
            await twice.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert calls[:4] == [("ledger", 86400), ("keys", 86400)] * 2
