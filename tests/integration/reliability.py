"""Helpers of the reliability tests (issue 8, items 3 to 5): topics read whole, messages
produced, replies collected, worker processes run, and two transactions made to overlap."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from agents.common.embedded import free_port
from agents.products.repository import PgProductsUnitOfWork
from tests.e2e.platform import SHOPSTREAM
from tests.helpers import random_name
from tests.infra import grpc_serving, stop_process
from tests.trust import signed_if_command
from topics import reply_topic
from topics.admin import create_topics, delete_topic, partitions_of
from topics.envelope import Headers, Reply
from topics.products import NewProduct

A = TypeVar("A")
B = TypeVar("B")

KAFKA_TIMEOUT_S = 20.0

Message = tuple[bytes | None, bytes, Sequence[tuple[str, bytes]], int | None]


async def read_topic(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every message of a topic, up to its end offsets now, by partition then offset."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        async with asyncio.timeout(KAFKA_TIMEOUT_S):
            tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            got: list[ConsumerRecord[bytes, bytes]] = []
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    got += records
    finally:
        await consumer.stop()
    return sorted(got, key=lambda r: (r.partition, r.offset))


async def produce(bootstrap: str, topic: str, messages: Sequence[Message]) -> None:
    """Send (key, value, headers, partition) messages in order and wait for every ack; on a
    command topic, each signed as the gateway's."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        async with asyncio.timeout(KAFKA_TIMEOUT_S):
            for key, value, headers, partition in messages:
                await producer.send_and_wait(
                    topic,
                    value,
                    key=key,
                    headers=signed_if_command(topic, key, value, headers),
                    partition=partition,
                )
    finally:
        await producer.stop()


async def committed_everything(bootstrap: str, group: str, topic: str) -> bool:
    """Whether the consumer group has committed every message of the topic sent so far."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        async with asyncio.timeout(KAFKA_TIMEOUT_S):
            tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
            ends = await consumer.end_offsets(tps)
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
    finally:
        await consumer.stop()
        await admin.close()
    return all(tp in committed and committed[tp].offset >= ends[tp] for tp in tps)


async def stable_members(bootstrap: str, group: str) -> int:
    """How many members the consumer group has once it is stable (0 while it rebalances).

    Tansu leaves the members' assignments out of DescribeGroups; with the group stable, every
    member holds its share of the partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        async with asyncio.timeout(KAFKA_TIMEOUT_S):
            responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    return sum(
        len(members)
        for response in responses
        for _error, _group, state, _kind, _protocol, members in response.groups
        if state == "Stable"
    )


def dead_letters_of(records: Sequence[ConsumerRecord[bytes, bytes]], needle: str) -> list[Any]:
    """The messages whose value holds `needle` (a command or event id)."""
    return [r for r in records if needle.encode() in (r.value or b"")]


class ReplyTopic:
    """A reply topic of our own, as a gateway instance has, read back whole when asked."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.name = reply_topic(f"test-{uuid.uuid4().hex[:10]}")

    def headers(self, correlation_id: str) -> list[tuple[str, bytes]]:
        return [
            (Headers.REPLY_TO, self.name.encode()),
            (Headers.CORRELATION_ID, correlation_id.encode()),
        ]

    async def replies(self, correlation_id: str) -> list[Reply]:
        """Every reply sent so far to this correlation id, in the order they came."""
        out = []
        for record in await read_topic(self.bootstrap, self.name):
            envelope = json.loads(record.value or b"")
            if envelope["correlation_id"] == correlation_id:
                out.append(Reply.model_validate(envelope["value"]))
        return out


@contextlib.asynccontextmanager
async def reply_topic_of_our_own(bootstrap: str) -> AsyncIterator[ReplyTopic]:
    replies = ReplyTopic(bootstrap)
    await create_topics(bootstrap, [(replies.name, 1)])
    try:
        yield replies
    finally:
        await delete_topic(bootstrap, replies.name)


def with_own_ports(env: Mapping[str, str], state_dir: Path) -> dict[str, str]:
    """The environment of one more worker beside another: its own gRPC port and state."""
    state_dir.mkdir(parents=True, exist_ok=True)
    return {
        **env,
        "ORDER_SERVICE_ADDR": f"127.0.0.1:{free_port()}",
        "PRODUCT_SERVICE_ADDR": f"127.0.0.1:{free_port()}",
        "SHOPSTREAM_STATE_DIR": str(state_dir),
    }


def _spawn(domain: str, env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", f"agents.{domain}"],
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _tail(log_path: Path) -> str:
    return log_path.read_text()[-3000:]


@contextlib.asynccontextmanager
async def worker(
    domain: str, env: Mapping[str, str], log_path: Path
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`python -m agents.<domain>`, started now; `ready` waits for it. Stopped on exit."""
    proc = _spawn(domain, env, log_path)
    try:
        yield proc
    finally:
        await asyncio.to_thread(stop_process, proc)


async def ready(
    domain: str,
    env: Mapping[str, str],
    proc: subprocess.Popen[bytes],
    log_path: Path,
    timeout: float = 60.0,
) -> None:
    """Until the worker's gRPC health says SERVING: its consumer has its partitions."""
    addr = env[f"{domain.upper().rstrip('S')}_SERVICE_ADDR"]
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(grpc_serving, addr):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{domain} did not get ready:\n{_tail(log_path)}")
        await asyncio.sleep(0.05)


async def shopstream(env: Mapping[str, str], *args: str) -> tuple[int, str, str]:
    """Run the `shopstream` command; its exit code, standard output and error."""
    proc = await asyncio.create_subprocess_exec(
        SHOPSTREAM,
        *args,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


BLOCKED_BY = "SELECT $2::int = ANY(pg_blocking_pids($1::int))"


async def overlapping(
    pool: asyncpg.Pool,
    first: Callable[[asyncpg.Connection], Awaitable[A]],
    second: Callable[[asyncpg.Connection], Awaitable[B]],
    *,
    timeout: float = 20.0,
) -> tuple[A, B, bool]:
    """Two workers on one message, with their transactions really overlapping.

    Both transactions open (a barrier), then `first` does its work and keeps its transaction
    open; only then does `second` start its work, and `first` commits once `second` waits on a
    lock that `first` holds (seen in pg_blocking_pids), or once `second` is done without
    waiting. Returns both results and whether `second` waited on `first`."""
    both_open = asyncio.Barrier(2)
    first_worked = asyncio.Event()
    waited = False
    async with (
        asyncio.timeout(timeout),
        pool.acquire() as one,
        pool.acquire() as two,
        pool.acquire() as watch,
    ):
        holder, waiter = one.get_server_pid(), two.get_server_pid()

        async def run_second() -> B:
            async with two.transaction():
                await both_open.wait()
                await first_worked.wait()
                return await second(two)

        async def run_first(later: asyncio.Task[B]) -> A:
            nonlocal waited
            async with one.transaction():
                await both_open.wait()
                result = await first(one)
                first_worked.set()
                while not later.done():
                    if await watch.fetchval(BLOCKED_BY, waiter, holder):
                        waited = True
                        break
                    await asyncio.sleep(0.005)
            return result

        async with asyncio.TaskGroup() as tasks:
            later = tasks.create_task(run_second())
            earlier = tasks.create_task(run_first(later))
        return earlier.result(), later.result(), waited


async def new_product(pool: asyncpg.Pool, stock: int, price: str = "2.50") -> int:
    """A product of `stock` units, made straight in Postgres; its id."""
    async with PgProductsUnitOfWork(pool) as uow:
        p = await uow.products.add(
            NewProduct(name=random_name("product"), price=Decimal(price), stock=stock)
        )
        await uow.commit()
    return p.id


async def buckets(pool: asyncpg.Pool, product_id: int) -> tuple[int, int, int]:
    """A product's stock on hand, reserved and sold."""
    row = await pool.fetchrow(
        "SELECT stock, reserved, sold FROM products WHERE id = $1", product_id
    )
    assert row is not None
    return row["stock"], row["reserved"], row["sold"]
