"""The topic catalogue: every topic's name, partitions, key and the messages it carries."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from topics import orders, payments, products, users


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    key: str
    summary: str
    messages: tuple[type[BaseModel], ...] = ()
    compacted: bool = False
    public: bool = field(default=True)

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"


PRODUCTS_COMMANDS = Topic(
    name="products.commands",
    partitions=8,
    key="the product id for updates and deletes, the command id for creates",
    summary="Catalogue writes: from the gateway, or straight from a partner catalogue feed.",
    messages=products.COMMANDS,
)
PRODUCTS_EVENTS = Topic(
    name="products.events",
    partitions=8,
    key="the product id",
    summary="What changed in the catalogue, published from the products outbox.",
    messages=products.EVENTS,
)

USERS_EVENTS = Topic(
    name="users.events",
    partitions=8,
    key="the user id",
    summary="Accounts created and roles changed. Never a password, a hash or a token.",
    messages=users.EVENTS,
)
ORDERS_COMMANDS = Topic(
    name="orders.commands",
    partitions=8,
    key="the user id",
    summary="Place an order: from the gateway, or a partner storefront.",
    messages=orders.COMMANDS,
)
ORDERS_EVENTS = Topic(
    name="orders.events",
    partitions=8,
    key="the order id",
    summary="Each order's life: placed, awaiting payment, rejected, paid, cancelled.",
    messages=orders.EVENTS,
)
PAYMENTS_COMMANDS = Topic(
    name="payments.commands",
    partitions=8,
    key="the payment id",
    summary="Pay a payment: from the gateway.",
    messages=payments.COMMANDS,
)
PAYMENTS_PROVIDER_EVENTS = Topic(
    name="payments.provider-events",
    partitions=8,
    key="the payment id",
    summary="A payment provider reports outcomes here.",
    messages=payments.PROVIDER,
)
PAYMENTS_EVENTS = Topic(
    name="payments.events",
    partitions=8,
    key="the order id",
    summary="Payments created, succeeded (charged once) and failed or expired.",
    messages=payments.EVENTS,
)

CATALOGUE: tuple[Topic, ...] = (
    PRODUCTS_COMMANDS,
    PRODUCTS_EVENTS,
    USERS_EVENTS,
    ORDERS_COMMANDS,
    ORDERS_EVENTS,
    PAYMENTS_COMMANDS,
    PAYMENTS_PROVIDER_EVENTS,
    PAYMENTS_EVENTS,
)

# Topics that take messages from outside the platform; what they reject goes to `<name>.dlq`.
INBOUND: tuple[Topic, ...] = (
    PRODUCTS_COMMANDS,
    ORDERS_COMMANDS,
    PAYMENTS_COMMANDS,
    PAYMENTS_PROVIDER_EVENTS,
)


def all_topic_names(partitions: int = 0) -> list[tuple[str, int]]:
    """Every topic and its dead-letter topic: what an agent cannot handle, internal or not,
    goes to `<name>.dlq` with the reason. `partitions` overrides the catalogue's counts (0: keep
    them): one worker per domain on a laptop gains nothing from more than one."""
    names = [(t.name, partitions or t.partitions) for t in CATALOGUE]
    names += [(t.dlq, 1) for t in CATALOGUE]
    return names


def reply_topic(instance: str) -> str:
    return f"gateway.replies.{instance}"
