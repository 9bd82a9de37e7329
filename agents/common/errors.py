"""The root of every domain's errors; each carries the typed error its reply will hold."""

from __future__ import annotations

from topics.envelope import ErrorType


class DomainError(Exception):
    error_type: ErrorType = ErrorType.INTERNAL


class NotFound(DomainError):
    error_type = ErrorType.NOT_FOUND


class Conflict(DomainError):
    error_type = ErrorType.CONFLICT


class Invalid(DomainError):
    error_type = ErrorType.INVALID


class Forbidden(DomainError):
    error_type = ErrorType.FORBIDDEN


class Unauthorized(DomainError):
    error_type = ErrorType.UNAUTHORIZED


class Unavailable(DomainError):
    error_type = ErrorType.UNAVAILABLE


class Refused(Exception):
    """A message that must change nothing (a partner's report the platform cannot bind to what
    it issued): dead-lettered with the reason, never recorded as handled."""
