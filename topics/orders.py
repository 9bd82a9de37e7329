"""Order messages: PlaceOrder on orders.commands, the order's life on orders.events."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from topics.products import OrderLine

UserId = Annotated[int, Field(ge=1, le=2**63 - 1)]
Lines = Annotated[list[OrderLine], Field(min_length=1, max_length=100)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class PlaceOrder(_Record):
    """Order these lines for this user; prices come from the catalogue. Key: the user id.

    `command_id` is the idempotency key: the same id with the same `request_hash` is the same
    order; with another hash it is refused.
    """

    type: Literal["PlaceOrder"] = "PlaceOrder"
    command_id: UUID
    user_id: UserId
    items: Lines
    request_hash: Annotated[str, Field(min_length=1, max_length=128)]


class OrderPlaced(_Record):
    """A new order waits for stock. Key: the order id."""

    type: Literal["OrderPlaced"] = "OrderPlaced"
    event_id: UUID
    occurred_at: datetime
    order_id: int
    user_id: int
    items: list[OrderLine]


class OrderAwaitingPayment(_Record):
    """The stock is held; the order waits for a payment of `total`. Key: the order id."""

    type: Literal["OrderAwaitingPayment"] = "OrderAwaitingPayment"
    event_id: UUID
    occurred_at: datetime
    order_id: int
    user_id: int
    total: Decimal


class OrderRejected(_Record):
    """Not enough stock: the order ends here. Key: the order id."""

    type: Literal["OrderRejected"] = "OrderRejected"
    event_id: UUID
    occurred_at: datetime
    order_id: int
    reason: str


class OrderPaid(_Record):
    """Paid: its reserved stock is sold. Key: the order id."""

    type: Literal["OrderPaid"] = "OrderPaid"
    event_id: UUID
    occurred_at: datetime
    order_id: int


class OrderCancelled(_Record):
    """The payment failed or expired: its reserved stock goes back. Key: the order id."""

    type: Literal["OrderCancelled"] = "OrderCancelled"
    event_id: UUID
    occurred_at: datetime
    order_id: int
    reason: str


OrderEvent = Annotated[
    OrderPlaced | OrderAwaitingPayment | OrderRejected | OrderPaid | OrderCancelled,
    Field(discriminator="type"),
]

COMMANDS: tuple[type[BaseModel], ...] = (PlaceOrder,)
EVENTS: tuple[type[BaseModel], ...] = (
    OrderPlaced,
    OrderAwaitingPayment,
    OrderRejected,
    OrderPaid,
    OrderCancelled,
)
