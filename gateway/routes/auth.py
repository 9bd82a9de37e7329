"""Accounts and logins: the seed's /api/v1/auth routes verbatim, and /api/v1/users/me.

Credentials and tokens go to the users domain over gRPC, never onto a Kafka topic.
"""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Annotated, Any

import grpc
from aiohttp import hdrs, web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from gateway.api import Operation, PathParam, Response, add_operations
from gateway.auth import bearer, identify, require_role, unauthorized
from gateway.keys import GRPC, IDENTITY, SETTINGS
from gateway.problems import Problem
from gateway.routes import grpc_options, iso_time, json_response
from gateway.schemas import (
    AuthorizationURL,
    EmailVerified,
    LoginProviders,
    Message,
    Registered,
    TokenResponse,
    User,
)
from gateway.validation import parse_id, read_body, read_query
from protos import users_pb2
from topics.text import NO_NUL, THREE_KEPT

PROVIDERS = ("google", "facebook", "github")
# What the users domain's Login puts in its trailing metadata when an email's failed logins are
# used up (agents/users/servicer.py): seconds until it may try again.
RETRY_AFTER_METADATA = "retry-after"

# The browser that starts an OAuth login keeps a nonce in this cookie; the callback must bring it.
OAUTH_COOKIE = "shopstream_oauth"
OAUTH_COOKIE_MAX_AGE_S = 600

Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=254),
    Field(
        pattern=r"^\s*[^@\s\u0000]+@[^@\s\u0000]+\.[^@\s\u0000]+\s*$",
        description="an email address",
    ),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RegisterBody(_Body):
    full_name: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=3, max_length=100),
        Field(pattern=THREE_KEPT),
    ]
    email: Email
    password: Annotated[str, Field(min_length=6, max_length=100)]


class LoginBody(_Body):
    email: Annotated[
        str, StringConstraints(strip_whitespace=True, max_length=254), Field(pattern=NO_NUL)
    ]
    password: Annotated[str, Field(max_length=100)]


class RefreshBody(_Body):
    refresh_token: str | None = None


# Providers' codes are short (Facebook's, the longest, a few hundred characters); the state is ours.
Code = Annotated[str, Field(min_length=1, max_length=2048, pattern=NO_NUL)]
State = Annotated[str, Field(min_length=1, max_length=256, pattern=NO_NUL)]


class StartQuery(_Body):
    link: Annotated[
        bool,
        Field(
            description="link the provider to the account of the Bearer access token sent, "
            "instead of logging in"
        ),
    ] = False


class VerifyEmailBody(_Body):
    token: Annotated[str, Field(min_length=1, max_length=256)]


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
    out["email_verified"] = u.email_verified
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


def throttled(e: grpc.aio.AioRpcError) -> Problem:
    """The users domain refused a login for its email's budget: 429 with its Retry-After."""
    wait = next((str(v) for k, v in e.trailing_metadata() or () if k == RETRY_AFTER_METADATA), "")
    wait = wait if wait.isascii() and wait.isdigit() and int(wait) > 0 else "1"
    return Problem(
        429,
        e.details() or "too many failed logins",
        code="rate_limited",
        headers={"Retry-After": wait},
    )


async def login(request: web.Request) -> web.Response:
    body = await read_body(request, LoginBody)
    try:
        reply = await request.app[GRPC].users.Login(
            users_pb2.LoginRequest(email=body.email, password=body.password),
            **grpc_options(request),
        )
    except grpc.aio.AioRpcError as e:
        if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise throttled(e) from None
        raise
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


def _callback_path(provider: str) -> str:
    return f"/api/v1/oauth/{provider}/callback"


def _account_id(request: web.Request) -> int:
    user_id = identify(request, request.app[SETTINGS]).user_id
    if not user_id.isdigit():
        raise Problem(404, "this token is not an account's (a dev token?)", code="not_found")
    return int(user_id)


async def oauth_url(request: web.Request) -> web.Response:
    """A browser is sent to the provider (302), as the seed's storefront expects; any other
    client gets the URL to go to. Either way the response sets the browser's nonce cookie."""
    provider = _provider(request)
    link_user_id = _account_id(request) if read_query(request, StartQuery).link else 0
    reply = await request.app[GRPC].users.OAuthStart(
        users_pb2.OAuthStartRequest(provider=provider, link_user_id=link_user_id),
        **grpc_options(request),
    )
    response: web.Response
    if _wants_html(request):
        response = web.Response(
            status=302, headers={"Location": reply.url, "Cache-Control": "no-store"}
        )
    else:
        response = json_response(AuthorizationURL(url=reply.url))
    response.set_cookie(
        OAUTH_COOKIE,
        reply.browser_nonce,
        max_age=OAUTH_COOKIE_MAX_AGE_S,
        path=_callback_path(provider),
        secure=request.app[SETTINGS].payments.public_url.startswith("https://"),
        httponly=True,
        samesite="Lax",
    )
    return response


async def oauth_callback(request: web.Request) -> web.Response:
    provider = _provider(request)
    if refused := request.query.get("error"):
        raise Problem(401, f"{provider} refused the login: {refused[:200]}", code="unauthorized")
    query = read_query(request, CallbackQuery, status=400)
    nonce = request.cookies.get(OAUTH_COOKIE, "")
    if not nonce:
        raise Problem(
            403,
            "this browser did not start the login (its login cookie is missing): start it "
            "again from here",
            code="forbidden",
        )
    reply = await request.app[GRPC].users.OAuthCallback(
        users_pb2.OAuthCallbackRequest(
            provider=provider, code=query.code, state=query.state, browser_nonce=nonce
        ),
        **grpc_options(request),
    )
    return json_response(token_json(reply))


async def _clear_oauth_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """A callback's answer, whatever it is (errors included), uses up the browser's nonce."""
    if OAUTH_COOKIE in request.cookies and request.path in CALLBACK_PATHS:
        # A raw header: by this signal aiohttp has already turned response.cookies into headers.
        cleared = SimpleCookie()
        cleared[OAUTH_COOKIE] = ""
        morsel = cleared[OAUTH_COOKIE]
        morsel.update(
            {
                "path": request.path,
                "max-age": "0",
                "expires": "Thu, 01 Jan 1970 00:00:00 GMT",
                "httponly": "true",
                "samesite": "Lax",
            }
        )
        response.headers.add(hdrs.SET_COOKIE, morsel.OutputString())


async def verify_email(request: web.Request) -> web.Response:
    body = await read_body(request, VerifyEmailBody)
    user = await request.app[GRPC].users.VerifyEmail(
        users_pb2.VerifyEmailRequest(token=body.token), **grpc_options(request)
    )
    return json_response(EmailVerified(message="success", user=user_json(user)))


@require_role("user", "admin")
async def request_verification(request: web.Request) -> web.Response:
    user_id = request[IDENTITY].user_id
    if not user_id.isdigit():
        raise Problem(404, "this token is not an account's (a dev token?)", code="not_found")
    await request.app[GRPC].users.RequestEmailVerification(
        users_pb2.GetUserRequest(id=int(user_id)), **grpc_options(request)
    )
    return json_response(Message(message="a verification mail was sent"), status=202)


@require_role("user", "admin")
async def me(request: web.Request) -> web.Response:
    user_id = parse_id(request[IDENTITY].user_id)
    if user_id is None:
        raise Problem(404, "this token is not an account's (a dev token?)", code="not_found")
    user = await request.app[GRPC].users.GetUserByID(
        users_pb2.GetUserRequest(id=user_id), **grpc_options(request)
    )
    return json_response(user_json(user))


CALLBACK_PATHS = frozenset(_callback_path(p) for p in PROVIDERS)
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
        "POST",
        "/api/v1/auth/verify-email",
        verify_email,
        "Verify the account's email with the token of its verification mail (single-use, 24 h)",
        {200: Response("verified", EmailVerified)},
        (400, 404, 413, 422, 429, 503, 504),
        body=VerifyEmailBody,
    ),
    Operation(
        "POST",
        "/api/v1/auth/verify-email/request",
        request_verification,
        "Mail the caller's account a new email verification link",
        {202: Response("mailed", Message)},
        (401, 403, 404, 409, 429, 503, 504),
        secured=True,
    ),
    Operation(
        "GET",
        "/api/v1/auth/{provider}",
        oauth_url,
        "Start an OAuth login (state + PKCE S256), or with `link=true` and a Bearer access token "
        "link the provider to that account: a browser (`Accept: text/html`) is redirected to the "
        "provider, any other client gets the URL; both get the cookie the callback needs",
        {
            200: Response(
                "the provider's authorization URL",
                AuthorizationURL,
                headers={"Set-Cookie": "the login's nonce, for the callback"},
            ),
            302: Response(
                "to the provider's authorization URL",
                media_type="",
                headers={
                    "Location": "the provider's authorization URL",
                    "Set-Cookie": "the login's nonce, for the callback",
                },
            ),
        },
        (401, 404, 422, 429, 503, 504),
        query=StartQuery,
        path_params=(PROVIDER,),
    ),
    Operation(
        "GET",
        "/api/v1/oauth/{provider}/callback",
        oauth_callback,
        "Finish an OAuth login in the browser that started it (its cookie); an email that is an "
        "unverified account's is refused (409) rather than linked",
        TOKENS,
        (400, 401, 403, 404, 409, 422, 429, 503, 504),
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
    app.on_response_prepare.append(_clear_oauth_cookie)
