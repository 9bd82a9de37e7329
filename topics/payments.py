"""Payment messages: paying, a provider's report, and what became of each payment."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from topics.amounts import amount_schema, from_json_number
from topics.envelope import Headers

Id = Annotated[int, Field(ge=1, le=2**63 - 1)]
MONEY_MAX = "999999999999.99"
Money = Annotated[
    Decimal,
    BeforeValidator(from_json_number),
    Field(ge=0, le=Decimal(MONEY_MAX), decimal_places=2),
    WithJsonSchema(amount_schema(MONEY_MAX), mode="validation"),
]
ProviderName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,31}$")]
# A path on the platform's site ("/#/orders/7"), never another site ("//evil.example").
ReturnPath = Annotated[str, Field(pattern=r"^/([^/\\\s\u0000][^\s\u0000]*)?$", max_length=500)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class PayPayment(_Record):
    """Pay a pending payment; `money` must equal its amount. Key: the payment id."""

    type: Literal["PayPayment"] = "PayPayment"
    command_id: UUID
    payment_id: Id
    user_id: Id
    money: Money


class InitiatePayment(_Record):
    """Open a session with a payment provider for a pending payment, for the payment's own
    amount; the shopper pays on the provider's page. Key: the payment id."""

    type: Literal["InitiatePayment"] = "InitiatePayment"
    command_id: UUID
    payment_id: Id
    user_id: Id
    provider: ProviderName = "sandbox"
    # Where the provider's page sends the shopper back: a path on the platform's own site.
    return_path: ReturnPath = "/"
    customer_name: Annotated[str, Field(max_length=200)] = ""
    customer_email: Annotated[str, Field(max_length=254)] = ""
    customer_phone: Annotated[str, Field(max_length=50)] = ""
    payment_method: Annotated[str, Field(max_length=50)] = ""
    payment_channel: Annotated[str, Field(max_length=50)] = ""


class ProviderPaymentOutcome(_Record):
    """A payment provider reports the outcome of a payment, as its webhook would, signed with
    the secret it shares with the platform (`signature`: see `signing_input`), for the session
    the platform opened with it (`session_reference`). Key: the payment id."""

    type: Literal["ProviderPaymentOutcome"] = "ProviderPaymentOutcome"
    event_id: UUID
    payment_id: Id
    outcome: Literal["succeeded", "failed"]
    amount: Money
    reference: Annotated[str, Field(min_length=1, max_length=200)]
    reason: Annotated[str, Field(max_length=500)] = ""
    provider: ProviderName = "sandbox"
    session_reference: Annotated[
        str,
        Field(
            min_length=1,
            max_length=200,
            description=(
                "the reference the platform gave the provider when it opened the session "
                "for this payment"
            ),
        ),
    ]
    signature: Annotated[
        str,
        Field(
            pattern=r"^[0-9a-f]{64}$",
            description=(
                "lowercase hex HMAC-SHA256, keyed with the provider's secret, of "
                "`event_id|payment_id|outcome|amount|reference|reason|provider|session_reference` "
                "(amount with two decimals): see the message's description"
            ),
        ),
    ]

    def signing_input(self) -> bytes:
        """`event_id|payment_id|outcome|amount with 2 decimals|reference|reason|provider|
        session_reference`."""
        fields = (
            str(self.event_id),
            str(self.payment_id),
            self.outcome,
            f"{self.amount:.2f}",
            self.reference,
            self.reason,
            self.provider,
            self.session_reference,
        )
        return "|".join(fields).encode()

    def signature_for(self, secret: str) -> str:
        return hmac.new(secret.encode(), self.signing_input(), hashlib.sha256).hexdigest()

    def signed_by(self, secret: str) -> bool:
        return bool(secret) and hmac.compare_digest(self.signature_for(secret), self.signature)


# How a provider signs a report: what partners must implement (docs/asyncapi.json, README).
SIGNATURE_SCHEME = f"""\
Every report must carry `signature`: the HMAC-SHA256 of the signing input, keyed with the
secret the provider shares with the platform (its UTF-8 bytes; each provider has its own: for
the built-in sandbox, `SANDBOX_PROVIDER_SECRET`), written as 64 lowercase hexadecimal digits.

The signing input is the UTF-8 encoding of these eight fields joined by `|`, in this order,
with nothing before, after or in between:
1. `event_id`: the UUID in its canonical form, lowercase with hyphens
   (`6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b`), whatever case the report itself uses;
2. `payment_id`: the integer in decimal;
3. `outcome`: `succeeded` or `failed`;
4. `amount`: the decimal with exactly two digits after the point (`28.00`, never `28`);
5. `reference`: as sent;
6. `reason`: as sent, the empty string when absent;
7. `provider`: as sent, `sandbox` when absent;
8. `session_reference`: the reference the platform gave the provider when it opened the
   session for this payment, as given.

The platform recomputes it with the secret of the provider the report names and compares in
constant time, then checks that `session_reference` is one it issued, for this `payment_id`
and to this `provider`. A report without a valid signature, naming a provider the platform
does not know, or whose reference the platform did not issue for that payment and provider,
changes nothing: it goes to `payments.provider-events.dlq` with the reason in the
`{Headers.DLQ_REASON}` header. A retried report (same `event_id`) is applied once.

A success the platform cannot keep as the payment (another amount, after the payment expired
or failed, or a second charge) is not lost: the payment is put under review and
`PaymentNeedsReview` goes to `payments.events`, once per charge (`provider`, `reference`)."""

# A worked example of SIGNATURE_SCHEME (tests/unit/test_payment_provider.py checks it).
SIGNATURE_EXAMPLE_SECRET = "example-secret-never-use-0123456789ab"
SIGNATURE_EXAMPLE = {
    "type": "ProviderPaymentOutcome",
    "event_id": "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b",
    "payment_id": 42,
    "outcome": "succeeded",
    "amount": "28.00",
    "reference": "psp-7781",
    "reason": "",
    "provider": "sandbox",
    "session_reference": "ps_Zk3v9QeW1rT5yU7iO2pA4sD6",
    "signature": "2a506620ff1355a3272ca00b4a2dc8baa69ac53cdbeab93387ce9317f7691f66",
}
SIGNATURE_EXAMPLE_INPUT = (
    "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b|42|succeeded|28.00|psp-7781||sandbox|"
    "ps_Zk3v9QeW1rT5yU7iO2pA4sD6"
)


def sign_report(report: dict[str, object], secret: str) -> ProviderPaymentOutcome:
    """The report, signed: what a provider sends (the sandbox provider, tests)."""
    unsigned = ProviderPaymentOutcome.model_validate({**report, "signature": "0" * 64})
    return unsigned.model_copy(update={"signature": unsigned.signature_for(secret)})


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


ReviewReason = Literal[
    "amount_mismatch", "paid_after_expiry", "paid_after_failure", "duplicate_success"
]


class PaymentNeedsReview(_Record):
    """A provider reports money moved that the platform cannot keep as the order's payment: a
    success for another amount (the payment fails, the order is cancelled), after the payment
    expired or failed (the order stays cancelled), or a second charge of a paid payment (the
    order stays paid). An operator settles it with the provider; `refund_required` when the
    money moved for nothing the order will get. Once per charge. Key: the order id."""

    type: Literal["PaymentNeedsReview"] = "PaymentNeedsReview"
    event_id: UUID
    occurred_at: datetime
    review_id: int
    payment_id: int
    order_id: int
    reason: ReviewReason
    refund_required: bool
    provider: str
    # The provider's reference of the charge, and the session the platform opened.
    reference: str
    session_reference: str
    amount: Decimal
    expected_amount: Decimal


PaymentEvent = Annotated[
    PaymentCreated | PaymentSucceeded | PaymentFailed | PaymentNeedsReview,
    Field(discriminator="type"),
]

COMMANDS: tuple[type[BaseModel], ...] = (PayPayment, InitiatePayment)
PROVIDER: tuple[type[BaseModel], ...] = (ProviderPaymentOutcome,)
EVENTS: tuple[type[BaseModel], ...] = (
    PaymentCreated,
    PaymentSucceeded,
    PaymentFailed,
    PaymentNeedsReview,
)
