"""Identity: accounts, password and OAuth logins, rotating refresh tokens."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
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
    AlreadyVerified,
    EmailTaken,
    IdentityTaken,
    InvalidCredentials,
    LinkRefused,
    LoginThrottled,
    NoEmail,
    OAuthBrowserMismatch,
    OAuthFailed,
    ProviderNotConfigured,
    TokenRejected,
    UnknownProvider,
    UserNotFound,
    VerificationFailed,
)
from agents.users.mail import Mailer, create_mailer, verification_mail
from agents.users.passwords import Passwords
from agents.users.repository import PendingLogin, UserRow, UsersUnitOfWork
from topics import USERS_EVENTS
from topics.users import UserRegistered, UserRoleChanged

OAUTH_STATE_TTL_S = 600.0

# Rows are kept a day past their expiry, so that a clock ahead or behind never meets a pruned one.
PRUNE_MARGIN_S = 24 * 3600.0
PRUNE_BATCH = 1000
EMAIL_VERIFICATION_TTL_S = 24 * 3600.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tokens:
    access: tokens.IssuedToken
    refresh: tokens.IssuedToken
    role: str


@dataclass(frozen=True)
class OAuthStart:
    url: str
    # For the browser's cookie; the state's row keeps only its hash.
    browser_nonce: str


def _now() -> datetime:
    return datetime.now(UTC)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class IdentityService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        passwords: Passwords,
        on_commit: Callable[[], None] = lambda: None,
        mailer: Mailer | None = None,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._passwords = passwords
        self._on_commit = on_commit
        self._mailer = mailer or create_mailer(settings)

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
                token = await self._new_verification(uow, user.id, email)
                await uow.commit()
        except asyncpg.UniqueViolationError:
            raise EmailTaken() from None
        self._on_commit()
        await self._mail_verification(email, token)
        return user

    async def _new_verification(self, uow: UsersUnitOfWork, user_id: int, email: str) -> str:
        token = secrets.token_urlsafe(32)
        await uow.email_verifications.put(_digest(token), user_id, email, EMAIL_VERIFICATION_TTL_S)
        return token

    async def _mail_verification(self, email: str, token: str) -> None:
        link = f"{self._settings.payments.public_url}/#/verify-email?token={token}"
        await self._mailer.send(verification_mail(email, link))

    async def request_verification(self, user_id: int) -> None:
        """Mail the account a new verification link (older ones keep working until used)."""
        async with self._uow() as uow:
            user = await uow.users.by_id(user_id)
            if user is None:
                raise UserNotFound(user_id)
            if not user.email:
                raise NoEmail()
            if user.email_verified_at is not None:
                raise AlreadyVerified()
            token = await self._new_verification(uow, user.id, user.email)
            await uow.commit()
        await self._mail_verification(user.email, token)

    async def verify_email(self, token: str) -> UserRow:
        """Use up a verification token: its account's email is verified, if it still has the
        address the mail went to."""
        async with self._uow() as uow:
            taken = await uow.email_verifications.take(_digest(token))
            if taken is None:
                raise VerificationFailed()
            user = await uow.users.mark_email_verified(*taken)
            if user is None:
                raise VerificationFailed()
            await uow.email_verifications.forget(user.id)
            await uow.commit()
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

    async def oauth_start(self, provider_name: str, link_user_id: int | None = None) -> OAuthStart:
        """Start a login, or with `link_user_id` (a logged-in account's) a link to that account."""
        provider = self._provider(provider_name)
        state, verifier = oauth.new_state(), oauth.new_code_verifier()
        nonce = secrets.token_urlsafe(32)
        pending = PendingLogin(verifier, provider.redirect_url, _digest(nonce), link_user_id)
        async with self._uow() as uow:
            await uow.oauth_states.put(state, provider.name, pending, OAUTH_STATE_TTL_S)
            await uow.commit()
        return OAuthStart(oauth.authorization_url(provider, state, verifier), nonce)

    async def oauth_callback(
        self, provider_name: str, code: str, state: str, browser_nonce: str
    ) -> Tokens:
        provider = self._provider(provider_name)
        async with self._uow() as uow:
            pending = await uow.oauth_states.take(state, provider.name)
            await uow.commit()
        if pending is None:
            raise OAuthFailed("unknown, used or expired state")
        # Before the code is redeemed: a leaked code and state are worth nothing elsewhere.
        if not hmac.compare_digest(pending.nonce_hash, _digest(browser_nonce)):
            raise OAuthBrowserMismatch()
        if pending.redirect_uri != provider.redirect_url:
            raise OAuthFailed("the redirect URI changed since the login started")
        profile = await oauth.fetch_profile(provider, code, pending.code_verifier)
        async with self._uow() as uow:
            if pending.link_user_id is None:
                user = await self._oauth_account(uow, provider.name, profile)
            else:
                user = await self._link(uow, provider.name, profile, pending.link_user_id)
            issued = await self._issue(uow, user)
            await uow.commit()
        self._on_commit()
        return issued

    async def _oauth_account(
        self, uow: UsersUnitOfWork, provider: str, profile: oauth.Profile
    ) -> UserRow:
        """The identity's account: found, linked by a verified email on both sides, or new."""
        user = await uow.users.by_identity(provider, profile.provider_id)
        if user is not None:
            return user
        email = profile.verified_email
        if email:
            user = await uow.users.by_email(email)
            if user is not None and user.email_verified_at is None:
                raise LinkRefused(provider)
        if user is None:
            name = profile.name or (email or "").split("@")[0] or f"{provider} user"
            user = await uow.users.add(name[:100], email, None, email_verified=bool(email))
            await self._registered(uow, user, provider)
        await uow.users.link(provider, profile.provider_id, user.id, email)
        return user

    async def _link(
        self, uow: UsersUnitOfWork, provider: str, profile: oauth.Profile, user_id: int
    ) -> UserRow:
        """The logged-in owner's explicit link; the provider's verified email, if it is the
        account's, verifies it."""
        owner = await uow.users.by_identity(provider, profile.provider_id)
        if owner is not None:
            if owner.id != user_id:
                raise IdentityTaken(provider)
            return owner
        user = await uow.users.by_id(user_id)
        if user is None:
            raise OAuthFailed("the account to link is gone")
        await uow.users.link(provider, profile.provider_id, user.id, profile.verified_email)
        if profile.verified_email and user.email_verified_at is None:
            user = await uow.users.mark_email_verified(user.id, profile.verified_email) or user
        return user

    async def create_admin(
        self, email: str, password: str, full_name: str, *, promote_existing: bool = False
    ) -> tuple[UserRow, bool]:
        """Create an admin account with this email and password; True when created.

        An account someone already registered with the email is taken over only when asked
        (`promote_existing`): it gets the given password, the admin role, and every session of
        whoever had it before is revoked. The operator vouches for the address: it is verified.
        """
        hashed = await self._passwords.hash(password)
        async with self._uow() as uow:
            user = await uow.users.by_email(email)
            created = user is None
            if user is None:
                user = await uow.users.add(
                    full_name, email, hashed, role="admin", email_verified=True
                )
                await self._registered(uow, user, "password")
            elif not promote_existing:
                raise AccountExists(email)
            else:
                await uow.users.set_password_hash(user.id, hashed)
                await uow.users.set_role(user.id, "admin")
                await uow.refresh_tokens.revoke_all_of(user.id)
                await uow.email_verifications.forget(user.id)
                user = await uow.users.mark_email_verified(user.id, email) or user
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
