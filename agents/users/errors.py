"""What can go wrong with identity."""

from __future__ import annotations

from agents.common.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    Unauthorized,
    Unavailable,
)


class UserError(DomainError):
    pass


class EmailTaken(UserError, Conflict):
    def __init__(self) -> None:
        super().__init__("an account with this email exists")


class InvalidCredentials(UserError, Unauthorized):
    def __init__(self) -> None:
        super().__init__("wrong email or password")


class TokenRejected(UserError, Unauthorized):
    pass


class LoginThrottled(UserError, Unavailable):
    """The email has used up its failed logins for now; the gateway answers 429."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed logins for this email: retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class AccountExists(UserError, Conflict):
    """create-admin met an account it was not told to take over."""

    def __init__(self, email: str) -> None:
        super().__init__(f"an account with the email {email} exists")


class UserNotFound(UserError, NotFound):
    def __init__(self, user_id: int) -> None:
        super().__init__(f"user {user_id} does not exist")


class OAuthFailed(UserError, Unauthorized):
    pass


class OAuthBrowserMismatch(UserError, Forbidden):
    """The callback came from a browser other than the one that started the login: a leaked
    code and state, or a login forced on someone (login CSRF)."""

    def __init__(self) -> None:
        super().__init__("this login was started in another browser: start it again from this one")


class LinkRefused(UserError, Conflict):
    """An OAuth identity whose email is an account's that never proved it owns that address:
    linking it would hand the account to whoever registered the address first, or the other way
    round."""

    def __init__(self, provider: str) -> None:
        super().__init__(
            f"an account with this {provider} email exists but its email is not verified: log in "
            f"to it, then verify its email or link {provider} from it"
        )


class IdentityTaken(UserError, Conflict):
    def __init__(self, provider: str) -> None:
        super().__init__(f"this {provider} identity is linked to another account")


class VerificationFailed(UserError, NotFound):
    def __init__(self) -> None:
        super().__init__("the verification token is unknown, used or expired")


class AlreadyVerified(UserError, Conflict):
    def __init__(self) -> None:
        super().__init__("this account's email is already verified")


class NoEmail(UserError, Conflict):
    def __init__(self) -> None:
        super().__init__("this account has no email to verify")


class UnknownProvider(UserError, Invalid):
    def __init__(self, provider: str) -> None:
        super().__init__(f"unknown provider {provider!r}")


class ProviderNotConfigured(UserError, NotFound):
    """A login this server does not offer until its settings are given: the client's to fix
    (or the operator's), never a server error."""

    def __init__(self, provider: str, missing: list[str]) -> None:
        super().__init__(
            f"{provider} login is not configured on this server: set {', '.join(missing)}"
        )
