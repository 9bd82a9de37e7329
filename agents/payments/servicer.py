"""gRPC PaymentService: a user's payment by order id (another user's is NOT_FOUND), a
provider session by its token, the deadlines the worker holds, and reconciliation cases. The
user is the service token's (an admin's may name another), never the request's."""

from __future__ import annotations

import asyncpg
import grpc

from agents.common.errors import NotFound
from agents.common.rpc import rpc, timestamp
from agents.common.service_tokens import acting_user, require_admin
from agents.payments.deadlines import Deadlines
from agents.payments.repository import (
    PaymentRow,
    ReviewRow,
    SessionRow,
    list_reviews,
    payment_for_user,
    session_by_token,
)
from protos import payments_pb2, payments_pb2_grpc

MAX_REVIEWS = 100


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
        reference=s.reference,
    )


def review_proto(r: ReviewRow) -> payments_pb2.PaymentReview:
    return payments_pb2.PaymentReview(
        id=r.id,
        payment_id=r.payment_id,
        order_id=r.order_id,
        reason=r.reason,
        refund_required=r.refund_required,
        provider=r.provider,
        reference=r.reference,
        session_reference=r.session_reference,
        amount=f"{r.amount:.2f}",
        expected_amount=f"{r.expected_amount:.2f}",
        payment_status=r.payment_status,
        created_at=timestamp(r.created_at),
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

    @rpc
    async def ListReviews(
        self, request: payments_pb2.ListReviewsRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.ListReviewsResponse:
        require_admin()
        limit = min(max(request.limit, 1), MAX_REVIEWS)
        rows = await list_reviews(self._pool, max(request.offset, 0), limit)
        return payments_pb2.ListReviewsResponse(reviews=[review_proto(r) for r in rows])
