"""Account hardening on a real PostgreSQL: login, refresh/logout, create-admin, the login budget."""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from agents.common import tokens
from agents.common.db import create_pool
from agents.common.embedded import EmbeddedPostgres
from agents.common.migrate import apply, load_migrations
from agents.common.settings import Settings
from agents.users.errors import AccountExists, InvalidCredentials, LoginThrottled, TokenRejected
from agents.users.passwords import Passwords
from agents.users.service import IdentityService
from tests.e2e.platform import SHOPSTREAM
from tests.infra import TEST_JWT_SECRET


def email() -> str:
    return f"a{uuid.uuid4().hex[:10]}@example.com"


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings.from_env({"JWT_SECRET": TEST_JWT_SECRET})


@pytest.fixture(scope="module")
def service(pool: asyncpg.Pool, settings: Settings) -> IdentityService:
    return IdentityService(pool, settings, Passwords(settings.auth))


async def test_no_token_of_a_family_outlives_a_concurrent_logout(service: IdentityService) -> None:
    address = email()
    await service.register("Race Logout", address, "a password")
    survivors = 0
    for _ in range(50):
        issued = await service.login(address, "a password")
        refreshed, _ = await asyncio.gather(
            service.refresh(issued.refresh.token),
            service.logout(issued.refresh.token),
            return_exceptions=True,
        )
        if isinstance(refreshed, BaseException):
            assert isinstance(refreshed, TokenRejected)
            continue
        try:
            await service.refresh(refreshed.refresh.token)
            survivors += 1
        except TokenRejected:
            pass
    assert survivors == 0


class GatedPasswords(Passwords):
    """Verification waits at a gate, as it does when every argon2 slot is taken."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.auth)
        self.waiting = asyncio.Event()
        self.gate = asyncio.Event()

    async def verify(self, hashed: str | None, password: str) -> bool:
        self.waiting.set()
        await self.gate.wait()
        return await super().verify(hashed, password)


@pytest.mark.parametrize("known", [True, False], ids=["account", "unknown email"])
async def test_a_login_waiting_to_verify_holds_no_connection(
    postgres: EmbeddedPostgres, service: IdentityService, settings: Settings, known: bool
) -> None:
    address = email()
    if known:
        await service.register("Slow Hash", address, "a password")
    one = await create_pool(postgres.dsn, max_size=1)
    passwords = GatedPasswords(settings)
    login = asyncio.create_task(
        IdentityService(one, settings, passwords).login(address, "a password")
    )
    try:
        async with asyncio.timeout(10):
            await passwords.waiting.wait()
        async with asyncio.timeout(5):
            assert await one.fetchval("SELECT 1") == 1
    finally:
        passwords.gate.set()
        try:
            async with asyncio.timeout(10):
                await asyncio.gather(login, return_exceptions=True)
        finally:
            await one.close()
    if known:
        assert login.result().role == "user"
    else:
        assert isinstance(login.exception(), InvalidCredentials)


async def families(pool: asyncpg.Pool, user_id: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT family_id, revoked_at FROM refresh_families WHERE user_id = $1", user_id
    )
    return rows


async def test_create_admin_refuses_an_existing_account_and_changes_nothing(
    pool: asyncpg.Pool, service: IdentityService
) -> None:
    address = email()
    owner = await service.register("Got Here First", address, "squatter password")
    session = await service.login(address, "squatter password")
    with pytest.raises(AccountExists):
        await service.create_admin(address, "operator password", "Admin")
    assert (await service.login(address, "squatter password")).role == "user"
    with pytest.raises(InvalidCredentials):
        await service.login(address, "operator password")
    await service.refresh(session.refresh.token)
    assert all(f["revoked_at"] is None for f in await families(pool, owner.id))


async def test_create_admin_promote_existing_sets_the_password_and_revokes_every_family(
    pool: asyncpg.Pool, service: IdentityService
) -> None:
    address = email()
    owner = await service.register("Got Here First", address, "squatter password")
    sessions = [await service.login(address, "squatter password") for _ in range(3)]
    user, created = await service.create_admin(
        address.upper(), "operator password", "Admin", promote_existing=True
    )
    assert (user.id, created) == (owner.id, False)
    assert user.email_verified_at is not None, "the operator vouches for the address"
    for session in sessions:
        with pytest.raises(TokenRejected, match="revoked"):
            await service.refresh(session.refresh.token)
    assert all(f["revoked_at"] is not None for f in await families(pool, owner.id))
    with pytest.raises(InvalidCredentials):
        await service.login(address, "squatter password")
    assert (await service.login(address, "operator password")).role == "admin"


async def create_admin_cli(postgres: EmbeddedPostgres, tmp: Path, *args: str) -> tuple[int, str]:
    env = {
        **os.environ,
        "DATABASE_URL": postgres.dsn,
        "JWT_SECRET": TEST_JWT_SECRET,
        "SHOPSTREAM_STATE_DIR": str(tmp),
    }
    proc = await asyncio.create_subprocess_exec(
        SHOPSTREAM,
        "users",
        "create-admin",
        "--password-stdin",
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(60):
            out, _ = await proc.communicate(b"operator password\n")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_the_create_admin_command_needs_promote_existing_for_a_taken_email(
    postgres: EmbeddedPostgres, service: IdentityService, tmp_path: Path
) -> None:
    address = email()
    await service.register("Got Here First", address, "squatter password")
    session = await service.login(address, "squatter password")
    code, out = await create_admin_cli(postgres, tmp_path, "--email", address)
    assert code != 0
    assert "exists" in out
    assert "--promote-existing" in out
    assert (await service.login(address, "squatter password")).role == "user"

    code, out = await create_admin_cli(postgres, tmp_path, "--email", address, "--promote-existing")
    assert code == 0, out
    assert f"promoted admin {address}" in out
    assert (await service.login(address, "operator password")).role == "admin"
    with pytest.raises(TokenRejected):
        await service.refresh(session.refresh.token)

    fresh = email()
    code, out = await create_admin_cli(postgres, tmp_path, "--email", fresh)
    assert code == 0, out
    assert f"created admin {fresh}" in out


def budgeted(settings: Settings, failures: int = 3) -> Settings:
    return replace(settings, auth=replace(settings.auth, login_failures_per_email=failures))


async def test_failed_logins_past_the_budget_are_refused_even_with_the_right_password(
    pool: asyncpg.Pool, service: IdentityService, settings: Settings
) -> None:
    address = email()
    await service.register("Guess Me", address, "the password")
    # Two replicas of the users worker: the budget is Postgres's, so they share it.
    first, second = (
        IdentityService(pool, budgeted(settings), Passwords(settings.auth)) for _ in range(2)
    )
    await first.login(address, "the password")
    for replica in (first, second, first):
        with pytest.raises(InvalidCredentials):
            await replica.login(address, "a guess")
    for replica in (second, first):
        with pytest.raises(LoginThrottled) as refused:
            await replica.login(address.upper(), "the password")
        assert 1 <= refused.value.retry_after_s <= settings.auth.login_failure_window_s

    # Once the window is over, the email may try again.
    await pool.execute(
        "UPDATE login_budgets SET window_start = now() - interval '1 hour' "
        "WHERE email_key = sha256(convert_to(lower($1), 'UTF8'))",
        address,
    )
    assert (await second.login(address, "the password")).role == "user"


async def test_an_unknown_email_is_throttled_like_an_account(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    service = IdentityService(pool, budgeted(settings), Passwords(settings.auth))
    address = email()
    for _ in range(3):
        with pytest.raises(InvalidCredentials):
            await service.login(address, "a guess")
    with pytest.raises(LoginThrottled):
        await service.login(address, "a guess")


async def test_parallel_guesses_cannot_overrun_the_budget(
    pool: asyncpg.Pool, service: IdentityService, settings: Settings
) -> None:
    address = email()
    await service.register("Many Guesses", address, "the password")
    budget = IdentityService(pool, budgeted(settings), Passwords(settings.auth))
    results = await asyncio.gather(
        *(budget.login(address, f"guess {i}") for i in range(10)), return_exceptions=True
    )
    assert sum(isinstance(r, InvalidCredentials) for r in results) == 3
    assert sum(isinstance(r, LoginThrottled) for r in results) == 7


async def test_prune_deletes_what_expired_over_a_day_ago_in_batches(
    pool: asyncpg.Pool, service: IdentityService, settings: Settings
) -> None:
    address = email()
    user = await service.register("Old Sessions", address, "a password")
    live = await service.login(address, "a password")
    dead_family, old_jtis = uuid.uuid4(), [uuid.uuid4() for _ in range(3)]
    await pool.execute(
        "INSERT INTO refresh_families (family_id, user_id, expires_at, revoked_at) "
        "VALUES ($1, $2, now() - interval '2 days', now() - interval '20 days')",
        dead_family,
        user.id,
    )
    for jti in old_jtis:
        await pool.execute(
            "INSERT INTO refresh_tokens (jti, family_id, user_id, expires_at) "
            "VALUES ($1, $2, $3, now() - interval '2 days')",
            jti,
            dead_family,
            user.id,
        )
    # A live family's first tokens, used and expired long ago.
    rotated = [uuid.uuid4() for _ in range(3)]
    for jti in rotated:
        await pool.execute(
            "INSERT INTO refresh_tokens (jti, family_id, user_id, expires_at, used_at) "
            "SELECT $1, family_id, user_id, now() - interval '25 hours', "
            "now() - interval '30 days' FROM refresh_tokens WHERE jti = $2",
            jti,
            live.refresh.jti,
        )
    # Within the day's margin, kept.
    recent = uuid.uuid4()
    await pool.execute(
        "INSERT INTO refresh_tokens (jti, family_id, user_id, expires_at) "
        "SELECT $1, family_id, user_id, now() - interval '1 hour' FROM refresh_tokens "
        "WHERE jti = $2",
        recent,
        live.refresh.jti,
    )
    ended, current = email(), email()
    for who, started in ((ended, "now() - interval '1 hour'"), (current, "now()")):
        await pool.execute(
            "INSERT INTO login_budgets (email_key, window_start, failures) "
            f"VALUES (sha256(convert_to(lower($1), 'UTF8')), {started}, 5)",
            who,
        )

    assert await service.prune_batch(1) <= 3
    left = await pool.fetchval("SELECT count(*) FROM refresh_tokens WHERE jti = ANY($1)", rotated)
    assert left >= len(rotated) - 1
    assert await service.prune() >= 1

    jtis = {
        r["jti"]
        for r in await pool.fetch("SELECT jti FROM refresh_tokens WHERE user_id = $1", user.id)
    }
    assert jtis == {live.refresh.jti, recent}
    assert dead_family not in {f["family_id"] for f in await families(pool, user.id)}
    budgets = await pool.fetchval(
        "SELECT count(*) FROM login_budgets WHERE email_key IN "
        "(sha256(convert_to(lower($1), 'UTF8')), sha256(convert_to(lower($2), 'UTF8')))",
        ended,
        current,
    )
    assert budgets == 1
    assert (await service.refresh(live.refresh.token)).role == "user"


async def test_migration_0009_gives_the_tokens_already_issued_their_families(
    postgres: EmbeddedPostgres, settings: Settings
) -> None:
    name = f"m_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres.dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await apply(conn, [m for m in load_migrations() if m.version < "0009"])
            user_id = await conn.fetchval(
                "INSERT INTO users (full_name, email) VALUES ('Be Fore', 'before@example.com') "
                "RETURNING id"
            )
            live, revoked = uuid.uuid4(), uuid.uuid4()
            token = tokens.mint(settings, sub=str(user_id), typ="refresh", ttl_s=3600, family=live)
            insert = (
                "INSERT INTO refresh_tokens (jti, family_id, user_id, expires_at, revoked_at) "
                "VALUES ($1, $2, $3, $4, $5)"
            )
            await conn.execute(insert, uuid.uuid4(), live, user_id, token.expires_at, None)
            await conn.execute(insert, token.jti, live, user_id, token.expires_at, None)
            await conn.execute(
                insert, uuid.uuid4(), revoked, user_id, token.expires_at, token.expires_at
            )
            assert await apply(conn, load_migrations()) == [
                m.version for m in load_migrations() if m.version >= "0009"
            ]
            rows = {
                r["family_id"]: r
                for r in await conn.fetch(
                    "SELECT * FROM refresh_families WHERE user_id = $1", user_id
                )
            }
        finally:
            await conn.close()
        assert set(rows) == {live, revoked}
        assert rows[live]["revoked_at"] is None
        assert rows[live]["expires_at"] == token.expires_at
        assert rows[revoked]["revoked_at"] is not None

        pool = await create_pool(dsn, max_size=2)
        try:
            migrated = IdentityService(pool, settings, Passwords(settings.auth))
            successor = await migrated.refresh(token.token)
            await migrated.logout(successor.refresh.token)
            with pytest.raises(TokenRejected):
                await migrated.refresh(successor.refresh.token)
        finally:
            await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
