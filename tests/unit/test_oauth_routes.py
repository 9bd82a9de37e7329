"""The gateway's half of OAuth and email verification, with a fake users service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agents.common.settings import Settings
from gateway.app import create_app
from gateway.auth import mint_token
from gateway.grpc_clients import GrpcClients
from gateway.routes.auth import OAUTH_COOKIE
from protos import users_pb2
from tests.unit.test_gateway import FakeBus, problem

SETTINGS = Settings.from_env({"JWT_SECRET": "k" * 64})
NONCE = "the-browsers-nonce"
CALLBACK = "/api/v1/oauth/google/callback"


class FakeUsers:
    def __init__(self) -> None:
        self.starts: list[users_pb2.OAuthStartRequest] = []
        self.callbacks: list[users_pb2.OAuthCallbackRequest] = []
        self.requested: list[int] = []

    async def OAuthStart(
        self, request: users_pb2.OAuthStartRequest, **kw: Any
    ) -> users_pb2.OAuthStartResponse:
        self.starts.append(request)
        return users_pb2.OAuthStartResponse(url="https://provider/authorize", browser_nonce=NONCE)

    async def OAuthCallback(
        self, request: users_pb2.OAuthCallbackRequest, **kw: Any
    ) -> users_pb2.TokenResponse:
        self.callbacks.append(request)
        return users_pb2.TokenResponse(token="t", refresh_token="r", role="user")

    async def RequestEmailVerification(
        self, request: users_pb2.GetUserRequest, **kw: Any
    ) -> users_pb2.Empty:
        self.requested.append(request.id)
        return users_pb2.Empty()


class FakeGrpc(GrpcClients):
    def __init__(self, users: FakeUsers) -> None:
        super().__init__(SETTINGS.grpc)
        self._fake_users = users

    @property
    def users(self) -> Any:
        return self._fake_users

    async def health(self, domain: str, timeout: float = 1.0) -> bool:
        return True


@pytest.fixture
def users() -> FakeUsers:
    return FakeUsers()


async def client_for(settings: Settings, users: FakeUsers) -> TestClient[Any, Any]:
    app = create_app(settings, bus=FakeBus(), grpc=FakeGrpc(users))
    return TestClient(TestServer(app))


@pytest.fixture
async def client(users: FakeUsers) -> AsyncIterator[TestClient[Any, Any]]:
    async with await client_for(SETTINGS, users) as c:
        yield c


def set_cookie(resp: Any) -> Any:
    cookies = SimpleCookie()
    for header in resp.headers.getall("Set-Cookie", []):
        cookies.load(header)
    return cookies[OAUTH_COOKIE]


@pytest.mark.parametrize("accept", ["application/json", "text/html"])
async def test_starting_a_login_sets_the_nonce_cookie(
    client: TestClient[Any, Any], accept: str
) -> None:
    resp = await client.get(
        "/api/v1/auth/google", headers={"Accept": accept}, allow_redirects=False
    )
    assert resp.status == (302 if accept == "text/html" else 200)
    cookie = set_cookie(resp)
    assert cookie.value == NONCE
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == CALLBACK
    assert 0 < int(cookie["max-age"]) <= 600
    assert not cookie["secure"], "the public URL is http here"


async def test_the_cookie_is_secure_when_the_public_url_is_https(users: FakeUsers) -> None:
    https = Settings.from_env({"JWT_SECRET": "k" * 64, "PUBLIC_URL": "https://shop.example"})
    async with await client_for(https, users) as c:
        resp = await c.get("/api/v1/auth/github")
        assert resp.status == 200
        cookie = set_cookie(resp)
        assert cookie["secure"] is True
        assert cookie["path"] == "/api/v1/oauth/github/callback"


async def test_the_callback_needs_the_cookie_and_clears_it(
    client: TestClient[Any, Any], users: FakeUsers
) -> None:
    query = {"code": "c", "state": "s"}
    body = await problem(await client.get(CALLBACK, params=query), 403)
    assert "cookie" in body["detail"]
    assert users.callbacks == [], "refused before the users service is asked"

    client.session.cookie_jar.update_cookies({OAUTH_COOKIE: NONCE})
    resp = await client.get(CALLBACK, params=query)
    assert resp.status == 200
    assert [c.browser_nonce for c in users.callbacks] == [NONCE]
    cleared = set_cookie(resp)
    assert (cleared.value, cleared["max-age"], cleared["path"]) == ("", "0", CALLBACK)

    client.session.cookie_jar.update_cookies({OAUTH_COOKIE: NONCE})
    refused = await client.get(CALLBACK, params={"state": "s", "error": "access_denied"})
    assert refused.status == 401
    assert set_cookie(refused)["max-age"] == "0", "an error answer clears it too"


async def test_a_link_needs_the_accounts_access_token(
    client: TestClient[Any, Any], users: FakeUsers
) -> None:
    await problem(await client.get("/api/v1/auth/google?link=true"), 401)
    token = mint_token(SETTINGS, sub="42", role="user")
    resp = await client.get(
        "/api/v1/auth/google?link=true", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 200
    assert [s.link_user_id for s in users.starts] == [42]
    assert (await client.get("/api/v1/auth/google")).status == 200
    assert users.starts[-1].link_user_id == 0


async def test_requesting_a_verification_mail_is_for_a_logged_in_account(
    client: TestClient[Any, Any], users: FakeUsers
) -> None:
    await problem(await client.post("/api/v1/auth/verify-email/request"), 401)
    token = mint_token(SETTINGS, sub="7", role="user")
    resp = await client.post(
        "/api/v1/auth/verify-email/request", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 202
    assert users.requested == [7]
