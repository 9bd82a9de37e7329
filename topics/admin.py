"""`shopstream topics create`: create every catalogue topic that does not exist yet."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36


async def create_topics(
    bootstrap: str,
    topics: list[tuple[str, int]],
    *,
    replication: int = 1,
    config: dict[str, str] | None = None,
) -> list[str]:
    """Create the (name, partitions) topics that are missing; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
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


async def delete_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        await admin.delete_topics([name])
    finally:
        await admin.close()
