"""The seed's auth calls, verbatim, and OAuth logins, against `shopstream run`."""

from __future__ import annotations

import asyncio
import re
import subprocess
import uuid
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from yarl import URL

from gateway.routes.auth import OAUTH_COOKIE
from tests.e2e import client
from tests.e2e.client import bearer, login
from tests.e2e.platform import SHOPSTREAM, Platform
from tests.fake_oauth import FakeProvider
from tests.helpers import eventually
from topics.admin import partitions_of

pytestmark = pytest.mark.e2e

TOKEN_FIELDS = {
    "message",
    "token",
    "expired_at",
    "refresh_token",
    "refresh_token_expired_at",
    "role",
}
# Every secret the tests send or receive; none may show up on a topic or in a log line.
SECRETS: set[str] = set()


def new_email() -> str:
    return f"e2e-{uuid.uuid4().hex[:10]}@Example.com"


def new_password() -> str:
    password = f"pw-{uuid.uuid4().hex}"
    SECRETS.add(password)
    return password


async def call(
    http: aiohttp.ClientSession, method: str, url: str, status: int, **kw: Any
) -> dict[str, Any]:
    """client.call, keeping every token it sees for the last test."""
    body = await client.call(http, method, url, status, **kw)
    for key in ("token", "refresh_token"):
        if key in body:
            SECRETS.add(body[key])
    return body


async def test_register_login_refresh_me_logout(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    url = platform.url
    email, password = new_email(), new_password()
    body = {"full_name": "Grace Hopper", "email": email, "password": password}
    created = await call(http, "POST", f"{url}/api/v1/auth/register", 201, json=body)
    assert created["user"]["email"] == email
    await call(
        http, "POST", f"{url}/api/v1/auth/register", 409, json={**body, "email": email.lower()}
    )
    invalid = await call(
        http,
        "POST",
        f"{url}/api/v1/auth/register",
        422,
        json={"full_name": "G", "email": "nope", "password": "123"},
    )
    assert {e["path"] for e in invalid["errors"]} == {"full_name", "email", "password"}

    tokens = await call(
        http,
        "POST",
        f"{url}/api/v1/auth/login",
        200,
        json={"email": email.upper(), "password": password},
    )
    assert set(tokens) == TOKEN_FIELDS
    assert tokens["role"] == "user"
    wrong = await call(
        http, "POST", f"{url}/api/v1/auth/login", 401, json={"email": email, "password": "not-it"}
    )
    unknown = await call(
        http,
        "POST",
        f"{url}/api/v1/auth/login",
        401,
        json={"email": new_email(), "password": password},
    )
    assert wrong["detail"] == unknown["detail"]

    me = await call(http, "GET", f"{url}/api/v1/users/me", 200, headers=bearer(tokens["token"]))
    assert (me["email"], me["full_name"], me["role"]) == (email, "Grace Hopper", "user")
    await call(http, "GET", f"{url}/api/v1/users/me", 401, headers=bearer(tokens["refresh_token"]))

    rotated = await call(
        http,
        "GET",
        f"{url}/api/v1/auth/refresh-token",
        200,
        headers=bearer(tokens["refresh_token"]),
    )
    assert set(rotated) == TOKEN_FIELDS
    assert rotated["refresh_token"] != tokens["refresh_token"]
    await call(
        http,
        "GET",
        f"{url}/api/v1/auth/refresh-token",
        401,
        headers=bearer(tokens["refresh_token"]),
    )
    again = await call(
        http,
        "POST",
        f"{url}/api/v1/auth/refresh",
        200,
        json={"refresh_token": rotated["refresh_token"]},
    )
    await call(
        http,
        "POST",
        f"{url}/api/v1/auth/logout",
        200,
        json={"refresh_token": again["refresh_token"]},
    )
    await call(
        http,
        "POST",
        f"{url}/api/v1/auth/refresh",
        401,
        json={"refresh_token": again["refresh_token"]},
    )


async def test_parallel_refreshes_yield_one_successor(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    email, password = new_email(), new_password()
    await call(
        http,
        "POST",
        f"{platform.url}/api/v1/auth/register",
        201,
        json={"full_name": "Two Tabs", "email": email, "password": password},
    )
    tokens = await login(platform, http, email, password)

    async def refresh() -> int:
        async with http.get(
            f"{platform.url}/api/v1/auth/refresh-token", headers=bearer(tokens["refresh_token"])
        ) as resp:
            if resp.status == 200:
                body = await resp.json()
                SECRETS.update(body[k] for k in ("token", "refresh_token"))
            return resp.status

    statuses = await asyncio.gather(*(refresh() for _ in range(4)))
    assert sorted(statuses) == [200, 401, 401, 401]


async def test_an_admin_made_with_the_cli_may_write_the_catalogue(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    email, password = new_email(), new_password()
    out = await asyncio.to_thread(
        subprocess.run,
        [SHOPSTREAM, "users", "create-admin", "--email", email, "--password-stdin"],
        input=password + "\n",
        env=platform.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "created admin" in out.stdout
    tokens = await login(platform, http, email, password)
    assert tokens["role"] == "admin"
    await call(
        http,
        "POST",
        f"{platform.url}/product/",
        201,
        headers=bearer(tokens["token"]),
        json={"name": "By an admin", "price": 1, "stock": 1},
    )

    user_email, user_password = new_email(), new_password()
    await call(
        http,
        "POST",
        f"{platform.url}/api/v1/auth/register",
        201,
        json={"full_name": "Just User", "email": user_email, "password": user_password},
    )
    user = await login(platform, http, user_email, user_password)
    await call(
        http,
        "POST",
        f"{platform.url}/product/",
        403,
        headers=bearer(user["token"]),
        json={"name": "By a user", "price": 1, "stock": 1},
    )
    await call(
        http,
        "POST",
        f"{platform.url}/product/",
        403,
        headers={**bearer(user["token"]), "X-Role": "admin"},
        json={"name": "x", "price": 1, "stock": 1, "role": "admin"},
    )


@pytest.mark.parametrize("provider", ["google", "facebook", "github"])
async def test_oauth_login_through_the_gateway(
    platform: Platform,
    http: aiohttp.ClientSession,
    oauth_provider: FakeProvider,
    provider: str,
) -> None:
    email = new_email().lower()
    profiles: dict[str, dict[str, Any]] = {
        "google": {
            "sub": uuid.uuid4().hex,
            "email": email,
            "email_verified": True,
            "name": "Goo User",
        },
        "facebook": {"id": uuid.uuid4().hex, "email": email, "name": "Fb User"},
        "github": {
            "id": uuid.uuid4().int % 10**9,
            "login": "gh",
            "name": "Gh User",
            "emails": [{"email": email, "primary": True, "verified": True}],
        },
    }
    oauth_provider.profiles[provider] = profiles[provider]
    callback = await to_the_provider(platform, http, provider)
    assert callback.startswith(f"{platform.url}/api/v1/oauth/{provider}/callback?")
    tokens = await call(http, "GET", callback, 200)
    assert set(tokens) == TOKEN_FIELDS
    me = await call(
        http, "GET", f"{platform.url}/api/v1/users/me", 200, headers=bearer(tokens["token"])
    )
    assert (me["email"], me["provider"], me["email_verified"]) == (email, provider, True)
    assert not nonce_of(http, provider), "the callback used up the browser's nonce"
    await call(http, "GET", callback, 403)  # and without it nothing is tried
    query = parse_qs(urlparse(callback).query)
    await call(
        http,
        "GET",
        f"{platform.url}/api/v1/oauth/{provider}/callback?state={query['state'][0]}",
        400,
    )
    await to_the_provider(platform, http, provider)  # a fresh nonce in the jar
    await call(
        http,
        "GET",
        f"{platform.url}/api/v1/oauth/{provider}/callback?code={query['code'][0]}&state=forged",
        401,
    )


async def to_the_provider(
    platform: Platform, http: aiohttp.ClientSession, provider: str, **kw: Any
) -> str:
    """Start an OAuth login in `http` (which keeps the nonce cookie) and pass the fake
    provider: where it sends the browser back."""
    start = await call(http, "GET", f"{platform.url}/api/v1/auth/{provider}", 200, **kw)
    assert nonce_of(http, provider), "the start set the nonce cookie"
    async with http.get(start["url"], allow_redirects=False) as resp:
        assert resp.status == 302
        return resp.headers["Location"]


def nonce_of(http: aiohttp.ClientSession, provider: str) -> str:
    path = f"/api/v1/oauth/{provider}/callback"
    return "".join(c.value for c in http.cookie_jar if c.key == OAUTH_COOKIE and c["path"] == path)


def verification_token(platform: Platform, email: str, after: int = 0) -> str | None:
    """The token of the newest verification mail to `email` that the users process logged."""
    pattern = re.compile(rf"mail to {re.escape(email)}: .*verify-email\?token=([\w-]+)")
    found = [m.group(1) for line in platform.lines[after:] if (m := pattern.search(line))]
    return found[-1] if found else None


async def mailed_token(platform: Platform, email: str, after: int = 0) -> str:
    async def probe() -> str | None:
        return verification_token(platform, email, after)

    return await eventually(probe, timeout=30, what=f"a verification mail to {email}")


def google_profile(email: str) -> dict[str, Any]:
    return {"sub": uuid.uuid4().hex, "email": email, "email_verified": True, "name": "Vic Tim"}


async def test_an_oauth_login_cannot_take_over_an_account_registered_with_its_email(
    platform: Platform, http: aiohttp.ClientSession, oauth_provider: FakeProvider
) -> None:
    """Someone registers the victim's address with a password; the victim's Google login is
    refused (409, nothing linked) until the account proves it owns the address."""
    url, email, password = platform.url, new_email().lower(), new_password()
    account = {"full_name": "Squat Ter", "email": email, "password": password}
    created = await call(http, "POST", f"{url}/api/v1/auth/register", 201, json=account)
    assert created["user"]["email_verified"] is False
    token = await mailed_token(platform, email)

    oauth_provider.profiles["google"] = google_profile(email)
    refused = await call(http, "GET", await to_the_provider(platform, http, "google"), 409)
    assert "not verified" in refused["detail"]
    owner = await login(platform, http, email, password)
    me = await call(http, "GET", f"{url}/api/v1/users/me", 200, headers=bearer(owner["token"]))
    assert "provider" not in me, "no identity was linked"

    await call(http, "POST", f"{url}/api/v1/auth/verify-email", 404, json={"token": "wrong"})
    verified = await call(
        http, "POST", f"{url}/api/v1/auth/verify-email", 200, json={"token": token}
    )
    assert (verified["user"]["id"], verified["user"]["email_verified"]) == (me["id"], True)
    await call(http, "POST", f"{url}/api/v1/auth/verify-email", 404, json={"token": token})
    await call(
        http,
        "POST",
        f"{url}/api/v1/auth/verify-email/request",
        409,
        headers=bearer(owner["token"]),
    )

    # Verified, the same email links: the Google login reaches the account.
    tokens = await call(http, "GET", await to_the_provider(platform, http, "google"), 200)
    me = await call(http, "GET", f"{url}/api/v1/users/me", 200, headers=bearer(tokens["token"]))
    assert (me["id"], me["provider"]) == (verified["user"]["id"], "google")


async def test_a_logged_in_owner_links_a_provider_and_may_ask_for_a_new_mail(
    platform: Platform, http: aiohttp.ClientSession, oauth_provider: FakeProvider
) -> None:
    url, email, password = platform.url, new_email().lower(), new_password()
    account = {"full_name": "Link Er", "email": email, "password": password}
    await call(http, "POST", f"{url}/api/v1/auth/register", 201, json=account)
    owner = await login(platform, http, email, password)
    seen = len(platform.lines)
    await call(
        http,
        "POST",
        f"{url}/api/v1/auth/verify-email/request",
        202,
        headers=bearer(owner["token"]),
    )
    assert await mailed_token(platform, email, after=seen)

    await call(http, "GET", f"{url}/api/v1/auth/github?link=true", 401)
    oauth_provider.profiles["github"] = {
        "id": uuid.uuid4().int % 10**9,
        "login": "linker",
        "emails": [{"email": email, "primary": True, "verified": True}],
    }
    callback = await to_the_provider(
        platform, http, "github", params={"link": "true"}, headers=bearer(owner["token"])
    )
    tokens = await call(http, "GET", callback, 200)
    me = await call(http, "GET", f"{url}/api/v1/users/me", 200, headers=bearer(tokens["token"]))
    assert (me["email"], me["provider"], me["email_verified"]) == (email, "github", True)


async def test_a_leaked_code_and_state_are_refused_in_another_browser(
    platform: Platform, http: aiohttp.ClientSession, oauth_provider: FakeProvider
) -> None:
    """Login CSRF and a leaked callback: without the nonce of the browser that started the
    login, its code and state are refused; the right browser still finishes."""
    email = new_email().lower()
    oauth_provider.profiles["google"] = google_profile(email)
    callback = await to_the_provider(platform, http, "google")
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar, timeout=aiohttp.ClientTimeout(30)) as other:
        await call(other, "GET", callback, 403)
    tokens = await call(http, "GET", callback, 200)
    me = await call(
        http, "GET", f"{platform.url}/api/v1/users/me", 200, headers=bearer(tokens["token"])
    )
    assert me["email"] == email

    callback = await to_the_provider(platform, http, "google")
    jar = aiohttp.CookieJar(unsafe=True)
    path = urlparse(callback).path
    async with aiohttp.ClientSession(cookie_jar=jar, timeout=aiohttp.ClientTimeout(30)) as other:
        other.cookie_jar.update_cookies(
            {OAUTH_COOKIE: "the-attackers-own-nonce"}, URL(platform.url + path)
        )
        await call(other, "GET", callback, 403)
    await call(http, "GET", callback, 401)  # that attempt used the state up


async def test_request_ids_travel_with_the_request(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    rid = f"rid-{uuid.uuid4().hex}"
    token = (
        await asyncio.to_thread(
            subprocess.run,
            [SHOPSTREAM, "dev-token"],
            env=platform.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    ).stdout.splitlines()[-1]
    async with http.post(
        f"{platform.url}/product/",
        json={"name": "rid", "price": 1, "stock": 1},
        headers={**bearer(token), "X-Request-ID": rid},
    ) as resp:
        assert resp.status == 201
        assert resp.headers["X-Request-ID"] == rid
    headers = [dict(m.headers) for m in await read_all(platform.kafka, ["products.commands"])]
    assert {"x-request-id": rid.encode()}.items() <= next(
        h for h in headers if h.get("x-request-id") == rid.encode()
    ).items()
    assert any(rid in line for line in platform.lines if line.startswith("gateway"))


async def read_all(bootstrap: str, topics: list[str]) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in await partitions_of(bootstrap, t)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[Any] = []
        remaining = {tp for tp in tps if end[tp] > 0}
        async with asyncio.timeout(30):
            while remaining:
                for tp, messages in (await consumer.getmany(timeout_ms=100)).items():
                    out.extend(messages)
                    if messages and messages[-1].offset + 1 >= end[tp]:
                        remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


async def test_no_password_or_token_on_any_topic_or_in_any_log(platform: Platform) -> None:
    """Runs last: every secret the tests above used is looked for everywhere."""
    assert len(SECRETS) > 10
    admin = AIOKafkaAdminClient(bootstrap_servers=platform.kafka)
    await admin.start()
    try:
        topics = sorted(await admin.list_topics())
    finally:
        await admin.close()
    messages = await read_all(platform.kafka, topics)
    assert messages
    haystack = [m.value or b"" for m in messages] + [m.key or b"" for m in messages]
    haystack += [v for m in messages for _, v in m.headers]
    for secret in SECRETS:
        needle = secret.encode()
        assert not any(needle in hay for hay in haystack), "a secret is on a topic"
        assert not any(secret in line for line in platform.lines), "a secret is in a log"
