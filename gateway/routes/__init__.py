"""The gateway's routes, one module per resource, and what their gRPC calls share."""

from __future__ import annotations

import uuid
from datetime import UTC
from typing import Any

from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel

from agents.common.service_tokens import ON_BEHALF_ROLE, ON_BEHALF_USER
from gateway.keys import BUS, IDENTITY, REQUEST_ID, SETTINGS
from gateway.problems import Problem
from topics.envelope import Headers, Reply

IDEMPOTENCY_NS = uuid.UUID("6f1c1a52-6a8e-4d5e-9f55-1b7f3c1f0a11")


def grpc_options(request: web.Request) -> dict[str, Any]:
    """The deadline and metadata of a gRPC call made for this request: the channel turns the
    caller named here into the call's service token."""
    metadata: tuple[tuple[str, str], ...] = (("x-request-id", request[REQUEST_ID]),)
    identity = request.get(IDENTITY)
    if identity is not None:
        metadata += ((ON_BEHALF_USER, identity.user_id), (ON_BEHALF_ROLE, identity.role))
    return {"timeout": request.app[SETTINGS].request_timeout_s, "metadata": metadata}


def command_id(request: web.Request, operation: str) -> uuid.UUID:
    """A new command id; with an Idempotency-Key, the same one for the same user, operation
    and key.

    `operation` names the command (`orders.place`), not the route: a retry through another
    alias of it is the same command. The target and the body are not in the id: the worker
    compares the command's fingerprint (agents/common/ledger.py) and refuses another request
    under a used key."""
    key = request.headers.get("Idempotency-Key")
    if not key:
        return uuid.uuid4()
    if len(key) > 255:
        raise Problem(422, "Idempotency-Key is longer than 255 characters", code="invalid")
    user = request[IDENTITY].user_id
    return uuid.uuid5(IDEMPOTENCY_NS, f"{user}:{operation}:{key}")


async def request_reply(request: web.Request, topic: str, key: str, command: BaseModel) -> Reply:
    """Send a command for the authenticated caller and wait for its reply."""
    identity = request[IDENTITY]
    headers = [
        (Headers.REQUEST_ID, request[REQUEST_ID].encode()),
        (Headers.USER_ID, identity.user_id.encode()),
        (Headers.ROLES, identity.role.encode()),
    ]
    if "traceparent" in request.headers:
        headers.append((Headers.TRACEPARENT, request.headers["traceparent"].encode()))
    return await request.app[BUS].request(
        topic, key, command.model_dump_json().encode(), headers=headers
    )


async def send_command(
    request: web.Request, topic: str, key: str, command: BaseModel
) -> dict[str, Any]:
    """request_reply, with an error reply raised as its problem."""
    reply = await request_reply(request, topic, key, command)
    if not reply.ok:
        assert reply.error is not None
        raise Problem.of(reply.error.type, reply.error.detail, reply.error.errors)
    assert reply.result is not None
    return reply.result


def json_response(
    model: BaseModel, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A response serialized by its model: the fields the model declares, in JSON."""
    return web.Response(
        body=model.model_dump_json(exclude_unset=True).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )


def iso_time(ts: Timestamp) -> str:
    """RFC 3339 in UTC, as the seed's clients read times: 2026-01-02T03:04:05Z."""
    return ts.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")
