"""RFC 9457 problem details, and the one table that maps error types to HTTP statuses."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aiohttp import web

from topics.envelope import ErrorType, FieldError

PROBLEM_JSON = "application/problem+json"

STATUS_OF: dict[ErrorType, int] = {
    ErrorType.INVALID: 422,
    ErrorType.NOT_FOUND: 404,
    ErrorType.CONFLICT: 409,
    ErrorType.FORBIDDEN: 403,
    ErrorType.UNAUTHORIZED: 401,
    ErrorType.UNAVAILABLE: 503,
    ErrorType.INTERNAL: 500,
}


class Problem(Exception):
    """An error answer; raised anywhere in a handler, rendered by the error middleware."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        code: str | None = None,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.extra = extra or {}
        self.status = status
        self.detail = detail
        self.code = code
        self.errors = errors or []
        self.headers = headers or {}

    @classmethod
    def of(cls, type_: ErrorType, detail: str, errors: list[FieldError] | None = None) -> Problem:
        return cls(STATUS_OF[type_], detail, code=type_.value, errors=errors)


def problem_response(
    status: int,
    detail: str,
    *,
    instance: str | None,
    request_id: str | None = None,
    code: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "error": detail,
    }
    if instance is not None:
        body["instance"] = instance
    if code:
        body["code"] = code
    if errors:
        body["errors"] = [e.model_dump() for e in errors]
    if request_id:
        body["request_id"] = request_id
    if extra:
        body.update(extra)
    return web.Response(
        status=status, text=json.dumps(body), content_type=PROBLEM_JSON, headers=headers
    )
