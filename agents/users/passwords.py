"""argon2id password hashes, checked off the event loop."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from agents.common.settings import AuthSettings

# Each hash holds ARGON2_MEMORY_KIB of memory: a burst of logins must not multiply it unboundedly.
MAX_CONCURRENT_HASHES = 4


class Passwords:
    def __init__(self, auth: AuthSettings) -> None:
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_HASHES)
        self._hasher = PasswordHasher(
            time_cost=auth.argon2_time_cost,
            memory_cost=auth.argon2_memory_kib,
            parallelism=auth.argon2_parallelism,
            type=Type.ID,
        )
        # Checked when the email is unknown, so that case takes as long as a wrong password.
        self._decoy = self._hasher.hash("decoy password, never a real one")

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, hashed: str | None, password: str) -> bool:
        def check() -> bool:
            try:
                return self._hasher.verify(hashed or self._decoy, password) and hashed is not None
            except (VerificationError, InvalidHashError):
                return False

        async with self._slots:
            return await asyncio.to_thread(check)

    def needs_rehash(self, hashed: str) -> bool:
        return self._hasher.check_needs_rehash(hashed)
