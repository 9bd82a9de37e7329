"""What the gateway answers, as pydantic models: handlers serialize with them, and the OpenAPI
document is generated from them (with the request models of `topics` and the routes).

Two vocabularies: the seed's routes speak the seed's words (`pending` until paid, `failed`,
`expired`, `expired_at`), the /api/v1 routes shopstream's own (`awaiting_payment`, `rejected`, …).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from topics.envelope import FieldError

Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
Role = Literal["user", "admin"]
OlderAmount = Annotated[float | None, Field(description="the amount, as the older seed names it")]

OrderStatus = Literal["pending", "awaiting_payment", "paid", "rejected", "cancelled"]
SeedOrderStatus = Literal["pending", "paid", "failed", "expired", "cancelled"]
PaymentStatus = Literal["pending", "succeeded", "failed"]
SeedPaymentStatus = Literal["pending", "paid", "failed", "expired"]
# Once a session with the payment provider is opened (`POST /payment/initiate`).
SessionToken = Annotated[str | None, Field(description="the provider session's token")]
GatewayToken = Annotated[str | None, Field(description="the token, as the seed also names it")]
RedirectURL = Annotated[str | None, Field(description="the provider's page, where one pays")]


def seed_order_status(status: str, reason: str | None) -> SeedOrderStatus:
    """The seed's word for an order: `pending` until it is paid or over."""
    if status in ("pending", "awaiting_payment"):
        return "pending"
    if status == "paid":
        return "paid"
    if status == "rejected":
        return "failed"
    return "expired" if reason == "expired" else "cancelled"


def seed_payment_status(status: str, reason: str | None, overdue: bool) -> SeedPaymentStatus:
    if status == "succeeded":
        return "paid"
    if status == "failed":
        return "expired" if reason == "expired" else "failed"
    return "expired" if overdue else "pending"


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Message(_Out):
    message: str


class Health(_Out):
    status: Literal["ok"]


class Ready(_Out):
    status: Literal["ready"]
    checks: dict[str, Literal["ok", "down"]]


class Problem(BaseModel):
    """RFC 9457 problem details, with the seed's `error` member (the same text as `detail`)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    error: Annotated[str, Field(description="the seed's error member")]
    instance: str | None = None
    code: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None


class Product(_Out):
    id: int
    name: str
    description: str
    price: float
    stock: int
    image_url: str
    created_at: Timestamp
    updated_at: Timestamp


class ProductPage(_Out):
    total: int
    page: int
    total_page: int
    products: list[Product]


class BestSeller(_Out):
    product_id: int
    units_sold: Annotated[int, Field(description="units paid for in the window")]


class BestSellersWindow(_Out):
    """The tumbling hour counted: [start, end)."""

    start: Timestamp
    end: Timestamp


class BestSellers(_Out):
    window: BestSellersWindow
    products: list[BestSeller]


class Deleted(_Out):
    message: Literal["success"]
    id: int


class OrderItem(_Out):
    id: int
    order_id: int
    product_id: int
    quantity: int
    price: float | None


class StatusChange(_Out):
    status: OrderStatus
    reason: str | None
    at: Timestamp


class Order(_Out):
    id: int
    user_id: int
    total_price: float | None
    status: OrderStatus
    reason: str | None
    created_at: Timestamp
    updated_at: Timestamp
    order_items: list[OrderItem]
    status_history: list[StatusChange]


class SeedOrder(_Out):
    id: int
    user_id: int
    total_price: float | None
    status: SeedOrderStatus
    reason: str | None
    created_at: Timestamp
    updated_at: Timestamp
    order_items: list[OrderItem]


class PlacedOrder(_Out):
    order: Order


class SeedPlacedOrder(_Out):
    order: SeedOrder


class OrderList(_Out):
    orders: list[Order]


class SeedOrderList(_Out):
    orders: list[SeedOrder]


class Accepted(_Out):
    message: str
    location: str


class OrderRejected(Problem):
    order: Annotated[Order | None, Field(description="the rejected order, if one was made")] = None


class SeedOrderRejected(Problem):
    order: Annotated[SeedOrder | None, Field(description="the rejected order, if one was made")] = (
        None
    )


class Payment(_Out):
    id: int
    order_id: int
    user_id: int
    amount: float | None
    total_price: Annotated[
        float | None, Field(description="the amount, as the older seed names it")
    ]
    status: PaymentStatus
    reason: str | None
    expires_at: Timestamp
    created_at: Timestamp
    updated_at: Timestamp
    token: SessionToken = None
    gateway_token: GatewayToken = None
    redirect_url: RedirectURL = None


class SeedPayment(_Out):
    id: int
    order_id: int
    user_id: int
    amount: float | None
    total_price: Annotated[
        float | None, Field(description="the amount, as the older seed names it")
    ]
    status: SeedPaymentStatus
    reason: str | None
    expired_at: Timestamp
    created_at: Timestamp
    updated_at: Timestamp
    token: SessionToken = None
    gateway_token: GatewayToken = None
    redirect_url: RedirectURL = None


class InitiatedPayment(_Out):
    """The seed's answer to `POST /payment/initiate`; `va_number` and `qr_code_url` only where
    the provider gives them."""

    payment_id: int
    token: str
    redirect_url: Annotated[str, Field(description="the provider's page, where the shopper pays")]
    va_number: str | None = None
    qr_code_url: str | None = None
    expired_at: Timestamp
    status: SeedPaymentStatus


class PaymentSession(_Out):
    payment_id: int
    order_id: int
    provider: str
    amount: float
    token: str
    redirect_url: Annotated[str, Field(description="the provider's page, where the shopper pays")]
    va_number: str | None
    qr_code_url: str | None
    expires_at: Timestamp
    status: PaymentStatus
    reference: Annotated[
        str | None,
        Field(description="issued by the platform for this session; the provider reports with it"),
    ] = None


class PaymentReview(_Out):
    """A reconciliation case: money a provider reported that the payment could not take."""

    id: int
    payment_id: int
    order_id: int
    reason: Literal[
        "amount_mismatch", "paid_after_expiry", "paid_after_failure", "duplicate_success"
    ]
    refund_required: Annotated[
        bool, Field(description="the money moved for nothing the order keeps: refund it")
    ]
    provider: str
    reference: Annotated[str, Field(description="the provider's reference of the charge")]
    session_reference: str
    amount: Annotated[float, Field(description="what the provider reports it charged")]
    expected_amount: Annotated[float, Field(description="the payment's amount")]
    payment_status: Annotated[str, Field(description="the payment's status when the report came")]
    created_at: Timestamp


class PaymentReviewList(_Out):
    reviews: list[PaymentReview]


class Paid(_Out):
    message: str
    payment_id: int
    order_id: int


class TokenResponse(_Out):
    message: Literal["success"]
    token: str
    expired_at: Timestamp
    refresh_token: str
    refresh_token_expired_at: Timestamp
    role: Role


class User(_Out):
    id: int
    full_name: str
    email: str
    role: Role
    provider: str | None = None
    provider_id: str | None = None
    email_verified: Annotated[
        bool,
        Field(
            description="the owner proved the address (its verification mail, or a provider "
            "that vouches for it); only then may an OAuth login with it link to the account"
        ),
    ] = False
    created_at: Timestamp
    updated_at: Timestamp


class Registered(_Out):
    message: Literal["success"]
    user: User


class EmailVerified(_Out):
    message: Literal["success"]
    user: User


class AuthorizationURL(_Out):
    url: str


class LoginProviders(_Out):
    providers: Annotated[
        list[Literal["google", "facebook", "github"]],
        Field(description="the OAuth providers configured on this server"),
    ]
