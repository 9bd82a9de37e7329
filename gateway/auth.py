"""Bearer JWTs: checking them at the edge, and minting the dev token."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

import jwt
from aiohttp import web

from agents.common.settings import Settings
from gateway.identity import Identity
from gateway.keys import IDENTITY, SETTINGS
from gateway.problems import Problem

ALGORITHMS = ["HS256"]
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "role"]
ROLES = ("user", "admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def mint_token(settings: Settings, *, sub: str, role: str, ttl_s: int = 3600) -> str:
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": sub,
        "role": role,
        "iat": now,
        "exp": now + ttl_s,
        "jti": uuid.uuid4().hex,
        "typ": "access",
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHMS[0])


def _unauthorized(detail: str) -> Problem:
    return Problem(401, detail, code="unauthorized", headers={"WWW-Authenticate": "Bearer"})


def identify(request: web.Request, settings: Settings) -> Identity:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("a bearer token is required")
    try:
        claims = jwt.decode(
            token.strip(),
            settings.jwt_secret,
            algorithms=ALGORITHMS,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.PyJWTError as e:
        raise _unauthorized(f"invalid token: {e}") from None
    if claims.get("typ", "access") != "access" or claims["role"] not in ROLES:
        raise _unauthorized("invalid token: not an access token")
    return Identity(user_id=str(claims["sub"]), role=str(claims["role"]))


def require_role(role: str) -> Callable[[Handler], Handler]:
    """Decorate a handler: 401 without a valid token, 403 without `role`."""

    def wrap(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            identity = identify(request, request.app[SETTINGS])
            if identity.role != role:
                raise Problem(403, f"this needs the {role} role", code="forbidden")
            request[IDENTITY] = identity
            return await handler(request)

        return guarded

    return wrap
