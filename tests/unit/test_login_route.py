"""The login route maps a throttled login (the users domain's per-email budget) to a 429."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, cast

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer

from agents.common.grpc_server import create_server
from agents.common.service_tokens import ServiceAuth, ServiceTokens
from agents.users.errors import LoginThrottled
from agents.users.service import IdentityService, Tokens
from agents.users.servicer import AuthServicer
from gateway.app import create_app
from gateway.grpc_clients import GrpcClients
from protos import users_pb2, users_pb2_grpc
from tests.unit.test_gateway import SETTINGS, FakeBus, problem

SECRET = "i" * 64


class ThrottlingUsers:
    def __init__(self) -> None:
        self.trailing: tuple[tuple[str, str], ...] = (("retry-after", "42"),)

    async def Login(self, request: users_pb2.LoginRequest, **kw: Any) -> users_pb2.TokenResponse:
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(*self.trailing),
            details="too many failed logins for this email: retry in 42 s",
        )


class Fakes(GrpcClients):
    def __init__(self) -> None:
        super().__init__(SETTINGS.grpc)
        self.fake_users = ThrottlingUsers()

    @property
    def users(self) -> Any:
        return self.fake_users

    async def health(self, domain: str, timeout: float = 1.0) -> bool:
        return True


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


@pytest.fixture
async def client(fakes: Fakes) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(SETTINGS, bus=FakeBus(), grpc=fakes))) as c:
        yield c


LOGIN = {"email": "victim@example.com", "password": "the right one"}


async def test_a_throttled_login_is_429_with_the_users_domain_s_retry_after(
    client: TestClient[Any, Any],
) -> None:
    resp = await client.post("/api/v1/auth/login", json=LOGIN)
    body = await problem(resp, 429)
    assert resp.headers["Retry-After"] == "42"
    assert body["code"] == "rate_limited"
    assert "too many failed logins" in body["detail"]


@pytest.mark.parametrize("trailing", [(), (("retry-after", "soon"),), (("retry-after", "0"),)])
async def test_a_missing_or_odd_retry_after_is_1(
    client: TestClient[Any, Any], fakes: Fakes, trailing: tuple[tuple[str, str], ...]
) -> None:
    fakes.fake_users.trailing = trailing
    resp = await client.post("/api/v1/auth/login", json=LOGIN)
    await problem(resp, 429)
    assert resp.headers["Retry-After"] == "1"


class ThrottledService:
    async def login(self, email: str, password: str) -> Tokens:
        raise LoginThrottled(42)


async def test_the_users_servicer_s_refusal_reaches_the_client_as_429() -> None:
    def add(server: grpc.aio.Server) -> list[str]:
        service = cast(IdentityService, ThrottledService())
        users_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(service), server)
        return []

    server = create_server("127.0.0.1", 0, add, ServiceAuth(SECRET, "users"))
    await server.start()
    settings = replace(SETTINGS, grpc=replace(SETTINGS.grpc, users=f"127.0.0.1:{server.port}"))
    clients = GrpcClients(settings.grpc, ServiceTokens(SECRET, "gateway"))
    clients.open()
    try:
        app = create_app(settings, bus=FakeBus(), grpc=clients)
        async with TestClient(TestServer(app)) as client:
            resp = await client.post("/api/v1/auth/login", json=LOGIN)
            await problem(resp, 429)
            assert resp.headers["Retry-After"] == "42"
    finally:
        await clients.close()
        await server.stop(grace=0)
