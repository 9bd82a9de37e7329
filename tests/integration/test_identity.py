"""Identity on a real PostgreSQL: accounts, rotating refresh tokens, OAuth against a fake."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
import asyncpg
import pytest

from agents.common import tokens
from agents.common.settings import AuthSettings, Settings
from agents.users.errors import EmailTaken, InvalidCredentials, OAuthFailed, TokenRejected
from agents.users.passwords import Passwords
from agents.users.service import IdentityService
from tests.fake_oauth import FakeProvider, fake_provider
from tests.infra import TEST_JWT_SECRET


def email() -> str:
    return f"u{uuid.uuid4().hex[:10]}@example.com"


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeProvider]:
    async with fake_provider("http://127.0.0.1:8080") as provider:
        yield provider


@pytest.fixture(scope="module")
def settings(fake: FakeProvider) -> Settings:
    return Settings.from_env({"JWT_SECRET": TEST_JWT_SECRET, **fake.env()})


@pytest.fixture(scope="module")
def service(pool: asyncpg.Pool, settings: Settings) -> IdentityService:
    return IdentityService(pool, settings, Passwords(settings.auth))


async def test_register_then_login(service: IdentityService, settings: Settings) -> None:
    address = email()
    user = await service.register("Ada Lovelace", address, "correct horse")
    assert user.role == "user"
    assert user.password_hash is not None
    assert user.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    issued = await service.login(address.upper(), "correct horse")
    claims = tokens.decode(settings, issued.access.token, "access")
    assert claims["sub"] == str(user.id)
    assert claims["role"] == "user"
    refresh = tokens.decode(settings, issued.refresh.token, "refresh")
    assert refresh["jti"] != claims["jti"]
    with pytest.raises(tokens.InvalidToken):
        tokens.decode(settings, issued.refresh.token, "access")


async def test_emails_are_unique_whatever_their_case(service: IdentityService) -> None:
    address = email()
    await service.register("First One", address, "secret1")
    with pytest.raises(EmailTaken):
        await service.register("Second One", address.upper(), "secret2")


async def test_wrong_password_and_unknown_email_fail_alike(service: IdentityService) -> None:
    address = email()
    await service.register("Some Body", address, "right password")
    with pytest.raises(InvalidCredentials) as wrong:
        await service.login(address, "wrong password")
    with pytest.raises(InvalidCredentials) as unknown:
        await service.login(email(), "right password")
    assert str(wrong.value) == str(unknown.value)


async def test_login_rehashes_when_the_parameters_rise(
    pool: asyncpg.Pool, service: IdentityService, settings: Settings
) -> None:
    address = email()
    user = await service.register("Re Hash", address, "a password")
    stronger = replace(settings, auth=replace(settings.auth, argon2_time_cost=3))
    await IdentityService(pool, stronger, Passwords(stronger.auth)).login(address, "a password")
    hashed = await pool.fetchval("SELECT password_hash FROM users WHERE id = $1", user.id)
    assert "t=3" in hashed
    await service.login(address, "a password")


async def test_refresh_rotates_and_a_replay_revokes_the_family(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    strict = replace(settings, auth=replace(settings.auth, reuse_leeway_s=0.0))
    service = IdentityService(pool, strict, Passwords(strict.auth))
    address = email()
    await service.register("Ro Tate", address, "a password")
    first = await service.login(address, "a password")
    second = await service.refresh(first.refresh.token)
    third = await service.refresh(second.refresh.token)
    with pytest.raises(TokenRejected, match="revoked"):
        await service.refresh(first.refresh.token)
    with pytest.raises(TokenRejected):
        await service.refresh(third.refresh.token)


async def test_two_parallel_refreshes_give_at_most_one_successor(
    service: IdentityService,
) -> None:
    address = email()
    await service.register("Par Allel", address, "a password")
    issued = await service.login(address, "a password")
    results = await asyncio.gather(
        *(service.refresh(issued.refresh.token) for _ in range(5)), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, TokenRejected) for r in results if isinstance(r, BaseException))
    # Within the leeway the family survives: the winner's token still works.
    winner = winners[0]
    assert not isinstance(winner, BaseException)
    await service.refresh(winner.refresh.token)


async def test_logout_revokes(service: IdentityService) -> None:
    address = email()
    await service.register("Log Out", address, "a password")
    issued = await service.login(address, "a password")
    await service.logout(issued.refresh.token)
    with pytest.raises(TokenRejected):
        await service.refresh(issued.refresh.token)


async def test_create_admin_creates_or_promotes_when_told(service: IdentityService) -> None:
    address = email()
    await service.register("Pro Mote", address, "a password")
    _, created = await service.create_admin(address, "admin pass", "ignored", promote_existing=True)
    assert not created
    assert (await service.login(address, "admin pass")).role == "admin"
    other, created = await service.create_admin(email(), "admin pass", "New Admin")
    assert created
    assert other.role == "admin"


async def browser_login(fake: FakeProvider, url: str) -> dict[str, str]:
    """Follow the authorization URL as a browser would; return the callback's query."""
    async with aiohttp.ClientSession() as s, s.get(url, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        location = resp.headers["Location"]
    query = parse_qs(urlparse(location).query)
    return {k: v[0] for k, v in query.items()}


PROFILES: dict[str, Any] = {
    "google": lambda mail: {
        "sub": uuid.uuid4().hex,
        "email": mail,
        "email_verified": True,
        "name": "Goo Gle",
    },
    "facebook": lambda mail: {"id": uuid.uuid4().hex, "email": mail, "name": "Face Book"},
    "github": lambda mail: {
        "id": uuid.uuid4().int % 10**9,
        "login": "octo",
        "name": None,
        "emails": [
            {"email": "other@example.com", "primary": False, "verified": True},
            {"email": mail, "primary": True, "verified": True},
        ],
    },
}


@pytest.mark.parametrize("provider", ["google", "facebook", "github"])
async def test_oauth_login_creates_then_finds_the_user(
    service: IdentityService, fake: FakeProvider, settings: Settings, provider: str
) -> None:
    address = email()
    fake.profiles[provider] = PROFILES[provider](address)
    url = await service.oauth_start(provider)
    params = parse_qs(urlparse(url).query)
    assert params["code_challenge_method"] == ["S256"]
    assert params["redirect_uri"] == [fake.redirect_uri(provider)]
    query = await browser_login(fake, url)
    first = await service.oauth_callback(provider, query["code"], query["state"])
    user_id = tokens.decode(settings, first.access.token, "access")["sub"]
    user = await service.user(int(user_id))
    assert (user.email, user.provider) == (address, provider)

    again = await browser_login(fake, await service.oauth_start(provider))
    second = await service.oauth_callback(provider, again["code"], again["state"])
    assert tokens.decode(settings, second.access.token, "access")["sub"] == user_id


async def test_oauth_links_an_existing_account_only_by_a_verified_email(
    service: IdentityService, fake: FakeProvider, settings: Settings
) -> None:
    address = email()
    owner = await service.register("Has Password", address, "a password")
    fake.profiles["google"] = {
        "sub": uuid.uuid4().hex,
        "email": address,
        "email_verified": False,
        "name": "Im Poster",
    }
    query = await browser_login(fake, await service.oauth_start("google"))
    unverified = await service.oauth_callback("google", query["code"], query["state"])
    assert tokens.decode(settings, unverified.access.token, "access")["sub"] != str(owner.id)

    fake.profiles["google"] = {
        "sub": uuid.uuid4().hex,
        "email": address,
        "email_verified": True,
        "name": "Real Owner",
    }
    query = await browser_login(fake, await service.oauth_start("google"))
    verified = await service.oauth_callback("google", query["code"], query["state"])
    assert tokens.decode(settings, verified.access.token, "access")["sub"] == str(owner.id)


async def test_oauth_refuses_a_forged_or_reused_state(
    service: IdentityService, fake: FakeProvider
) -> None:
    fake.profiles["github"] = PROFILES["github"](email())
    query = await browser_login(fake, await service.oauth_start("github"))
    with pytest.raises(OAuthFailed, match="state"):
        await service.oauth_callback("github", query["code"], "forged-state")
    await service.oauth_callback("github", query["code"], query["state"])
    with pytest.raises(OAuthFailed, match="state"):
        await service.oauth_callback("github", query["code"], query["state"])
    other = await browser_login(fake, await service.oauth_start("github"))
    with pytest.raises(OAuthFailed, match="state"):
        await service.oauth_callback("google", other["code"], other["state"])


async def test_oauth_refuses_a_wrong_pkce_verifier(
    service: IdentityService, fake: FakeProvider
) -> None:
    fake.profiles["google"] = PROFILES["google"](email())
    a = await browser_login(fake, await service.oauth_start("google"))
    b = await browser_login(fake, await service.oauth_start("google"))
    # b's state brings b's verifier, which does not match the challenge a's code was issued for.
    with pytest.raises(OAuthFailed, match="invalid_grant"):
        await service.oauth_callback("google", a["code"], b["state"])


async def test_oauth_refuses_a_redirect_mismatch(
    pool: asyncpg.Pool, fake: FakeProvider, settings: Settings
) -> None:
    providers = dict(settings.auth.providers)
    providers["facebook"] = replace(
        providers["facebook"], redirect_url="http://evil.example/callback"
    )
    moved = replace(settings, auth=replace(settings.auth, providers=providers))
    service = IdentityService(pool, moved, Passwords(moved.auth))
    fake.profiles["facebook"] = PROFILES["facebook"](email())
    async with (
        aiohttp.ClientSession() as s,
        s.get(await service.oauth_start("facebook"), allow_redirects=False) as resp,
    ):
        assert resp.status == 400
        assert (await resp.json())["error"] == "redirect_uri_mismatch"


def test_owasp_minimum_is_the_floor() -> None:
    assert AuthSettings().argon2_memory_kib >= 19456
    assert AuthSettings().argon2_time_cost >= 2
