"""Accounts and logins: the seed's /api/v1/auth routes verbatim, and /api/v1/users/me.

Credentials and tokens go to the users domain over gRPC, never onto a Kafka topic.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from gateway.auth import bearer, require_role, unauthorized
from gateway.keys import GRPC, IDENTITY
from gateway.problems import Problem
from gateway.routes import grpc_options, iso_time
from gateway.validation import read_body
from protos import users_pb2

PROVIDERS = ("google", "facebook", "github")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("not an email address")
    return value


Email = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=254), AfterValidator(_email)
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RegisterBody(_Body):
    full_name: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=3, max_length=100)
    ]
    email: Email
    password: Annotated[str, Field(min_length=6, max_length=100)]


class LoginBody(_Body):
    email: Annotated[str, StringConstraints(strip_whitespace=True, max_length=254)]
    password: Annotated[str, Field(max_length=100)]


class RefreshBody(_Body):
    refresh_token: str | None = None


def token_json(t: users_pb2.TokenResponse) -> dict[str, Any]:
    return {
        "message": "success",
        "token": t.token,
        "expired_at": iso_time(t.expired_at),
        "refresh_token": t.refresh_token,
        "refresh_token_expired_at": iso_time(t.refresh_token_expired_at),
        "role": t.role,
    }


def user_json(u: users_pb2.User) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": u.id,
        "full_name": u.full_name,
        "email": u.email,
        "role": u.role,
        "created_at": iso_time(u.created_at),
        "updated_at": iso_time(u.updated_at),
    }
    if u.provider:
        out |= {"provider": u.provider, "provider_id": u.provider_id}
    return out


async def register(request: web.Request) -> web.Response:
    body = await read_body(request, RegisterBody)
    user = await request.app[GRPC].users.Register(
        users_pb2.RegisterRequest(
            full_name=body.full_name, email=body.email, password=body.password
        ),
        **grpc_options(request),
    )
    return web.json_response({"message": "success", "user": user_json(user)}, status=201)


async def login(request: web.Request) -> web.Response:
    body = await read_body(request, LoginBody)
    reply = await request.app[GRPC].users.Login(
        users_pb2.LoginRequest(email=body.email, password=body.password), **grpc_options(request)
    )
    return web.json_response(token_json(reply))


async def _refresh_token_of(request: web.Request) -> str:
    """The refresh token: the Bearer (as the seed sends it), else `refresh_token` in the body."""
    if request.headers.get("Authorization"):
        return bearer(request)
    if request.can_read_body:
        body = await read_body(request, RefreshBody)
        if body.refresh_token:
            return body.refresh_token
    raise unauthorized("a refresh token is required")


async def refresh(request: web.Request) -> web.Response:
    token = await _refresh_token_of(request)
    reply = await request.app[GRPC].users.Refresh(
        users_pb2.RefreshRequest(refresh_token=token), **grpc_options(request)
    )
    return web.json_response(token_json(reply))


async def logout(request: web.Request) -> web.Response:
    token = await _refresh_token_of(request)
    await request.app[GRPC].users.Logout(
        users_pb2.RefreshRequest(refresh_token=token), **grpc_options(request)
    )
    return web.json_response({"message": "success"})


def _provider(request: web.Request) -> str:
    provider = request.match_info["provider"]
    if provider not in PROVIDERS:
        raise Problem(404, f"no login provider {provider}", code="not_found")
    return provider


async def oauth_providers(request: web.Request) -> web.Response:
    """The OAuth providers configured here, so that a login page offers only those."""
    reply = await request.app[GRPC].users.OAuthProviders(users_pb2.Empty(), **grpc_options(request))
    return web.json_response({"providers": list(reply.providers)})


async def oauth_url(request: web.Request) -> web.Response:
    reply = await request.app[GRPC].users.OAuthStart(
        users_pb2.OAuthStartRequest(provider=_provider(request)), **grpc_options(request)
    )
    return web.json_response({"url": reply.url})


async def oauth_callback(request: web.Request) -> web.Response:
    provider = _provider(request)
    if request.query.get("error"):
        raise Problem(
            401, f"{provider} refused the login: {request.query['error']}", code="unauthorized"
        )
    code, state = request.query.get("code", ""), request.query.get("state", "")
    if not code:
        raise Problem(400, "the code query parameter is missing", code="bad_request")
    if not state:
        raise Problem(400, "the state query parameter is missing", code="bad_request")
    reply = await request.app[GRPC].users.OAuthCallback(
        users_pb2.OAuthCallbackRequest(provider=provider, code=code, state=state),
        **grpc_options(request),
    )
    return web.json_response(token_json(reply))


@require_role("user", "admin")
async def me(request: web.Request) -> web.Response:
    user_id = request[IDENTITY].user_id
    if not user_id.isdigit():
        raise Problem(404, "this token is not an account's (a dev token?)", code="not_found")
    user = await request.app[GRPC].users.GetUserByID(
        users_pb2.GetUserRequest(id=int(user_id)), **grpc_options(request)
    )
    return web.json_response(user_json(user))


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/auth/register", register)
    app.router.add_post("/api/v1/auth/login", login)
    app.router.add_get("/api/v1/auth/refresh-token", refresh)
    app.router.add_post("/api/v1/auth/refresh", refresh)
    app.router.add_post("/api/v1/auth/logout", logout)
    app.router.add_get("/api/v1/auth/providers", oauth_providers)
    app.router.add_get("/api/v1/auth/{provider}", oauth_url)
    app.router.add_get("/api/v1/oauth/{provider}/callback", oauth_callback)
    app.router.add_get("/api/v1/users/me", me)
