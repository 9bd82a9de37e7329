"""The gateway's edge: rate limits, client addresses, CORS, and the JWT attack suite."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agents.common import tokens
from agents.common.settings import Settings
from gateway.app import create_app
from gateway.edge import ClientAddress
from gateway.ratelimit import KeyedLimiter
from tests.unit.test_gateway import FakeBus, FakeGrpc, problem

SECRET = "e" * 64


def settings(**env: str) -> Settings:
    return Settings.from_env({"JWT_SECRET": SECRET, **env})


@pytest.fixture
async def strict() -> AsyncIterator[TestClient[Any, Any]]:
    s = settings(
        RATE_LIMIT_AUTH_PER_MIN="2",
        RATE_LIMIT_IP_PER_MIN="5",
        RATE_LIMIT_USER_PER_MIN="3",
        CORS_ORIGINS="http://shop.example",
    )
    app = create_app(s, bus=FakeBus(), grpc=FakeGrpc(s.grpc))
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_keyed_limiter_answers_a_wait_and_stays_bounded() -> None:
    limiter = KeyedLimiter(per_minute=2, max_keys=3)
    assert await limiter.try_acquire("a") is None
    assert await limiter.try_acquire("a") is None
    assert await limiter.try_acquire("a") == 30
    for key in "bcdef":
        await limiter.try_acquire(key)
    assert len(limiter) == 3


async def test_login_is_limited_per_ip_with_retry_after(strict: TestClient[Any, Any]) -> None:
    body = {"email": "a@b.co", "password": "x"}
    statuses = []
    for _ in range(3):
        resp = await strict.post("/api/v1/auth/login", json=body)
        statuses.append(resp.status)
    assert statuses[-1] == 429
    problem_body = await problem(resp, 429)
    assert problem_body["code"] == "rate_limited"
    assert resp.headers["Retry-After"].isdigit()
    assert int(resp.headers["Retry-After"]) >= 1


async def test_anonymous_reads_are_limited_per_ip(strict: TestClient[Any, Any]) -> None:
    statuses = [(await strict.get("/product/?page=0")).status for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    assert (await strict.get("/healthz")).status == 200


async def test_users_are_limited_per_user_not_per_ip(strict: TestClient[Any, Any]) -> None:
    s = settings()

    def auth(sub: str) -> dict[str, str]:
        token = tokens.mint(s, sub=sub, typ="access", ttl_s=60, role="user").token
        return {"Authorization": f"Bearer {token}"}

    alice = [(await strict.get("/product/?page=0", headers=auth("alice"))).status for _ in range(4)]
    assert alice == [200, 200, 200, 429]
    assert (await strict.get("/product/?page=0", headers=auth("bob"))).status == 200


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    def request(peer: str, xff: str) -> web.Request:
        req = make_mocked_request("GET", "/", headers={"X-Forwarded-For": xff})
        req._transport_peername = (peer, 1234)
        return req

    trusting = ClientAddress(("10.0.0.0/8",))
    assert trusting.of(request("10.1.2.3", "203.0.113.9, 10.0.0.7")) == "203.0.113.9"
    assert trusting.of(request("198.51.100.1", "203.0.113.9")) == "198.51.100.1"
    assert ClientAddress(()).of(request("10.1.2.3", "203.0.113.9")) == "10.1.2.3"
    assert trusting.of(request("10.1.2.3", "garbage, 10.0.0.1")) == "garbage"


async def test_cors_preflight_and_responses(strict: TestClient[Any, Any]) -> None:
    preflight = {
        "Origin": "http://shop.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    resp = await strict.options("/product/", headers=preflight)
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "http://shop.example"
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]

    evil = {**preflight, "Origin": "http://evil.example"}
    resp = await strict.options("/product/", headers=evil)
    await problem(resp, 403)
    assert "Access-Control-Allow-Origin" not in resp.headers

    resp = await strict.get("/nope", headers={"Origin": "http://shop.example"})
    assert resp.status == 404
    assert resp.headers["Access-Control-Allow-Origin"] == "http://shop.example"
    assert "X-Request-ID" in resp.headers["Access-Control-Expose-Headers"]
    resp = await strict.get("/healthz", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_a_wildcard_origin_never_comes_with_credentials() -> None:
    s = settings(CORS_ORIGINS="*")
    async with TestClient(TestServer(create_app(s, bus=FakeBus(), grpc=FakeGrpc(s.grpc)))) as c:
        resp = await c.get("/healthz", headers={"Origin": "http://any.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers


def _claims(**override: Any) -> dict[str, Any]:
    s = settings()
    now = int(time.time())
    claims = {
        "iss": s.jwt_issuer,
        "aud": s.jwt_audience,
        "sub": "1",
        "role": "admin",
        "typ": "access",
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
    }
    claims.update(override)
    return {k: v for k, v in claims.items() if v is not None}


def _rsa_pem() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hmac_signed(claims: dict[str, Any], key: bytes) -> str:
    """HS/RS confusion: HS256 keyed with an RSA public key (pyjwt refuses to make one)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _tampered() -> str:
    token = jwt.encode(_claims(role="user"), SECRET, algorithm="HS256")
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["role"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{sig}"


def _attacks() -> dict[str, str]:
    private, public = _rsa_pem()
    refresh = tokens.mint(settings(), sub="1", typ="refresh", ttl_s=60, family=uuid.uuid4())
    attacks = {
        "alg-none": jwt.encode(_claims(), "", algorithm="none"),
        "rs256": jwt.encode(_claims(), private, algorithm="RS256"),
        "hs256-with-public-key": _hmac_signed(_claims(), public),
        "expired": jwt.encode(_claims(exp=int(time.time()) - 5), SECRET, algorithm="HS256"),
        "wrong-iss": jwt.encode(_claims(iss="evil"), SECRET, algorithm="HS256"),
        "wrong-aud": jwt.encode(_claims(aud="evil"), SECRET, algorithm="HS256"),
        "no-exp": jwt.encode(_claims(exp=None), SECRET, algorithm="HS256"),
        "no-jti": jwt.encode(_claims(jti=None), SECRET, algorithm="HS256"),
        "refresh-as-access": refresh.token,
        "tampered": _tampered(),
        "wrong-key": jwt.encode(_claims(), "k" * 64, algorithm="HS256"),
        "garbage": "not.a.jwt",
        "empty-segments": "..",
        "huge": "a" * 7000,
    }
    return attacks


ATTACKS = _attacks()


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("path", ["/api/v1/users/me", "/product/?id=1"])
async def test_jwt_attacks_are_401_problems(name: str, path: str) -> None:
    s = settings()
    async with TestClient(TestServer(create_app(s, bus=FakeBus(), grpc=FakeGrpc(s.grpc)))) as c:
        headers = {"Authorization": f"Bearer {ATTACKS[name]}"}
        if path.startswith("/product"):
            resp = await c.delete(path, headers=headers)
        else:
            resp = await c.get(path, headers=headers)
        await problem(resp, 401)
