"""Password login in the users domain with an in-memory unit of work: one hash verified per try."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
import pytest
from argon2 import PasswordHasher

from agents.common.settings import Settings
from agents.users.errors import InvalidCredentials, LoginThrottled
from agents.users.passwords import Passwords
from agents.users.repository import Attempt, UserRow
from agents.users.service import IdentityService
from tests.unit.fakes import FakeTransaction

SETTINGS = Settings.from_env({"JWT_SECRET": "k" * 64, "LOGIN_FAILURES_PER_EMAIL": "3"})
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
NO_POOL = cast(asyncpg.Pool, None)


class FakeUsers:
    def __init__(self, rows: dict[str, UserRow]) -> None:
        self.rows = rows

    async def by_email(self, email: str) -> UserRow | None:
        return self.rows.get(email.lower())

    async def lock(self, user_id: int) -> UserRow | None:
        return next((u for u in self.rows.values() if u.id == user_id), None)


class FakeBudgets:
    """Counts every attempt of an email, as the SQL does, and never forgets within a test."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}

    async def spend(self, email: str, limit: int, window_s: float) -> Attempt:
        key = email.lower()
        self.attempts[key] = min(self.attempts.get(key, 0) + 1, limit + 1)
        return Attempt(failures=self.attempts[key], window_start=NOW, wait_s=int(window_s))

    async def refund(self, email: str, attempt: Attempt) -> None:
        self.attempts[email.lower()] -= 1


class FakeRefreshTokens:
    async def add_family(self, *args: Any) -> None:
        return None

    async def add(self, *args: Any) -> None:
        return None


class FakeUnitOfWork(FakeTransaction):
    def __init__(self, users: FakeUsers, budgets: FakeBudgets) -> None:
        self.users, self.login_budgets = users, budgets
        self.refresh_tokens = FakeRefreshTokens()


class FakeIdentityService(IdentityService):
    def __init__(self, passwords: Passwords, rows: dict[str, UserRow]) -> None:
        super().__init__(NO_POOL, SETTINGS, passwords)
        self.users, self.budgets = FakeUsers(rows), FakeBudgets()

    def _uow(self) -> Any:
        return FakeUnitOfWork(self.users, self.budgets)


def user(user_id: int, email: str, password_hash: str | None) -> UserRow:
    return UserRow(user_id, "Some One", email, "user", password_hash, NOW, NOW)


@pytest.fixture
def verifies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hashes argon2 checked, in order, however Passwords reached it."""
    checked: list[str] = []
    real = PasswordHasher.verify

    def counting(self: PasswordHasher, hash: str | bytes, password: str | bytes) -> bool:
        checked.append(str(hash))
        return real(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", counting)
    return checked


@pytest.fixture(scope="module")
def passwords() -> Passwords:
    return Passwords(SETTINGS.auth)


@pytest.fixture(scope="module")
async def service(passwords: Passwords) -> FakeIdentityService:
    hashed = await passwords.hash("right password")
    return FakeIdentityService(
        passwords,
        {
            "has@example.com": user(1, "has@example.com", hashed),
            "oauth@example.com": user(2, "oauth@example.com", None),
        },
    )


@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("nobody@example.com", "right password"),
        ("oauth@example.com", "right password"),
        ("has@example.com", "wrong password"),
    ],
    ids=["unknown email", "account without a password", "wrong password"],
)
async def test_every_failed_login_verifies_one_hash(
    service: FakeIdentityService, verifies: list[str], email: str, password: str
) -> None:
    with pytest.raises(InvalidCredentials, match="wrong email or password"):
        await service.login(email, password)
    assert len(verifies) == 1


async def test_a_right_password_verifies_its_own_hash_once(
    service: FakeIdentityService, verifies: list[str]
) -> None:
    issued = await service.login("HAS@example.com", "right password")
    assert issued.role == "user"
    assert verifies == [service.users.rows["has@example.com"].password_hash]


async def test_past_the_budget_no_hash_is_verified_even_for_the_right_password(
    passwords: Passwords, verifies: list[str]
) -> None:
    hashed = await passwords.hash("right password")
    service = FakeIdentityService(
        passwords, {"has@example.com": user(1, "has@example.com", hashed)}
    )
    for _ in range(3):
        with pytest.raises(InvalidCredentials):
            await service.login("has@example.com", "a guess")
    assert len(verifies) == 3
    with pytest.raises(LoginThrottled) as refused:
        await service.login("Has@Example.com", "right password")
    assert refused.value.retry_after_s == int(SETTINGS.auth.login_failure_window_s)
    assert len(verifies) == 3
