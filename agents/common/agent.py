"""The thin loop of a command agent: decode, handle, reply; a bad message goes to the DLQ."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import faust
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ValidationError

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


R = TypeVar("R")


async def _with_retry(call: Callable[[], Awaitable[R]]) -> R:
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


@dataclass(frozen=True)
class RequestMeta:
    """Where the reply to a request goes, when it is not sent at once but later."""

    reply_to: str | None
    correlation_id: str | None


def _header(event: Any, name: str) -> str | None:
    value = (event.headers or {}).get(name)
    return value.decode(errors="replace") if isinstance(value, bytes) else None


async def process_event(
    runtime: DomainRuntime,
    topic: Topic,
    event: Any,
    decode: Callable[[bytes], C],
    handle: Callable[[C, RequestMeta], Awaitable[Reply | None]],
) -> Reply | None:
    """Handle one message; never raises, so the agent never stops and nothing is dropped.

    None means the handler answers later (see RequestMeta)."""
    request_id_var.set(_header(event, Headers.REQUEST_ID))
    meta = RequestMeta(_header(event, Headers.REPLY_TO), _header(event, Headers.CORRELATION_ID))
    try:
        command = decode(event.value or b"")
    except ValidationError as e:
        errors = field_errors(e)
        reason = "; ".join(f"{fe.path}: {fe.message}" for fe in errors)
        await dead_letter(runtime, topic, event, f"invalid: {reason}"[:1000])
        return Reply.failure(ErrorType.INVALID, "the message does not match its schema", errors)
    try:
        reply = await _with_retry(lambda: handle(command, meta))
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
    handle: Callable[[C, RequestMeta], Awaitable[Reply | None]],
) -> None:
    """Register the agent of a command topic. It replies when the request names a reply topic."""

    async def agent(stream: Any) -> AsyncIterator[dict[str, Any]]:
        async for event in stream.events():
            reply = await process_event(runtime, topic, event, decode, handle)
            if reply is not None:
                yield reply.model_dump(mode="json")

    app.agent(_channel(app, topic), name=f"{topic.name}.agent", isolated_partitions=True)(agent)


EventHandlers = dict[str, tuple[type[BaseModel], Callable[[Any], Awaitable[Reply]]]]


def event_agent(
    app: faust.App, runtime: DomainRuntime, topic: Topic, handlers: EventHandlers
) -> None:
    """Register an agent that reacts to some of a topic's events (by `type`), ignoring the rest.

    Events come from our own outboxes, so one that does not parse is a bug: it is logged whole
    and skipped, and the agent goes on."""

    async def agent(stream: Any) -> None:
        async for event in stream.events():
            await _react(runtime, event, handlers)

    app.agent(
        _channel(app, topic), name=f"{topic.name}.{runtime.domain}", isolated_partitions=True
    )(agent)


async def _react(runtime: DomainRuntime, event: Any, handlers: EventHandlers) -> None:
    raw = event.value or b""
    try:
        kind = json.loads(raw).get("type")
    except (ValueError, AttributeError):
        kind = None
    if kind not in handlers:
        return
    model, handle = handlers[kind]
    try:
        message = model.model_validate_json(raw)
        await _with_retry(lambda: handle(message))
    except Exception:
        log.exception(
            "could not handle %s; the event, base64: %s", kind, base64.b64encode(raw).decode()
        )
        return
    runtime.relay.wake()


def _channel(app: faust.App, topic: Topic) -> Any:
    return app.topic(
        topic.name, partitions=topic.partitions, key_serializer="raw", value_serializer="raw"
    )
