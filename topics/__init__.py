"""The topic catalogue: every topic's name, partitions, key, the messages it carries, and how a
real cluster keeps it (replicas, retention, cleanup)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pydantic import BaseModel

from topics import orders, payments, products, users

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS
# What could not be handled waits for an operator (`shopstream dlq`): kept longer than the rest.
DLQ_RETENTION_MS = 30 * DAY_MS


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    key: str
    summary: str
    messages: tuple[type[BaseModel], ...] = ()
    # Compacted: the newest message of each key is kept for good (state, e.g. a table's changelog);
    # otherwise a message is deleted once it is older than `retention_ms`.
    compacted: bool = False
    # A compacted topic whose keys are time windows: also deleted once older than retention_ms.
    windowed: bool = False
    public: bool = field(default=True)
    # A command topic: each message must be signed by the gateway or a named internal producer
    # (agents/common/command_signing.py); what is not goes to the dead-letter topic.
    signed: bool = False
    retention_ms: int = 7 * DAY_MS
    # Copies of each partition, and how many must hold a write before it is acknowledged
    # (producers send acks=all). `shopstream topics create` caps both to the cluster's brokers.
    replication: int = 3
    min_insync: int = 2

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"

    def dead_letters(self) -> Topic:
        """The topic's dead-letter topic: always deleted by age, even for a compacted topic
        (a dead letter may have no key)."""
        return Topic(
            name=self.dlq,
            partitions=1,
            key="the original message's key",
            summary=f"What could not be handled from {self.name}, the reason in a header.",
            public=self.public,
            retention_ms=DLQ_RETENTION_MS,
            replication=self.replication,
            min_insync=self.min_insync,
        )

    def configs(self, replication: int) -> dict[str, str]:
        """The topic-level configs on a cluster where the topic has `replication` replicas:
        `min.insync.replicas` stays below it, so one broker may be down (or the only one up)."""
        configs = {"min.insync.replicas": str(max(1, min(self.min_insync, replication - 1)))}
        if self.compacted and self.windowed:
            configs |= {"cleanup.policy": "compact,delete", "retention.ms": str(self.retention_ms)}
        elif self.compacted:
            configs["cleanup.policy"] = "compact"
        else:
            configs |= {"cleanup.policy": "delete", "retention.ms": str(self.retention_ms)}
        return configs


PRODUCTS_COMMANDS = Topic(
    name="products.commands",
    partitions=8,
    key="the product id for updates and deletes, the command id for creates",
    summary=(
        "Catalogue writes: from the gateway, or straight from a partner catalogue feed that "
        "signs them with its producer key."
    ),
    messages=products.COMMANDS,
    signed=True,
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
    summary=(
        "Place an order: from the gateway, or a partner storefront that signs them with its "
        "producer key."
    ),
    messages=orders.COMMANDS,
    signed=True,
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
    signed=True,
)
PAYMENTS_PROVIDER_EVENTS = Topic(
    name="payments.provider-events",
    partitions=8,
    key="the payment id",
    summary=(
        "A payment provider reports outcomes here, each report signed with the secret it shares "
        "with the platform (HMAC-SHA256: see ProviderPaymentOutcome)."
    ),
    messages=payments.PROVIDER,
)
PAYMENTS_EVENTS = Topic(
    name="payments.events",
    partitions=8,
    key="the order id",
    summary="Payments created, succeeded (charged once) and failed or expired.",
    messages=payments.EVENTS,
)

# The changelogs of the Faust tables, `<app id>-<table>-changelog` (the tables' apps are
# `shopstream-<domain>-tables`): the workers do not declare
# topics, so they are created with the rest. Faust co-partitions a table with its stream.
PAYMENTS_DEADLINES_CHANGELOG = Topic(
    name="shopstream-payments-tables-deadlines-changelog",
    partitions=PAYMENTS_EVENTS.partitions,
    key="the payment id (JSON)",
    summary="The payments worker's table of pending payments' deadlines, from payments.events.",
    compacted=True,
    public=False,
)
PRODUCTS_UNITS_SOLD_CHANGELOG = Topic(
    name="shopstream-products-tables-units-sold-changelog",
    partitions=ORDERS_EVENTS.partitions,
    key="[product id, [hour start, hour end]] (JSON)",
    summary="Units sold per product per hour (best sellers), from OrderPaid on orders.events.",
    compacted=True,
    # The windows are kept 2 h in the worker; a day covers any restore.
    windowed=True,
    retention_ms=DAY_MS,
    public=False,
)
PRODUCTS_UNITS_SOLD_ORDERS_CHANGELOG = Topic(
    name="shopstream-products-tables-units-sold-orders-changelog",
    partitions=ORDERS_EVENTS.partitions,
    key="[order id, [hour start, hour end]] (JSON)",
    summary="The orders counted in units-sold, so that a redelivered OrderPaid counts once.",
    compacted=True,
    # The windows are kept 2 h in the worker; a day covers any restore.
    windowed=True,
    retention_ms=DAY_MS,
    public=False,
)
CHANGELOGS: tuple[Topic, ...] = (
    PAYMENTS_DEADLINES_CHANGELOG,
    PRODUCTS_UNITS_SOLD_CHANGELOG,
    PRODUCTS_UNITS_SOLD_ORDERS_CHANGELOG,
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


def all_topics(partitions: int = 0) -> list[Topic]:
    """Every topic and its dead-letter topic: what an agent cannot handle, internal or not,
    goes to `<name>.dlq` with the reason. `partitions` overrides the catalogue's counts (0: keep
    them): one worker per domain on a laptop gains nothing from more than one."""
    topics = [replace(t, partitions=partitions or t.partitions) for t in CATALOGUE]
    topics += [replace(t, partitions=partitions or t.partitions) for t in CHANGELOGS]
    return topics + [t.dead_letters() for t in CATALOGUE]


def all_topic_names(partitions: int = 0) -> list[tuple[str, int]]:
    return [(t.name, t.partitions) for t in all_topics(partitions)]


def reply_topic(instance: str) -> str:
    return f"gateway.replies.{instance}"


def gateway_replies(instance: str) -> Topic:
    """One gateway instance's reply topic, which that gateway creates and deletes itself."""
    return Topic(
        name=reply_topic(instance),
        partitions=1,
        key="none: a reply is matched by its correlation id",
        summary="Replies to the requests of one gateway instance.",
        public=False,
        # Replies are worth seconds: an hour at most.
        retention_ms=HOUR_MS,
    )
