"""gRPC AuthService: the only way credentials and tokens reach the users domain."""

from __future__ import annotations

import grpc

from agents.common.rpc import rpc, timestamp
from agents.users.errors import LoginThrottled
from agents.users.repository import UserRow
from agents.users.service import IdentityService, Tokens
from protos import users_pb2, users_pb2_grpc


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
        user = await self._service.register(request.full_name, request.email, request.password)
        return user_proto(user)

    @rpc
    async def Login(
        self, request: users_pb2.LoginRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.TokenResponse:
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
        return tokens_proto(await self._service.refresh(request.refresh_token))

    @rpc
    async def Logout(
        self, request: users_pb2.RefreshRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.Empty:
        await self._service.logout(request.refresh_token)
        return users_pb2.Empty()

    @rpc
    async def GetUserByID(
        self, request: users_pb2.GetUserRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.User:
        return user_proto(await self._service.user(request.id))

    @rpc
    async def OAuthStart(
        self, request: users_pb2.OAuthStartRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.OAuthStartResponse:
        started = await self._service.oauth_start(request.provider, request.link_user_id or None)
        return users_pb2.OAuthStartResponse(url=started.url, browser_nonce=started.browser_nonce)

    @rpc
    async def OAuthCallback(
        self, request: users_pb2.OAuthCallbackRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.TokenResponse:
        issued = await self._service.oauth_callback(
            request.provider, request.code, request.state, request.browser_nonce
        )
        return tokens_proto(issued)

    @rpc
    async def OAuthProviders(
        self, request: users_pb2.Empty, context: grpc.aio.ServicerContext
    ) -> users_pb2.OAuthProvidersResponse:
        return users_pb2.OAuthProvidersResponse(providers=self._service.oauth_providers())

    @rpc
    async def VerifyEmail(
        self, request: users_pb2.VerifyEmailRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.User:
        return user_proto(await self._service.verify_email(request.token))

    @rpc
    async def RequestEmailVerification(
        self, request: users_pb2.GetUserRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.Empty:
        await self._service.request_verification(request.id)
        return users_pb2.Empty()
