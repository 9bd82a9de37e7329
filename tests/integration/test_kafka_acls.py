"""The ACLs of topics/acls.py (`shopstream topics acls`) on Apache Kafka with an authorizer that
allows nothing without an ACL: each principal can do what its process does, and nothing else."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
)

from agents.common.kafka import KafkaCluster
from agents.common.kafka_auth import client_options
from agents.common.settings import KafkaSecurity, Settings
from tests.infra import shared_tmpdir
from topics import (
    ORDERS_COMMANDS,
    ORDERS_EVENTS,
    PAYMENTS_PROVIDER_EVENTS,
    PRODUCTS_EVENTS,
    USERS_EVENTS,
    Topic,
    all_topics,
    gateway_replies,
)
from topics.acls import PRINCIPALS, create_acls, default_principals
from topics.admin import delete_topic, ensure_topics

pytestmark = pytest.mark.integration

PASSWORD = "test-only-acl-password"
PRINCIPAL_NAMES = {role: p.removeprefix("User:") for role, p in default_principals().items()}
WAIT_S = 20.0


def creds(role: str) -> KafkaSecurity:
    env = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": PRINCIPAL_NAMES[role],
        "KAFKA_SASL_PASSWORD": PASSWORD,
    }
    return Settings.from_env(env).kafka_security


@pytest.fixture(scope="module")
def acl_cluster() -> Iterator[KafkaCluster]:
    users = dict.fromkeys(PRINCIPAL_NAMES.values(), PASSWORD)
    with shared_tmpdir("shopstream-kafka-acls-") as tmp:
        cluster = KafkaCluster(tmp, nodes=1, sasl_users=users, acls=True)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture(scope="module")
async def cluster(acl_cluster: KafkaCluster) -> KafkaCluster:
    """The ACLs created by the super user (the anonymous PLAINTEXT principal), then every topic
    created by the admin principal, as the hook job does."""
    created = await create_acls(acl_cluster.bootstrap, default_principals())
    assert created == sum(len(a.operations) for acls in PRINCIPALS.values() for a in acls)
    assert await create_acls(acl_cluster.bootstrap, default_principals()) == created, "idempotent"
    report = await ensure_topics(acl_cluster.sasl_bootstrap, all_topics(1), security=creds("admin"))
    assert len(report.created) == len(all_topics(1))
    again = await ensure_topics(acl_cluster.sasl_bootstrap, all_topics(1), security=creds("admin"))
    assert again.created == []
    assert again.differs == []
    return acl_cluster


async def produce(cluster: KafkaCluster, role: str, topic: str) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=cluster.sasl_bootstrap,
        acks="all",
        enable_idempotence=True,
        **client_options(creds(role)),
    )
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, b"acl", key=b"k"), WAIT_S)
    finally:
        await producer.stop()


@pytest.mark.parametrize(
    ("role", "topic", "allowed"),
    [
        ("gateway", ORDERS_COMMANDS.name, True),
        ("gateway", PAYMENTS_PROVIDER_EVENTS.name, True),
        ("gateway", ORDERS_EVENTS.name, False),
        ("gateway", USERS_EVENTS.name, False),
        ("partner", PAYMENTS_PROVIDER_EVENTS.name, True),
        ("partner", ORDERS_COMMANDS.name, False),
        ("partner", PRODUCTS_EVENTS.name, False),
        ("orders", ORDERS_EVENTS.name, True),
        ("orders", f"{ORDERS_COMMANDS.name}.dlq", True),
        ("orders", PRODUCTS_EVENTS.name, False),
        ("orders", ORDERS_COMMANDS.name, False),
        ("users", USERS_EVENTS.name, True),
        ("users", ORDERS_COMMANDS.name, False),
        ("products", ORDERS_EVENTS.name, False),
    ],
)
async def test_each_principal_writes_only_its_topics(
    cluster: KafkaCluster, role: str, topic: str, allowed: bool
) -> None:
    """With idempotent producers, as the processes run them (no cluster ACL needed)."""
    if allowed:
        await produce(cluster, role, topic)
    else:
        with pytest.raises(TopicAuthorizationFailedError):
            await produce(cluster, role, topic)


async def consume_one(cluster: KafkaCluster, role: str, topic: str, group: str | None) -> bytes:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=cluster.sasl_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **client_options(creds(role)),
    )
    await consumer.start()
    try:
        if group is None:
            consumer.assign([TopicPartition(topic, 0)])
        else:
            consumer.subscribe([topic])
        message = await asyncio.wait_for(consumer.getone(), WAIT_S)
        if group is not None:
            await consumer.commit()
        return bytes(message.value or b"")
    finally:
        await consumer.stop()


async def visible_topics(cluster: KafkaCluster, role: str) -> set[str]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=cluster.sasl_bootstrap, **client_options(creds(role))
    )
    await consumer.start()
    try:
        return set(await consumer.topics())
    finally:
        await consumer.stop()


async def test_a_worker_reads_its_topics_in_its_group_only(cluster: KafkaCluster) -> None:
    await produce(cluster, "gateway", ORDERS_COMMANDS.name)
    assert await consume_one(cluster, "orders", ORDERS_COMMANDS.name, "shopstream-orders") == b"acl"
    with pytest.raises(GroupAuthorizationFailedError):
        await consume_one(cluster, "orders", ORDERS_COMMANDS.name, "someone-else")
    # Neither can even see users.events (Describe, which Read would include, is denied).
    assert ORDERS_COMMANDS.name in await visible_topics(cluster, "orders")
    for role in ("orders", "gateway", "partner"):
        assert USERS_EVENTS.name not in await visible_topics(cluster, role), role


async def test_the_gateway_owns_its_reply_topic_and_reads_the_catalogue(
    cluster: KafkaCluster,
) -> None:
    replies = gateway_replies(f"pod-{uuid.uuid4().hex[:8]}")
    gateway = creds("gateway")
    report = await ensure_topics(cluster.sasl_bootstrap, [replies], security=gateway)
    assert report.created == [replies.name]
    await produce(cluster, "orders", replies.name)
    assert await consume_one(cluster, "gateway", replies.name, None) == b"acl"
    await produce(cluster, "products", PRODUCTS_EVENTS.name)
    assert await consume_one(cluster, "gateway", PRODUCTS_EVENTS.name, None) == b"acl"
    await delete_topic(cluster.sasl_bootstrap, replies.name, security=gateway)
    sneaky = Topic(name="orders.sneaky", partitions=1, key="-", summary="-")
    with pytest.raises(Exception, match=r"(?i)authoriz"):
        await ensure_topics(cluster.sasl_bootstrap, [sneaky], security=gateway)
