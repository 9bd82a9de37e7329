"""Service tokens on gRPC: minted cheaply, checked by every worker's server (health stays open),
and the caller's identity taken from the token, never from the request."""

from __future__ import annotations

import contextvars
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agents.common import service_tokens
from agents.common.errors import Forbidden
from agents.common.grpc_server import GrpcServer, create_server
from agents.common.internal_keys import derive_key
from agents.common.service_tokens import (
    Caller,
    InvalidServiceToken,
    ServiceAuth,
    ServiceTokens,
    verify,
)
from agents.orders import repository as orders_repository
from agents.orders.repository import OrderRow
from agents.orders.servicer import OrderServicer
from agents.users.repository import UserRow
from agents.users.servicer import AuthServicer
from protos import orders_pb2, orders_pb2_grpc, users_pb2, users_pb2_grpc
from tests.trust import TEST_INTERNAL_SECRET, service_channel, service_metadata

SECRET = TEST_INTERNAL_SECRET
NOW = datetime(2026, 1, 2, tzinfo=UTC)


def test_a_minted_token_names_its_caller_and_user() -> None:
    token = ServiceTokens(SECRET, "gateway").token("orders", "7", "user")
    who = verify(SECRET, token, "orders")
    assert (who.service, who.user_id, who.role, who.admin) == ("gateway", 7, "user", False)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["typ"] == "service"
    assert claims["aud"] == "orders"
    assert claims["exp"] - claims["iat"] == 60


def test_a_token_for_no_user_names_only_its_service() -> None:
    who = verify(SECRET, ServiceTokens(SECRET, "cli").token("users"), "users")
    assert (who.service, who.user_id, who.role) == ("cli", None, None)


def _forge(claims: dict[str, Any], key: bytes | str = b"", alg: str = "HS256") -> str:
    return jwt.encode(claims, key or derive_key(SECRET, "grpc-service-token"), algorithm=alg)


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"typ": "service", "iss": "gateway", "aud": "orders", "iat": now, "exp": now + 60} | (
        changes
    )


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("not.a.jwt", id="garbage"),
        pytest.param(_forge(_claims(), key="another-secret-" + "q" * 40), id="other secret"),
        pytest.param(_forge(_claims(), key=SECRET.encode()), id="raw secret, not derived"),
        pytest.param(_forge(_claims(aud="users")), id="other service"),
        pytest.param(_forge(_claims(exp=int(time.time()) - 30)), id="expired"),
        pytest.param(_forge(_claims(typ="access")), id="not a service token"),
        pytest.param(_forge(_claims(iss="")), id="no caller"),
        pytest.param(_forge({k: v for k, v in _claims().items() if k != "exp"}), id="no exp"),
        pytest.param(jwt.encode(_claims(), "", algorithm="none"), id="alg none"),
    ],
)
def test_a_bad_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidServiceToken):
        verify(SECRET, token, "orders")


def test_without_the_secret_no_token_passes() -> None:
    token = ServiceTokens(SECRET, "gateway").token("orders")
    with pytest.raises(InvalidServiceToken):
        verify("", token, "orders")
    with pytest.raises(RuntimeError):
        ServiceTokens("", "gateway")


def test_tokens_are_reused_for_a_while_then_minted_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = ServiceTokens(SECRET, "gateway")
    clock = [1_767_326_400.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    first = tokens.token("orders", "7", "user")
    assert tokens.token("orders", "7", "user") is first
    assert tokens.token("orders", "8", "user") != first
    assert tokens.token("payments", "7", "user") != first
    clock[0] += 31
    assert tokens.token("orders", "7", "user") != first


def test_minting_is_cheap() -> None:
    tokens = ServiceTokens(SECRET, "gateway")
    started = time.perf_counter()
    for user in range(2000):
        tokens.token("orders", str(user % 50), "user")
    assert time.perf_counter() - started < 0.5


# On a real server: an orders servicer whose reads record the user they are asked for.


class FakeIdentity:
    async def user(self, user_id: int) -> UserRow:
        return UserRow(
            id=user_id,
            full_name="A",
            email=f"u{user_id}@example.com",
            password_hash=None,
            role="user",
            provider="local",
            provider_id="",
            created_at=NOW,
            updated_at=NOW,
        )

    async def login(self, email: str, password: str) -> Any:
        raise AssertionError("not reached in these tests")


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GrpcServer]:
    async def order_for_user(pool: Any, user_id: int, order_id: int) -> OrderRow | None:
        if user_id != 7:
            return None
        return OrderRow(
            id=order_id,
            user_id=7,
            status="pending",
            total_price=None,
            reason=None,
            command_id=uuid.uuid4(),
            request_hash="h",
            reply_to=None,
            correlation_id=None,
            created_at=NOW,
            updated_at=NOW,
        )

    monkeypatch.setattr(orders_repository, "order_for_user", order_for_user)

    def add(s: grpc.aio.Server) -> list[str]:
        orders_pb2_grpc.add_OrderServiceServicer_to_server(
            OrderServicer(cast(asyncpg.Pool, None), 10), s
        )
        users_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(FakeIdentity()), s)  # type: ignore[arg-type]
        return []

    srv = create_server("127.0.0.1", 0, add, ServiceAuth(SECRET, "orders"))
    await srv.start()
    yield srv
    await srv.stop(grace=0)


def _addr(server: GrpcServer) -> str:
    return f"127.0.0.1:{server.port}"


async def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    return cast(grpc.StatusCode, e.value.code())


GET_7 = orders_pb2.GetOrderRequest(user_id=7, order_id=3)


async def test_a_call_without_a_token_is_unauthenticated(server: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(_addr(server)) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        assert await _code(stub.GetOrder(GET_7, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
        forged = (("authorization", "Bearer " + _forge(_claims(), key="x" * 40)),)
        call = stub.GetOrder(GET_7, metadata=forged, timeout=5)
        assert await _code(call) == grpc.StatusCode.UNAUTHENTICATED
        other = service_metadata("payments", user_id=7, role="user")
        call = stub.GetOrder(GET_7, metadata=other, timeout=5)
        assert await _code(call) == grpc.StatusCode.UNAUTHENTICATED


async def test_health_needs_no_token(server: GrpcServer) -> None:
    await server.set_serving(True)
    async with grpc.aio.insecure_channel(_addr(server)) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_user_is_the_token_s_not_the_request_s(server: GrpcServer) -> None:
    async with service_channel(_addr(server), "orders", user_id=7, role="user") as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        assert (await stub.GetOrder(GET_7, timeout=5)).user_id == 7
        # Naming another user in the request changes nothing: still user 7's order.
        other = orders_pb2.GetOrderRequest(user_id=8, order_id=3)
        assert (await stub.GetOrder(other, timeout=5)).user_id == 7
    async with service_channel(_addr(server), "orders", user_id=8, role="user") as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        assert await _code(stub.GetOrder(GET_7, timeout=5)) == grpc.StatusCode.NOT_FOUND
    async with service_channel(_addr(server), "orders") as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        code = await _code(stub.GetOrder(GET_7, timeout=5))
        assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_an_admin_may_read_another_user_s_order(server: GrpcServer) -> None:
    async with service_channel(_addr(server), "orders", user_id=1, role="admin") as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        assert (await stub.GetOrder(GET_7, timeout=5)).user_id == 7


async def test_credentials_come_only_from_the_gateway(server: GrpcServer) -> None:
    login = users_pb2.LoginRequest(email="a@example.com", password="guess")
    async with service_channel(_addr(server), "orders", issuer="orders") as channel:
        stub = users_pb2_grpc.AuthServiceStub(channel)
        code = await _code(stub.Login(login, timeout=5))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        register = users_pb2.RegisterRequest(full_name="A", email="a@example.com", password="p")
        code = await _code(stub.Register(register, timeout=5))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        # An internal service may read an account.
        assert (await stub.GetUserByID(users_pb2.GetUserRequest(id=9), timeout=5)).id == 9


async def test_a_user_reads_only_their_own_account(server: GrpcServer) -> None:
    async with service_channel(_addr(server), "orders", user_id=7, role="user") as channel:
        stub = users_pb2_grpc.AuthServiceStub(channel)
        assert (await stub.GetUserByID(users_pb2.GetUserRequest(id=7), timeout=5)).id == 7
        code = await _code(stub.GetUserByID(users_pb2.GetUserRequest(id=8), timeout=5))
        assert code == grpc.StatusCode.PERMISSION_DENIED
    async with service_channel(_addr(server), "orders", user_id=1, role="admin") as channel:
        stub = users_pb2_grpc.AuthServiceStub(channel)
        assert (await stub.GetUserByID(users_pb2.GetUserRequest(id=8), timeout=5)).id == 8


def test_a_server_knows_a_verified_token_until_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = ServiceAuth(SECRET, "orders")
    token = ServiceTokens(SECRET, "gateway").token("orders", "7", "user")
    assert auth.verify(token).user_id == 7

    def checked_again(*_: Any) -> Any:
        raise InvalidServiceToken("checked again")

    monkeypatch.setattr(service_tokens, "_checked", checked_again)
    assert auth.verify(token).user_id == 7
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(InvalidServiceToken, match="checked again"):
        auth.verify(token)


@pytest.mark.parametrize(
    ("who", "allowed"),
    [
        (Caller("gateway", 7, "user"), False),
        (Caller("gateway"), False),
        (Caller("gateway", 1, "admin"), True),
        (Caller("ops"), True),
    ],
)
def test_admin_only_calls(who: Caller, allowed: bool) -> None:
    context = contextvars.copy_context()
    context.run(service_tokens._caller.set, who)
    if allowed:
        assert context.run(service_tokens.require_admin) == who
    else:
        with pytest.raises(Forbidden):
            context.run(service_tokens.require_admin)
