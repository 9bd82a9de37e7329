"""What can go wrong with identity."""

from __future__ import annotations

from agents.common.errors import (
    Conflict,
    DomainError,
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
