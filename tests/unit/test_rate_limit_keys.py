"""Rate-limit keys: IPv6 clients by /64, IPv4-mapped as IPv4; budgets shared by replicas."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agents.common.settings import Settings, SettingsError
from gateway.app import create_app
from gateway.edge import Limits
from gateway.ratelimit import client_key, pod_share
from tests.unit.test_gateway import FakeBus, FakeGrpc


def settings(**env: str) -> Settings:
    return Settings.from_env({"JWT_SECRET": "r" * 64, **env})


def test_ipv6_clients_are_keyed_by_their_64() -> None:
    assert client_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:2::1") == client_key("2001:0db8:0001:0002:ffff::9")
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("192.0.2.8") != client_key("192.0.2.7")
    assert client_key("unknown") == "unknown"


def test_each_replica_takes_its_share_of_every_budget() -> None:
    assert pod_share(600, 1) == 600
    assert pod_share(20, 2) == 10
    assert pod_share(20, 3) == 6
    assert pod_share(1, 4) == 1
    edge = settings(
        GATEWAY_REPLICAS="4",
        RATE_LIMIT_USER_PER_MIN="600",
        RATE_LIMIT_IP_PER_MIN="300",
        RATE_LIMIT_AUTH_PER_MIN="20",
    ).edge
    limits = Limits.from_settings(edge)
    assert (limits.user.per_minute, limits.anonymous.per_minute, limits.auth.per_minute) == (
        150,
        75,
        5,
    )
    assert settings().edge.gateway_replicas == 1
    with pytest.raises(SettingsError, match="GATEWAY_REPLICAS"):
        settings(GATEWAY_REPLICAS="0")


async def _statuses(client: TestClient[Any, Any], path: str, hops: list[str]) -> list[int]:
    statuses = []
    for hop in hops:
        resp = await client.get(path, headers={"X-Forwarded-For": hop})
        statuses.append(resp.status)
    return statuses


async def test_addresses_of_one_64_share_a_bucket() -> None:
    s = settings(RATE_LIMIT_IP_PER_MIN="3", TRUSTED_PROXIES="127.0.0.1")
    app = create_app(s, bus=FakeBus(), grpc=FakeGrpc(s.grpc))
    async with TestClient(TestServer(app)) as client:
        rotating = [f"2001:db8:1:2::{i:x}" for i in range(1, 5)]
        assert await _statuses(client, "/product/", rotating) == [200, 200, 200, 429]
        assert await _statuses(client, "/product/", ["2001:db8:1:3::1"]) == [200]
        mapped = ["192.0.2.7", "::ffff:192.0.2.7", "192.0.2.7", "::ffff:c000:207"]
        assert await _statuses(client, "/product/", mapped) == [200, 200, 200, 429]


async def test_two_replicas_halve_the_login_budget_of_each_pod() -> None:
    s = settings(RATE_LIMIT_AUTH_PER_MIN="4", GATEWAY_REPLICAS="2")
    app = create_app(s, bus=FakeBus(), grpc=FakeGrpc(s.grpc))
    async with TestClient(TestServer(app)) as client:
        statuses = []
        for _ in range(3):
            resp = await client.post("/api/v1/auth/login", json={"email": "a@b.co"})
            statuses.append(resp.status)
    assert 429 not in statuses[:2]
    assert statuses[2] == 429
