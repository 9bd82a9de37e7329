"""`shopstream dlq`: list, show and replay the dead-letter topics (`<topic>.dlq`).

Plain aiokafka, no Faust, no consumer group: every read assigns the partitions by hand, starts
where it is told and stops at the end offsets taken when it began, so it never waits for new
messages and never moves anyone's committed offsets."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from agents.common.command_signing import CommandSigner, CommandVerifier
from agents.common.kafka_auth import client_options
from agents.common.settings import KafkaSecurity
from topics.envelope import Headers

SUFFIX = ".dlq"
REPLAYED_FROM = "x-dlq-replayed-from"
DLQ_HEADER_PREFIX = "x-dlq-"
TIMEOUT_S = 30.0
POLL_MS = 200
REQUEST_TIMEOUT_MS = 10000
REASON_WIDTH = 100


class DlqError(Exception):
    """What the operator asked for cannot be done: no such topic, partition or offset."""


@dataclass(frozen=True)
class DeadLetter:
    """One message of a dead-letter topic, as it was dead-lettered."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str | None:
        for k, v in reversed(self.headers):
            if k == name:
                return v.decode(errors="replace")
        return None

    @property
    def reason(self) -> str | None:
        return self.header(Headers.DLQ_REASON)

    @property
    def original_topic(self) -> str | None:
        return self.header(Headers.DLQ_TOPIC)

    @property
    def original_partition(self) -> int | None:
        return _int(self.header(Headers.DLQ_PARTITION))

    @property
    def original_offset(self) -> int | None:
        return _int(self.header(Headers.DLQ_OFFSET))

    @property
    def other_headers(self) -> tuple[tuple[str, bytes], ...]:
        """The message's own headers: every one but the x-dlq-* ones."""
        return tuple((k, v) for k, v in self.headers if not k.startswith(DLQ_HEADER_PREFIX))

    @property
    def ref(self) -> str:
        """`<dlq topic>:<partition>:<offset>`, the value of x-dlq-replayed-from."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    def to_json(self) -> dict[str, Any]:
        value, value_format = _render_value(self.value)
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": _iso(self.timestamp_ms),
            "key": _render_bytes(self.key),
            "reason": self.reason,
            "original": {
                "topic": self.original_topic,
                "partition": self.original_partition,
                "offset": self.original_offset,
            },
            "replayed_from": self.header(REPLAYED_FROM),
            "headers": [{"name": k, **_render_bytes(v)} for k, v in self.other_headers],
            "value": value,
            "value_format": value_format,
        }


@dataclass(frozen=True)
class DlqSummary:
    topic: str
    partitions: int
    messages: int
    newest_reason: str | None
    newest_timestamp_ms: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partitions": self.partitions,
            "messages": self.messages,
            "newest_reason": self.newest_reason,
            "newest_timestamp": _iso(self.newest_timestamp_ms),
        }


@dataclass(frozen=True)
class ReplayResult:
    source: DeadLetter
    target: str | None
    sent: bool
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"from": self.source.ref, "to": self.target, "sent": self.sent, "error": self.error}


@asynccontextmanager
async def _consumer(
    bootstrap: str, security: KafkaSecurity | None
) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        **client_options(security or KafkaSecurity()),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        request_timeout_ms=REQUEST_TIMEOUT_MS,
    )
    try:
        await consumer.start()
        # Let the consumer's own tasks take their first step: aiokafka's no-group coordinator
        # task, cancelled before it ever ran, makes stop() raise CancelledError.
        await asyncio.sleep(0)
        yield consumer
    finally:
        await consumer.stop()


async def _describe(
    bootstrap: str, security: KafkaSecurity | None
) -> dict[str, list[TopicPartition]]:
    """Every topic on the broker and its partitions, asked afresh (the admin client's metadata
    of all topics: naming a topic in a metadata request may create it, and a consumer's own
    metadata narrows to the partitions it is assigned)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=REQUEST_TIMEOUT_MS,
        **client_options(security or KafkaSecurity()),
    )
    try:
        await admin.start()
        described = await admin.describe_topics()
    finally:
        await admin.close()
    return {
        t["topic"]: [
            TopicPartition(t["topic"], p) for p in sorted(x["partition"] for x in t["partitions"])
        ]
        for t in described
        if t["error_code"] == 0
    }


def _pick(
    layout: dict[str, list[TopicPartition]], topics: Iterable[str]
) -> dict[str, list[TopicPartition]]:
    names = list(dict.fromkeys(topics))
    missing = [t for t in names if t not in layout]
    if missing:
        raise DlqError(f"no such topic: {', '.join(missing)}")
    return {t: layout[t] for t in names}


async def _read(
    consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int, limit: int | None
) -> list[DeadLetter]:
    """The messages of one partition from `start` up to (not including) `end`, at most `limit`."""
    out: list[DeadLetter] = []
    if start >= end or limit == 0:
        return out
    consumer.assign([tp])
    consumer.seek(tp, start)
    while True:
        batch = await consumer.getmany(tp, timeout_ms=POLL_MS)
        for r in batch.get(tp, ()):
            if r.offset >= end:
                return out
            out.append(
                DeadLetter(
                    topic=r.topic,
                    partition=r.partition,
                    offset=r.offset,
                    timestamp_ms=r.timestamp,
                    key=r.key,
                    value=r.value,
                    headers=tuple((k, bytes(v or b"")) for k, v in r.headers),
                )
            )
            if limit is not None and len(out) >= limit:
                return out
        if await consumer.position(tp) >= end:
            return out


async def dlq_topics(
    bootstrap: str, *, timeout_s: float = TIMEOUT_S, security: KafkaSecurity | None = None
) -> list[str]:
    """Every dead-letter topic on the broker: every name ending in `.dlq`."""
    async with asyncio.timeout(timeout_s):
        return sorted(t for t in await _describe(bootstrap, security) if t.endswith(SUFFIX))


async def summarize(
    bootstrap: str,
    topics: Sequence[str] | None = None,
    *,
    timeout_s: float = TIMEOUT_S,
    security: KafkaSecurity | None = None,
) -> list[DlqSummary]:
    """How many messages each dead-letter topic holds and why the newest one is there.

    `topics` None means every `.dlq` topic on the broker."""
    async with asyncio.timeout(timeout_s):
        layout = await _describe(bootstrap, security)
        if topics is None:
            topics = sorted(t for t in layout if t.endswith(SUFFIX))
        chosen = _pick(layout, topics)
    async with asyncio.timeout(timeout_s), _consumer(bootstrap, security) as consumer:
        out: list[DlqSummary] = []
        for name, tps in chosen.items():
            starts = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
            newest: DeadLetter | None = None
            for tp in tps:
                last = await _read(consumer, tp, max(starts[tp], ends[tp] - 1), ends[tp], 1)
                if last and (newest is None or last[0].timestamp_ms >= newest.timestamp_ms):
                    newest = last[0]
            out.append(
                DlqSummary(
                    topic=name,
                    partitions=len(tps),
                    messages=sum(ends[tp] - starts[tp] for tp in tps),
                    newest_reason=newest.reason if newest else None,
                    newest_timestamp_ms=newest.timestamp_ms if newest else None,
                )
            )
        return out


async def show(
    bootstrap: str,
    topic: str,
    *,
    partition: int | None = None,
    offset: int | None = None,
    limit: int | None = None,
    timeout_s: float = TIMEOUT_S,
    security: KafkaSecurity | None = None,
) -> tuple[list[DeadLetter], int]:
    """The messages of a dead-letter topic, by partition then offset, from `offset` in each
    partition, at most `limit`; and how many the chosen partitions hold in all."""
    async with asyncio.timeout(timeout_s):
        tps = _choose(_pick(await _describe(bootstrap, security), [topic])[topic], partition)
    async with asyncio.timeout(timeout_s), _consumer(bootstrap, security) as consumer:
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        out: list[DeadLetter] = []
        for tp in tps:
            left = None if limit is None else limit - len(out)
            out += await _read(consumer, tp, max(starts[tp], offset or 0), ends[tp], left)
        return out, sum(ends[tp] - starts[tp] for tp in tps)


async def select(
    bootstrap: str,
    topic: str,
    *,
    partition: int | None = None,
    offsets: Iterable[int] | None = None,
    timeout_s: float = TIMEOUT_S,
    security: KafkaSecurity | None = None,
) -> list[DeadLetter]:
    """The messages to replay: those at `offsets` of one partition, or all (offsets None).

    With offsets, `partition` may be left out only when the topic has one partition."""
    async with asyncio.timeout(timeout_s):
        tps = _pick(await _describe(bootstrap, security), [topic])[topic]
    wanted = None if offsets is None else sorted(set(offsets))
    if wanted is None:
        tps = _choose(tps, partition)
    elif partition is None and len(tps) != 1:
        raise DlqError(f"{topic} has {len(tps)} partitions: say which with --partition")
    else:
        tps = _choose(tps, partition if partition is not None else tps[0].partition)
    if wanted == []:
        return []
    async with asyncio.timeout(timeout_s), _consumer(bootstrap, security) as consumer:
        if wanted is None:
            starts = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
            out: list[DeadLetter] = []
            for tp in tps:
                out += await _read(consumer, tp, starts[tp], ends[tp], None)
            return out
        [tp] = tps
        start = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        absent = [o for o in wanted if not start <= o < end]
        if absent:
            raise DlqError(
                f"{topic}[{tp.partition}] holds offsets {start} to {end - 1}, "
                f"not {', '.join(map(str, absent))}"
            )
        found = {
            m.offset: m
            for m in await _read(consumer, tp, wanted[0], wanted[-1] + 1, None)
            if m.offset in wanted
        }
        gone = [o for o in wanted if o not in found]
        if gone:
            raise DlqError(f"{topic}[{tp.partition}] has no message at {', '.join(map(str, gone))}")
        return [found[o] for o in wanted]


# A replayed command must not answer a gateway that stopped waiting long ago (its reply topic may
# be gone): its reply headers are dropped.
REPLY_HEADERS = (Headers.REPLY_TO, Headers.CORRELATION_ID)


Resigner = Callable[[str, DeadLetter, list[tuple[str, bytes]]], list[tuple[str, bytes]]]


def replay_headers(
    message: DeadLetter, resign: Resigner | None = None, target: str | None = None
) -> list[tuple[str, bytes]]:
    """The message's own headers, without the x-dlq-* and reply ones, plus where it is replayed
    from. A signed command whose signature is genuine is signed afresh by its producer (so that
    its age does not refuse it again); any other message keeps what it had, and a forged one
    comes back to the dead-letter topic."""
    own = [(k, v) for k, v in message.other_headers if k not in REPLY_HEADERS]
    headers = [*own, (REPLAYED_FROM, message.ref.encode())]
    if resign is not None and target is not None:
        return resign(target, message, headers)
    return headers


def resigner(secret: str) -> Resigner:
    """What `replay` signs afresh with: the genuine signed commands, as their own producer."""
    verifier = CommandVerifier(secret)

    def resign(
        topic: str, m: DeadLetter, headers: list[tuple[str, bytes]]
    ) -> list[tuple[str, bytes]]:
        original = dict(m.other_headers)
        if verifier.refusal(topic, m.key, m.value, original, check_age=False) is not None:
            return headers
        producer = original[Headers.PRODUCER].decode()
        return CommandSigner(secret, producer).sign(topic, m.key, m.value, headers)

    return resign


async def replay(
    bootstrap: str,
    messages: Sequence[DeadLetter],
    *,
    dry_run: bool = False,
    timeout_s: float = TIMEOUT_S,
    security: KafkaSecurity | None = None,
    resign: Resigner | None = None,
) -> list[ReplayResult]:
    """Send each message back to its original topic (x-dlq-topic): same key, same value.

    Waits for every send (acks=all); a message that cannot be sent is reported, not raised.
    `resign` signs genuine commands afresh (see replay_headers)."""
    results: list[ReplayResult] = []
    pending: list[tuple[DeadLetter, str]] = []
    async with asyncio.timeout(timeout_s):
        existing = await _describe(bootstrap, security)
    for m in messages:
        target = m.original_topic
        if not target:
            results.append(ReplayResult(m, None, False, f"no {Headers.DLQ_TOPIC} header"))
        elif target.endswith(SUFFIX):
            results.append(ReplayResult(m, target, False, "names a dead-letter topic"))
        elif target not in existing:
            results.append(ReplayResult(m, target, False, f"no such topic: {target}"))
        else:
            pending.append((m, target))
    if dry_run or not pending:
        results += [ReplayResult(m, t, False, None) for m, t in pending]
        return _in_order(messages, results)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        request_timeout_ms=REQUEST_TIMEOUT_MS,
        **client_options(security or KafkaSecurity()),
    )
    try:
        async with asyncio.timeout(timeout_s):
            await producer.start()
        sends: list[tuple[DeadLetter, str, asyncio.Future[Any]]] = []
        for m, target in pending:
            try:
                async with asyncio.timeout(timeout_s):
                    fut = await producer.send(
                        target,
                        key=m.key,
                        value=m.value,
                        headers=replay_headers(m, resign, target),
                    )
            except (KafkaError, TimeoutError) as e:
                results.append(ReplayResult(m, target, False, repr(e)))
            else:
                sends.append((m, target, fut))
        if sends:
            await asyncio.wait([f for _, _, f in sends], timeout=timeout_s)
        for m, target, f in sends:
            if not f.done():
                error: str | None = f"not acknowledged within {timeout_s:g} s; it may still arrive"
            else:
                exc = f.exception()
                error = None if exc is None else repr(exc)
            results.append(ReplayResult(m, target, error is None, error))
    finally:
        await producer.stop()
    return _in_order(messages, results)


def _in_order(messages: Sequence[DeadLetter], results: list[ReplayResult]) -> list[ReplayResult]:
    by_ref = {r.source.ref: r for r in results}
    return [by_ref[m.ref] for m in messages]


def _choose(tps: list[TopicPartition], partition: int | None) -> list[TopicPartition]:
    if partition is None:
        return tps
    chosen = [tp for tp in tps if tp.partition == partition]
    if not chosen:
        raise DlqError(f"{tps[0].topic if tps else 'the topic'} has no partition {partition}")
    return chosen


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _iso(ms: int | None) -> str | None:
    if ms is None or ms < 0:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _render_bytes(data: bytes | None) -> dict[str, str | None]:
    """A key or header value: UTF-8 text if it is, else base64."""
    if data is None:
        return {"value": None, "format": "null"}
    try:
        return {"value": data.decode(), "format": "text"}
    except UnicodeDecodeError:
        return {"value": base64.b64encode(data).decode(), "format": "base64"}


def _render_value(data: bytes | None) -> tuple[str | None, str]:
    """A message value: its text if it is UTF-8 JSON, else base64."""
    if data is None:
        return None, "null"
    try:
        text = data.decode()
        json.loads(text)
    except ValueError:
        return base64.b64encode(data).decode(), "base64"
    return text, "json"


# What the command prints.


def format_summaries(summaries: Sequence[DlqSummary]) -> str:
    if not summaries:
        return "no dead-letter topics"
    rows = [("TOPIC", "MESSAGES", "NEWEST", "NEWEST REASON")]
    rows += [
        (
            s.topic,
            str(s.messages),
            _iso(s.newest_timestamp_ms) or "-",
            _one_line(s.newest_reason, REASON_WIDTH) if s.newest_reason is not None else "-",
        )
        for s in summaries
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip()
        for r in rows
    )


def format_message(m: DeadLetter) -> str:
    key = _render_bytes(m.key)
    value, value_format = _render_value(m.value)
    origin = f"{m.original_topic or '?'}"
    if m.original_partition is not None:
        origin += f"[{m.original_partition}]"
    if m.original_offset is not None:
        origin += f"@{m.original_offset}"
    lines = [
        f"{m.topic}[{m.partition}]@{m.offset}  {_iso(m.timestamp_ms) or ''}".rstrip(),
        f"  key:    {_shown(key)}",
        f"  reason: {_one_line(m.reason) if m.reason is not None else '-'}",
        f"  from:   {origin}",
    ]
    if (replayed_from := m.header(REPLAYED_FROM)) is not None:
        lines.append(f"  replayed from: {replayed_from}")
    lines += [f"  header {k}: {_shown(_render_bytes(v))}" for k, v in m.other_headers]
    lines.append(f"  value ({value_format}): {value if value is not None else '-'}")
    return "\n".join(lines)


def format_replay(r: ReplayResult, *, dry_run: bool) -> str:
    target = r.target or "?"
    if r.error is not None:
        return f"FAILED  {r.source.ref} -> {target}: {r.error}"
    return f"{'would send' if dry_run else 'sent'}  {r.source.ref} -> {target}"


def _shown(rendered: dict[str, str | None]) -> str:
    if rendered["value"] is None:
        return "-"
    if rendered["format"] == "base64":
        return f"base64:{rendered['value']}"
    return rendered["value"]


def _one_line(text: str, width: int | None = None) -> str:
    line = " ".join(text.split())
    return line if width is None or len(line) <= width else line[: width - 1] + "…"
