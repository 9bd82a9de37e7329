"""gRPC AuthService: the only way credentials and tokens reach the users domain.

Credentials come only from the gateway (its rate limits and validation are in front of
them); a user's profile only to that user, an admin, or an internal service."""

from __future__ import annotations

import grpc

from agents.common.errors import Forbidden
from agents.common.rpc import rpc, timestamp
from agents.common.service_tokens import caller, require_service
from agents.users.errors import LoginThrottled
from agents.users.repository import UserRow
from agents.users.service import IdentityService, Tokens
from protos import users_pb2, users_pb2_grpc

EDGE = "gateway"


def user_proto(u: UserRow) -> users_pb2.User:
    return users_pb2.User(
        id=u.id,
        full_name=u.full_name,
        email=u.email or "",
        role=u.role,
        provider=u.provider,
        provider_id=u.provider_id,
        created_at=timestamp(u.created_at),
        updated_at=timestamp(u.updated_at),
        email_verified=u.email_verified_at is not None,
    )


def tokens_proto(t: Tokens) -> users_pb2.TokenResponse:
    return users_pb2.TokenResponse(
        token=t.access.token,
        expired_at=timestamp(t.access.expires_at),
        refresh_token=t.refresh.token,
        refresh_token_expired_at=timestamp(t.refresh.expires_at),
        role=t.role,
    )


# The trailing metadata of a throttled login: seconds until the email may try again.
RETRY_AFTER_KEY = "retry-after"


class AuthServicer(users_pb2_grpc.AuthServiceServicer):  # type: ignore[misc]
    def __init__(self, service: IdentityService) -> None:
        self._service = service

    @rpc
    async def Register(
        self, request: users_pb2.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.User:
        require_service(EDGE)
        user = await self._service.register(request.full_name, request.email, request.password)
        return user_proto(user)

    @rpc
    async def Login(
        self, request: users_pb2.LoginRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.TokenResponse:
        require_service(EDGE)
        try:
            issued = await self._service.login(request.email, request.password)
        except LoginThrottled as e:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                str(e),
                trailing_metadata=((RETRY_AFTER_KEY, str(e.retry_after_s)),),
            )
            raise AssertionError("abort returned") from None
        return tokens_proto(issued)

    @rpc
    async def Refresh(
        self, request: users_pb2.RefreshRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.TokenResponse:
        require_service(EDGE)
        return tokens_proto(await self._service.refresh(request.refresh_token))

    @rpc
    async def Logout(
        self, request: users_pb2.RefreshRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.Empty:
        require_service(EDGE)
        await self._service.logout(request.refresh_token)
        return users_pb2.Empty()

    @rpc
    async def GetUserByID(
        self, request: users_pb2.GetUserRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.User:
        who = caller()
        if who.service == EDGE and not who.admin and who.user_id != request.id:
            raise Forbidden("a user reads only their own account")
        return user_proto(await self._service.user(request.id))

    @rpc
    async def OAuthStart(
        self, request: users_pb2.OAuthStartRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.OAuthStartResponse:
        who = require_service(EDGE)
        if request.link_user_id and request.link_user_id != who.user_id:
            raise Forbidden("only the logged-in owner of an account links a provider to it")
        link = who.user_id if request.link_user_id else None
        started = await self._service.oauth_start(request.provider, link)
        return users_pb2.OAuthStartResponse(url=started.url, browser_nonce=started.browser_nonce)

    @rpc
    async def OAuthCallback(
        self, request: users_pb2.OAuthCallbackRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.TokenResponse:
        require_service(EDGE)
        issued = await self._service.oauth_callback(
            request.provider, request.code, request.state, request.browser_nonce
        )
        return tokens_proto(issued)

    @rpc
    async def OAuthProviders(
        self, request: users_pb2.Empty, context: grpc.aio.ServicerContext
    ) -> users_pb2.OAuthProvidersResponse:
        require_service(EDGE)
        return users_pb2.OAuthProvidersResponse(providers=self._service.oauth_providers())

    @rpc
    async def VerifyEmail(
        self, request: users_pb2.VerifyEmailRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.User:
        require_service(EDGE)
        return user_proto(await self._service.verify_email(request.token))

    @rpc
    async def RequestEmailVerification(
        self, request: users_pb2.GetUserRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.Empty:
        who = require_service(EDGE)
        if who.user_id is None or who.user_id != request.id:
            raise Forbidden("a user asks for a verification mail for their own account only")
        await self._service.request_verification(request.id)
        return users_pb2.Empty()
