"""Service tokens on every gRPC call between the platform's processes.

A caller sends `authorization: Bearer <JWT>` (HS256 with a key derived from INTERNAL_SECRET,
typ=service, iss=the calling service, aud=the called one, a minute of life, and the end user
on whose behalf it calls as sub and role). Each worker's server interceptor refuses a call
without a valid one (UNAUTHENTICATED), except the standard health checks; the servicers read
who calls from `caller()`, never from a request field."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import jwt

from agents.common.errors import Forbidden
from agents.common.internal_keys import MissingSecret, derive_key

ALGORITHM = "HS256"
TYP = "service"
TTL_S = 60
# A cached token is handed out while it has at least this much life left.
REUSE_MARGIN_S = 30
LEEWAY_S = 5
REQUIRED = ["exp", "iat", "iss", "aud", "typ"]
METADATA_KEY = "authorization"
# What a caller puts in a call's metadata for the channel's interceptor to turn into the token:
# the end user and role it calls for (the gateway's routes know them, the channel knows the
# service called).
ON_BEHALF_USER = "x-shopstream-on-behalf-user"
ON_BEHALF_ROLE = "x-shopstream-on-behalf-role"
OPEN_METHODS = ("/grpc.health.v1.Health/",)
MAX_CACHED = 10_000


class InvalidServiceToken(Exception):
    """Missing, malformed, forged, expired, or meant for another service."""


@dataclass(frozen=True)
class Caller:
    """Who makes a gRPC call, as its token says."""

    service: str
    user_id: int | None = None
    role: str | None = None

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def _key(secret: str) -> bytes:
    return derive_key(secret, "grpc-service-token")


class ServiceTokens:
    """Mints the tokens of one calling service, each reused for half its life."""

    def __init__(self, secret: str, issuer: str, *, ttl_s: int = TTL_S) -> None:
        self._key = _key(secret)
        self.issuer = issuer
        self._ttl_s = ttl_s
        self._cache: dict[tuple[str, str, str], tuple[str, float]] = {}

    def token(self, audience: str, user_id: str = "", role: str = "") -> str:
        now = time.time()
        found = self._cache.get((audience, user_id, role))
        if found is not None and found[1] - now >= min(REUSE_MARGIN_S, self._ttl_s / 2):
            return found[0]
        issued = int(now)
        claims: dict[str, Any] = {
            "typ": TYP,
            "iss": self.issuer,
            "aud": audience,
            "iat": issued,
            "exp": issued + self._ttl_s,
        }
        if user_id:
            claims["sub"] = user_id
        if role:
            claims["role"] = role
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM)
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[(audience, user_id, role)] = (token, issued + self._ttl_s)
        return token

    def metadata(
        self, audience: str, user_id: str = "", role: str = ""
    ) -> tuple[tuple[str, str], ...]:
        return ((METADATA_KEY, f"Bearer {self.token(audience, user_id, role)}"),)


def verify(secret: str, token: str, audience: str) -> Caller:
    return _checked(secret, token, audience)[0]


def _checked(secret: str, token: str, audience: str) -> tuple[Caller, float]:
    """The caller and when the token expires."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            _key(secret),
            algorithms=[ALGORITHM],
            audience=audience,
            leeway=LEEWAY_S,
            options={"require": REQUIRED},
        )
    except (jwt.PyJWTError, MissingSecret) as e:
        raise InvalidServiceToken(str(e)) from None
    if claims["typ"] != TYP:
        raise InvalidServiceToken("not a service token")
    if not isinstance(claims["iss"], str) or not claims["iss"]:
        raise InvalidServiceToken("no calling service")
    sub = claims.get("sub")
    role = claims.get("role")
    if role is not None and not isinstance(role, str):
        raise InvalidServiceToken("role is not a string")
    found = Caller(
        service=claims["iss"],
        user_id=int(sub) if isinstance(sub, str) and sub.isascii() and sub.isdigit() else None,
        role=role,
    )
    return found, float(claims["exp"])


def bearer(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    for key, value in metadata or ():
        if key == METADATA_KEY and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    raise InvalidServiceToken("no bearer service token")


_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)


def caller() -> Caller:
    """The verified caller of the gRPC call being served."""
    found = _caller.get()
    if found is None:
        raise RuntimeError("no verified caller: is the server's ServiceAuth interceptor on?")
    return found


def _refusal(handler: grpc.RpcMethodHandler | None, detail: str) -> grpc.RpcMethodHandler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, detail)

    if handler is not None and handler.request_streaming:
        raise NotImplementedError("no streaming request is served")
    return grpc.unary_unary_rpc_method_handler(
        refuse,
        request_deserializer=handler.request_deserializer if handler else None,
        response_serializer=handler.response_serializer if handler else None,
    )


class ServiceAuth(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Every call but a health check must carry a valid service token meant for `audience`."""

    def __init__(self, secret: str, audience: str) -> None:
        self._secret = secret
        self.audience = audience
        # A caller reuses a token for many calls: once verified, it is known until it expires.
        self._verified: dict[str, tuple[Caller, float]] = {}

    def verify(self, token: str) -> Caller:
        known = self._verified.get(token)
        if known is not None and known[1] > time.time():
            return known[0]
        found, expires = _checked(self._secret, token, self.audience)
        if len(self._verified) >= MAX_CACHED:
            self._verified.clear()
        self._verified[token] = (found, expires)
        return found

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method.startswith(OPEN_METHODS):
            return await continuation(details)
        try:
            found = self.verify(bearer(details.invocation_metadata))
        except InvalidServiceToken as e:
            return _refusal(await continuation(details), f"service token refused: {e}")
        # The handler runs in the interceptors' context (grpc.aio's contract).
        _caller.set(found)
        return await continuation(details)


class OnBehalfOf(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """A channel's: every call gets a service token for the channel's service, minted for the
    end user named in the call's on-behalf-of metadata (which is not sent)."""

    def __init__(
        self, tokens: ServiceTokens, audience: str, *, user_id: str = "", role: str = ""
    ) -> None:
        self._tokens = tokens
        self._audience = audience
        # For a call whose metadata names nobody.
        self._user_id = user_id
        self._role = role

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        user, role = self._user_id, self._role
        kept: list[tuple[str, str | bytes]] = []
        for key, value in details.metadata or ():
            if key == ON_BEHALF_USER:
                user = str(value)
            elif key == ON_BEHALF_ROLE:
                role = str(value)
            elif key != METADATA_KEY:
                kept.append((key, value))
        kept += self._tokens.metadata(self._audience, user, role)
        return await continuation(
            grpc.aio.ClientCallDetails(
                details.method,
                details.timeout,
                grpc.aio.Metadata(*kept),
                details.credentials,
                details.wait_for_ready,
            ),
            request,
        )


def acting_user(requested: int) -> int:
    """The user whose data a call reads: the token's user; an admin's token may name another
    (`requested`, a request field that is otherwise ignored)."""
    who = caller()
    if who.admin and requested:
        return requested
    if who.user_id is None:
        raise Forbidden("the service token names no user")
    return who.user_id


def require_service(*services: str) -> Caller:
    """The caller, if it is one of `services`; otherwise the call is forbidden."""
    who = caller()
    if who.service not in services:
        raise Forbidden(f"only {' or '.join(services)} may call this")
    return who


def require_admin() -> Caller:
    """The caller, if it acts for an admin, or is an internal service other than the gateway
    (an operator's tool); otherwise the call is forbidden."""
    who = caller()
    if who.service == "gateway" and not who.admin:
        raise Forbidden("this needs the admin role")
    return who
