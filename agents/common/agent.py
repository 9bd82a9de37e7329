"""The engine of every domain agent: batches of messages, one transaction each, nothing dropped.

One actor reads all the partitions of a topic and takes what is waiting (up to `max_batch`
messages, gathered for at most `within` seconds after the first), so each key's messages keep
their order. A batch is handled in ONE Postgres transaction: its handlers are set-based where
the path is hot, or one message at a time inside it. After commit, its events and replies are
published (agents/common/relay.py), then the batch's offsets are committed.

- An infrastructure failure (Postgres down, restarting, failing over, read-only) is retried
  for as long as it lasts; the agent takes nothing more meanwhile.
- A message that does not parse, or whose handling fails for another reason, goes to its
  topic's dead-letter topic with the reason (the batch's other messages are then handled one
  at a time, so only the bad one goes); a command's caller gets a typed error.
- The message type travels in the `x-type` header: a message the agent does not handle is
  skipped without being parsed.
- On a signed topic (the command topics), a message whose signature does not hold (unsigned,
  forged or stale: agents/common/command_signing.py) goes to the dead-letter topic before it
  is parsed, and no reply is sent: its reply headers are not to be trusted either.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg
import faust
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from agents.common.command_signing import CommandVerifier
from agents.common.errors import Refused
from agents.common.failures import retry_while_transient
from agents.common.logs import request_id_var
from agents.common.relay import Effects
from agents.common.runtime import DomainRuntime
from topics import Topic
from topics.envelope import ErrorType, FieldError, Headers, Reply, field_errors

log = logging.getLogger(__name__)

M = TypeVar("M")


@dataclass(frozen=True)
class RequestMeta:
    """Where the reply to a request goes, and the request id it carries."""

    reply_to: str | None = None
    correlation_id: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Inbound(Generic[M]):
    message: M
    meta: RequestMeta


BatchHandler = Callable[[asyncpg.Connection, list[Inbound[Any]], Effects], Awaitable[None]]
OneHandler = Callable[[Any, RequestMeta, asyncpg.Connection, Effects], Awaitable[Reply | None]]


@dataclass(frozen=True)
class Route:
    """How one message type is read and handled."""

    decode: Callable[[bytes], Any]
    handle: BatchHandler


def each(handle_one: OneHandler) -> BatchHandler:
    """A batch handler that handles its messages one by one in the batch's transaction."""

    async def handle(conn: asyncpg.Connection, batch: list[Inbound[Any]], fx: Effects) -> None:
        for item in batch:
            request_id_var.set(item.meta.request_id)
            reply = await handle_one(item.message, item.meta, conn, fx)
            if reply is not None:
                fx.reply(item.meta.reply_to, item.meta.correlation_id, reply)

    return handle


def _header(event: Any, name: str) -> str | None:
    value = (event.headers or {}).get(name)
    return value.decode(errors="replace") if isinstance(value, bytes) else None


def _meta(event: Any) -> RequestMeta:
    return RequestMeta(
        _header(event, Headers.REPLY_TO),
        _header(event, Headers.CORRELATION_ID),
        _header(event, Headers.REQUEST_ID),
    )


def _kind(event: Any) -> str | None:
    kind = _header(event, Headers.TYPE)
    if kind is not None:
        return kind
    try:
        found = json.loads(event.value or b"").get("type")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


@dataclass(frozen=True)
class _Item:
    route: Route
    inbound: Inbound[Any]
    event: Any


class BatchAgent:
    """The agent of one topic: what it handles, by message type."""

    def __init__(
        self,
        runtime: DomainRuntime,
        topic: Topic,
        routes: dict[str, Route],
        *,
        commands: bool,
    ) -> None:
        self.runtime = runtime
        self.topic = topic
        self.routes = routes
        # On a command topic every message is for us: an unknown type is an invalid message.
        self.commands = commands
        settings = runtime.settings
        self.verifier = (
            CommandVerifier(settings.internal_secret, max_age_s=settings.idempotency_key_ttl_s)
            if topic.signed
            else None
        )

    async def handle_batch(self, events: Sequence[Any]) -> None:
        """Handle every message of a batch; never raises, so no offset is committed unhandled."""
        items: list[_Item] = []
        rejects = []
        for event in events:
            refusal = self._unproven(event)
            if refusal is not None:
                rejects.append(dead_letter(self.runtime, self.topic, event, refusal[:1000]))
                continue
            decoded = self._decode(event)
            if isinstance(decoded, _Item):
                items.append(decoded)
            elif decoded:
                rejects.append(self._reject(event, decoded))
        if rejects:
            await asyncio.gather(*rejects)
        if items:
            await self._handle(items)

    def _unproven(self, event: Any) -> str | None:
        """Why a message of a signed topic is refused; None when its signature holds."""
        if self.verifier is None:
            return None
        headers = {k: v for k, v in (event.headers or {}).items() if isinstance(v, bytes)}
        return self.verifier.refusal(self.topic.name, event.key, event.value, headers)

    def _decode(self, event: Any) -> _Item | list[FieldError]:
        """The message with its route; its errors if it is invalid; [] if it is not for us."""
        kind = _kind(event)
        route = self.routes.get(kind or "")
        if kind is None and self.commands and len(set(map(id, self.routes.values()))) == 1:
            # A partner may leave out `type` on a topic of one command (its default).
            route = next(iter(self.routes.values()))
        if route is None:
            if not self.commands:
                return []
            expected = ", ".join(sorted(self.routes))
            return [FieldError(path="type", message=f"{kind!r} is not one of {expected}")]
        try:
            message = route.decode(event.value or b"")
        except ValidationError as e:
            return field_errors(e)
        return _Item(route, Inbound(message, _meta(event)), event)

    async def _reject(self, event: Any, errors: list[FieldError]) -> None:
        reason = "; ".join(f"{fe.path}: {fe.message}" for fe in errors)
        failure = Reply.failure(ErrorType.INVALID, "the message does not match its schema", errors)
        await self._refuse(event, f"invalid: {reason}", failure)

    async def _refuse(self, event: Any, reason: str, failure: Reply) -> None:
        """Dead-letter the message with the reason; a command's caller gets the failure."""
        await dead_letter(self.runtime, self.topic, event, reason[:1000])
        meta = _meta(event)
        fx = Effects()
        fx.reply(meta.reply_to, meta.correlation_id, failure)
        await self.runtime.publisher.publish(fx)

    async def _handle(self, items: list[_Item]) -> None:
        what = f"{self.runtime.domain}: {self.topic.name} batch of {len(items)}"
        try:
            fx = await retry_while_transient(lambda: self._transaction(items), what)
        except Exception as e:
            if len(items) == 1:
                await self._give_up(items[0], e)
                return
            log.exception("%s failed: handling its messages one by one", what)
            for item in items:
                await self._handle([item])
            return
        await self.runtime.publisher.publish(fx)

    async def _transaction(self, items: list[_Item]) -> Effects:
        fx = Effects()
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            for route, run in _runs(items):
                await route.handle(conn, run, fx)
                await fx.flush(conn, self.runtime.domain)
        return fx

    async def _give_up(self, item: _Item, error: Exception) -> None:
        """A message failed for a reason retrying cannot fix."""
        if isinstance(error, Refused):
            log.warning("refused a message of %s: %s", self.topic.name, error)
            failure = Reply.failure(ErrorType.INVALID, str(error))
            await self._refuse(item.event, f"refused: {error}", failure)
            return
        log.error("handling a message of %s failed", self.topic.name, exc_info=error)
        failure = Reply.failure(ErrorType.INTERNAL, "the command could not be handled")
        await self._refuse(item.event, f"internal: {type(error).__name__}: {error}", failure)


def _runs(items: list[_Item]) -> list[tuple[Route, list[Inbound[Any]]]]:
    """Consecutive messages of the same route, in arrival order."""
    runs: list[tuple[Route, list[Inbound[Any]]]] = []
    for item in items:
        if runs and runs[-1][0] is item.route:
            runs[-1][1].append(item.inbound)
        else:
            runs.append((item.route, [item.inbound]))
    return runs


async def dead_letter(runtime: DomainRuntime, topic: Topic, event: Any, reason: str) -> None:
    """Keep the message, unchanged, on `<topic>.dlq` with the reason in its headers."""
    message = event.message
    headers = [(k, v) for k, v in (event.headers or {}).items() if isinstance(v, bytes)]
    headers += [
        (Headers.DLQ_REASON, reason.encode()),
        (Headers.DLQ_TOPIC, message.topic.encode()),
        (Headers.DLQ_PARTITION, str(message.partition).encode()),
        (Headers.DLQ_OFFSET, str(message.offset).encode()),
    ]

    async def send() -> None:
        await runtime.producer.send_and_wait(
            topic.dlq, key=event.key, value=event.value, headers=headers
        )

    try:
        await retry_while_transient(send, f"dead-lettering to {topic.dlq}")
    except KafkaError as e:
        log.critical(
            "cannot dead-letter %s[%d]@%d (%s: %s); the message, base64: %s",
            message.topic,
            message.partition,
            message.offset,
            reason,
            e,
            base64.b64encode(event.value or b"").decode(),
        )
        return
    log.warning(
        "dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason
    )


async def take_waiting(stream: Any, max_batch: int, within: float) -> AsyncIterator[list[Any]]:
    """Faust's `take_events`, except that the wait starts at the batch's first message.

    `take_events` wakes every `within` even when nothing comes; this one sleeps until a
    message arrives, then gathers what follows for `within` seconds (or until `max_batch`).
    The events are acknowledged once the caller is done with the batch.
    """
    events: list[Any] = []
    first = asyncio.Event()
    full = asyncio.Event()
    # Cleared while a batch is being handled (or is full): the next messages wait their turn.
    room = asyncio.Event()
    room.set()

    async def add(value: Any) -> Any:
        while not room.is_set():
            await room.wait()
        event = stream.current_event
        if event is None:
            raise RuntimeError("no current event")
        events.append(event)
        first.set()
        if len(events) >= max_batch:
            room.clear()
            full.set()
        return value

    stream.enable_acks = False
    stream.add_processor(add)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            await first.wait()
            if within > 0 and not full.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(within):
                        await full.wait()
            room.clear()
            batch = list(events)
            try:
                yield batch
            finally:
                events.clear()
                first.clear()
                full.clear()
                for event in batch:
                    await stream.ack(event)
                room.set()
    finally:
        stream._processors.remove(add)


def batch_agent(
    app: faust.App,
    runtime: DomainRuntime,
    topic: Topic,
    routes: dict[str, Route],
    *,
    commands: bool,
) -> BatchAgent:
    """Register the agent of a topic; `commands` when every message on it is meant for us."""
    agent = BatchAgent(runtime, topic, routes, commands=commands)
    tuning = runtime.settings.batching

    async def run(stream: Any) -> None:
        async for batch in take_waiting(stream, tuning.max_batch, tuning.within_s):
            await agent.handle_batch(batch)

    channel = app.topic(
        topic.name, partitions=topic.partitions, key_serializer="raw", value_serializer="raw"
    )
    app.agent(channel, name=f"{topic.name}.{runtime.domain}", concurrency=1)(run)
    return agent
