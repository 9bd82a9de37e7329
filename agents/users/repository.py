"""Identity's SQL, and the unit of work that gives the service its repositories."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from agents.common.db import PgUnitOfWork

USER_COLUMNS = (
    "u.id, u.full_name, u.email, u.role, u.password_hash, u.created_at, u.updated_at, "
    "u.email_verified_at"
)
INSERT_USER = """
INSERT INTO users (full_name, email, password_hash, role, email_verified_at)
VALUES ($1, $2, $3, $4, CASE WHEN $5::boolean THEN now() END)
RETURNING id, full_name, email, role, password_hash, created_at, updated_at, email_verified_at
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
# A login's writes hold the account's row: a password set meanwhile (create-admin) waits for the
# login to commit, or the login sees the new hash and fails.
LOCK_BY_ID = f"{BY_ID} FOR NO KEY UPDATE"

# Only while the account still has the address the proof was for.
MARK_VERIFIED = f"""
UPDATE users u SET email_verified_at = coalesce(u.email_verified_at, now())
WHERE u.id = $1 AND lower(u.email) = lower($2)
RETURNING {USER_COLUMNS}
"""

PUT_VERIFICATION = """
INSERT INTO email_verifications (token_hash, user_id, email, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4))
"""
TAKE_VERIFICATION = """
DELETE FROM email_verifications WHERE token_hash = $1
RETURNING user_id, email, expires_at > now() AS live
"""
FORGET_VERIFICATIONS = "DELETE FROM email_verifications WHERE user_id = $1"
PRUNE_VERIFICATIONS = "DELETE FROM email_verifications WHERE expires_at <= now()"

INSERT_FAMILY = """
INSERT INTO refresh_families (family_id, user_id, expires_at) VALUES ($1, $2, $3)
"""
EXTEND_FAMILY = "UPDATE refresh_families SET expires_at = $2 WHERE family_id = $1"
# Refresh and logout lock the family first, then its tokens: a refresh that commits before a
# logout has its new token revoked by it, one after it finds the family revoked.
LOCK_FAMILY = """
SELECT family_id, user_id, revoked_at, expires_at FROM refresh_families
WHERE family_id = $1 FOR UPDATE
"""
INSERT_REFRESH = """
INSERT INTO refresh_tokens (jti, family_id, user_id, expires_at) VALUES ($1, $2, $3, $4)
"""
LOCK_REFRESH = """
SELECT jti, family_id, user_id, used_at, revoked_at, expires_at FROM refresh_tokens
WHERE jti = $1 FOR UPDATE
"""
MARK_USED = "UPDATE refresh_tokens SET used_at = now(), replaced_by = $2 WHERE jti = $1"
REVOKE_FAMILY = """
WITH family AS (
    UPDATE refresh_families SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL
)
UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL
"""
REVOKE_FAMILIES_OF = """
UPDATE refresh_families SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL
"""
REVOKE_TOKENS_OF = """
UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL
"""
# Past its expiry (and a day's margin for clocks) a token's JWT is refused before any lookup.
PRUNE_TOKENS = """
DELETE FROM refresh_tokens WHERE jti IN (
    SELECT jti FROM refresh_tokens WHERE expires_at < now() - make_interval(secs => $1)
    LIMIT $2 FOR UPDATE SKIP LOCKED
)
"""
PRUNE_FAMILIES = """
DELETE FROM refresh_families WHERE family_id IN (
    SELECT family_id FROM refresh_families WHERE expires_at < now() - make_interval(secs => $1)
    LIMIT $2 FOR UPDATE SKIP LOCKED
)
"""

# The budget is keyed by the email as the login looks it up (Postgres's lower()), hashed: the
# same bucket for every spelling that reaches the account, and no stored list of typed emails.
EMAIL_KEY = "sha256(convert_to(lower($1), 'UTF8'))"
# An attempt is counted before its password is checked; the count stops one past the budget,
# which marks the attempts refused.
SPEND_ATTEMPT = f"""
INSERT INTO login_budgets AS b (email_key, window_start, failures) VALUES ({EMAIL_KEY}, now(), 1)
ON CONFLICT (email_key) DO UPDATE SET
    window_start = CASE
        WHEN b.window_start <= now() - make_interval(secs => $2) THEN now() ELSE b.window_start
    END,
    failures = CASE
        WHEN b.window_start <= now() - make_interval(secs => $2) THEN 1
        WHEN b.failures <= $3 THEN b.failures + 1
        ELSE b.failures
    END
RETURNING failures, window_start,
    ceil(extract(epoch FROM b.window_start + make_interval(secs => $2) - now()))::int AS wait_s
"""
REFUND_ATTEMPT = f"""
UPDATE login_budgets SET failures = failures - 1
WHERE email_key = {EMAIL_KEY} AND window_start = $2 AND failures > 0
"""
PRUNE_BUDGETS = """
DELETE FROM login_budgets WHERE email_key IN (
    SELECT email_key FROM login_budgets WHERE window_start < now() - make_interval(secs => $1)
    LIMIT $2 FOR UPDATE SKIP LOCKED
)
"""

PUT_STATE = """
INSERT INTO oauth_states
    (state, provider, code_verifier, redirect_uri, expires_at, nonce_hash, link_user_id)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6, $7)
"""
TAKE_STATE = """
DELETE FROM oauth_states WHERE state = $1 AND provider = $2 AND expires_at > now()
RETURNING code_verifier, redirect_uri, nonce_hash, link_user_id
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
    email_verified_at: datetime | None = None
    provider: str = ""
    provider_id: str = ""


@dataclass(frozen=True)
class FamilyRow:
    family_id: uuid.UUID
    user_id: int
    revoked_at: datetime | None
    expires_at: datetime


@dataclass(frozen=True)
class Attempt:
    """A login attempt counted against its email's budget."""

    failures: int
    window_start: datetime
    wait_s: int


@dataclass(frozen=True)
class RefreshRow:
    jti: uuid.UUID
    family_id: uuid.UUID
    user_id: int
    used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime


def _count(status: str) -> int:
    """The rows of a command's status line (`DELETE 3`)."""
    return int(status.rsplit(" ", 1)[-1])


def _user(row: asyncpg.Record | None) -> UserRow | None:
    return None if row is None else UserRow(**dict(row))


class UserRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add(
        self,
        full_name: str,
        email: str | None,
        password_hash: str | None,
        role: str = "user",
        *,
        email_verified: bool = False,
    ) -> UserRow:
        row = await self._conn.fetchrow(
            INSERT_USER, full_name, email, password_hash, role, email_verified
        )
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

    async def lock(self, user_id: int) -> UserRow | None:
        return _user(await self._conn.fetchrow(LOCK_BY_ID, user_id))

    async def mark_email_verified(self, user_id: int, email: str) -> UserRow | None:
        """The account, now verified; None if its email is no longer `email`."""
        return _user(await self._conn.fetchrow(MARK_VERIFIED, user_id, email))


class EmailVerificationRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def put(self, token_hash: bytes, user_id: int, email: str, ttl_s: float) -> None:
        await self._conn.execute(PRUNE_VERIFICATIONS)
        await self._conn.execute(PUT_VERIFICATION, token_hash, user_id, email, ttl_s)

    async def take(self, token_hash: bytes) -> tuple[int, str] | None:
        """The account and address a live token was sent for, once: a used or expired token
        finds nothing (and is gone)."""
        row = await self._conn.fetchrow(TAKE_VERIFICATION, token_hash)
        if row is None or not row["live"]:
            return None
        return row["user_id"], row["email"]

    async def forget(self, user_id: int) -> None:
        await self._conn.execute(FORGET_VERIFICATIONS, user_id)


class RefreshTokenRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add_family(self, family: uuid.UUID, user_id: int, expires_at: datetime) -> None:
        await self._conn.execute(INSERT_FAMILY, family, user_id, expires_at)

    async def extend_family(self, family: uuid.UUID, expires_at: datetime) -> None:
        await self._conn.execute(EXTEND_FAMILY, family, expires_at)

    async def lock_family(self, family: uuid.UUID) -> FamilyRow | None:
        row = await self._conn.fetchrow(LOCK_FAMILY, family)
        return None if row is None else FamilyRow(**dict(row))

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

    async def revoke_all_of(self, user_id: int) -> None:
        await self._conn.execute(REVOKE_FAMILIES_OF, user_id)
        await self._conn.execute(REVOKE_TOKENS_OF, user_id)

    async def prune(self, margin_s: float, batch: int) -> int:
        """Delete up to `batch` tokens, then families, expired more than `margin_s` ago."""
        tokens = await self._conn.execute(PRUNE_TOKENS, margin_s, batch)
        families = await self._conn.execute(PRUNE_FAMILIES, margin_s, batch)
        return _count(tokens) + _count(families)


class LoginBudgetRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def spend(self, email: str, limit: int, window_s: float) -> Attempt:
        row = await self._conn.fetchrow(SPEND_ATTEMPT, email, window_s, limit)
        return Attempt(**dict(row))

    async def refund(self, email: str, attempt: Attempt) -> None:
        await self._conn.execute(REFUND_ATTEMPT, email, attempt.window_start)

    async def prune(self, window_s: float, batch: int) -> int:
        """Delete up to `batch` budgets whose window ended."""
        return _count(await self._conn.execute(PRUNE_BUDGETS, window_s, batch))


@dataclass(frozen=True)
class PendingLogin:
    """An OAuth login between its start and its callback."""

    code_verifier: str
    redirect_uri: str
    nonce_hash: bytes
    link_user_id: int | None


class OAuthStateRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def put(
        self,
        state: str,
        provider: str,
        login: PendingLogin,
        ttl_s: float,
    ) -> None:
        await self._conn.execute(PRUNE_STATES)
        await self._conn.execute(
            PUT_STATE,
            state,
            provider,
            login.code_verifier,
            login.redirect_uri,
            ttl_s,
            login.nonce_hash,
            login.link_user_id,
        )

    async def take(self, state: str, provider: str) -> PendingLogin | None:
        """The login this state started, once: a second take finds nothing."""
        row = await self._conn.fetchrow(TAKE_STATE, state, provider)
        return None if row is None else PendingLogin(**dict(row))


class UsersUnitOfWork(PgUnitOfWork):
    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool, "users")

    def bind(self, conn: asyncpg.Connection) -> None:
        super().bind(conn)
        self.users = UserRepository(conn)
        self.refresh_tokens = RefreshTokenRepository(conn)
        self.oauth_states = OAuthStateRepository(conn)
        self.login_budgets = LoginBudgetRepository(conn)

        self.email_verifications = EmailVerificationRepository(conn)
