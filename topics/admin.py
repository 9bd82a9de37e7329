"""`shopstream topics create`: create every catalogue topic that does not exist yet."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36


async def create_topics(
    bootstrap: str, topics: list[tuple[str, int]], *, replication: int = 1
) -> list[str]:
    """Create the (name, partitions) topics that are missing; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [(n, p) for n, p in topics if n not in existing]
        if missing:
            await admin.create_topics(
                [NewTopic(n, num_partitions=p, replication_factor=replication) for n, p in missing]
            )
        for name, _ in missing:
            log.info("created topic %s", name)
        return [n for n, _ in missing]
    finally:
        await admin.close()
