"""Payment messages: paying, a provider's report, and what became of each payment."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

Id = Annotated[int, Field(ge=1, le=2**63 - 1)]
Money = Annotated[Decimal, Field(ge=0, le=Decimal("999999999999.99"), decimal_places=2)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class PayPayment(_Record):
    """Pay a pending payment; `money` must equal its amount. Key: the payment id."""

    type: Literal["PayPayment"] = "PayPayment"
    command_id: UUID
    payment_id: Id
    user_id: Id
    money: Money


class ProviderPaymentOutcome(_Record):
    """A payment provider reports the outcome of a payment. Key: the payment id."""

    type: Literal["ProviderPaymentOutcome"] = "ProviderPaymentOutcome"
    event_id: UUID
    payment_id: Id
    outcome: Literal["succeeded", "failed"]
    amount: Money
    reference: Annotated[str, Field(min_length=1, max_length=200)]
    reason: Annotated[str, Field(max_length=500)] = ""


class PaymentCreated(_Record):
    """A pending payment for an order's total. Key: the order id."""

    type: Literal["PaymentCreated"] = "PaymentCreated"
    event_id: UUID
    occurred_at: datetime
    payment_id: int
    order_id: int
    user_id: int
    amount: Decimal
    # When it expires unpaid; absent from events written before it was added.
    expires_at: datetime | None = None


class PaymentSucceeded(_Record):
    """Charged, once. Key: the order id."""

    type: Literal["PaymentSucceeded"] = "PaymentSucceeded"
    event_id: UUID
    occurred_at: datetime
    payment_id: int
    order_id: int


class PaymentFailed(_Record):
    """Failed or expired: the order is cancelled and its stock released. Key: the order id."""

    type: Literal["PaymentFailed"] = "PaymentFailed"
    event_id: UUID
    occurred_at: datetime
    payment_id: int
    order_id: int
    reason: str


PaymentEvent = Annotated[
    PaymentCreated | PaymentSucceeded | PaymentFailed, Field(discriminator="type")
]

COMMANDS: tuple[type[BaseModel], ...] = (PayPayment,)
PROVIDER: tuple[type[BaseModel], ...] = (ProviderPaymentOutcome,)
EVENTS: tuple[type[BaseModel], ...] = (PaymentCreated, PaymentSucceeded, PaymentFailed)
