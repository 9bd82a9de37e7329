"""The outbox sweeper and topic creation against real PostgreSQL and Tansu."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from agents.common.embedded import EmbeddedTansu
from agents.common.relay import OutboxSweeper
from agents.common.settings import Settings
from gateway.bus import BusClient
from tests.trust import TEST_INTERNAL_SECRET
from topics.admin import create_topics


async def test_topic_creation_is_idempotent_and_safe_concurrently(kafka: EmbeddedTansu) -> None:
    name = f"t.{uuid.uuid4().hex[:8]}"
    results = await asyncio.gather(*(create_topics(kafka.bootstrap, [(name, 3)]) for _ in range(3)))
    assert [name] in results
    assert await create_topics(kafka.bootstrap, [(name, 3)]) == []
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([name])
    finally:
        await admin.close()
    assert len(described["partitions"]) == 3


async def test_sweeper_publishes_in_order_once_and_marks_rows(
    pool: asyncpg.Pool, kafka: EmbeddedTansu
) -> None:
    domain = f"d{uuid.uuid4().hex[:8]}"
    topic = f"relay.{domain}"
    await create_topics(kafka.bootstrap, [(topic, 1)])
    for i in range(5):
        await pool.execute(
            "INSERT INTO outbox (domain, topic, key, payload, headers) VALUES ($1,$2,$3,$4,$5)",
            domain,
            topic,
            "k",
            {"n": i},
            {"x-event": "Test"},
        )
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        sweeper = OutboxSweeper(pool, producer, domain, batch=2)
        sent = [await sweeper.sweep_once() for _ in range(2)]
    finally:
        await producer.stop()
    assert sent == [5, 0]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM outbox WHERE domain = $1 AND published_at IS NULL", domain
        )
        == 0
    )

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        got: list[int] = []
        async with asyncio.timeout(10):
            while len(got) < 5:
                for messages in (await consumer.getmany(timeout_ms=200)).values():
                    for m in messages:
                        assert m.key == b"k"
                        assert dict(m.headers)["x-event"] == b"Test"
                        got.append(json.loads(m.value)["n"])
    finally:
        await consumer.stop()
    assert got == [0, 1, 2, 3, 4]


async def test_prune_forgets_only_old_published_events(pool: asyncpg.Pool) -> None:
    domain = f"d{uuid.uuid4().hex[:8]}"
    insert = """
        INSERT INTO outbox (domain, topic, key, payload, published_at)
        VALUES ($1, 't', 'k', '{}', $2::timestamptz)
    """
    await pool.execute(insert, domain, None)
    await pool.execute(
        """INSERT INTO outbox (domain, topic, key, payload, published_at)
                          VALUES ($1, 't', 'k', '{}', now())""",
        domain,
    )
    await pool.execute(
        """INSERT INTO outbox (domain, topic, key, payload, published_at)
                          VALUES ($1, 't', 'k', '{}', now() - interval '8 days')""",
        domain,
    )
    sweeper = OutboxSweeper(pool, None, domain)
    assert await sweeper.prune() == 1
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE domain = $1", domain) == 2


async def test_a_gateway_reply_topic_lives_as_long_as_its_gateway(kafka: EmbeddedTansu) -> None:
    settings = replace(
        Settings.from_env(
            {
                "KAFKA_BROKER": kafka.bootstrap,
                "JWT_SECRET": "j" * 32,
                "INTERNAL_SECRET": TEST_INTERNAL_SECRET,
                "KAFKA_PRODUCER_IDEMPOTENCE": "0",
            }
        ),
        gateway_instance=uuid.uuid4().hex[:8],
    )
    bus = BusClient(settings)
    await bus.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        assert bus.reply_topic in await admin.list_topics()
        await bus.stop()
        assert bus.reply_topic not in await admin.list_topics()
    finally:
        await admin.close()
