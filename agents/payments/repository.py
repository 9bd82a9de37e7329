"""Payments' SQL, and the unit of work of the payments domain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from agents.common.db import PgUnitOfWork, rfc3339
from agents.common.relay import Effects
from agents.payments.providers import ProviderSession
from topics.orders import OrderAwaitingPayment

COLUMNS = "id, order_id, user_id, amount, status, reason, expires_at, created_at, updated_at"
CREATE = """
INSERT INTO payments (order_id, user_id, amount, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4))
ON CONFLICT (order_id) DO NOTHING RETURNING id
"""
CREATE_MANY = """
INSERT INTO payments (order_id, user_id, amount, expires_at)
SELECT o, u, a, now() + make_interval(secs => $4)
FROM unnest($1::bigint[], $2::bigint[], $3::numeric[]) AS x(o, u, a)
ON CONFLICT (order_id) DO NOTHING RETURNING order_id, id, expires_at
"""
LOCK = f"SELECT {COLUMNS} FROM payments WHERE id = $1 FOR UPDATE"
SET_STATUS = "UPDATE payments SET status = $2, reason = $3 WHERE id = $1"
TRANSACTION = """
INSERT INTO payment_transactions (payment_id, money, outcome, source) VALUES ($1, $2, $3, $4)
"""
EXPIRE_DUE = f"""
UPDATE payments SET status = 'failed', reason = 'expired'
WHERE id IN (
    SELECT id FROM payments WHERE status = 'pending' AND expires_at < now()
    ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING {COLUMNS}
"""
# The same guard, for the payments a deadline table says are due: a payment paid meanwhile
# (or locked by its payer right now) is left alone.
EXPIRE_THESE = f"""
UPDATE payments SET status = 'failed', reason = 'expired'
WHERE id IN (
    SELECT id FROM payments
    WHERE id = ANY($1::bigint[]) AND status = 'pending' AND expires_at < now()
    ORDER BY expires_at FOR UPDATE SKIP LOCKED
)
RETURNING {COLUMNS}
"""
NOT_PENDING = """
SELECT x.id FROM unnest($1::bigint[]) AS x(id)
WHERE NOT EXISTS (SELECT 1 FROM payments p WHERE p.id = x.id AND p.status = 'pending')
"""
PENDING_EXCEPT = """
SELECT id, expires_at FROM payments WHERE status = 'pending' AND NOT (id = ANY($1::bigint[]))
"""
BY_ORDER_FOR_USER = f"""
SELECT {COLUMNS}, s.token, s.redirect_url FROM payments
LEFT JOIN LATERAL (
    SELECT token, redirect_url FROM payment_sessions WHERE payment_id = payments.id
    ORDER BY created_at DESC LIMIT 1
) s ON true
WHERE order_id = $1 AND user_id = $2
"""
SESSION_COLUMNS = """
s.token, s.reference, s.payment_id, p.order_id, s.provider, s.amount, s.redirect_url,
s.return_path, s.va_number, s.qr_code_url, s.expires_at, p.status AS payment_status
"""
OPEN_SESSION = f"""
SELECT {SESSION_COLUMNS} FROM payment_sessions s JOIN payments p ON p.id = s.payment_id
WHERE s.payment_id = $1 AND s.provider = $2 AND s.expires_at > now()
ORDER BY s.created_at DESC LIMIT 1
"""
ADD_SESSION = """
INSERT INTO payment_sessions
    (token, payment_id, provider, amount, redirect_url, return_path, va_number, qr_code_url,
     expires_at, reference)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""
SESSION_BY_REFERENCE = f"""
SELECT {SESSION_COLUMNS} FROM payment_sessions s JOIN payments p ON p.id = s.payment_id
WHERE s.reference = $1
"""
CHARGE_SOURCE = """
SELECT source FROM payment_transactions WHERE payment_id = $1 AND outcome = 'succeeded'
"""
REVIEW_COLUMNS = """
id, payment_id, order_id, reason, refund_required, provider, reference, session_reference,
amount, expected_amount, payment_status, created_at
"""
# One case per charge: the provider's reference of it.
ADD_REVIEW = f"""
INSERT INTO payment_reviews
    (payment_id, order_id, reason, refund_required, provider, reference, session_reference,
     amount, expected_amount, payment_status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (provider, reference) DO NOTHING RETURNING {REVIEW_COLUMNS}
"""
LIST_REVIEWS = f"""
SELECT {REVIEW_COLUMNS} FROM payment_reviews ORDER BY id DESC OFFSET $1 LIMIT $2
"""
SESSION_BY_TOKEN = f"""
SELECT {SESSION_COLUMNS} FROM payment_sessions s JOIN payments p ON p.id = s.payment_id
WHERE s.token = $1
"""


@dataclass(frozen=True)
class PaymentRow:
    id: int
    order_id: int
    user_id: int
    amount: Decimal
    status: str
    reason: str | None
    expires_at: datetime
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The seed's Payment; it called the amount `total_price` too."""
        return {
            "id": self.id,
            "order_id": self.order_id,
            "user_id": self.user_id,
            "amount": float(self.amount),
            "total_price": float(self.amount),
            "status": self.status,
            "reason": self.reason,
            "expires_at": rfc3339(self.expires_at),
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        }


@dataclass(frozen=True)
class SessionRow:
    token: str
    reference: str
    payment_id: int
    order_id: int
    provider: str
    amount: Decimal
    redirect_url: str
    return_path: str
    va_number: str
    qr_code_url: str
    expires_at: datetime
    payment_status: str

    def to_json(self) -> dict[str, Any]:
        """The seed's `POST /payment/initiate` answer, and shopstream's names beside it."""
        return {
            "payment_id": self.payment_id,
            "order_id": self.order_id,
            "provider": self.provider,
            "amount": float(self.amount),
            "token": self.token,
            "reference": self.reference,
            "redirect_url": self.redirect_url,
            "va_number": self.va_number or None,
            "qr_code_url": self.qr_code_url or None,
            "expired_at": rfc3339(self.expires_at),
            "expires_at": rfc3339(self.expires_at),
            "status": self.payment_status,
        }


@dataclass(frozen=True)
class ReviewRow:
    """A reconciliation case: money a provider reports that the payment could not take."""

    id: int
    payment_id: int
    order_id: int
    reason: str
    refund_required: bool
    provider: str
    reference: str
    session_reference: str
    amount: Decimal
    expected_amount: Decimal
    payment_status: str
    created_at: datetime


@dataclass(frozen=True)
class NewReview:
    payment: PaymentRow
    reason: str
    refund_required: bool
    provider: str
    reference: str
    session_reference: str
    amount: Decimal


def _session(row: asyncpg.Record | None) -> SessionRow | None:
    return None if row is None else SessionRow(**dict(row))


def _payment(row: asyncpg.Record | None) -> PaymentRow | None:
    return None if row is None else PaymentRow(**dict(row))


class PaymentRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def create(
        self, order_id: int, user_id: int, amount: Decimal, ttl_s: float
    ) -> int | None:
        """The new payment's id, or None when the order has one already."""
        payment_id: int | None = await self._conn.fetchval(CREATE, order_id, user_id, amount, ttl_s)
        return payment_id

    async def lock(self, payment_id: int) -> PaymentRow | None:
        return _payment(await self._conn.fetchrow(LOCK, payment_id))

    async def settle(self, payment_id: int, status: str, reason: str | None = None) -> None:
        await self._conn.execute(SET_STATUS, payment_id, status, reason)

    async def record(self, payment_id: int, money: Decimal, outcome: str, source: str) -> None:
        await self._conn.execute(TRANSACTION, payment_id, money, outcome, source)

    async def open_session(self, payment_id: int, provider: str) -> SessionRow | None:
        return _session(await self._conn.fetchrow(OPEN_SESSION, payment_id, provider))

    async def session_by_reference(self, reference: str) -> SessionRow | None:
        return _session(await self._conn.fetchrow(SESSION_BY_REFERENCE, reference))

    async def charge_source(self, payment_id: int) -> str | None:
        """Where the payment's one charge came from ("api", or the provider's reference)."""
        source: str | None = await self._conn.fetchval(CHARGE_SOURCE, payment_id)
        return source

    async def add_review(self, review: NewReview) -> ReviewRow | None:
        """The new case, or None when this charge has one already."""
        p = review.payment
        row = await self._conn.fetchrow(
            ADD_REVIEW,
            p.id,
            p.order_id,
            review.reason,
            review.refund_required,
            review.provider,
            review.reference,
            review.session_reference,
            review.amount,
            p.amount,
            p.status,
        )
        return None if row is None else ReviewRow(**dict(row))

    async def add_session(
        self,
        payment: PaymentRow,
        provider: str,
        session: ProviderSession,
        return_path: str,
        reference: str,
    ) -> SessionRow:
        await self._conn.execute(
            ADD_SESSION,
            session.token,
            payment.id,
            provider,
            payment.amount,
            session.redirect_url,
            return_path,
            session.va_number,
            session.qr_code_url,
            session.expires_at,
            reference,
        )
        return SessionRow(
            token=session.token,
            reference=reference,
            payment_id=payment.id,
            order_id=payment.order_id,
            provider=provider,
            amount=payment.amount,
            redirect_url=session.redirect_url,
            return_path=return_path,
            va_number=session.va_number,
            qr_code_url=session.qr_code_url,
            expires_at=session.expires_at,
            payment_status=payment.status,
        )

    async def expire_due(self, limit: int) -> list[PaymentRow]:
        rows = await self._conn.fetch(EXPIRE_DUE, limit)
        return [p for r in rows if (p := _payment(r)) is not None]

    async def expire(self, payment_ids: list[int]) -> list[PaymentRow]:
        """Fail those of these payments still pending past their deadline."""
        rows = await self._conn.fetch(EXPIRE_THESE, payment_ids)
        return [p for r in rows if (p := _payment(r)) is not None]


class PaymentsUnitOfWork(PgUnitOfWork):
    def __init__(
        self, source: asyncpg.Pool | asyncpg.Connection, effects: Effects | None = None
    ) -> None:
        super().__init__(source, "payments", effects)

    def bind(self, conn: asyncpg.Connection) -> None:
        super().bind(conn)
        self.payments = PaymentRepository(conn)


async def payment_for_user(
    pool: asyncpg.Pool, user_id: int, order_id: int
) -> tuple[PaymentRow, str, str] | None:
    """The user's payment of the order, with its newest session's token and URL ("" before)."""
    row = await pool.fetchrow(BY_ORDER_FOR_USER, order_id, user_id)
    if row is None:
        return None
    fields = dict(row)
    token, url = fields.pop("token") or "", fields.pop("redirect_url") or ""
    return PaymentRow(**fields), token, url


async def session_by_token(pool: asyncpg.Pool, token: str) -> SessionRow | None:
    return _session(await pool.fetchrow(SESSION_BY_TOKEN, token))


async def list_reviews(pool: asyncpg.Pool, offset: int, limit: int) -> list[ReviewRow]:
    """Reconciliation cases, newest first."""
    return [ReviewRow(**dict(r)) for r in await pool.fetch(LIST_REVIEWS, offset, limit)]


async def not_pending(pool: asyncpg.Pool, payment_ids: list[int]) -> set[int]:
    """Those of these payments that are settled, or do not exist."""
    return {r["id"] for r in await pool.fetch(NOT_PENDING, payment_ids)}


async def pending_except(pool: asyncpg.Pool, known: list[int]) -> dict[int, datetime]:
    """The deadline of every pending payment but these."""
    return {r["id"]: r["expires_at"] for r in await pool.fetch(PENDING_EXCEPT, known)}


async def create_many(
    conn: asyncpg.Connection, orders: list[OrderAwaitingPayment], ttl_s: float
) -> list[tuple[int, int, datetime]]:
    """(order id, payment id, deadline) of each payment created; an order with one already is
    left out."""
    unique = {o.order_id: o for o in orders}.values()
    rows = await conn.fetch(
        CREATE_MANY,
        [o.order_id for o in unique],
        [o.user_id for o in unique],
        [o.total for o in unique],
        ttl_s,
    )
    return [(r["order_id"], r["id"], r["expires_at"]) for r in rows]
