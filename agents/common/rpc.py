"""What every gRPC method of a domain does first and last: bind the request id, map errors.

A domain error is its status; an infrastructure failure (PostgreSQL down, restarting, failing
over) is UNAVAILABLE, which a caller may retry, not UNKNOWN."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agents.common.errors import DomainError
from agents.common.failures import is_transient
from agents.common.logs import request_id_var
from topics.envelope import ErrorType

R = TypeVar("R")

STATUS_OF: dict[ErrorType, grpc.StatusCode] = {
    ErrorType.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorType.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorType.CONFLICT: grpc.StatusCode.ALREADY_EXISTS,
    ErrorType.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    ErrorType.UNAUTHORIZED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorType.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorType.INTERNAL: grpc.StatusCode.INTERNAL,
}

Method = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]]


def rpc(method: Method[R]) -> Method[R]:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        metadata = dict(context.invocation_metadata() or ())
        request_id_var.set(metadata.get("x-request-id"))
        try:
            return await method(self, request, context)
        except DomainError as e:
            await context.abort(STATUS_OF[e.error_type], str(e))
            raise AssertionError("abort returned") from None
        except Exception as e:
            if not is_transient(e):
                raise
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"retry later: {type(e).__name__}")
            raise AssertionError("abort returned") from None

    return wrapper


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts
