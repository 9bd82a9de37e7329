"""Accounts and logins: the seed's /api/v1/auth routes verbatim, and /api/v1/users/me.

Credentials and tokens go to the users domain over gRPC, never onto a Kafka topic.
"""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from gateway.api import Operation, PathParam, Response, add_operations
from gateway.auth import bearer, require_role, unauthorized
from gateway.keys import GRPC, IDENTITY
from gateway.problems import Problem
from gateway.routes import grpc_options, iso_time, json_response
from gateway.schemas import (
    AuthorizationURL,
    LoginProviders,
    Message,
    Registered,
    TokenResponse,
    User,
)
from gateway.validation import parse_id, read_body, read_query
from protos import users_pb2
from topics.products import NOT_BLANK

PROVIDERS = ("google", "facebook", "github")

Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=254),
    Field(pattern=r"^\s*[^@\s]+@[^@\s]+\.[^@\s]+\s*$", description="an email address"),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RegisterBody(_Body):
    full_name: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=3, max_length=100),
        # At least 3 characters once stripped, from its first to its last non-blank one.
        Field(pattern=f"{NOT_BLANK}[\\s\\S]+{NOT_BLANK}"),
    ]
    email: Email
    password: Annotated[str, Field(min_length=6, max_length=100)]


class LoginBody(_Body):
    email: Annotated[str, StringConstraints(strip_whitespace=True, max_length=254)]
    password: Annotated[str, Field(max_length=100)]


class RefreshBody(_Body):
    refresh_token: str | None = None


# Providers' codes are short (Facebook's, the longest, a few hundred characters); the state is ours.
Code = Annotated[str, Field(min_length=1, max_length=2048)]
State = Annotated[str, Field(min_length=1, max_length=256)]


class CallbackQuery(_Body):
    """What the provider sends back: a code and the state, or `error` (then a 401)."""

    code: Code
    state: State
    error: Annotated[str, Field(max_length=256, description="the provider refused")] = ""


def token_json(t: users_pb2.TokenResponse) -> TokenResponse:
    return TokenResponse.model_validate(
        {
            "message": "success",
            "token": t.token,
            "expired_at": iso_time(t.expired_at),
            "refresh_token": t.refresh_token,
            "refresh_token_expired_at": iso_time(t.refresh_token_expired_at),
            "role": t.role,
        }
    )


def user_json(u: users_pb2.User) -> User:
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
    return User.model_validate(out)


async def register(request: web.Request) -> web.Response:
    body = await read_body(request, RegisterBody)
    user = await request.app[GRPC].users.Register(
        users_pb2.RegisterRequest(
            full_name=body.full_name, email=body.email, password=body.password
        ),
        **grpc_options(request),
    )
    return json_response(Registered(message="success", user=user_json(user)), status=201)


async def login(request: web.Request) -> web.Response:
    body = await read_body(request, LoginBody)
    reply = await request.app[GRPC].users.Login(
        users_pb2.LoginRequest(email=body.email, password=body.password), **grpc_options(request)
    )
    return json_response(token_json(reply))


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
    return json_response(token_json(reply))


async def logout(request: web.Request) -> web.Response:
    token = await _refresh_token_of(request)
    await request.app[GRPC].users.Logout(
        users_pb2.RefreshRequest(refresh_token=token), **grpc_options(request)
    )
    return json_response(Message(message="success"))


def _provider(request: web.Request) -> str:
    provider = request.match_info["provider"]
    if provider not in PROVIDERS:
        raise Problem(404, f"no login provider {provider}", code="not_found")
    return provider


def _wants_html(request: web.Request) -> bool:
    """A browser's navigation (its Accept names text/html), not a script's fetch."""
    accept = request.headers.get("Accept", "")
    return any(part.split(";")[0].strip() == "text/html" for part in accept.split(","))


async def oauth_providers(request: web.Request) -> web.Response:
    """The OAuth providers configured here, so that a login page offers only those."""
    reply = await request.app[GRPC].users.OAuthProviders(users_pb2.Empty(), **grpc_options(request))
    return json_response(LoginProviders.model_validate({"providers": list(reply.providers)}))


async def oauth_url(request: web.Request) -> web.Response:
    """A browser is sent to the provider (302), as the seed's storefront expects; any other
    client gets the URL to go to."""
    reply = await request.app[GRPC].users.OAuthStart(
        users_pb2.OAuthStartRequest(provider=_provider(request)), **grpc_options(request)
    )
    if _wants_html(request):
        return web.Response(
            status=302, headers={"Location": reply.url, "Cache-Control": "no-store"}
        )
    return json_response(AuthorizationURL(url=reply.url))


async def oauth_callback(request: web.Request) -> web.Response:
    provider = _provider(request)
    if refused := request.query.get("error"):
        raise Problem(401, f"{provider} refused the login: {refused[:200]}", code="unauthorized")
    query = read_query(request, CallbackQuery, status=400)
    code, state = query.code, query.state
    reply = await request.app[GRPC].users.OAuthCallback(
        users_pb2.OAuthCallbackRequest(provider=provider, code=code, state=state),
        **grpc_options(request),
    )
    return json_response(token_json(reply))


@require_role("user", "admin")
async def me(request: web.Request) -> web.Response:
    user_id = parse_id(request[IDENTITY].user_id)
    if user_id is None:
        raise Problem(404, "this token is not an account's (a dev token?)", code="not_found")
    user = await request.app[GRPC].users.GetUserByID(
        users_pb2.GetUserRequest(id=user_id), **grpc_options(request)
    )
    return json_response(user_json(user))


PROVIDER = PathParam("provider", {"enum": list(PROVIDERS)}, pattern="|".join(PROVIDERS))
TOKENS = {200: Response("tokens", TokenResponse)}
AUTH_ERRORS = (400, 401, 413, 422, 429, 503, 504)

OPERATIONS = (
    Operation(
        "POST",
        "/api/v1/auth/register",
        register,
        "Create an account",
        {201: Response("created", Registered)},
        (400, 409, 413, 422, 429, 503, 504),
        body=RegisterBody,
    ),
    Operation(
        "POST",
        "/api/v1/auth/login",
        login,
        "Log in with email and password",
        TOKENS,
        AUTH_ERRORS,
        body=LoginBody,
    ),
    Operation(
        "GET",
        "/api/v1/auth/refresh-token",
        refresh,
        "Rotate the refresh token sent as Bearer (seed)",
        TOKENS,
        (401, 429, 503, 504),
        secured=True,
    ),
    Operation(
        "POST",
        "/api/v1/auth/refresh",
        refresh,
        "Rotate a refresh token (Bearer or body)",
        TOKENS,
        AUTH_ERRORS,
        body=RefreshBody,
        body_required=False,
    ),
    Operation(
        "POST",
        "/api/v1/auth/logout",
        logout,
        "Revoke a refresh token's family",
        {200: Response("logged out", Message)},
        AUTH_ERRORS,
        body=RefreshBody,
        body_required=False,
    ),
    Operation(
        "GET",
        "/api/v1/auth/providers",
        oauth_providers,
        "The OAuth providers configured on this server, for a login page to offer",
        {200: Response("their names", LoginProviders)},
        (429, 503, 504),
    ),
    Operation(
        "GET",
        "/api/v1/auth/{provider}",
        oauth_url,
        "Start an OAuth login (state + PKCE S256): a browser (`Accept: text/html`) is "
        "redirected to the provider, any other client gets the URL",
        {
            200: Response("the provider's authorization URL", AuthorizationURL),
            302: Response(
                "to the provider's authorization URL",
                media_type="",
                headers={"Location": "the provider's authorization URL"},
            ),
        },
        (404, 429, 503, 504),
        path_params=(PROVIDER,),
    ),
    Operation(
        "GET",
        "/api/v1/oauth/{provider}/callback",
        oauth_callback,
        "Finish an OAuth login",
        TOKENS,
        (400, 401, 404, 422, 429, 503, 504),
        query=CallbackQuery,
        path_params=(PROVIDER,),
    ),
    Operation(
        "GET",
        "/api/v1/users/me",
        me,
        "The caller's account",
        {200: Response("the user", User)},
        (401, 403, 404, 429, 503, 504),
        secured=True,
    ),
)


def setup_routes(app: web.Application) -> None:
    add_operations(app, OPERATIONS)
