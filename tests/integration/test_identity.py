"""Identity on a real PostgreSQL: accounts, rotating refresh tokens, OAuth against a fake."""

from __future__ import annotations

import asyncio
import hashlib
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
from agents.users.errors import (
    AlreadyVerified,
    EmailTaken,
    IdentityTaken,
    InvalidCredentials,
    LinkRefused,
    OAuthBrowserMismatch,
    OAuthFailed,
    TokenRejected,
    VerificationFailed,
)
from agents.users.mail import Mail
from agents.users.passwords import Passwords
from agents.users.service import IdentityService, Tokens
from tests.fake_oauth import FakeProvider, fake_provider
from tests.infra import TEST_JWT_SECRET
from topics.envelope import ErrorType


def email() -> str:
    return f"u{uuid.uuid4().hex[:10]}@example.com"


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeProvider]:
    async with fake_provider("http://127.0.0.1:8080") as provider:
        yield provider


@pytest.fixture(scope="module")
def settings(fake: FakeProvider) -> Settings:
    return Settings.from_env({"JWT_SECRET": TEST_JWT_SECRET, **fake.env()})


class RecordingMailer:
    """Keeps every mail; a verification mail's token is the end of its link."""

    def __init__(self) -> None:
        self.sent: list[Mail] = []

    async def send(self, mail: Mail) -> None:
        self.sent.append(mail)

    def tokens_for(self, address: str) -> list[str]:
        return [m.body.rsplit("token=", 1)[1] for m in self.sent if m.to.lower() == address.lower()]

    def token_for(self, address: str) -> str:
        (token,) = self.tokens_for(address)
        return token


@pytest.fixture(scope="module")
def mailer() -> RecordingMailer:
    return RecordingMailer()


@pytest.fixture(scope="module")
def service(pool: asyncpg.Pool, settings: Settings, mailer: RecordingMailer) -> IdentityService:
    return IdentityService(pool, settings, Passwords(settings.auth), mailer=mailer)


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
    assert other.email_verified_at is not None, "an operator's own address needs no mail"


async def browser_login(fake: FakeProvider, url: str) -> dict[str, str]:
    """Follow the authorization URL as a browser would; return the callback's query."""
    async with aiohttp.ClientSession() as s, s.get(url, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        location = resp.headers["Location"]
    query = parse_qs(urlparse(location).query)
    return {k: v[0] for k, v in query.items()}


async def oauth_login(
    service: IdentityService, fake: FakeProvider, provider: str, link_user_id: int | None = None
) -> tuple[dict[str, str], str]:
    """Start a login and pass the provider: the callback's query, and the browser's nonce."""
    started = await service.oauth_start(provider, link_user_id)
    return await browser_login(fake, started.url), started.browser_nonce


async def finish(
    service: IdentityService, fake: FakeProvider, provider: str, link_user_id: int | None = None
) -> Tokens:
    query, nonce = await oauth_login(service, fake, provider, link_user_id)
    return await service.oauth_callback(provider, query["code"], query["state"], nonce)


def subject(settings: Settings, issued: Tokens) -> str:
    return str(tokens.decode(settings, issued.access.token, "access")["sub"])


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
    started = await service.oauth_start(provider)
    params = parse_qs(urlparse(started.url).query)
    assert params["code_challenge_method"] == ["S256"]
    assert params["redirect_uri"] == [fake.redirect_uri(provider)]
    query = await browser_login(fake, started.url)
    first = await service.oauth_callback(
        provider, query["code"], query["state"], started.browser_nonce
    )
    user_id = subject(settings, first)
    user = await service.user(int(user_id))
    assert (user.email, user.provider) == (address, provider)
    assert user.email_verified_at is not None, "the provider vouched for the address"

    second = await finish(service, fake, provider)
    assert subject(settings, second) == user_id


async def identities_of(pool: asyncpg.Pool, user_id: int) -> list[str]:
    rows = await pool.fetch("SELECT provider FROM user_identities WHERE user_id = $1", user_id)
    return [r["provider"] for r in rows]


async def test_oauth_refuses_to_take_over_an_unverified_account(
    pool: asyncpg.Pool, service: IdentityService, fake: FakeProvider, settings: Settings
) -> None:
    """The pre-account takeover: someone registers the victim's address with a password; the
    victim's Google login with that (verified) address must not join the attacker's account."""
    address = email()
    squatter = await service.register("Squat Ter", address, "attacker password")
    assert squatter.email_verified_at is None
    fake.profiles["google"] = PROFILES["google"](address)
    with pytest.raises(LinkRefused, match="not verified") as refused:
        await finish(service, fake, "google")
    assert refused.value.error_type is ErrorType.CONFLICT
    assert await identities_of(pool, squatter.id) == []
    users = await pool.fetchval("SELECT count(*) FROM users WHERE lower(email) = $1", address)
    assert users == 1

    # A provider that does not vouch for the address makes a separate account, as before.
    fake.profiles["google"] = {**PROFILES["google"](address), "email_verified": False}
    unverified = await finish(service, fake, "google")
    assert subject(settings, unverified) != str(squatter.id)


async def test_oauth_links_an_account_whose_email_was_verified(
    pool: asyncpg.Pool,
    service: IdentityService,
    mailer: RecordingMailer,
    fake: FakeProvider,
    settings: Settings,
) -> None:
    address = email()
    owner = await service.register("Has Password", address, "a password")
    verified = await service.verify_email(mailer.token_for(address))
    assert verified.id == owner.id
    assert verified.email_verified_at is not None
    fake.profiles["google"] = PROFILES["google"](address.upper())
    linked = await finish(service, fake, "google")
    assert subject(settings, linked) == str(owner.id)
    assert await identities_of(pool, owner.id) == ["google"]


async def test_a_logged_in_owner_may_link_a_provider_explicitly(
    pool: asyncpg.Pool, service: IdentityService, fake: FakeProvider, settings: Settings
) -> None:
    address = email()
    owner = await service.register("Link Me", address, "a password")
    fake.profiles["github"] = PROFILES["github"](address)
    linked = await finish(service, fake, "github", link_user_id=owner.id)
    assert subject(settings, linked) == str(owner.id)
    assert await identities_of(pool, owner.id) == ["github"]
    # GitHub vouched for the account's own address: it is verified now.
    assert (await service.user(owner.id)).email_verified_at is not None
    # The identity now logs in to that account, and linking it again changes nothing.
    assert subject(settings, await finish(service, fake, "github")) == str(owner.id)
    assert subject(settings, await finish(service, fake, "github", owner.id)) == str(owner.id)

    other = await service.register("Some One Else", email(), "a password")
    with pytest.raises(IdentityTaken):
        await finish(service, fake, "github", link_user_id=other.id)
    assert await identities_of(pool, other.id) == []


async def test_a_verification_token_is_single_use_hashed_and_expires(
    pool: asyncpg.Pool, service: IdentityService, mailer: RecordingMailer
) -> None:
    address = email()
    user = await service.register("Veri Fy", address, "a password")
    token = mailer.token_for(address)
    stored = await pool.fetchval(
        "SELECT token_hash FROM email_verifications WHERE user_id = $1", user.id
    )
    assert stored == hashlib.sha256(token.encode()).digest()
    with pytest.raises(VerificationFailed):
        await service.verify_email(token + "x")
    with pytest.raises(VerificationFailed):
        await service.verify_email("")
    assert (await service.verify_email(token)).email_verified_at is not None
    with pytest.raises(VerificationFailed):
        await service.verify_email(token)
    with pytest.raises(AlreadyVerified):
        await service.request_verification(user.id)

    late = await service.register("Too Late", email(), "a password")
    await service.request_verification(late.id)
    assert late.email is not None
    first, second = mailer.tokens_for(late.email)
    await pool.execute(
        "UPDATE email_verifications SET expires_at = now() - interval '1 second' "
        "WHERE user_id = $1",
        late.id,
    )
    for expired in (first, second):
        with pytest.raises(VerificationFailed):
            await service.verify_email(expired)
    assert (await service.user(late.id)).email_verified_at is None


async def test_a_token_for_an_address_the_account_no_longer_has_verifies_nothing(
    pool: asyncpg.Pool, service: IdentityService, mailer: RecordingMailer
) -> None:
    address = email()
    user = await service.register("Mo Ved", address, "a password")
    await pool.execute("UPDATE users SET email = $2 WHERE id = $1", user.id, email())
    with pytest.raises(VerificationFailed):
        await service.verify_email(mailer.token_for(address))
    assert (await service.user(user.id)).email_verified_at is None


async def test_oauth_refuses_a_callback_from_another_browser(
    pool: asyncpg.Pool, service: IdentityService, fake: FakeProvider
) -> None:
    """A leaked code and state, or ones an attacker plants in a victim's browser (login CSRF),
    come without the nonce of the browser that started the login: refused before the code is
    redeemed, and the state is used up."""
    address = email()
    fake.profiles["google"] = PROFILES["google"](address)
    for nonce in ("", "some-other-browsers-nonce"):
        query, right = await oauth_login(service, fake, "google")
        with pytest.raises(OAuthBrowserMismatch) as refused:
            await service.oauth_callback("google", query["code"], query["state"], nonce)
        assert refused.value.error_type is ErrorType.FORBIDDEN
        assert query["code"] in fake.grants, "the code was not redeemed"
        with pytest.raises(OAuthFailed, match="state"):
            await service.oauth_callback("google", query["code"], query["state"], right)
    assert not await pool.fetchval("SELECT count(*) FROM users WHERE email = $1", address)


async def test_oauth_refuses_a_forged_or_reused_state(
    service: IdentityService, fake: FakeProvider
) -> None:
    fake.profiles["github"] = PROFILES["github"](email())
    query, nonce = await oauth_login(service, fake, "github")
    with pytest.raises(OAuthFailed, match="state"):
        await service.oauth_callback("github", query["code"], "forged-state", nonce)
    await service.oauth_callback("github", query["code"], query["state"], nonce)
    with pytest.raises(OAuthFailed, match="state"):
        await service.oauth_callback("github", query["code"], query["state"], nonce)
    other, nonce = await oauth_login(service, fake, "github")
    with pytest.raises(OAuthFailed, match="state"):
        await service.oauth_callback("google", other["code"], other["state"], nonce)


async def test_oauth_refuses_a_wrong_pkce_verifier(
    service: IdentityService, fake: FakeProvider
) -> None:
    fake.profiles["google"] = PROFILES["google"](email())
    a, _ = await oauth_login(service, fake, "google")
    b, b_nonce = await oauth_login(service, fake, "google")
    # b's state brings b's verifier, which does not match the challenge a's code was issued for.
    with pytest.raises(OAuthFailed, match="invalid_grant"):
        await service.oauth_callback("google", a["code"], b["state"], b_nonce)


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
        s.get((await service.oauth_start("facebook")).url, allow_redirects=False) as resp,
    ):
        assert resp.status == 400
        assert (await resp.json())["error"] == "redirect_uri_mismatch"


def test_owasp_minimum_is_the_floor() -> None:
    assert AuthSettings().argon2_memory_kib >= 19456
    assert AuthSettings().argon2_time_cost >= 2
