"""The gateway's edge: who is calling (token, client IP), rate limits and CORS."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from agents.common import tokens
from agents.common.settings import EdgeSettings
from gateway.identity import Identity
from gateway.keys import IDENTITY, REQUEST_ID, SETTINGS
from gateway.problems import Problem, problem_response
from gateway.ratelimit import KeyedLimiter, client_key, pod_share

AUTH_PATHS = frozenset(
    {
        "/api/v1/auth/login",
        "/api/v1/auth/register",
        "/api/v1/auth/refresh-token",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
    }
)
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/"})
# The storefront's static files: a page load fetches several, and they cost next to nothing.
UNLIMITED_PREFIXES = ("/assets/",)
CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-Request-ID, traceparent"
CORS_EXPOSE = "Location, Retry-After, X-Request-ID"


def is_auth_path(path: str) -> bool:
    if path == "/api/v1/auth/providers":
        return False
    return path in AUTH_PATHS or path.startswith(("/api/v1/oauth/", "/api/v1/auth/"))


class ClientAddress:
    """The caller's IP: the peer, or behind trusted proxies the nearest untrusted hop."""

    def __init__(self, trusted: tuple[str, ...]) -> None:
        self._trusted = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._trusted)

    def of(self, request: web.Request) -> str:
        peer = request.remote or "unknown"
        if not self._trusted or not self._is_trusted(peer):
            return peer
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
        for hop in reversed([h for h in hops if h]):
            if not self._is_trusted(hop):
                return hop
        return peer


@dataclass
class Limits:
    user: KeyedLimiter
    anonymous: KeyedLimiter
    auth: KeyedLimiter

    @classmethod
    def from_settings(cls, edge: EdgeSettings) -> Limits:
        """Each limit is service-wide: this pod takes its share of it."""

        def limiter(per_minute: int) -> KeyedLimiter:
            share = pod_share(per_minute, edge.gateway_replicas)
            return KeyedLimiter(share, edge.rate_limit_max_keys)

        return cls(
            user=limiter(edge.user_rate_per_min),
            anonymous=limiter(edge.ip_rate_per_min),
            auth=limiter(edge.auth_rate_per_min),
        )


LIMITS = web.AppKey("limits", Limits)
CLIENT_ADDRESS = web.AppKey("client_address", ClientAddress)


def _identity(request: web.Request) -> Identity | None:
    """The caller of a valid access token, or None; handlers still refuse bad tokens."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    try:
        claims = tokens.decode(request.app[SETTINGS], token.strip(), "access")
    except tokens.InvalidToken:
        return None
    return Identity(user_id=str(claims["sub"]), role=str(claims["role"]))


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Auth routes per client IP (strictest); then per user with a token, else per IP."""
    unlimited = request.path in UNLIMITED_PATHS or request.path.startswith(UNLIMITED_PREFIXES)
    if unlimited or request.method == "OPTIONS":
        return await handler(request)
    limits = request.app[LIMITS]
    client = client_key(request.app[CLIENT_ADDRESS].of(request))
    identity = _identity(request)
    if identity is not None:
        request[IDENTITY] = identity
    if is_auth_path(request.path):
        wait = await limits.auth.try_acquire(client)
    elif identity is not None:
        wait = await limits.user.try_acquire(identity.user_id)
    else:
        wait = await limits.anonymous.try_acquire(client)
    if wait is not None:
        raise Problem(
            429,
            f"too many requests: retry in {wait} s",
            code="rate_limited",
            headers={"Retry-After": str(wait)},
        )
    return await handler(request)


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Only configured origins; `*` allows any origin but then never with credentials."""
    origins = request.app[SETTINGS].edge.cors_origins
    origin = request.headers.get("Origin")
    allowed = origin is not None and (origin in origins or "*" in origins)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if not allowed:
            return problem_response(
                403,
                f"origin {origin} is not allowed",
                code="forbidden",
                instance=request.path,
                request_id=request.get(REQUEST_ID),
            )
        response: web.StreamResponse = web.Response(status=204)
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        if not allowed:
            if isinstance(response, web.HTTPException):
                raise response
            return response
    assert origin is not None
    specific = origin in origins
    response.headers["Access-Control-Allow-Origin"] = origin if specific else "*"
    response.headers["Vary"] = "Origin"
    if specific:
        response.headers["Access-Control-Allow-Credentials"] = "true"
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
        response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
    else:
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE
    if isinstance(response, web.HTTPException):
        raise response
    return response
