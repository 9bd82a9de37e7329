"""Request/reply round trip over Kafka: gateway → products.commands → agent → Postgres → reply.

Through HTTP: `PUT /product/?id=<id>` with an admin token and body {"stock": N}, from a plain
aiohttp client. Without HTTP: gateway.bus.BusClient in this process, sending UpdateProduct to
products.commands. Each path idle (one request at a time) and with 64 in flight, on one product
(one key: one partition, handled one message at a time) and spread over every demo product.

Each of those runs gets a freshly started platform (same state directory, so Postgres keeps
its data; Tansu is memory-only, so the broker starts empty): the broker's cost grows with
what it holds, which the last table measures on one platform.

    python -m bench.roundtrip [--idle 300] [--loaded 3000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from agents.common.settings import Settings
from bench.harness import (
    BenchError,
    Platform,
    Sample,
    Section,
    Table,
    admin_token,
    closed_loop,
    cpu_table,
    fmt,
    idle,
    leftovers,
    main,
    progress,
    temp_state_dir,
)
from gateway.bus import BusClient
from topics import PRODUCTS_COMMANDS
from topics.products import ProductChanges, UpdateProduct

COMMAND = "python -m bench.roundtrip"
WARMUP = 50
SETTLE_S = 2.0
TIMEOUT_S = 30.0
HTTP = "HTTP `PUT /product/?id=`"
BUS = "BusClient, UpdateProduct"

Call = Callable[[int], Awaitable[None]]


@dataclass(frozen=True)
class Case:
    path: str
    spread: bool
    concurrency: int
    requests: int

    def keys(self, ids: list[int]) -> str:
        return f"{len(ids)} products" if self.spread else "1 product"

    @property
    def short(self) -> str:
        return f"{self.path.split(' ', 1)[0].rstrip(',')}, {self.concurrency} in flight" + (
            ", all products" if self.spread else ""
        )


async def product_ids(http: aiohttp.ClientSession, gateway: str) -> list[int]:
    async with http.get(f"{gateway}/product/", params={"page": "0", "limit": "100"}) as r:
        if r.status != 200:
            raise BenchError(f"GET /product/ answered {r.status}: {await r.text()}")
        body = await r.json()
    ids = [int(p["id"]) for p in body["products"]]
    if not ids:
        raise BenchError("the catalogue is empty: no product to update")
    return sorted(ids)


def http_put(http: aiohttp.ClientSession, gateway: str, token: str, ids: list[int]) -> Call:
    headers = {"Authorization": f"Bearer {token}"}

    async def call(i: int) -> None:
        product_id = ids[i % len(ids)]
        async with http.put(
            f"{gateway}/product/",
            params={"id": str(product_id)},
            json={"stock": i % 1000 + 1},
            headers=headers,
        ) as r:
            body = await r.read()
            if r.status != 200:
                raise BenchError(f"PUT /product/ answered {r.status}: {body[:200]!r}")

    return call


def bus_update(bus: BusClient, ids: list[int]) -> Call:
    async def call(i: int) -> None:
        product_id = ids[i % len(ids)]
        command = UpdateProduct(
            command_id=uuid.uuid4(),
            product_id=product_id,
            changes=ProductChanges(stock=i % 1000 + 1),
        )
        reply = await bus.request(
            PRODUCTS_COMMANDS.name, str(product_id), command.model_dump_json().encode()
        )
        if not reply.ok:
            raise BenchError(f"UpdateProduct failed: {reply.error}")

    return call


@contextlib.asynccontextmanager
async def bus_client(platform: Platform) -> AsyncIterator[BusClient]:
    """A BusClient of its own (its own reply topic) on the platform's broker."""
    if platform.kafka is None:
        raise BenchError("the Kafka address was not seen in the output of shopstream run")
    settings = dataclasses.replace(
        Settings.from_env(platform.env),
        kafka_broker=platform.kafka,
        gateway_instance=f"bench-{uuid.uuid4().hex[:12]}",
    )
    bus = BusClient(settings)
    await bus.start()
    try:
        yield bus
    finally:
        await bus.stop()


@contextlib.asynccontextmanager
async def http_session(concurrency: int) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        yield http


async def warm_and_measure(call: Call, case: Case, servers: list[int]) -> Sample:
    await closed_loop(call, concurrency=1, requests=WARMUP)
    if case.concurrency > 1:
        await closed_loop(call, concurrency=case.concurrency, requests=4 * case.concurrency)
    return await closed_loop(
        call, concurrency=case.concurrency, requests=case.requests, servers=servers
    )


async def run_case(case: Case, state: Path) -> tuple[Sample, list[int]]:
    """One case on a freshly started platform."""
    async with Platform(state) as platform, http_session(case.concurrency) as http:
        servers = [platform.child.pid]
        ids = await product_ids(http, platform.gateway_url)
        chosen = ids if case.spread else ids[:1]
        if case.path == HTTP:
            token = await admin_token(platform.env)
            call = http_put(http, platform.gateway_url, token, chosen)
            sample = await warm_and_measure(call, case, servers)
        else:
            async with bus_client(platform) as bus:
                sample = await warm_and_measure(bus_update(bus, chosen), case, servers)
        if sample.errors:
            progress(f"the last lines of shopstream run:\n{platform.child.tail(40)}")
    progress(f"{case.path}, {case.keys(ids)}, {case.concurrency} in flight: {sample.describe()}")
    return sample, ids


async def run_history(
    state: Path, args: argparse.Namespace
) -> tuple[Sample, list[tuple[int, Sample]]]:
    """One platform: its CPU at rest, then the idle HTTP round trip as commands pile up."""
    async with Platform(state) as platform, http_session(args.concurrency) as http:
        servers = [platform.child.pid]
        ids = await product_ids(http, platform.gateway_url)
        await asyncio.sleep(SETTLE_S)
        at_rest = await idle(args.idle_seconds, servers)
        progress(f"idle platform, no requests: {at_rest.describe()}")
        token = await admin_token(platform.env)
        one = http_put(http, platform.gateway_url, token, ids[:1])
        spread = http_put(http, platform.gateway_url, token, ids)
        await closed_loop(one, concurrency=1, requests=WARMUP)
        sent = WARMUP
        points: list[tuple[int, Sample]] = []
        for step in range(args.history_steps + 1):
            if step:
                await closed_loop(spread, concurrency=args.concurrency, requests=args.history)
                sent += args.history
                await asyncio.sleep(SETTLE_S)
            sample = await closed_loop(one, concurrency=1, requests=args.idle, servers=servers)
            progress(f"after {sent} commands: {sample.describe()}")
            points.append((sent, sample))
            sent += args.idle
    return at_rest, points


async def measure(args: argparse.Namespace) -> Section:
    cases = [
        Case(path, spread, concurrency, requests)
        for path in (HTTP, BUS)
        for spread, concurrency, requests in (
            (False, 1, args.idle),
            (False, args.concurrency, args.loaded),
            (True, args.concurrency, args.loaded),
        )
    ]
    results: list[tuple[Case, Sample, list[int]]] = []
    with temp_state_dir() as state:
        for case in cases:
            sample, ids = await run_case(case, state)
            results.append((case, sample, ids))
        at_rest, history = await run_history(state, args)
        left = leftovers(str(state))
    return report(results, at_rest, history, left, args)


def report(
    results: list[tuple[Case, Sample, list[int]]],
    at_rest: Sample,
    history: list[tuple[int, Sample]],
    left: list[str],
    args: argparse.Namespace,
) -> Section:
    table = Table(
        [
            "Path",
            "Keys",
            "In flight",
            "Requests",
            "p50 (ms)",
            "p99 (ms)",
            "req/s",
            "Errors",
            "CPU: platform (cores)",
        ]
    )
    failed = False
    notes: list[str] = []
    cpu_columns = [(f"idle platform, {at_rest.elapsed:.0f} s without requests", at_rest)]
    for case, s, ids in results:
        failed = failed or s.errors > 0
        table.rows.append(
            [
                case.path,
                case.keys(ids),
                str(case.concurrency),
                str(case.requests),
                fmt(s.ms(50)),
                fmt(s.ms(99)),
                fmt(s.rate, 0),
                str(s.errors),
                fmt(s.server_cores),
            ]
        )
        cpu_columns.append((case.short, s))
        if s.first_error:
            notes.append(f"{case.path}, {case.short}, first error: {s.first_error}")
    filling = Table(
        [
            "Commands sent before",
            "p50 (ms)",
            "p99 (ms)",
            "req/s",
            "Errors",
            "CPU: tansu (cores)",
            "Tansu CPU per request, above its idle (ms)",
        ]
    )
    tansu_at_rest = at_rest.server_cores_by.get("tansu", 0.0)
    for sent, s in history:
        failed = failed or s.errors > 0
        tansu = s.server_cores_by.get("tansu", 0.0)
        filling.rows.append(
            [
                str(sent),
                fmt(s.ms(50)),
                fmt(s.ms(99)),
                fmt(s.rate, 0),
                str(s.errors),
                fmt(tansu),
                fmt((tansu - tansu_at_rest) / s.rate * 1000 if s.rate else float("nan"), 1),
            ]
        )
    notes += [
        "Tables: (1) each row on a freshly started platform; (2) CPU by process during those "
        f"runs; (3) on one platform, {args.idle} sequential `PUT`s after every "
        f"{args.history} commands sent at {args.concurrency} in flight over all products "
        f"(Tansu's idle CPU on that platform: {fmt(at_rest.server_cores_by.get('tansu', 0.0))} "
        "cores).",
        f"Warm-up: {WARMUP} sequential requests, and {4 * args.concurrency} more before each "
        "loaded run; not counted.",
        "Closed loop: each of the N workers sends its next request when its last reply came; "
        "the load generator runs on the same 2 cores as the platform.",
        "One product: every command has the same key, so one partition and one agent instance "
        "take them one at a time. All products: the demo catalogue's keys, spread over the "
        f"{PRODUCTS_COMMANDS.partitions} partitions of products.commands.",
        "CPU: every process of `shopstream run` (Postgres and Tansu included), from /proc; "
        "the BusClient runs in the load generator's process.",
        f"Processes left after the run: {len(left)}" + (f" ({'; '.join(left)})" if left else ""),
    ]
    section = Section(
        "Request/reply round trip over Kafka (catalogue writes)",
        args.command,
        [table, cpu_table(cpu_columns), filling],
        notes,
    )
    section.failed = failed
    return section


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.roundtrip", description=__doc__)
    p.add_argument("--idle", type=int, default=300, help="sequential requests, idle")
    p.add_argument("--loaded", type=int, default=3000, help="requests at --concurrency")
    p.set_defaults(command=COMMAND)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument(
        "--idle-seconds", type=float, default=10.0, help="CPU of the platform without requests"
    )
    p.add_argument("--history", type=int, default=5000, help="commands between history points")
    p.add_argument("--history-steps", type=int, default=2, help="history points after the first")
    return p.parse_args(argv)


def cli(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    args = parse(given)
    args.command = " ".join([COMMAND, *given])
    return main([("roundtrip", args.command, lambda: measure(args))])


if __name__ == "__main__":
    sys.exit(cli())
