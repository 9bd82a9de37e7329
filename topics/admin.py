"""`shopstream topics create`: create the catalogue's topics with their configs, and bring the
configs of the topics that exist already in line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code
from aiokafka.protocol.metadata import MetadataRequest

from agents.common.kafka_auth import client_options
from agents.common.settings import KafkaSecurity
from topics import Topic
from topics.incremental_alter import IncrementalAlterConfigsRequest

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36
REQUEST_TIMEOUT_MS = 10000


@dataclass(frozen=True)
class ConfigChange:
    topic: str
    name: str
    old: str | None
    new: str

    def __str__(self) -> str:
        return f"{self.topic}: {self.name} {self.old} -> {self.new}"


@dataclass
class TopicsReport:
    """What `ensure_topics` found and did on a cluster of `brokers` brokers."""

    brokers: int
    created: list[str] = field(default_factory=list)
    changed: list[ConfigChange] = field(default_factory=list)
    # Left as they are on an existing topic: its partitions (keys would move to other partitions)
    # and its replicas (that takes a reassignment).
    differs: list[str] = field(default_factory=list)


def admin_client(
    bootstrap: str, security: KafkaSecurity | None = None, timeout_ms: int = REQUEST_TIMEOUT_MS
) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=timeout_ms,
        **client_options(security or KafkaSecurity()),
    )


def replication_on(topic: Topic, brokers: int, replication: int = 0) -> int:
    """`replication` (0: the topic's own), never more than the cluster has brokers."""
    return max(1, min(replication or topic.replication, brokers))


async def ensure_topics(
    bootstrap: str,
    topics: Sequence[Topic],
    *,
    replication: int = 0,
    security: KafkaSecurity | None = None,
) -> TopicsReport:
    """Create the missing topics with their catalogue configs; set the configs of the others
    where they differ (only those configs: other overrides stay)."""
    admin = admin_client(bootstrap, security)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        report = TopicsReport(brokers=len(cluster["brokers"]))
        factors = {t.name: replication_on(t, report.brokers, replication) for t in topics}
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t.name not in existing]
        if missing:
            report.created = await _create(
                admin,
                [
                    NewTopic(
                        t.name,
                        num_partitions=t.partitions,
                        replication_factor=factors[t.name],
                        topic_configs=t.configs(factors[t.name]),
                    )
                    for t in missing
                ],
            )
        present = [t for t in topics if t.name not in report.created]
        if present:
            await _align(admin, present, factors, report)
        if report.created:
            await _until_led(admin, report.created)
        return report
    finally:
        await admin.close()


async def _until_led(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float = 30.0) -> None:
    """Until every broker knows every partition of new topics with a leader: Apache Kafka answers
    a creation before its brokers know the topic, and a client that used it at once (or asked a
    broker whose metadata is behind) would fail until they do."""
    async with asyncio.timeout(timeout_s):
        while True:
            brokers = [b.nodeId for b in admin._client.cluster.brokers()] or [None]
            answers = [await _metadata(admin, node, names) for node in brokers]
            if all(
                t["error_code"] == 0
                and t["partitions"]
                and all(p["leader"] >= 0 for p in t["partitions"])
                for described in answers
                for t in described
            ):
                return
            await asyncio.sleep(0.05)


async def _metadata(
    admin: AIOKafkaAdminClient, node: int | None, names: list[str]
) -> list[dict[str, Any]]:
    """The topics as one broker (None: any) describes them."""
    if node is None:
        described: list[dict[str, Any]] = await admin.describe_topics(names)
        return described
    response = await admin._send_request_to_node(node, MetadataRequest(names))
    topics: list[dict[str, Any]] = response.to_object()["topics"]
    return topics


async def _create(admin: AIOKafkaAdminClient, new: list[NewTopic]) -> list[str]:
    """Create topics; return those created (one made meanwhile by another client is not)."""
    response = await admin.create_topics(new)
    created = []
    for result in response.to_object()["topic_errors"]:
        code = result["error_code"]
        if code == 0:
            created.append(result["topic"])
            log.info("created topic %s", result["topic"])
        elif code != TOPIC_ALREADY_EXISTS:
            error = for_code(code)
            raise error(f"cannot create {result['topic']}: {result.get('error_message')}")
    return created


async def _align(
    admin: AIOKafkaAdminClient,
    topics: list[Topic],
    factors: dict[str, int],
    report: TopicsReport,
) -> None:
    current = await _describe_configs(admin, [t.name for t in topics])
    updates: dict[str, dict[str, str]] = {}
    # Tansu keeps no topic configs and reports none.
    unreported = [t.name for t in topics if not current.get(t.name)]
    if unreported:
        log.warning("the broker reports no configs of %s: left as they are", ", ".join(unreported))
    for topic in topics:
        if topic.name in unreported:
            continue
        for key, value in topic.configs(factors[topic.name]).items():
            old = current[topic.name].get(key)
            if old != value:
                updates.setdefault(topic.name, {})[key] = value
                report.changed.append(ConfigChange(topic.name, key, old, value))
    if updates:
        response = await admin._send_request(IncrementalAlterConfigsRequest(updates))
        for result in response.to_object()["responses"]:
            if result["error_code"] != 0:
                error = for_code(result["error_code"])
                raise error(f"cannot alter {result['resource_name']}: {result['error_message']}")
        for change in report.changed:
            log.info("changed topic config %s", change)
    for described in await admin.describe_topics([t.name for t in topics]):
        topic = next(t for t in topics if t.name == described["topic"])
        report.differs += _differences(topic, factors[topic.name], described)


async def _describe_configs(
    admin: AIOKafkaAdminClient, names: list[str]
) -> dict[str, dict[str, str | None]]:
    """Every config of these topics (asking for all: Tansu drops a request that names some)."""
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    current: dict[str, dict[str, str | None]] = {}
    for response in await admin.describe_configs(resources):
        for resource in response.to_object()["resources"]:
            if resource["error_code"] != 0:
                error = for_code(resource["error_code"])
                raise error(f"cannot describe {resource['resource_name']}")
            current[resource["resource_name"]] = {
                entry["config_names"]: entry["config_value"] for entry in resource["config_entries"]
            }
    return current


def _differences(topic: Topic, replication: int, described: dict[str, Any]) -> list[str]:
    partitions = described["partitions"]
    found = []
    if len(partitions) != topic.partitions:
        found.append(f"{topic.name}: {len(partitions)} partitions, {topic.partitions} wanted")
    replicas = {len(p["replicas"]) for p in partitions}
    if replicas and replicas != {replication}:
        counts = ",".join(str(r) for r in sorted(replicas))
        found.append(f"{topic.name}: {counts} replicas, {replication} wanted")
    return found


async def create_topics(
    bootstrap: str,
    topics: list[tuple[str, int]],
    *,
    replication: int = 1,
    config: dict[str, str] | None = None,
    security: KafkaSecurity | None = None,
) -> list[str]:
    """Create the (name, partitions) topics that are missing, all with the same replication and
    configs; return the names created. Configs of existing topics are left as they are."""
    admin = admin_client(bootstrap, security)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [(n, p) for n, p in topics if n not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(
                        n,
                        num_partitions=p,
                        replication_factor=replication,
                        topic_configs=config or {},
                    )
                    for n, p in missing
                ]
            )
        for name, _ in missing:
            log.info("created topic %s", name)
        return [n for n, _ in missing]
    finally:
        await admin.close()


async def delete_topic(bootstrap: str, name: str, *, security: KafkaSecurity | None = None) -> None:
    admin = admin_client(bootstrap, security, timeout_ms=5000)
    await admin.start()
    try:
        await admin.delete_topics([name])
    finally:
        await admin.close()


async def partitions_of(
    bootstrap: str, topic: str, *, security: KafkaSecurity | None = None
) -> list[int]:
    """A topic's partitions as the broker has them now, from a metadata request for every topic
    (a consumer's own metadata covers only the topics it tracks on Apache Kafka, and naming a
    topic may create it on a broker that auto-creates)."""
    admin = admin_client(bootstrap, security)
    await admin.start()
    try:
        described = await admin.describe_topics()
    finally:
        await admin.close()
    for t in described:
        if t["topic"] == topic and t["error_code"] == 0:
            return sorted(p["partition"] for p in t["partitions"])
    return []
