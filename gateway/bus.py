"""Request/reply over Kafka with plain aiokafka: one producer, one reply topic per instance.

The reply topic is read by manual assignment (no consumer group, so no rebalance on the hot
path); each pending request is a future keyed by its correlation id, with a deadline. Every
message sent is signed as the gateway's (agents/common/command_signing.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError

from agents.common.command_signing import CommandSigner
from agents.common.kafka_auth import client_options
from agents.common.settings import Settings
from gateway.validation import loads
from topics import gateway_replies, reply_topic
from topics.admin import delete_topic, ensure_topics
from topics.envelope import Headers, Reply

log = logging.getLogger(__name__)


PRODUCER = "gateway"


def _parse_reply(raw: object) -> tuple[str, Reply]:
    if not isinstance(raw, bytes):
        raise TypeError(f"a reply is bytes, not {type(raw).__name__}")
    envelope = loads(raw)
    if not isinstance(envelope, dict) or not isinstance(envelope.get("correlation_id"), str):
        raise TypeError("a reply is an object with a correlation_id string")
    return envelope["correlation_id"], Reply.model_validate(envelope["value"])


class BusTimeout(Exception):
    """No reply came by the request's deadline."""


@dataclass
class ReplyStats:
    """What the reply reader skipped: anyone who may produce to Kafka may write to its topic."""

    unreadable: int = 0
    unknown: int = 0
    restarts: int = 0


class BusClient:
    restart_delay_s = 1.0

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.reply_topic = reply_topic(settings.gateway_instance)
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tp = TopicPartition(self.reply_topic, 0)
        self.stats = ReplyStats()
        self._signer: CommandSigner | None = None

    async def start(self) -> None:
        self._signer = CommandSigner(self._settings.internal_secret, PRODUCER)
        bootstrap = self._settings.require_kafka()
        security = self._settings.kafka_security
        # Replicated as the catalogue's topics are, so that one broker's loss does not take this
        # gateway's replies with it.
        await ensure_topics(
            bootstrap,
            [gateway_replies(self._settings.gateway_instance)],
            replication=self._settings.kafka.replication_factor,
            security=security,
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=self._settings.kafka.fetch_max_wait_ms,
            **client_options(security),
        )
        await self._consumer.start()
        self._consumer.assign([self._tp])
        await self._consumer.seek_to_end(self._tp)
        # Resolve the position now: a reply written before it would otherwise be skipped.
        await self._consumer.position(self._tp)
        # Nobody waits for a reply yet: the reply topic is not polled while nobody does.
        self._consumer.pause(self._tp)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=0,
            enable_idempotence=self._settings.kafka.idempotent_producer,
            **client_options(security),
        )
        await self._producer.start()
        self._reader = asyncio.create_task(self._read_replies(), name="bus-replies")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        for fut in self._pending.values():
            fut.cancel()
        if self._producer is not None:
            await self._producer.stop()
        if self._consumer is not None:
            await self._consumer.stop()
        try:
            await delete_topic(
                self._settings.require_kafka(),
                self.reply_topic,
                security=self._settings.kafka_security,
            )
        except (KafkaError, OSError) as e:
            log.warning("could not delete reply topic %s: %s", self.reply_topic, e)

    @property
    def ready(self) -> bool:
        """The reply reader runs; without it every request would time out."""
        return self._reader is not None and not self._reader.done()

    async def _read_replies(self) -> None:
        """Read replies until cancelled; an unexpected failure restarts the loop."""
        while True:
            try:
                await self._read_loop()
            except Exception:
                self.stats.restarts += 1
                log.exception("the reply reader failed; restarting in %.1f s", self.restart_delay_s)
                await asyncio.sleep(self.restart_delay_s)

    async def _read_loop(self) -> None:
        assert self._consumer is not None
        backoff = 0.1
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=1000)
            except KafkaError as e:
                log.warning("reading replies failed, retrying in %.1f s: %s", backoff, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            for messages in batches.values():
                for message in messages:
                    self._resolve(message.value)

    def _resolve(self, raw: object) -> None:
        """Hand a reply to its waiting request; skip (log and count) anything else."""
        try:
            correlation_id, reply = _parse_reply(raw)
        except Exception as e:
            self.stats.unreadable += 1
            log.warning("unreadable reply on %s skipped: %.200s", self.reply_topic, e)
            return
        fut = self._pending.pop(correlation_id, None)
        if fut is None:
            self.stats.unknown += 1
            log.info("late or unknown reply %.64s", correlation_id)
        elif not fut.done():
            fut.set_result(reply)

    async def request(
        self,
        topic: str,
        key: str,
        value: bytes,
        *,
        headers: Sequence[tuple[str, bytes]] = (),
        timeout: float | None = None,
    ) -> Reply:
        """Send a request and wait for its reply; BusTimeout when none comes by the deadline."""
        assert self._producer is not None, "BusClient not started"
        assert self._signer is not None
        correlation_id = uuid.uuid4().hex
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = fut
        self._poll_replies()
        all_headers = self._signer.sign(
            topic,
            key.encode(),
            value,
            [
                (Headers.REPLY_TO, self.reply_topic.encode()),
                (Headers.CORRELATION_ID, correlation_id.encode()),
                *headers,
            ],
        )
        deadline = asyncio.get_running_loop().time() + (timeout or self._settings.request_timeout_s)
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    await self._producer.send_and_wait(
                        topic, value, key=key.encode(), headers=all_headers
                    )
            except TimeoutError:
                # Not acknowledged by the broker (a leader gone, say): the caller must not be
                # told that the request was accepted; it may send it again with the same key.
                raise KafkaTimeoutError(f"{topic} did not take the request in time") from None
            try:
                async with asyncio.timeout_at(deadline):
                    return await fut
            except TimeoutError:
                raise BusTimeout(f"no reply from {topic} in time") from None
        finally:
            self._pending.pop(correlation_id, None)
            self._poll_replies()

    async def publish(
        self, topic: str, key: str, value: bytes, *, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Send a message that has no reply; return once the broker has it."""
        assert self._producer is not None, "BusClient not started"
        assert self._signer is not None
        try:
            async with asyncio.timeout(self._settings.request_timeout_s):
                await self._producer.send_and_wait(
                    topic,
                    value,
                    key=key.encode(),
                    headers=self._signer.sign(topic, key.encode(), value, headers),
                )
        except TimeoutError:
            raise KafkaTimeoutError(f"{topic} did not take the message in time") from None

    def _poll_replies(self) -> None:
        """Poll the reply topic only while a request waits: an idle gateway costs the broker
        nothing. Paused, the position stays, so a reply is never skipped."""
        assert self._consumer is not None
        paused = self._tp in self._consumer.paused()
        if self._pending and paused:
            self._consumer.resume(self._tp)
        elif not self._pending and not paused:
            self._consumer.pause(self._tp)
