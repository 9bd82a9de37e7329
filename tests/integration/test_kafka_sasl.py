"""Kafka security settings on a real broker: a SASL_PLAINTEXT listener on Apache Kafka takes the
clients shopstream builds from KAFKA_SASL_* (PLAIN and SCRAM), and refuses the others."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from agents.common.kafka import KafkaCluster
from agents.common.kafka_auth import client_options
from agents.common.settings import KafkaSecurity, Settings
from tests.infra import shared_tmpdir
from topics import Topic
from topics.admin import admin_client, ensure_topics

pytestmark = pytest.mark.integration

USER, PASSWORD = "shop", "test-only-sasl-password"
REFUSED_WITHIN_MS = 3000


@pytest.fixture(scope="module")
def sasl_cluster() -> Iterator[KafkaCluster]:
    with shared_tmpdir("shopstream-kafka-sasl-") as tmp:
        cluster = KafkaCluster(tmp, nodes=1, sasl_users={USER: PASSWORD})
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()


def security(mechanism: str, password: str = PASSWORD) -> KafkaSecurity:
    env = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": mechanism,
        "KAFKA_SASL_USERNAME": USER,
        "KAFKA_SASL_PASSWORD": password,
    }
    return Settings.from_env(env).kafka_security


def topic() -> Topic:
    return Topic(name=f"sasl.{uuid.uuid4().hex[:8]}", partitions=1, key="-", summary="-")


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_right_credentials_create_produce_and_consume(
    sasl_cluster: KafkaCluster, mechanism: str
) -> None:
    creds = security(mechanism)
    t = topic()
    report = await ensure_topics(sasl_cluster.sasl_bootstrap, [t], security=creds)
    assert report.created == [t.name]
    producer = AIOKafkaProducer(
        bootstrap_servers=sasl_cluster.sasl_bootstrap, acks="all", **client_options(creds)
    )
    await producer.start()
    try:
        await producer.send_and_wait(t.name, b"hello", key=b"k")
    finally:
        await producer.stop()
    tp = TopicPartition(t.name, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=sasl_cluster.sasl_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **client_options(creds),
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        batch = await consumer.getmany(tp, timeout_ms=10000)
    finally:
        await consumer.stop()
    assert [m.value for m in batch[tp]] == [b"hello"]


@pytest.mark.parametrize(
    "creds",
    [
        KafkaSecurity(),
        KafkaSecurity("SASL_PLAINTEXT", "PLAIN", USER, "wrong-password"),
        KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", USER, "wrong-password"),
        KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-256", "nobody", PASSWORD),
    ],
    ids=["no-credentials", "plain-wrong-password", "scram-wrong-password", "unknown-user"],
)
async def test_other_clients_are_refused(sasl_cluster: KafkaCluster, creds: KafkaSecurity) -> None:
    admin = admin_client(sasl_cluster.sasl_bootstrap, creds, timeout_ms=REFUSED_WITHIN_MS)

    async def list_topics() -> list[str]:
        await admin.start()
        topics: list[str] = await admin.list_topics()
        return topics

    try:
        with pytest.raises((KafkaError, TimeoutError)):
            await list_topics()
    finally:
        await admin.close()
