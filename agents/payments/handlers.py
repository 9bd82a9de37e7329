"""The payments side of the checkout saga: one payment per order, charged at most once."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import asyncpg
from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from agents.common.agent import Inbound
from agents.common.errors import Conflict, Invalid, NotFound, Refused
from agents.common.ledger import fingerprint, handle_once
from agents.common.relay import Effects
from agents.payments.providers import PaymentProvider, SessionRequest, new_reference
from agents.payments.repository import NewReview, PaymentRow, PaymentsUnitOfWork, create_many
from topics import PAYMENTS_EVENTS
from topics.envelope import Reply
from topics.orders import OrderAwaitingPayment
from topics.payments import (
    InitiatePayment,
    PaymentCreated,
    PaymentFailed,
    PaymentNeedsReview,
    PaymentSucceeded,
    PayPayment,
    ProviderPaymentOutcome,
    ReviewReason,
)


def _now() -> datetime:
    return datetime.now(UTC)


async def _failed(uow: PaymentsUnitOfWork, payment: PaymentRow, reason: str) -> None:
    event = PaymentFailed(
        event_id=uuid.uuid4(),
        occurred_at=_now(),
        payment_id=payment.id,
        order_id=payment.order_id,
        reason=reason,
    )
    await uow.outbox.add(PAYMENTS_EVENTS.name, str(payment.order_id), event)


async def _succeeded(uow: PaymentsUnitOfWork, payment: PaymentRow) -> None:
    event = PaymentSucceeded(
        event_id=uuid.uuid4(), occurred_at=_now(), payment_id=payment.id, order_id=payment.order_id
    )
    await uow.outbox.add(PAYMENTS_EVENTS.name, str(payment.order_id), event)


async def create_payments(
    conn: asyncpg.Connection, batch: list[Inbound[OrderAwaitingPayment]], fx: Effects, ttl_s: float
) -> None:
    """One payment per order that waits for one, in one statement; an order that has its payment
    already (the event again) gets nothing more."""
    created = await create_many(conn, [i.message for i in batch], ttl_s)
    users = {i.message.order_id: i.message for i in batch}
    for order_id, payment_id, expires_at in created:
        event = users[order_id]
        fx.emit(
            PAYMENTS_EVENTS.name,
            str(order_id),
            PaymentCreated(
                event_id=uuid.uuid4(),
                occurred_at=_now(),
                payment_id=payment_id,
                order_id=order_id,
                user_id=event.user_id,
                amount=event.total,
                expires_at=expires_at,
            ),
        )


def _payable(payment: PaymentRow | None, user_id: int, payment_id: int) -> PaymentRow:
    """The caller's payment, still to be paid; otherwise the error that says why not."""
    if payment is None or payment.user_id != user_id:
        raise NotFound(f"payment {payment_id} does not exist")
    if payment.status == "succeeded":
        raise Conflict(f"payment {payment.id} is already paid")
    if payment.status == "failed" or payment.expires_at < _now():
        raise Conflict(
            f"payment {payment.id} can no longer be paid ({payment.reason or 'expired'})"
        )
    return payment


async def initiate(
    cmd: InitiatePayment, uow: PaymentsUnitOfWork, providers: Mapping[str, PaymentProvider]
) -> Reply:
    """A session with the provider for the payment's own amount; asked again while it is
    open, the same session (a shopper who clicks Pay twice pays once)."""

    async def apply(u: PaymentsUnitOfWork) -> Reply:
        provider = providers.get(cmd.provider)
        if provider is None:
            raise Invalid(f"no payment provider {cmd.provider}")
        payment = _payable(await u.payments.lock(cmd.payment_id), cmd.user_id, cmd.payment_id)
        session = await u.payments.open_session(payment.id, provider.name)
        if session is None:
            reference = new_reference()
            created = await provider.create_session(
                SessionRequest(
                    payment_id=payment.id,
                    order_id=payment.order_id,
                    amount=payment.amount,
                    expires_at=payment.expires_at,
                    reference=reference,
                    customer_name=cmd.customer_name,
                    customer_email=cmd.customer_email,
                    payment_method=cmd.payment_method,
                )
            )
            session = await u.payments.add_session(
                payment, provider.name, created, cmd.return_path, reference
            )
        return Reply.success({"session": session.to_json()})

    return await handle_once(uow, cmd.command_id, apply, fingerprint(cmd))


def report_decoder(
    providers: Mapping[str, PaymentProvider],
) -> Callable[[bytes], ProviderPaymentOutcome]:
    """Reads a provider's report; one not signed by a known provider is invalid (and so goes
    to the dead-letter topic with the reason)."""

    def decode(raw: bytes) -> ProviderPaymentOutcome:
        report = ProviderPaymentOutcome.model_validate_json(raw)
        provider = providers.get(report.provider)
        if provider is not None and provider.verify(report):
            return report
        error = PydanticCustomError(
            "signature",
            "not signed with the secret of provider {provider}",
            {"provider": report.provider},
        )
        raise ValidationError.from_exception_data(
            "ProviderPaymentOutcome",
            [InitErrorDetails(type=error, loc=("signature",), input=report.signature)],
        )

    return decode


async def pay(cmd: PayPayment, uow: PaymentsUnitOfWork) -> Reply:
    """Charge the payment if it is the caller's, pending, and `money` is its amount exactly."""

    async def apply(u: PaymentsUnitOfWork) -> Reply:
        payment = _payable(await u.payments.lock(cmd.payment_id), cmd.user_id, cmd.payment_id)
        if cmd.money != payment.amount:
            # Well-formed, but not what this payment asks for: a conflict with its state.
            raise Conflict(f"money must be the payment's amount, {payment.amount}")
        await u.payments.settle(payment.id, "succeeded")
        await u.payments.record(payment.id, cmd.money, "succeeded", "api")
        await _succeeded(u, payment)
        return Reply.success(
            {
                "message": "payment successful",
                "payment_id": payment.id,
                "order_id": payment.order_id,
            }
        )

    return await handle_once(uow, cmd.command_id, apply, fingerprint(cmd))


async def _bound(event: ProviderPaymentOutcome, u: PaymentsUnitOfWork) -> None:
    """The report is for a session the platform opened, for this payment, with this provider;
    otherwise it changes nothing and is dead-lettered with the reason."""
    session = await u.payments.session_by_reference(event.session_reference)
    if session is None:
        raise Refused(f"no session has the reference {event.session_reference!r}")
    if session.payment_id != event.payment_id:
        raise Refused(f"session {event.session_reference!r} is not for payment {event.payment_id}")
    if session.provider != event.provider:
        raise Refused(
            f"session {event.session_reference!r} was opened with {session.provider}, "
            f"not {event.provider}"
        )


def _review_reason(payment: PaymentRow) -> ReviewReason:
    if payment.status == "succeeded":
        return "duplicate_success"
    if payment.status == "failed":
        return "paid_after_expiry" if payment.reason == "expired" else "paid_after_failure"
    return "amount_mismatch"


async def _needs_review(
    u: PaymentsUnitOfWork, payment: PaymentRow, event: ProviderPaymentOutcome
) -> bool:
    """Open a reconciliation case for the money this report says moved; False when this charge
    has one already (the same report again, under another event id)."""
    reason = _review_reason(payment)
    # Every case is money the order does not keep: a wrong amount fails the payment, a late
    # one finds the order cancelled, a second charge pays for nothing.
    review = await u.payments.add_review(
        NewReview(
            payment=payment,
            reason=reason,
            refund_required=True,
            provider=event.provider,
            reference=event.reference,
            session_reference=event.session_reference,
            amount=event.amount,
        )
    )
    if review is None:
        return False
    await u.outbox.add(
        PAYMENTS_EVENTS.name,
        str(payment.order_id),
        PaymentNeedsReview(
            event_id=uuid.uuid4(),
            occurred_at=_now(),
            review_id=review.id,
            payment_id=payment.id,
            order_id=payment.order_id,
            reason=reason,
            refund_required=review.refund_required,
            provider=review.provider,
            reference=review.reference,
            session_reference=review.session_reference,
            amount=review.amount,
            expected_amount=review.expected_amount,
        ),
    )
    return True


async def provider_outcome(event: ProviderPaymentOutcome, uow: PaymentsUnitOfWork) -> Reply:
    """A provider's report for a session the platform opened: a success for the amount pays a
    pending payment; a decline fails it; money the payment cannot take (another amount, after
    it expired or failed, a second charge) is a reconciliation case; anything else is
    recorded and changes nothing."""

    async def apply(u: PaymentsUnitOfWork) -> Reply:
        payment = await u.payments.lock(event.payment_id)
        if payment is None:
            raise Refused(f"payment {event.payment_id} does not exist")
        await _bound(event, u)
        succeeded = event.outcome == "succeeded"
        if payment.status == "pending" and not succeeded:
            reason = event.reason or "declined by the provider"
            await u.payments.settle(payment.id, "failed", reason)
            await u.payments.record(payment.id, event.amount, "failed", event.reference)
            await _failed(u, payment, reason)
            return Reply.success({"payment_id": payment.id, "applied": True})
        if payment.status == "pending" and event.amount == payment.amount:
            await u.payments.settle(payment.id, "succeeded")
            await u.payments.record(payment.id, event.amount, "succeeded", event.reference)
            await _succeeded(u, payment)
            return Reply.success({"payment_id": payment.id, "applied": True})
        if not succeeded or (
            payment.status == "succeeded"
            and await u.payments.charge_source(payment.id) == event.reference
        ):
            # No money moved, or the charge the payment has, reported again.
            await u.payments.record(
                payment.id, event.amount, f"ignored:{event.outcome}", event.reference
            )
            return Reply.success({"payment_id": payment.id, "applied": False})
        opened = await _needs_review(u, payment, event)
        await u.payments.record(payment.id, event.amount, "review", event.reference)
        if payment.status == "pending":
            await u.payments.settle(payment.id, "failed", "amount mismatch")
            await _failed(u, payment, "amount mismatch")
        return Reply.success({"payment_id": payment.id, "applied": False, "review": opened})

    return await handle_once(uow, event.event_id, apply)


async def expire_due(uow: PaymentsUnitOfWork, limit: int = 100) -> int:
    """Fail the pending payments past their deadline; each one once, whoever else runs this."""
    async with uow:
        expired = await uow.payments.expire_due(limit)
        for payment in expired:
            await _failed(uow, payment, "expired")
        await uow.commit()
    return len(expired)


async def expire(uow: PaymentsUnitOfWork, payment_ids: list[int]) -> list[int]:
    """Fail those of these payments still pending past their deadline; the ids failed."""
    async with uow:
        expired = await uow.payments.expire(payment_ids)
        for payment in expired:
            await _failed(uow, payment, "expired")
        await uow.commit()
    return [p.id for p in expired]
