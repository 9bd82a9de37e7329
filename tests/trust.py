"""Tests acting as the platform's own services: signed commands and gRPC service tokens."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from agents.common.command_signing import CommandSigner
from agents.common.service_tokens import OnBehalfOf, ServiceTokens
from topics import CATALOGUE

TEST_INTERNAL_SECRET = "test-internal-secret-" + "z" * 43
SIGNED_TOPICS = frozenset(t.name for t in CATALOGUE if t.signed)


def signed(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] = (),
    *,
    secret: str = TEST_INTERNAL_SECRET,
    producer: str = "gateway",
) -> list[tuple[str, bytes]]:
    """The headers of a command as `producer` signs it."""
    return CommandSigner(secret, producer).sign(topic, key, value, headers)


def signed_if_command(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] = (),
    *,
    secret: str = TEST_INTERNAL_SECRET,
) -> list[tuple[str, bytes]]:
    """Signed as the gateway's on a command topic; the headers unchanged on any other."""
    if topic not in SIGNED_TOPICS:
        return list(headers)
    return signed(topic, key, value, headers, secret=secret)


def service_metadata(
    audience: str,
    *,
    user_id: int | str = "",
    role: str = "",
    secret: str = TEST_INTERNAL_SECRET,
    issuer: str = "gateway",
) -> tuple[tuple[str, str], ...]:
    """The metadata of a gRPC call to `audience` made as `issuer` for a user."""
    return ServiceTokens(secret, issuer).metadata(audience, str(user_id), role)


def service_channel(
    addr: str,
    audience: str,
    *,
    user_id: int | str = "",
    role: str = "",
    secret: str = TEST_INTERNAL_SECRET,
    issuer: str = "gateway",
) -> grpc.aio.Channel:
    """A channel whose every call carries a service token to `audience`, for a user."""
    tokens = ServiceTokens(secret, issuer)
    interceptor = OnBehalfOf(tokens, audience, user_id=str(user_id), role=role)
    return grpc.aio.insecure_channel(addr, interceptors=[interceptor])
