"""Anyone who may produce to Kafka may write to a gateway's reply topic: its reader survives it."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from tests.e2e.platform import Platform
from tests.helpers import random_name
from topics import reply_topic

pytestmark = pytest.mark.e2e

DEEP = 100_000


async def test_a_100k_deep_reply_leaves_the_gateway_working(
    platform: Platform, http: aiohttp.ClientSession, admin: dict[str, str]
) -> None:
    topic = reply_topic(platform.env.get("GATEWAY_INSTANCE") or socket.gethostname())
    producer = AIOKafkaProducer(bootstrap_servers=platform.kafka, max_request_size=4 << 20)
    await producer.start()
    try:
        for value in (
            b'{"correlation_id": "x", "value": ' + b"[" * DEEP + b"]" * DEEP + b"}",
            b"[" * DEEP,
            b'{"correlation_id": {"not": "a string"}, "value": {"ok": true}}',
            b"not json",
        ):
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()
    # The reader polls only while a request waits: this write makes it read the messages above
    # first, and then its own reply.
    body = {"name": random_name("AfterHostileReplies"), "price": 2, "stock": 2}
    async with http.post(f"{platform.url}/product/", json=body, headers=admin) as resp:
        assert resp.status == 201, await resp.text()
    async with http.get(f"{platform.url}/healthz") as resp:
        assert resp.status == 200, await resp.text()
    async with http.post(
        f"{platform.url}/product/", json=body | {"stock": 3}, headers=admin
    ) as resp:
        assert resp.status == 201, await resp.text()
