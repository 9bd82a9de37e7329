"""Account hardening on a real PostgreSQL: login, refresh/logout, create-admin, the login budget."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from agents.common.settings import Settings
from agents.users.errors import TokenRejected
from agents.users.passwords import Passwords
from agents.users.service import IdentityService
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
