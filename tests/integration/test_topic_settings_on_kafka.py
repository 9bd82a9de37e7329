"""`shopstream topics create` on Apache Kafka: each topic's replicas, min ISR, retention and
cleanup from the catalogue, capped to the brokers, and existing topics brought in line."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from agents.common.kafka import KafkaCluster
from tests.infra import running_kafka
from topics import DAY_MS, DLQ_RETENTION_MS, HOUR_MS, Topic, all_topics, gateway_replies
from topics.admin import ensure_topics
from topics.incremental_alter import IncrementalAlterConfigsRequest

pytestmark = pytest.mark.integration

CLI_TIMEOUT_S = 60
CHECKED = ("min.insync.replicas", "cleanup.policy", "retention.ms")


@pytest.fixture(scope="module")
def three_nodes() -> Iterator[KafkaCluster]:
    with running_kafka(3) as cluster:
        yield cluster


def topics_create(bootstrap: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "KAFKA_BROKER": bootstrap,
        "SHOPSTREAM_STATE_DIR": str(tmp_path / "state"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "agents.cli", "topics", "create"],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


async def described(bootstrap: str, names: list[str]) -> dict[str, tuple[int, set[int]]]:
    """{topic: (partitions, the replica counts of its partitions)}."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        topics = await admin.describe_topics(names)
    finally:
        await admin.close()
    return {
        t["topic"]: (len(t["partitions"]), {len(p["replicas"]) for p in t["partitions"]})
        for t in topics
    }


async def configs_of(bootstrap: str, names: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        )
    finally:
        await admin.close()
    return {
        r["resource_name"]: {e["config_names"]: e["config_value"] for e in r["config_entries"]}
        for response in responses
        for r in response.to_object()["resources"]
    }


async def set_configs(bootstrap: str, changes: dict[str, dict[str, str]]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        response = await admin._send_request(IncrementalAlterConfigsRequest(changes))
    finally:
        await admin.close()
    assert [r["error_code"] for r in response.to_object()["responses"]] == [0] * len(changes)


def expected(topic: Topic, min_insync: int) -> dict[str, str]:
    if topic.name.endswith(".dlq"):
        return {
            "min.insync.replicas": str(min_insync),
            "cleanup.policy": "delete",
            "retention.ms": str(DLQ_RETENTION_MS),
        }
    if topic.compacted and topic.windowed:
        return {
            "min.insync.replicas": str(min_insync),
            "cleanup.policy": "compact,delete",
            "retention.ms": str(topic.retention_ms),
        }
    if topic.compacted:
        return {"min.insync.replicas": str(min_insync), "cleanup.policy": "compact"}
    return {
        "min.insync.replicas": str(min_insync),
        "cleanup.policy": "delete",
        "retention.ms": str(topic.retention_ms),
    }


async def test_topics_create_applies_the_catalogue_on_three_brokers(
    three_nodes: KafkaCluster, tmp_path: Path
) -> None:
    bootstrap = three_nodes.bootstrap
    topics = all_topics()
    names = [t.name for t in topics]

    first = topics_create(bootstrap, tmp_path)
    assert first.stdout.startswith("created: ")
    assert set(first.stdout.splitlines()[0].removeprefix("created: ").split(", ")) == set(names)

    layout = await described(bootstrap, names)
    configs = await configs_of(bootstrap, names)
    for topic in topics:
        assert layout[topic.name] == (topic.partitions, {3}), topic.name
        wanted = expected(topic, 2)
        assert {k: configs[topic.name][k] for k in wanted} == wanted, topic.name
    assert configs["orders.commands"]["retention.ms"] == str(7 * DAY_MS)
    assert configs["orders.commands.dlq"]["retention.ms"] == str(30 * DAY_MS)

    again = topics_create(bootstrap, tmp_path)
    assert again.stdout == "all topics exist\n"
    assert again.stderr.count("left as it is") == 0


async def test_topics_create_brings_drifted_configs_back(
    three_nodes: KafkaCluster, tmp_path: Path
) -> None:
    bootstrap = three_nodes.bootstrap
    topics_create(bootstrap, tmp_path)
    await set_configs(
        bootstrap,
        {
            "orders.events": {"retention.ms": "1000", "max.message.bytes": "500000"},
            "payments.events.dlq": {"cleanup.policy": "compact", "min.insync.replicas": "1"},
        },
    )

    done = topics_create(bootstrap, tmp_path)
    assert done.stdout.splitlines() == [
        "all topics exist",
        f"changed: orders.events: retention.ms 1000 -> {7 * DAY_MS}",
        "changed: payments.events.dlq: min.insync.replicas 1 -> 2",
        "changed: payments.events.dlq: cleanup.policy compact -> delete",
    ]
    configs = await configs_of(bootstrap, ["orders.events", "payments.events.dlq"])
    assert configs["orders.events"]["retention.ms"] == str(7 * DAY_MS)
    assert configs["orders.events"]["max.message.bytes"] == "500000", "another override stays"
    assert configs["payments.events.dlq"]["cleanup.policy"] == "delete"
    assert configs["payments.events.dlq"]["min.insync.replicas"] == "2"
    assert topics_create(bootstrap, tmp_path).stdout == "all topics exist\n"


async def test_gateway_reply_topic_settings_come_from_the_catalogue(
    three_nodes: KafkaCluster,
) -> None:
    replies = gateway_replies("settings-test")
    report = await ensure_topics(three_nodes.bootstrap, [replies])
    assert report.created == [replies.name]
    assert await described(three_nodes.bootstrap, [replies.name]) == {replies.name: (1, {3})}
    configs = (await configs_of(three_nodes.bootstrap, [replies.name]))[replies.name]
    assert configs["retention.ms"] == str(HOUR_MS)
    assert configs["cleanup.policy"] == "delete"
    assert configs["min.insync.replicas"] == "2"


async def test_one_broker_gets_one_replica() -> None:
    with running_kafka(1) as cluster:
        topics = all_topics()
        report = await ensure_topics(cluster.bootstrap, topics, replication=3)
        assert report.brokers == 1
        assert sorted(report.created) == sorted(t.name for t in topics)
        layout = await described(cluster.bootstrap, [t.name for t in topics])
        assert all(replicas == {1} for _, replicas in layout.values())
        configs = await configs_of(cluster.bootstrap, [t.name for t in topics])
        for topic in topics:
            wanted = expected(topic, 1)
            assert {k: configs[topic.name][k] for k in wanted} == wanted, topic.name
        again = await ensure_topics(cluster.bootstrap, topics, replication=3)
        assert (again.created, again.changed, again.differs) == ([], [], [])
