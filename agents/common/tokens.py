"""Access and refresh JWTs: minted by the users domain, checked by the gateway and the users domain.

HS256 only (a fixed allow-list), with iss, aud, exp, iat, sub, jti and a `typ` that keeps a
refresh token from ever passing as an access token.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt

from agents.common.settings import Settings

ALGORITHMS = ["HS256"]
ROLES = ("user", "admin")
TokenType = Literal["access", "refresh"]
REQUIRED = ["exp", "iat", "iss", "aud", "sub", "jti", "typ"]


class InvalidToken(Exception):
    """The token is missing, malformed, forged, expired or of the wrong type."""


@dataclass(frozen=True)
class IssuedToken:
    token: str
    jti: uuid.UUID
    expires_at: datetime


def mint(
    settings: Settings,
    *,
    sub: str,
    typ: TokenType,
    ttl_s: int,
    role: str | None = None,
    family: uuid.UUID | None = None,
    now: datetime | None = None,
) -> IssuedToken:
    issued = (now or datetime.now(UTC)).replace(microsecond=0)
    expires = issued + timedelta(seconds=ttl_s)
    jti = uuid.uuid4()
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": sub,
        "typ": typ,
        "iat": int(issued.timestamp()),
        "exp": int(expires.timestamp()),
        "jti": str(jti),
    }
    if role is not None:
        claims["role"] = role
    if family is not None:
        claims["fam"] = str(family)
    return IssuedToken(
        jwt.encode(claims, settings.require_jwt_secret(), algorithm=ALGORITHMS[0]), jti, expires
    )


def decode(settings: Settings, token: str, typ: TokenType) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.require_jwt_secret(),
            algorithms=ALGORITHMS,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": REQUIRED},
        )
    except jwt.PyJWTError as e:
        raise InvalidToken(str(e)) from None
    if claims.get("typ") != typ:
        raise InvalidToken(f"not an {typ} token")
    if typ == "access" and claims.get("role") not in ROLES:
        raise InvalidToken("no valid role")
    if typ == "refresh" and not isinstance(claims.get("fam"), str):
        raise InvalidToken("no token family")
    return claims
