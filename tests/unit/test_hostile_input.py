"""Hostile input at the gateway: deep JSON, non-ASCII digit ids (issue 11)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agents.common.settings import Settings
from gateway.app import create_app
from gateway.auth import mint_token
from gateway.validation import MAX_JSON_DEPTH, deeper_than, loads, parse_id
from tests.unit.test_gateway import FakeBus, FakeGrpc, problem

SETTINGS = Settings.from_env({"JWT_SECRET": "h" * 64})



class _Unreachable:
    """A gRPC stub that no call with a bad id may reach."""

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"{name} was called")

        return call


class IdGrpc(FakeGrpc):
    @property
    def orders(self) -> Any:
        return _Unreachable()

    @property
    def payments(self) -> Any:
        return _Unreachable()


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(SETTINGS, bus=FakeBus(), grpc=IdGrpc(SETTINGS.grpc))
    async with TestClient(TestServer(app)) as c:
        yield c


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def test_depth_is_measured_outside_strings() -> None:
    assert not deeper_than(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    assert deeper_than(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    assert deeper_than(b"[" * 100_000)
    assert not deeper_than(b'{"a": "' + b"[" * 5000 + b'", "b": "\\"[[[[' + b"{" * 999 + b'"}')
    assert loads(_nested(MAX_JSON_DEPTH)) is not None
    with pytest.raises(ValueError, match="deeper than 400"):
        loads(b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
async def test_a_deeply_nested_body_is_a_400_problem(
    client: TestClient[Any, Any], depth: int
) -> None:
    token = mint_token(SETTINGS, sub="7", role="admin")
    for path in ("/api/v1/products", "/api/v1/auth/login", "/order/"):
        resp = await client.post(
            path,
            data=b"[" * depth + b"]" * depth,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        body = await problem(resp, 400)
        assert "nested deeper than 400" in body["detail"], path


async def test_a_body_at_the_depth_limit_is_parsed(client: TestClient[Any, Any]) -> None:
    token = mint_token(SETTINGS, sub="7", role="admin")
    resp = await client.post(
        "/api/v1/products",
        data=_nested(MAX_JSON_DEPTH - 1),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    await problem(resp, 422)  # parsed, then refused by the schema


HOSTILE_IDS = ["²", "١٢", "１", " 1", "+1", "1_000", "-1", "0", "9" * 19, "9" * 5000]


def test_ids_are_ascii_digits_within_int64() -> None:
    assert [parse_id(raw) for raw in HOSTILE_IDS] == [None] * len(HOSTILE_IDS)
    assert parse_id("42") == 42
    assert parse_id(str(2**63 - 1)) == 2**63 - 1
    assert parse_id(str(2**63)) is None


@pytest.mark.parametrize("raw", HOSTILE_IDS)
async def test_a_hostile_id_is_404_or_422_on_every_route(
    client: TestClient[Any, Any], raw: str
) -> None:
    user = {"Authorization": f"Bearer {mint_token(SETTINGS, sub='5', role='user')}"}
    admin = {"Authorization": f"Bearer {mint_token(SETTINGS, sub='6', role='admin')}"}
    segment = quote(raw, safe="")
    for path in (
        f"/order/{segment}",
        f"/api/v1/orders/{segment}",
        f"/payment/order/{segment}",
        f"/api/v1/orders/{segment}/payment",
        f"/api/v1/products/{segment}",
    ):
        resp = await client.get(path, headers=user)
        await problem(resp, 404)
    for name, path in (
        ("id", "/product/"),
        ("id", "/api/v1/products"),
        ("after", "/api/v1/products"),
        ("offset", "/order/"),
    ):
        if (name, raw) == ("offset", "0"):
            continue  # the first page
        resp = await client.get(path, params={name: raw}, headers=user)
        await problem(resp, 422)
    for method in ("PUT", "DELETE"):
        resp = await client.request(
            method, "/product/", params={"id": raw}, json={"name": "x"}, headers=admin
        )
        await problem(resp, 422)
    for method in ("PUT", "PATCH", "DELETE"):
        resp = await client.request(
            method, f"/api/v1/products/{segment}", json={"name": "x"}, headers=admin
        )
        await problem(resp, 404)
