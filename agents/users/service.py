"""Identity: accounts, password and OAuth logins, rotating refresh tokens."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from agents.common import tokens
from agents.common.settings import OAuthProvider, Settings
from agents.users import oauth
from agents.users.errors import (
    AccountExists,
    EmailTaken,
    InvalidCredentials,
    LoginThrottled,
    OAuthFailed,
    ProviderNotConfigured,
    TokenRejected,
    UnknownProvider,
    UserNotFound,
)
from agents.users.passwords import Passwords
from agents.users.repository import UserRow, UsersUnitOfWork
from topics import USERS_EVENTS
from topics.users import UserRegistered, UserRoleChanged

OAUTH_STATE_TTL_S = 600.0
# Rows are kept a day past their expiry, so that a clock ahead or behind never meets a pruned one.
PRUNE_MARGIN_S = 24 * 3600.0
PRUNE_BATCH = 1000


@dataclass(frozen=True)
class Tokens:
    access: tokens.IssuedToken
    refresh: tokens.IssuedToken
    role: str


def _now() -> datetime:
    return datetime.now(UTC)


class IdentityService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        passwords: Passwords,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._passwords = passwords
        self._on_commit = on_commit

    def _uow(self) -> UsersUnitOfWork:
        return UsersUnitOfWork(self._pool)

    async def _registered(self, uow: UsersUnitOfWork, user: UserRow, provider: str) -> None:
        event = UserRegistered(
            event_id=uuid.uuid4(),
            occurred_at=_now(),
            user_id=user.id,
            email=user.email,
            full_name=user.full_name,
            provider=provider,
        )
        await uow.outbox.add(USERS_EVENTS.name, str(user.id), event)

    async def _issue(
        self, uow: UsersUnitOfWork, user: UserRow, family: uuid.UUID | None = None
    ) -> Tokens:
        auth = self._settings.auth
        new_family = family is None
        family = family or uuid.uuid4()
        access = tokens.mint(
            self._settings, sub=str(user.id), typ="access", ttl_s=auth.access_ttl_s, role=user.role
        )
        refresh = tokens.mint(
            self._settings, sub=str(user.id), typ="refresh", ttl_s=auth.refresh_ttl_s, family=family
        )
        if new_family:
            await uow.refresh_tokens.add_family(family, user.id, refresh.expires_at)
        else:
            await uow.refresh_tokens.extend_family(family, refresh.expires_at)
        await uow.refresh_tokens.add(refresh.jti, family, user.id, refresh.expires_at)
        return Tokens(access, refresh, user.role)

    async def register(self, full_name: str, email: str, password: str) -> UserRow:
        hashed = await self._passwords.hash(password)
        try:
            async with self._uow() as uow:
                user = await uow.users.add(full_name, email, hashed)
                await self._registered(uow, user, "password")
                await uow.commit()
        except asyncpg.UniqueViolationError:
            raise EmailTaken() from None
        self._on_commit()
        return user

    async def login(self, email: str, password: str) -> Tokens:
        """Check a password against the email's budget of failed logins.

        Every attempt that the budget lets through verifies one hash (a decoy when the account
        is unknown or has no password) and holds no connection while it does: a burst of logins
        waiting for a hashing slot cannot take the pool from other calls.
        """
        auth = self._settings.auth
        async with self._uow() as uow:
            attempt = await uow.login_budgets.spend(
                email, auth.login_failures_per_email, auth.login_failure_window_s
            )
            user = await uow.users.by_email(email)
            await uow.commit()
        if attempt.failures > auth.login_failures_per_email:
            raise LoginThrottled(max(1, attempt.wait_s))
        hashed = user.password_hash if user else None
        if not await self._passwords.verify(hashed, password) or user is None:
            raise InvalidCredentials()
        assert hashed is not None
        rehashed = None
        if self._passwords.needs_rehash(hashed):
            rehashed = await self._passwords.hash(password)
        async with self._uow() as uow:
            user = await uow.users.lock(user.id)
            if user is None or user.password_hash != hashed:
                raise InvalidCredentials()
            await uow.login_budgets.refund(email, attempt)
            if rehashed is not None:
                await uow.users.set_password_hash(user.id, rehashed)
            issued = await self._issue(uow, user)
            await uow.commit()
        return issued

    def _refresh_claims(self, token: str) -> tuple[uuid.UUID, uuid.UUID]:
        try:
            claims = tokens.decode(self._settings, token, "refresh")
            return uuid.UUID(claims["jti"]), uuid.UUID(claims["fam"])
        except (tokens.InvalidToken, ValueError) as e:
            raise TokenRejected(f"invalid refresh token: {e}") from None

    async def refresh(self, token: str) -> Tokens:
        """Rotate: the token is used up and a successor issued in its family.

        A second use within the leeway (two tabs refreshing at once) is refused without harm;
        a later one is a stolen token being replayed, so the whole family is revoked.
        """
        jti, family = self._refresh_claims(token)
        async with self._uow() as uow:
            family_row = await uow.refresh_tokens.lock_family(family)
            if family_row is None or family_row.revoked_at is not None:
                raise TokenRejected("the refresh token was revoked")
            row = await uow.refresh_tokens.lock(jti)
            if row is None or row.family_id != family or row.revoked_at is not None:
                raise TokenRejected("the refresh token was revoked")
            if row.used_at is not None:
                age = (_now() - row.used_at).total_seconds()
                if age > self._settings.auth.reuse_leeway_s:
                    await uow.refresh_tokens.revoke_family(row.family_id)
                    await uow.commit()
                    raise TokenRejected("a used refresh token came back: its family is revoked")
                raise TokenRejected("the refresh token was already rotated")
            user = await uow.users.by_id(row.user_id)
            if user is None:
                raise TokenRejected("the account is gone")
            issued = await self._issue(uow, user, family=row.family_id)
            await uow.refresh_tokens.mark_used(jti, issued.refresh.jti)
            await uow.commit()
        return issued

    async def logout(self, token: str) -> None:
        _, family = self._refresh_claims(token)
        async with self._uow() as uow:
            if await uow.refresh_tokens.lock_family(family) is not None:
                await uow.refresh_tokens.revoke_family(family)
            await uow.commit()

    async def user(self, user_id: int) -> UserRow:
        async with self._uow() as uow:
            user = await uow.users.by_id(user_id)
            if user is None:
                raise UserNotFound(user_id)
            identity = await uow.users.first_identity(user_id)
        if identity is None:
            return user
        return UserRow(**{**user.__dict__, "provider": identity[0], "provider_id": identity[1]})

    def _provider(self, name: str) -> OAuthProvider:
        provider = self._settings.auth.providers.get(name)
        if provider is None:
            raise UnknownProvider(name)
        if not provider.configured:
            raise ProviderNotConfigured(name, provider.missing_settings)
        return provider

    def oauth_providers(self) -> list[str]:
        """The providers a login may use here: those with a client configured."""
        return [p.name for p in self._settings.auth.providers.values() if p.configured]

    async def oauth_start(self, provider_name: str) -> str:
        provider = self._provider(provider_name)
        state, verifier = oauth.new_state(), oauth.new_code_verifier()
        async with self._uow() as uow:
            await uow.oauth_states.put(
                state, provider.name, verifier, provider.redirect_url, OAUTH_STATE_TTL_S
            )
            await uow.commit()
        return oauth.authorization_url(provider, state, verifier)

    async def oauth_callback(self, provider_name: str, code: str, state: str) -> Tokens:
        provider = self._provider(provider_name)
        async with self._uow() as uow:
            taken = await uow.oauth_states.take(state, provider.name)
            await uow.commit()
        if taken is None:
            raise OAuthFailed("unknown, used or expired state")
        verifier, redirect_uri = taken
        if redirect_uri != provider.redirect_url:
            raise OAuthFailed("the redirect URI changed since the login started")
        profile = await oauth.fetch_profile(provider, code, verifier)
        async with self._uow() as uow:
            user = await uow.users.by_identity(provider.name, profile.provider_id)
            if user is None:
                if profile.verified_email:
                    user = await uow.users.by_email(profile.verified_email)
                if user is None:
                    name = (
                        profile.name
                        or (profile.verified_email or "").split("@")[0]
                        or f"{provider.name} user"
                    )
                    user = await uow.users.add(name[:100], profile.verified_email, None)
                    await self._registered(uow, user, provider.name)
                await uow.users.link(
                    provider.name, profile.provider_id, user.id, profile.verified_email
                )
            issued = await self._issue(uow, user)
            await uow.commit()
        self._on_commit()
        return issued

    async def create_admin(
        self, email: str, password: str, full_name: str, *, promote_existing: bool = False
    ) -> tuple[UserRow, bool]:
        """Create an admin account with this email and password; True when created.

        An account someone already registered with the email is taken over only when asked
        (`promote_existing`): it gets the given password, the admin role, and every session of
        whoever had it before is revoked.
        """
        hashed = await self._passwords.hash(password)
        async with self._uow() as uow:
            user = await uow.users.by_email(email)
            created = user is None
            if user is None:
                user = await uow.users.add(full_name, email, hashed, role="admin")
                await self._registered(uow, user, "password")
            elif not promote_existing:
                raise AccountExists(email)
            else:
                await uow.users.set_password_hash(user.id, hashed)
                await uow.users.set_role(user.id, "admin")
                await uow.refresh_tokens.revoke_all_of(user.id)
            event = UserRoleChanged(
                event_id=uuid.uuid4(), occurred_at=_now(), user_id=user.id, role="admin"
            )
            await uow.outbox.add(USERS_EVENTS.name, str(user.id), event)
            await uow.commit()
        self._on_commit()
        return user, created

    async def prune_batch(self, batch: int) -> int:
        """Delete up to `batch` rows of each: refresh tokens and families expired more than a
        day ago (a family with its tokens), and login budgets whose window ended."""
        async with self._uow() as uow:
            pruned = await uow.refresh_tokens.prune(PRUNE_MARGIN_S, batch)
            pruned += await uow.login_budgets.prune(
                self._settings.auth.login_failure_window_s, batch
            )
            await uow.commit()
        return pruned

    async def prune(self, batch: int = PRUNE_BATCH) -> int:
        """Everything prune_batch deletes, one short transaction a batch; how many rows went."""
        total = 0
        while pruned := await self.prune_batch(batch):
            total += pruned
        return total
