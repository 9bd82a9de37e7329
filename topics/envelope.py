"""What every request carries in its headers and every reply carries in its body."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, ValidationError


class Headers:
    """Kafka header names. Faust's agents reply to the first two on their own."""

    REPLY_TO = "Faust-Ag-ReplyTo"
    CORRELATION_ID = "Faust-Ag-CorrelationId"
    REQUEST_ID = "x-request-id"
    # The message's `type`, so that a consumer skips what it does not handle without parsing.
    TYPE = "x-type"
    TRACEPARENT = "traceparent"
    USER_ID = "x-user-id"
    ROLES = "x-roles"
    # The proof that the gateway or a named internal service made a command (see
    # agents/common/command_signing.py).
    PRODUCER = "x-shopstream-producer"
    SIGNED_AT = "x-shopstream-signed-at"
    SIGNATURE = "x-shopstream-signature"
    DLQ_REASON = "x-dlq-reason"
    DLQ_TOPIC = "x-dlq-topic"
    DLQ_PARTITION = "x-dlq-partition"
    DLQ_OFFSET = "x-dlq-offset"


class ErrorType(StrEnum):
    INVALID = "invalid"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    FORBIDDEN = "forbidden"
    UNAUTHORIZED = "unauthorized"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class FieldError(BaseModel):
    path: str = Field(description="Where in the message, e.g. `product.price`")
    message: str


class ErrorBody(BaseModel):
    type: ErrorType
    detail: str
    errors: list[FieldError] = []


class Reply(BaseModel):
    """The body of every reply: a result, or a typed error."""

    ok: bool
    result: dict[str, Any] | None = None
    error: ErrorBody | None = None

    @classmethod
    def success(cls, result: dict[str, Any]) -> Reply:
        return cls(ok=True, result=result)

    @classmethod
    def failure(
        cls, type_: ErrorType, detail: str, errors: list[FieldError] | None = None
    ) -> Reply:
        return cls(ok=False, error=ErrorBody(type=type_, detail=detail, errors=errors or []))


def field_errors(e: ValidationError) -> list[FieldError]:
    """Each validation error with its dotted path, e.g. `product.price`."""
    return [
        FieldError(path=".".join(str(p) for p in err["loc"]) or "$", message=err["msg"])
        for err in e.errors(include_url=False)
    ]
