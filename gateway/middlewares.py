"""Request ids, access logs and the one place where errors become problem+json."""

from __future__ import annotations

import logging
import re
import time
import uuid

import grpc
from aiohttp import web
from aiohttp.typedefs import Handler
from aiokafka.errors import KafkaError

from agents.common.logs import request_id_var
from gateway.bus import BusTimeout
from gateway.keys import REQUEST_ID
from gateway.problems import Problem, problem_response

log = logging.getLogger("gateway.access")

REQUEST_ID_HEADER = "X-Request-ID"
QUIET_PATHS = frozenset({"/healthz", "/readyz"})
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

GRPC_STATUS: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.NOT_FOUND: (404, "not_found"),
    grpc.StatusCode.INVALID_ARGUMENT: (422, "invalid"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "forbidden"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "unauthorized"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "conflict"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout"),
    grpc.StatusCode.UNAVAILABLE: (503, "unavailable"),
}


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = given if _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    token = request_id_var.set(request_id)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers[REQUEST_ID_HEADER] = request_id
        return response
    finally:
        log.log(
            logging.DEBUG if request.path in QUIET_PATHS else logging.INFO,
            "%s %s %d",
            request.method,
            request.path,
            status,
            extra={"duration_ms": round((time.perf_counter() - started) * 1000, 2)},
        )
        request_id_var.reset(token)


def _problem_for(request: web.Request, exc: BaseException) -> web.Response:
    instance, request_id = request.path, request.get(REQUEST_ID)
    if isinstance(exc, Problem):
        return problem_response(
            exc.status,
            exc.detail,
            code=exc.code,
            errors=exc.errors,
            headers=exc.headers,
            instance=instance,
            request_id=request_id,
            extra=exc.extra,
        )
    if isinstance(exc, web.HTTPException):
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow",)}
        detail = {
            404: f"no route for {request.path}",
            405: f"{request.method} is not allowed here",
            413: "the request body is too large",
        }.get(exc.status, exc.reason)
        return problem_response(
            exc.status, detail, headers=headers, instance=instance, request_id=request_id
        )
    if isinstance(exc, BusTimeout):
        return problem_response(
            504,
            "the service did not answer in time",
            code="timeout",
            instance=instance,
            request_id=request_id,
        )
    if isinstance(exc, grpc.aio.AioRpcError):
        status, code = GRPC_STATUS.get(exc.code(), (500, "internal"))
        detail = exc.details() or code if status < 500 else f"a backing service failed ({code})"
        return problem_response(status, detail, code=code, instance=instance, request_id=request_id)
    if isinstance(exc, KafkaError):
        return problem_response(
            503,
            "the message bus is unavailable",
            code="unavailable",
            instance=instance,
            request_id=request_id,
        )
    log.exception("unhandled error", exc_info=exc)
    return problem_response(
        500, "internal server error", code="internal", instance=instance, request_id=request_id
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _problem_for(request, exc)
    except Exception as exc:
        return _problem_for(request, exc)
    return response
