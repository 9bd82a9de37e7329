"""`shopstream dlq list|show|replay` against a real Tansu."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from agents.common import dlq
from agents.common.embedded import EmbeddedTansu
from tests.integration.reliability import shopstream
from topics import INBOUND
from topics.admin import create_topics, partitions_of
from topics.envelope import Headers

BINARY = b"\x00\xffnot json"


def _dead_letter_headers(
    topic: str, partition: int, offset: int, reason: str, own: list[tuple[str, bytes]]
) -> list[tuple[str, bytes]]:
    """What agents.common.agent.dead_letter puts on a message it dead-letters."""
    return [
        *own,
        (Headers.DLQ_REASON, reason.encode()),
        (Headers.DLQ_TOPIC, topic.encode()),
        (Headers.DLQ_PARTITION, str(partition).encode()),
        (Headers.DLQ_OFFSET, str(offset).encode()),
    ]


async def _topics(bootstrap: str, dlq_partitions: int = 1) -> tuple[str, str]:
    original = f"dlqtest.{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [(original, 3), (f"{original}.dlq", dlq_partitions)])
    return original, f"{original}.dlq"


async def _produce(
    bootstrap: str,
    topic: str,
    messages: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]],
    partition: int = 0,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        async with asyncio.timeout(10):
            for key, value, headers in messages:
                await producer.send_and_wait(
                    topic, key=key, value=value, headers=headers, partition=partition
                )
    finally:
        await producer.stop()


async def _dead_lettered(bootstrap: str, original: str, topic: str) -> None:
    """Two dead-lettered messages: a JSON one with its own headers, then a binary one."""
    own = [(Headers.REQUEST_ID, b"req-1"), (Headers.REPLY_TO, b"gateway.replies.x")]
    await _produce(
        bootstrap,
        topic,
        [
            (
                b"k-1",
                b'{"type": "Create", "n": 1}',
                _dead_letter_headers(original, 2, 7, "bad", own),
            ),
            (None, BINARY, _dead_letter_headers(original, 1, 3, "internal: boom\nagain", [])),
        ],
    )


async def _read(bootstrap: str, topic: str) -> list[ConsumerRecord]:
    """Every message of a topic, up to its end offsets now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        async with asyncio.timeout(10):
            tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            got: list[ConsumerRecord] = []
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    got += records
    finally:
        await consumer.stop()
    return got


def _env(tmp_path: Path, kafka: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BROKER")}
    env["SHOPSTREAM_STATE_DIR"] = str(tmp_path)
    if kafka is not None:
        env["KAFKA_BROKER"] = kafka
    return env


async def test_list_counts_every_dead_letter_topic_and_gives_the_newest_reason(
    kafka: EmbeddedTansu,
) -> None:
    original, topic = await _topics(kafka.bootstrap)
    [empty] = await dlq.summarize(kafka.bootstrap, [topic])
    assert (empty.messages, empty.newest_reason) == (0, None)

    await _dead_lettered(kafka.bootstrap, original, topic)
    [summary] = await dlq.summarize(kafka.bootstrap, [topic])
    assert summary.messages == 2
    assert summary.newest_reason == "internal: boom\nagain"
    assert "internal: boom again" in dlq.format_summaries([summary])

    _, other = await _topics(kafka.bootstrap, dlq_partitions=2)
    await _produce(kafka.bootstrap, other, [(b"x", b"{}", [(Headers.DLQ_REASON, b"old")])], 0)
    await _produce(kafka.bootstrap, other, [(b"y", b"{}", [(Headers.DLQ_REASON, b"new")])], 1)
    every = {s.topic: s for s in await dlq.summarize(kafka.bootstrap)}
    assert {t.dlq for t in INBOUND} | {topic, other} <= set(every)
    assert all(name.endswith(".dlq") for name in every)
    assert every[topic] == summary
    assert (every[other].partitions, every[other].messages) == (2, 2)
    assert every[other].newest_reason == "new"
    assert set(await dlq.dlq_topics(kafka.bootstrap)) == set(every)

    with pytest.raises(dlq.DlqError, match="no such topic"):
        await dlq.summarize(kafka.bootstrap, [f"missing.{uuid.uuid4().hex[:8]}.dlq"])


async def test_show_gives_each_message_its_origin_headers_and_value(
    kafka: EmbeddedTansu,
) -> None:
    original, topic = await _topics(kafka.bootstrap)
    await _dead_lettered(kafka.bootstrap, original, topic)

    messages, total = await dlq.show(kafka.bootstrap, topic)
    assert total == 2
    first, second = (m.to_json() for m in messages)
    assert first["partition"] == 0
    assert first["offset"] == 0
    assert first["key"] == {"value": "k-1", "format": "text"}
    assert first["reason"] == "bad"
    assert first["original"] == {"topic": original, "partition": 2, "offset": 7}
    assert first["headers"] == [
        {"name": Headers.REQUEST_ID, "value": "req-1", "format": "text"},
        {"name": Headers.REPLY_TO, "value": "gateway.replies.x", "format": "text"},
    ]
    assert (first["value"], first["value_format"]) == ('{"type": "Create", "n": 1}', "json")
    assert second["key"] == {"value": None, "format": "null"}
    assert second["original"] == {"topic": original, "partition": 1, "offset": 3}
    assert second["headers"] == []
    assert second["value_format"] == "base64"
    assert base64.b64decode(second["value"]) == BINARY
    assert "reason: bad" in dlq.format_message(messages[0])

    assert [m.offset for m in (await dlq.show(kafka.bootstrap, topic, limit=1))[0]] == [0]
    assert [m.offset for m in (await dlq.show(kafka.bootstrap, topic, offset=1))[0]] == [1]
    assert (await dlq.show(kafka.bootstrap, topic, offset=2))[0] == []
    with pytest.raises(dlq.DlqError, match="no partition 4"):
        await dlq.show(kafka.bootstrap, topic, partition=4)


async def test_replay_sends_the_message_back_unchanged_with_where_it_came_from(
    kafka: EmbeddedTansu,
) -> None:
    original, topic = await _topics(kafka.bootstrap)
    await _dead_lettered(kafka.bootstrap, original, topic)

    chosen = await dlq.select(kafka.bootstrap, topic, offsets=[0])
    dry = await dlq.replay(kafka.bootstrap, chosen, dry_run=True)
    assert [(r.target, r.sent, r.error) for r in dry] == [(original, False, None)]
    assert await _read(kafka.bootstrap, original) == []

    [result] = await dlq.replay(kafka.bootstrap, chosen)
    assert (result.target, result.sent, result.error) == (original, True, None)
    [replayed] = await _read(kafka.bootstrap, original)
    assert replayed.key == b"k-1"
    assert replayed.value == b'{"type": "Create", "n": 1}'
    # The reply headers are dropped: the gateway that waited is long gone.
    assert list(replayed.headers) == [
        (Headers.REQUEST_ID, b"req-1"),
        (dlq.REPLAYED_FROM, f"{topic}:0:0".encode()),
    ]

    everything = await dlq.select(kafka.bootstrap, topic)
    assert [m.offset for m in everything] == [0, 1]
    assert all(r.sent for r in await dlq.replay(kafka.bootstrap, everything))
    got = await _read(kafka.bootstrap, original)
    assert (
        sorted((m.key, m.value) for m in got if m.key is not None)
        == [(b"k-1", b'{"type": "Create", "n": 1}')] * 2
    )
    [binary] = [m for m in got if m.key is None]
    assert binary.value == BINARY
    assert list(binary.headers) == [(dlq.REPLAYED_FROM, f"{topic}:0:1".encode())]
    assert (await dlq.show(kafka.bootstrap, topic))[1] == 2, "the dead-letter topic is kept"

    # Replayed, it failed again: dead-lettered anew, it is replayed with one replayed-from.
    again = _dead_letter_headers(original, 0, 5, "bad", list(replayed.headers))
    await _produce(kafka.bootstrap, topic, [(b"k-1", b"{}", again)])
    [redone] = await dlq.select(kafka.bootstrap, topic, offsets=[2])
    assert redone.to_json()["replayed_from"] == f"{topic}:0:0"
    assert f"replayed from: {topic}:0:0" in dlq.format_message(redone)
    assert dlq.replay_headers(redone) == [
        (Headers.REQUEST_ID, b"req-1"),
        (dlq.REPLAYED_FROM, f"{topic}:0:2".encode()),
    ]


async def test_replay_refuses_what_it_cannot_send(kafka: EmbeddedTansu) -> None:
    original, topic = await _topics(kafka.bootstrap)
    missing = f"gone.{uuid.uuid4().hex[:8]}"
    await _produce(
        kafka.bootstrap,
        topic,
        [
            (b"a", b"{}", []),
            (b"b", b"{}", _dead_letter_headers(missing, 0, 0, "bad", [])),
            (b"c", b"{}", _dead_letter_headers(original, 0, 0, "bad", [])),
        ],
    )
    with pytest.raises(dlq.DlqError, match="not 3"):
        await dlq.select(kafka.bootstrap, topic, offsets=[1, 3])
    results = await dlq.replay(kafka.bootstrap, await dlq.select(kafka.bootstrap, topic))
    assert [(r.sent, r.error) for r in results] == [
        (False, f"no {Headers.DLQ_TOPIC} header"),
        (False, f"no such topic: {missing}"),
        (True, None),
    ]
    assert missing not in await dlq.dlq_topics(kafka.bootstrap)
    assert [m.key for m in await _read(kafka.bootstrap, original)] == [b"c"]

    _, several = await _topics(kafka.bootstrap, dlq_partitions=2)
    with pytest.raises(dlq.DlqError, match="--partition"):
        await dlq.select(kafka.bootstrap, several, offsets=[0])
    assert await dlq.select(kafka.bootstrap, several, partition=1) == []


async def test_the_command_lists_and_replays(kafka: EmbeddedTansu, tmp_path: Path) -> None:
    original, topic = await _topics(kafka.bootstrap)
    await _dead_lettered(kafka.bootstrap, original, topic)

    code, out, err = await shopstream(_env(tmp_path, kafka.bootstrap), "dlq", "list")
    assert code == 0, err
    [row] = [line for line in out.splitlines() if line.startswith(f"{topic} ")]
    assert row.split()[1] == "2", out
    assert row.endswith("internal: boom again")

    # No KAFKA_BROKER: the broker of the `shopstream run` of this state directory.
    (tmp_path / "run.json").write_text(
        json.dumps({"database_url": "", "kafka_broker": kafka.bootstrap})
    )
    code, out, err = await shopstream(
        _env(tmp_path, None), "dlq", "replay", topic, "--offset", "1", "--json"
    )
    assert code == 0, err
    assert json.loads(out) == [
        {"from": f"{topic}:0:1", "to": original, "sent": True, "error": None}
    ]
    [replayed] = await _read(kafka.bootstrap, original)
    assert replayed.value == BINARY

    code, _, err = await shopstream(_env(tmp_path, None), "dlq", "show", original)
    assert code == 2
    assert "not a dead-letter topic" in err
