"""gRPC PaymentService: a user's payment by order id (another user's is NOT_FOUND), a
provider session by its token, and the deadlines the worker holds. The user is the service
token's (an admin's may name another), never the request's."""

from __future__ import annotations

import asyncpg
import grpc

from agents.common.errors import NotFound
from agents.common.rpc import rpc, timestamp
from agents.common.service_tokens import acting_user
from agents.payments.deadlines import Deadlines
from agents.payments.repository import PaymentRow, SessionRow, payment_for_user, session_by_token
from protos import payments_pb2, payments_pb2_grpc


def payment_proto(p: PaymentRow, token: str = "", redirect_url: str = "") -> payments_pb2.Payment:
    return payments_pb2.Payment(
        id=p.id,
        order_id=p.order_id,
        user_id=p.user_id,
        amount=f"{p.amount:.2f}",
        status=p.status,
        reason=p.reason or "",
        expires_at=timestamp(p.expires_at),
        created_at=timestamp(p.created_at),
        updated_at=timestamp(p.updated_at),
        token=token,
        redirect_url=redirect_url,
    )


def session_proto(s: SessionRow) -> payments_pb2.PaymentSession:
    return payments_pb2.PaymentSession(
        token=s.token,
        payment_id=s.payment_id,
        order_id=s.order_id,
        provider=s.provider,
        amount=f"{s.amount:.2f}",
        return_path=s.return_path,
        expires_at=timestamp(s.expires_at),
        payment_status=s.payment_status,
    )


class PaymentServicer(payments_pb2_grpc.PaymentServiceServicer):  # type: ignore[misc]
    def __init__(self, pool: asyncpg.Pool, deadlines: Deadlines) -> None:
        self._pool = pool
        self._deadlines = deadlines

    @rpc
    async def GetPaymentByOrderId(
        self, request: payments_pb2.GetPaymentByOrderIdRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.Payment:
        found = await payment_for_user(self._pool, acting_user(request.user_id), request.order_id)
        if found is None:
            raise NotFound(f"no payment for order {request.order_id}")
        return payment_proto(*found)

    @rpc
    async def GetSession(
        self, request: payments_pb2.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.PaymentSession:
        session = await session_by_token(self._pool, request.token)
        if session is None:
            raise NotFound("no such payment session")
        return session_proto(session)

    @rpc
    async def ListPendingDeadlines(
        self, request: payments_pb2.ListPendingDeadlinesRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.ListPendingDeadlinesResponse:
        return payments_pb2.ListPendingDeadlinesResponse(
            deadlines=[
                payments_pb2.PendingDeadline(
                    payment_id=d.payment_id,
                    expires_at_us=round(d.at * 1_000_000),
                    adopted=d.adopted,
                )
                for d in self._deadlines.pending()
            ]
        )
