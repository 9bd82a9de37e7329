"""The thin loop of a command agent: decode, handle, reply; a bad message goes to the DLQ."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import faust
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from agents.common.logs import request_id_var
from agents.common.runtime import DomainRuntime
from topics import Topic
from topics.envelope import ErrorType, Headers, Reply, field_errors

log = logging.getLogger(__name__)

C = TypeVar("C")

TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)
RETRY_FOR_S = 30.0


async def _with_retry(call: Callable[[], Awaitable[Reply]]) -> Reply:
    """Retry an infrastructure failure (Postgres down, deadlock) with backoff, for a while."""
    deadline = time.monotonic() + RETRY_FOR_S
    delay = 0.05
    while True:
        try:
            return await call()
        except TRANSIENT as e:
            if time.monotonic() > deadline:
                raise
            log.warning("transient failure, retrying in %.2f s: %r", delay, e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def dead_letter(runtime: DomainRuntime, topic: Topic, event: Any, reason: str) -> None:
    """Keep the message, unchanged, on `<topic>.dlq`; retry while Kafka does not take it."""
    message = event.message
    headers = [(k, v) for k, v in (event.headers or {}).items() if isinstance(v, bytes)]
    headers += [
        (Headers.DLQ_REASON, reason.encode()),
        (Headers.DLQ_TOPIC, message.topic.encode()),
        (Headers.DLQ_PARTITION, str(message.partition).encode()),
        (Headers.DLQ_OFFSET, str(message.offset).encode()),
    ]
    deadline = time.monotonic() + RETRY_FOR_S
    delay = 0.05
    while True:
        try:
            await runtime.producer.send_and_wait(
                topic.dlq, key=event.key, value=event.value, headers=headers
            )
            break
        except KafkaError:
            if time.monotonic() > deadline:
                log.critical(
                    "cannot dead-letter %s[%d]@%d (%s); the message, base64: %s",
                    message.topic,
                    message.partition,
                    message.offset,
                    reason,
                    base64.b64encode(event.value or b"").decode(),
                )
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
    log.warning(
        "dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason
    )


async def process_event(
    runtime: DomainRuntime,
    topic: Topic,
    event: Any,
    decode: Callable[[bytes], C],
    handle: Callable[[C], Awaitable[Reply]],
) -> Reply:
    """Handle one message; never raises, so the agent never stops and nothing is dropped."""
    request_id = (event.headers or {}).get(Headers.REQUEST_ID)
    request_id_var.set(request_id.decode(errors="replace") if request_id else None)
    try:
        command = decode(event.value or b"")
    except ValidationError as e:
        errors = field_errors(e)
        reason = "; ".join(f"{fe.path}: {fe.message}" for fe in errors)
        await dead_letter(runtime, topic, event, f"invalid: {reason}"[:1000])
        return Reply.failure(ErrorType.INVALID, "the message does not match its schema", errors)
    try:
        reply = await _with_retry(lambda: handle(command))
    except Exception as e:
        log.exception("handler failed")
        await dead_letter(runtime, topic, event, f"internal: {type(e).__name__}: {e}"[:1000])
        return Reply.failure(ErrorType.INTERNAL, "the command could not be handled")
    runtime.relay.wake()
    return reply


def command_agent(
    app: faust.App,
    runtime: DomainRuntime,
    topic: Topic,
    decode: Callable[[bytes], C],
    handle: Callable[[C], Awaitable[Reply]],
) -> None:
    """Register the agent of a command topic. It replies when the request names a reply topic."""

    async def agent(stream: Any) -> AsyncIterator[dict[str, Any]]:
        async for event in stream.events():
            reply = await process_event(runtime, topic, event, decode, handle)
            yield reply.model_dump(mode="json")

    app.agent(_channel(app, topic), name=f"{topic.name}.agent", isolated_partitions=True)(agent)


def not_yet_agent(app: faust.App, runtime: DomainRuntime, topic: Topic) -> None:
    """The agent of a domain whose commands are not built yet: it answers `unavailable` and
    keeps each message in the dead-letter topic, so nothing sent to it is lost."""

    async def agent(stream: Any) -> AsyncIterator[dict[str, Any]]:
        async for event in stream.events():
            await dead_letter(runtime, topic, event, "unavailable: not handled yet")
            reply = Reply.failure(ErrorType.UNAVAILABLE, f"{topic.name} is not handled yet")
            yield reply.model_dump(mode="json")

    app.agent(_channel(app, topic), name=f"{topic.name}.agent")(agent)


def _channel(app: faust.App, topic: Topic) -> Any:
    return app.topic(
        topic.name, partitions=topic.partitions, key_serializer="raw", value_serializer="raw"
    )
