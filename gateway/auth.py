"""Bearer JWTs at the edge: who is calling, and may they."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from agents.common import tokens
from agents.common.settings import Settings
from gateway.identity import Identity
from gateway.keys import IDENTITY, SETTINGS
from gateway.problems import Problem

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def mint_token(settings: Settings, *, sub: str, role: str, ttl_s: int = 3600) -> str:
    """An access token for local use (`shopstream dev-token`) and tests."""
    return tokens.mint(settings, sub=sub, typ="access", ttl_s=ttl_s, role=role).token


def unauthorized(detail: str) -> Problem:
    return Problem(401, detail, code="unauthorized", headers={"WWW-Authenticate": "Bearer"})


def bearer(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("a bearer token is required")
    return token.strip()


def identify(request: web.Request, settings: Settings) -> Identity:
    try:
        claims = tokens.decode(settings, bearer(request), "access")
    except tokens.InvalidToken as e:
        raise unauthorized(f"invalid token: {e}") from None
    return Identity(user_id=str(claims["sub"]), role=str(claims["role"]))


def require_role(*roles: str) -> Callable[[Handler], Handler]:
    """Decorate a handler: 401 without a valid access token, 403 without one of `roles`."""

    def wrap(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            identity = request.get(IDENTITY) or identify(request, request.app[SETTINGS])
            if identity.role not in roles:
                raise Problem(403, f"this needs the {' or '.join(roles)} role", code="forbidden")
            request[IDENTITY] = identity
            return await handler(request)

        return guarded

    return wrap
