"""Identity's SQL, and the unit of work that gives the service its repositories."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from agents.common.db import PgUnitOfWork

USER_COLUMNS = "u.id, u.full_name, u.email, u.role, u.password_hash, u.created_at, u.updated_at"
INSERT_USER = """
INSERT INTO users (full_name, email, password_hash, role) VALUES ($1, $2, $3, $4)
RETURNING id, full_name, email, role, password_hash, created_at, updated_at
"""
BY_EMAIL = f"SELECT {USER_COLUMNS} FROM users u WHERE lower(u.email) = lower($1)"
BY_ID = f"SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1"
BY_IDENTITY = f"""
SELECT {USER_COLUMNS} FROM users u JOIN user_identities i ON i.user_id = u.id
WHERE i.provider = $1 AND i.provider_id = $2
"""
FIRST_IDENTITY = """
SELECT provider, provider_id FROM user_identities WHERE user_id = $1 ORDER BY created_at LIMIT 1
"""
LINK = """
INSERT INTO user_identities (provider, provider_id, user_id, email) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING
"""
SET_HASH = "UPDATE users SET password_hash = $2 WHERE id = $1"
SET_ROLE = "UPDATE users SET role = $2 WHERE id = $1"

INSERT_REFRESH = """
INSERT INTO refresh_tokens (jti, family_id, user_id, expires_at) VALUES ($1, $2, $3, $4)
"""
LOCK_REFRESH = """
SELECT jti, family_id, user_id, used_at, revoked_at, expires_at FROM refresh_tokens
WHERE jti = $1 FOR UPDATE
"""
MARK_USED = "UPDATE refresh_tokens SET used_at = now(), replaced_by = $2 WHERE jti = $1"
REVOKE_FAMILY = """
UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL
"""

PUT_STATE = """
INSERT INTO oauth_states (state, provider, code_verifier, redirect_uri, expires_at)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
"""
TAKE_STATE = """
DELETE FROM oauth_states WHERE state = $1 AND provider = $2 AND expires_at > now()
RETURNING code_verifier, redirect_uri
"""
PRUNE_STATES = "DELETE FROM oauth_states WHERE expires_at <= now()"


@dataclass(frozen=True)
class UserRow:
    id: int
    full_name: str
    email: str | None
    role: str
    password_hash: str | None
    created_at: datetime
    updated_at: datetime
    provider: str = ""
    provider_id: str = ""


@dataclass(frozen=True)
class RefreshRow:
    jti: uuid.UUID
    family_id: uuid.UUID
    user_id: int
    used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime


def _user(row: asyncpg.Record | None) -> UserRow | None:
    return None if row is None else UserRow(**dict(row))


class UserRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add(
        self, full_name: str, email: str | None, password_hash: str | None, role: str = "user"
    ) -> UserRow:
        row = await self._conn.fetchrow(INSERT_USER, full_name, email, password_hash, role)
        user = _user(row)
        assert user is not None
        return user

    async def by_email(self, email: str) -> UserRow | None:
        return _user(await self._conn.fetchrow(BY_EMAIL, email))

    async def by_id(self, user_id: int) -> UserRow | None:
        return _user(await self._conn.fetchrow(BY_ID, user_id))

    async def by_identity(self, provider: str, provider_id: str) -> UserRow | None:
        return _user(await self._conn.fetchrow(BY_IDENTITY, provider, provider_id))

    async def first_identity(self, user_id: int) -> tuple[str, str] | None:
        row = await self._conn.fetchrow(FIRST_IDENTITY, user_id)
        return None if row is None else (row["provider"], row["provider_id"])

    async def link(self, provider: str, provider_id: str, user_id: int, email: str | None) -> None:
        await self._conn.execute(LINK, provider, provider_id, user_id, email)

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        await self._conn.execute(SET_HASH, user_id, password_hash)

    async def set_role(self, user_id: int, role: str) -> None:
        await self._conn.execute(SET_ROLE, user_id, role)


class RefreshTokenRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add(
        self, jti: uuid.UUID, family: uuid.UUID, user_id: int, expires_at: datetime
    ) -> None:
        await self._conn.execute(INSERT_REFRESH, jti, family, user_id, expires_at)

    async def lock(self, jti: uuid.UUID) -> RefreshRow | None:
        row = await self._conn.fetchrow(LOCK_REFRESH, jti)
        return None if row is None else RefreshRow(**dict(row))

    async def mark_used(self, jti: uuid.UUID, successor: uuid.UUID) -> None:
        await self._conn.execute(MARK_USED, jti, successor)

    async def revoke_family(self, family: uuid.UUID) -> None:
        await self._conn.execute(REVOKE_FAMILY, family)


class OAuthStateRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def put(
        self, state: str, provider: str, verifier: str, redirect_uri: str, ttl_s: float
    ) -> None:
        await self._conn.execute(PRUNE_STATES)
        await self._conn.execute(PUT_STATE, state, provider, verifier, redirect_uri, ttl_s)

    async def take(self, state: str, provider: str) -> tuple[str, str] | None:
        """The state's PKCE verifier and redirect URI, once: a second take finds nothing."""
        row = await self._conn.fetchrow(TAKE_STATE, state, provider)
        return None if row is None else (row["code_verifier"], row["redirect_uri"])


class UsersUnitOfWork(PgUnitOfWork):
    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool, "users")

    def bind(self, conn: asyncpg.Connection) -> None:
        super().bind(conn)
        self.users = UserRepository(conn)
        self.refresh_tokens = RefreshTokenRepository(conn)
        self.oauth_states = OAuthStateRepository(conn)
