"""Orders, checkout and round trips on Tansu and on Apache Kafka, side by side, in one run.

For each broker in turn (`--brokers`, default Tansu then Apache Kafka with 1 node), a freshly
started `shopstream run` (a state directory of its own: an empty embedded Postgres, with
production durability, and an empty broker):

1. Priming, not measured: `--prime` UpdateProduct requests through a BusClient, 16 in flight,
   over the demo products (a JVM is slow until it has compiled its hot code); 3 s of rest.
   Then CPU at rest: nothing sent for `--idle-cpu` s, every process split apart.
2. Round trips, one request at a time (bench.roundtrip's calls, on the first demo product):
   `--bus` UpdateProduct requests through a BusClient of this process, and `--bus` HTTP
   `PUT /product/?id=`, each after bench.roundtrip's warm-up.
3. Setup through the gateway: `--products` products of `--stock` units, `--users` users.
4. One order at a time: `--idle-warmup` orders, then `--idle` sequential `POST /order/`.
5. `POST /order/` through the gateway, wrk `-t --threads -c --connections -d --duration`
   after a `--warmup` s wrk run (bench.issue8's Lua: a token, a product and an
   `Idempotency-Key` per request); CPU per process meanwhile, wrk's own apart.
6. Checkout (order, payment polled until it exists, pay) at `--connections` clients, closed loop
   (bench.checkout's), `--warmup` s then `--duration` s.

Once, on the first broker's platform after its figures (they use no broker): bench.direct's
`POST /order/` (aiohttp + asyncpg, one process) under the same wrk load, and bench.checkout's
raw reserve-stock transaction at `--connections` asyncpg connections.

Before each load, the script waits (at most `--settle` s) until no order is pending and the
platform's CPU is back near its idle level.

    python -m bench.issue9 [--brokers tansu,kafka] [--duration 15] [--warmup 2]
                           [--connections 64] [--threads 2] [--products 16] [--stock 1000000]
                           [--users 64] [--idle 200] [--idle-warmup 20] [--bus 200]
                           [--prime 2000] [--idle-cpu 5] [--poll 0.02] [--settle 30] [--wrk PATH]
                           [--wrk-timeout 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from agents.common.kafka import kafka_version
from agents.common.settings import KafkaTuning, Settings
from bench import direct as direct_handler
from bench.catalogue import wait_serving
from bench.checkout import (
    TIMEOUT_S,
    Call,
    LogWatch,
    Shop,
    Steps,
    User,
    database_url,
    gather_limited,
    lent,
    queue_of,
    raw_reservations,
)
from bench.harness import (
    BROKERS,
    REPO,
    BenchError,
    Child,
    Platform,
    Sample,
    Section,
    Table,
    admin_token,
    closed_loop,
    fmt,
    free_ports,
    idle,
    leftovers,
    main,
    progress,
    temp_state_dir,
)
from bench.issue8 import probe_direct_order, quiet
from bench.roundtrip import WARMUP as ROUNDTRIP_WARMUP
from bench.roundtrip import bus_client, bus_update, http_put, product_ids
from bench.wrk import WrkResult, lua_script, run_wrk, wrk_binary

COMMAND = "python -m bench.issue9"
STEPS = ("place", "wait", "pay")
PRIME_IN_FLIGHT = 16
PRIME_REST_S = 3.0
LOG_PROBLEM = re.compile(r"\b(?:WARN|WARNING|ERROR|FATAL|CRITICAL)\b|Exception")


def broker_name(broker: str) -> str:
    return "Tansu" if broker == "tansu" else f"Apache Kafka {kafka_version()}, 1 node"


@dataclass
class BrokerLog:
    """The lines at WARN or above in the broker's own log files."""

    files: list[str] = field(default_factory=list)
    count: int = 0
    first: list[str] = field(default_factory=list)


def read_broker_log(state: Path, keep: int = 8) -> BrokerLog:
    found = BrokerLog()
    for path in sorted([*state.glob("tansu*.log"), *state.glob("kafka/kafka-*.log")]):
        found.files.append(str(path.relative_to(state)))
        for line in path.read_text(errors="replace").splitlines():
            if LOG_PROBLEM.search(line):
                found.count += 1
                if len(found.first) < keep:
                    found.first.append(line[:300].replace("`", "'"))
    return found


def distinct(lines: Sequence[str], keep: int = 6) -> list[str]:
    """The most frequent kinds of line (numbers aside), each with how many there were."""
    kinds: dict[str, tuple[int, str]] = {}
    for line in lines:
        kind = re.sub(r"\d+", "N", line)
        count, first = kinds.get(kind, (0, line))
        kinds[kind] = (count + 1, first)
    ranked = sorted(kinds.values(), key=lambda cf: -cf[0])
    return [f"{count} x {first}" for count, first in ranked[:keep]]


@dataclass
class Baselines:
    direct: WrkResult
    raw: Sample
    probe: str
    scratch: dict[str, int]
    warm_ok: int


@dataclass
class BrokerRun:
    broker: str
    ready_s: float
    tuning: KafkaTuning
    idempotent: bool
    primed: Sample
    idle_cpu: Sample
    bus: Sample
    put: Sample
    sequential: Sample
    sequential_steps: Steps
    orders: WrkResult
    orders_warm_ok: int
    checkout: Sample
    checkout_warm: Sample
    checkout_steps: Steps
    settled: dict[str, tuple[float, int | None]]
    dsn_source: str
    baselines: Baselines | None = None
    stop_s: float = math.nan
    exit_code: int | None = None
    warnings: int = 0
    first_warnings: list[str] = field(default_factory=list)
    log: BrokerLog = field(default_factory=BrokerLog)
    left: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return broker_name(self.broker)


async def wrk_load(
    args: argparse.Namespace, wrk: str, name: str, url: str, script: str, watched: list[int]
) -> tuple[WrkResult, int]:
    """A wrk warm-up run, then the measured one; (the measured run, 2xx in the warm-up)."""
    warm_ok = 0
    common: dict[str, Any] = {
        "wrk": wrk,
        "threads": args.threads,
        "connections": args.connections,
        "timeout_s": args.wrk_timeout,
    }
    if args.warmup > 0:
        warm = await run_wrk(f"{name}, warm-up", url, script, duration=args.warmup, **common)
        warm_ok = warm.ok
    measured = await run_wrk(name, url, script, duration=args.duration, servers=watched, **common)
    return measured, warm_ok


async def prime(
    platform: Platform, http: aiohttp.ClientSession, args: argparse.Namespace
) -> Sample:
    """Work for the broker before anything is measured: a JVM runs slowly until it has compiled
    its hot code (Apache Kafka's round trip halves over its first thousand requests)."""
    ids = await product_ids(http, platform.gateway_url)
    async with bus_client(platform) as bus:
        sample = await closed_loop(
            bus_update(bus, ids), concurrency=PRIME_IN_FLIGHT, requests=args.prime
        )
    progress(
        f"priming, {args.prime} UpdateProduct, {PRIME_IN_FLIGHT} in flight: {sample.describe()}"
    )
    await asyncio.sleep(PRIME_REST_S)
    return sample


async def round_trips(
    platform: Platform, http: aiohttp.ClientSession, args: argparse.Namespace, servers: list[int]
) -> tuple[Sample, Sample]:
    """One request at a time on the first demo product: the bus alone, then HTTP."""
    first = (await product_ids(http, platform.gateway_url))[:1]
    async with bus_client(platform) as bus:
        call = bus_update(bus, first)
        await closed_loop(call, concurrency=1, requests=ROUNDTRIP_WARMUP)
        on_bus = await closed_loop(call, concurrency=1, requests=args.bus, servers=servers)
    progress(f"bus round trip (UpdateProduct), one at a time: {on_bus.describe()}")
    put = http_put(http, platform.gateway_url, await admin_token(platform.env), first)
    await closed_loop(put, concurrency=1, requests=ROUNDTRIP_WARMUP)
    over_http = await closed_loop(put, concurrency=1, requests=args.bus, servers=servers)
    progress(f"HTTP PUT /product/ round trip, one at a time: {over_http.describe()}")
    return on_bus, over_http


async def baselines(
    platform: Platform,
    http: aiohttp.ClientSession,
    args: argparse.Namespace,
    wrk: str,
    users: list[User],
    ids: list[int],
    orders_lua: str,
    settle: Callable[[str, list[int]], Awaitable[None]],
) -> Baselines:
    """The direct handler under the order load, then the raw reserve-stock transaction."""
    servers = [platform.child.pid]
    dsn, _ = database_url(platform)
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    await direct_handler.create_scratch(dsn)
    direct = Child(
        "bench.direct",
        [sys.executable, "-m", "bench.direct", "--port", str(port), "--dsn", dsn],
        platform.env,
        cwd=REPO,
    )
    try:
        await direct.spawn()
        await wait_serving(http, f"{url}/product/?page=0", direct)
        probe = await probe_direct_order(http, url, users[0], ids[0])
        await settle("before the direct handler's order load", [*servers, direct.pid])
        orders, warm_ok = await wrk_load(
            args, wrk, "orders, direct", url, orders_lua, [*servers, direct.pid]
        )
    finally:
        await direct.stop()
        scratch = await direct_handler.drop_scratch(dsn)
    progress(f"the scratch tables held {scratch}; dropped")
    await settle("before the raw transactions", servers)
    raw_args = argparse.Namespace(
        concurrency=args.connections, raw_warmup=args.warmup, raw_duration=args.duration
    )
    raw = await raw_reservations(dsn, ids, raw_args, servers)
    progress(f"raw reservations, {args.connections} connections: {raw.describe()}")
    return Baselines(direct=orders, raw=raw, probe=probe, scratch=scratch, warm_ok=warm_ok)


async def run(
    platform: Platform, args: argparse.Namespace, wrk: str, with_baselines: bool
) -> BrokerRun:
    servers = [platform.child.pid]
    broker = platform.broker or "?"
    settings = Settings.from_env(platform.env)
    dsn, dsn_source = database_url(platform)
    settled: dict[str, tuple[float, int | None]] = {}
    connector = aiohttp.TCPConnector(limit=args.connections + 8)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        primed = await prime(platform, http, args) if args.prime else Sample()
        idle_cpu = await idle(args.idle_cpu, servers)
        progress(f"{broker}: at rest, {args.idle_cpu:g} s: {idle_cpu.describe()}")

        async def settle(before: str, watched: list[int]) -> None:
            settled[before] = await quiet(watched, idle_cpu.server_cores, args.settle, dsn)

        on_bus, put = await round_trips(platform, http, args, servers)

        shop = Shop(http, platform.gateway_url, args.poll)
        admin = {"Authorization": f"Bearer {await admin_token(platform.env)}"}
        ids = [await shop.create_product(admin, n, args.stock) for n in range(args.products)]
        users: list[User] = await gather_limited(args.users, 8, shop.new_user)
        progress(f"{len(ids)} products of {args.stock} units, {len(users)} users")

        def place(steps: Steps | None) -> Call:
            async def call(i: int) -> None:
                await shop.place(users[i % len(users)], ids[i % len(ids)], steps)

            return call

        await closed_loop(place(None), concurrency=1, requests=args.idle_warmup)
        sequential_steps = Steps()
        sequential = await closed_loop(
            place(sequential_steps), concurrency=1, requests=args.idle, servers=servers
        )
        progress(f"one order at a time: {sequential.describe()}")

        tokens = [u.headers["Authorization"].split(" ", 1)[1] for u in users]
        bodies = [json.dumps({"items": [{"product_id": p, "quantity": 1}]}) for p in ids]
        orders_lua = lua_script(
            method="POST",
            path="/order/",
            threads=args.threads,
            tokens=tokens,
            bodies=bodies,
            idempotent=True,
        )
        await settle("before the order load", servers)
        orders, orders_warm_ok = await wrk_load(
            args, wrk, f"orders, gateway, {broker}", platform.gateway_url, orders_lua, servers
        )

        await settle("before the checkout load", servers)

        def checkout(steps: Steps | None, pool: asyncio.Queue[Any]) -> Call:
            async def call(i: int) -> None:
                async with lent(pool) as user:
                    await shop.checkout(user, ids[i % len(ids)], steps)

            return call

        clients = queue_of(users[: args.connections])
        checkout_warm = await closed_loop(
            checkout(None, clients), concurrency=args.connections, duration=args.warmup
        )
        checkout_steps = Steps()
        checkout_sample = await closed_loop(
            checkout(checkout_steps, clients),
            concurrency=args.connections,
            duration=args.duration,
            servers=servers,
        )
        progress(f"checkout, {args.connections} clients: {checkout_sample.describe()}")

        found = None
        if with_baselines:
            found = await baselines(platform, http, args, wrk, users, ids, orders_lua, settle)
    return BrokerRun(
        broker=broker,
        ready_s=platform.milestones.get("ready", math.nan),
        tuning=settings.kafka,
        idempotent=settings.kafka.idempotent_producer,
        primed=primed,
        idle_cpu=idle_cpu,
        bus=on_bus,
        put=put,
        sequential=sequential,
        sequential_steps=sequential_steps,
        orders=orders,
        orders_warm_ok=orders_warm_ok,
        checkout=checkout_sample,
        checkout_warm=checkout_warm,
        checkout_steps=checkout_steps,
        settled=settled,
        dsn_source=dsn_source,
        baselines=found,
    )


async def measure_broker(
    broker: str, args: argparse.Namespace, wrk: str, with_baselines: bool
) -> BrokerRun:
    progress(f"--- {broker_name(broker)}: a fresh shopstream run")
    with temp_state_dir() as state:
        platform = Platform(state, broker=broker)
        watch = LogWatch(platform, keep=10_000)
        async with platform:
            if platform.broker != broker:
                raise BenchError(f"asked for {broker}, shopstream run started {platform.broker}")
            try:
                result = await run(platform, args, wrk, with_baselines)
            except BaseException:
                progress(f"the last lines of shopstream run:\n{platform.child.tail(40)}")
                raise
        result.stop_s = platform.child.stop_s or math.nan
        result.exit_code = platform.child.returncode
        result.log = read_broker_log(state)
        result.left = leftovers(str(state))
    result.warnings, result.first_warnings = watch.count, distinct(watch.first)
    if watch.count:
        progress(f"{watch.count} warnings or errors from shopstream run:")
        for line in result.first_warnings:
            progress(f"  {line}")
    if result.log.count:
        progress(f"{result.log.count} WARN/ERROR lines in the broker's log, first:")
        for line in result.log.first:
            progress(f"  {line}")
    return result


async def measure(args: argparse.Namespace) -> Section:
    wrk = wrk_binary(args.wrk)  # says how to install it when it is not
    runs = [await measure_broker(b, args, wrk, k == 0) for k, b in enumerate(args.brokers)]
    return report(runs, args)


# --- the report -------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def _latency(p50: float, p99: float) -> str:
    return f"{fmt(p50, 1)} / {fmt(p99, 1)}"


def _statuses(w: WrkResult) -> str:
    s = w.status
    return (
        f"201: {s['201']}, 202: {s['202']}, other: {s['other'] + s['200'] + s['2xx']}, "
        f"socket errors: {w.socket_errors}"
    )


BROKER_LABEL = "the broker (`tansu` / `kafka`)"


def _by_process(cores_by: dict[str, float]) -> dict[str, float]:
    """The split by process, the broker under one label whichever it is."""
    merged: dict[str, float] = {}
    for label, cores in cores_by.items():
        key = BROKER_LABEL if label in BROKERS else label
        merged[key] = merged.get(key, 0.0) + cores
    return merged


def _cpu_rows(runs: Sequence[BrokerRun], pick: Callable[[BrokerRun], dict[str, float]]) -> Table:
    splits = [_by_process(pick(r)) for r in runs]
    labels: list[str] = []
    for split in splits:
        labels += [k for k in sorted(split, key=lambda k: -split[k]) if k not in labels]
    table = Table(["Process, cores (share)", *(r.name for r in runs)])
    for label in labels:
        row = [label if label == BROKER_LABEL else f"`{label}`"]
        for split in splits:
            total = sum(split.values())
            v = split.get(label, 0.0)
            row.append(f"{v:.2f} ({100 * v / total:.0f} %)" if total else f"{v:.2f}")
        table.rows.append(row)
    table.rows.append(["all of the above", *(fmt(sum(s.values())) for s in splits)])
    return table


def report(runs: list[BrokerRun], args: argparse.Namespace) -> Section:
    n, secs = args.connections, args.duration
    base = next((r.baselines for r in runs if r.baselines is not None), None)
    direct_rate = base.direct.rate if base else math.nan
    raw_rate = base.raw.rate if base else math.nan
    wrk_line = f"wrk -t{args.threads} -c{n} -d{secs}s"
    two = len(runs) == 2
    headers = ["Figure", *(r.name for r in runs)]
    if two:
        headers.append(f"{runs[1].name.split(',')[0]} ÷ {runs[0].name}")
    table = Table(headers)

    def row(
        label: str, cells: Callable[[BrokerRun], str], value: Callable[[BrokerRun], float]
    ) -> None:
        cols = [label, *(cells(r) for r in runs)]
        if two:
            cols.append(fmt(_ratio(value(runs[1]), value(runs[0]))))
        table.rows.append(cols)

    row(
        f"`POST /order/` through the gateway, `{wrk_line}`: orders/s",
        lambda r: f"**{r.orders.rate:.1f}**",
        lambda r: r.orders.rate,
    )
    row(
        "… p50 / p99 (ms)",
        lambda r: _latency(r.orders.ms("p50"), r.orders.ms("p99")),
        lambda r: r.orders.ms("p99"),
    )
    row(
        "… ÷ the direct handler's orders/s (same run)",
        lambda r: f"**{fmt(_ratio(r.orders.rate, direct_rate), 3)}**",
        lambda r: _ratio(r.orders.rate, direct_rate),
    )
    row("… answers", lambda r: _statuses(r.orders), lambda r: math.nan)
    row(
        "… CPU, all processes (cores; wrk apart)",
        lambda r: f"{fmt(r.orders.server_cores)} (wrk {fmt(r.orders.wrk_cores)})",
        lambda r: r.orders.server_cores,
    )
    row(
        "… CPU ms per order",
        lambda r: fmt(_ratio(r.orders.server_cores * 1000, r.orders.rate), 1),
        lambda r: _ratio(r.orders.server_cores * 1000, r.orders.rate),
    )
    row(
        f"checkout (order, payment polled, pay), {n} clients, {secs} s: checkouts/s",
        lambda r: f"**{r.checkout.rate:.1f}**",
        lambda r: r.checkout.rate,
    )
    row(
        "… p50 / p99 (ms)",
        lambda r: _latency(r.checkout.ms(50), r.checkout.ms(99)),
        lambda r: r.checkout.ms(99),
    )
    row(
        "… ÷ the raw reserve-stock transactions/s (same run)",
        lambda r: fmt(_ratio(r.checkout.rate, raw_rate), 3),
        lambda r: _ratio(r.checkout.rate, raw_rate),
    )
    row(
        "… p50 of each step (ms): `POST /order/` / payment polled until it exists / pay",
        lambda r: " / ".join(fmt(r.checkout_steps.ms(step, 50), 1) for step in STEPS),
        lambda r: r.checkout_steps.ms("wait", 50),
    )
    row(
        "… `POST /order/` 202 / payment 503 / errors",
        lambda r: (
            f"{r.checkout_steps.accepted} / {r.checkout_steps.unavailable} / {r.checkout.errors}"
        ),
        lambda r: math.nan,
    )
    row(
        "… CPU, all processes (cores)",
        lambda r: fmt(r.checkout.server_cores),
        lambda r: r.checkout.server_cores,
    )
    row(
        f"one order at a time, {args.idle} sequential `POST /order/`: p50 / p99 (ms)",
        lambda r: f"**{_latency(r.sequential.ms(50), r.sequential.ms(99))}**",
        lambda r: r.sequential.ms(50),
    )
    row(
        f"bus round trip, one at a time, {args.bus} BusClient UpdateProduct: p50 / p99 (ms)",
        lambda r: _latency(r.bus.ms(50), r.bus.ms(99)),
        lambda r: r.bus.ms(50),
    )
    row(
        f"… the same through HTTP, {args.bus} `PUT /product/?id=`: p50 / p99 (ms)",
        lambda r: _latency(r.put.ms(50), r.put.ms(99)),
        lambda r: r.put.ms(50),
    )
    row(
        f"CPU at rest, {args.idle_cpu:g} s after the priming (cores; the broker's)",
        lambda r: (
            f"{fmt(r.idle_cpu.server_cores)} ({fmt(_broker_cores(r.idle_cpu.server_cores_by))})"
        ),
        lambda r: r.idle_cpu.server_cores,
    )
    row(
        "spawn → `ready: gateway on` (s); SIGINT → exit (s)",
        lambda r: f"{fmt(r.ready_s, 1)}; {fmt(r.stop_s, 1)}",
        lambda r: r.ready_s,
    )

    baseline_table = Table(["Baseline (once, same run)", "Rate", "p50 / p99 (ms)", "Answers"])
    if base is not None:
        baseline_table.rows += [
            [
                f"`POST /order/`, direct aiohttp + asyncpg handler (1 process), `{wrk_line}`",
                f"**{base.direct.rate:.1f} orders/s**",
                _latency(base.direct.ms("p50"), base.direct.ms("p99")),
                _statuses(base.direct),
            ],
            [
                f"raw reserve-stock transaction (`RESERVE_LINE` + INSERT), {n} asyncpg "
                f"connections, {secs} s",
                f"**{base.raw.rate:.0f} /s**",
                _latency(base.raw.ms(50), base.raw.ms(99)),
                f"errors: {base.raw.errors}",
            ],
        ]
    orders_cpu = _cpu_rows(runs, lambda r: r.orders.server_cores_by)
    orders_cpu.headers[0] = "CPU under the order load, cores (share)"
    checkout_cpu = _cpu_rows(runs, lambda r: r.checkout.server_cores_by)
    checkout_cpu.headers[0] = "CPU under the checkout load, cores (share)"
    idle_cpu = _cpu_rows(runs, lambda r: r.idle_cpu.server_cores_by)
    idle_cpu.headers[0] = "CPU at rest after the priming, cores (share)"

    notes = [
        "Each broker: a freshly started `shopstream run` with a state directory of its own "
        "(an empty embedded PostgreSQL with `fsync`, `full_page_writes` and `synchronous_commit` "
        "on; an empty broker), the same bench steps in the same order. Tansu keeps its "
        "messages in memory; the Apache Kafka node (KRaft, broker and controller in one JVM, "
        "512 MB heap) writes them to its log segments and leaves flushing to the OS (Kafka's "
        "default), acks=all on both.",
        "Client settings each platform ran with (the supervisor's, the bench's BusClient the "
        "same): "
        + "; ".join(
            f"{r.name}: fetch wait {r.tuning.fetch_max_wait_ms} ms, idle fetch wait "
            f"{r.tuning.idle_fetch_max_wait_ms} ms, off the client's path (payments) "
            f"{r.tuning.background_fetch_max_wait_ms} ms, idempotent producers "
            f"{'on' if r.idempotent else 'off'}"
            for r in runs
        )
        + ".",
        f"Priming on each, right after the ready line, not measured: {args.prime} UpdateProduct "
        f"through a BusClient, {PRIME_IN_FLIGHT} in flight over the demo products ("
        + ", ".join(
            f"{r.broker} p50 {fmt(r.primed.ms(50), 1)} ms, {fmt(r.primed.rate, 0)}/s" for r in runs
        )
        + f"), then {PRIME_REST_S:g} s of rest before the CPU at rest is counted.",
        f"Setup on each: {args.products} products of {args.stock} units, {args.users} users "
        "registered and logged in through the gateway; every order is one line of 1 unit.",
        f"wrk: `{wrk_line} --timeout {args.wrk_timeout}s --latency -s <generated Lua>` after a "
        f"{args.warmup} s warm-up run (2xx in the warm-ups: "
        + ", ".join(f"{r.broker} {r.orders_warm_ok}" for r in runs)
        + (f", direct {base.warm_ok}" if base else "")
        + "); each request a user's token, a product and an `Idempotency-Key` of its own "
        "(bench.issue8's script). Orders/s = 2xx answers ÷ wrk's seconds; 202 (the reply came "
        "after the gateway's request timeout) counts, not a failure.",
        f"Checkout: {args.warmup} s warm-up ("
        + ", ".join(
            f"{r.broker} {r.checkout_warm.count} checkouts, {r.checkout_warm.errors} errors"
            for r in runs
        )
        + f"), then {secs} s; each client its own user, the payment polled every "
        f"{args.poll * 1000:g} ms until it exists.",
        f"Round trips: bench.roundtrip's calls on the first demo product, {ROUNDTRIP_WARMUP} "
        "requests of warm-up each; the bus one is a BusClient in this process (its own reply "
        "topic) sending UpdateProduct to products.commands: the products agent, Postgres, "
        "the reply; the HTTP one adds the gateway.",
        "The baselines use no broker: they ran once, on the "
        + (f"{runs[0].name} platform's PostgreSQL after its figures" if base else "(none)")
        + (
            f". The direct handler inserted into scratch tables ({base.scratch.get('orders', 0)} "
            f"orders at the end), dropped afterwards; its probe: {base.probe}."
            if base
            else "."
        ),
        "Before each load, waited until no order was pending and the CPU was back near idle "
        f"(+0.15 cores), at most {args.settle:g} s: "
        + "; ".join(
            f"{r.broker}: "
            + ", ".join(f"{k} {t:.1f} s ({p} pending)" for k, (t, p) in r.settled.items())
            for r in runs
        )
        + ".",
    ]
    for r in runs:
        notes.append(
            f"{r.name}: lines at WARNING or above from `shopstream run`: {r.warnings}"
            + (
                " (the most frequent: " + "; ".join(f"`{w}`" for w in r.first_warnings) + ")"
                if r.first_warnings
                else ""
            )
            + f"; WARN/ERROR lines in the broker's log ({', '.join(r.log.files) or 'none'}): "
            f"{r.log.count}"
            + (f" (first: `{r.log.first[0]}`)" if r.log.first else "")
            + f"; exit code {r.exit_code}; processes left: {len(r.left)}"
            + (f" ({'; '.join(r.left)})" if r.left else "")
        )
        for what, s in (
            ("one order at a time", r.sequential),
            ("bus round trip", r.bus),
            ("HTTP round trip", r.put),
            ("checkout", r.checkout),
        ):
            if s.first_error:
                notes.append(f"{r.name}, {what}, first error: {s.first_error}")
        if r.orders.first_other:
            notes.append(f"{r.name}, orders, first non-2xx: `{r.orders.first_other[:200]}`")
    if base is not None and base.raw.first_error:
        notes.append(f"raw, first error: {base.raw.first_error}")
    section = Section(
        "Issue 9: Tansu and Apache Kafka side by side (orders, checkout, round trips, CPU)",
        args.command,
        [table, baseline_table, orders_cpu, checkout_cpu, idle_cpu],
        notes,
    )
    wrk_runs = [r.orders for r in runs] + ([base.direct] if base else [])
    samples = [s for r in runs for s in (r.sequential, r.bus, r.put, r.checkout)]
    section.failed = (
        any(w.failures or not w.requests for w in wrk_runs)
        or any(s.errors for s in samples)
        or any(r.checkout.count == 0 or r.left for r in runs)
        or base is None
        or bool(base.raw.errors)
    )
    return section


def _broker_cores(cores_by: dict[str, float]) -> float:
    return sum(v for k, v in cores_by.items() if k in BROKERS)


def _brokers(text: str) -> list[str]:
    chosen = [b.strip().lower() for b in text.split(",") if b.strip()]
    wrong = [b for b in chosen if b not in BROKERS]
    if wrong or not chosen:
        raise argparse.ArgumentTypeError(f"brokers are {', '.join(BROKERS)}, comma-separated")
    return chosen


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__)
    p.add_argument(
        "--brokers",
        type=_brokers,
        default=list(BROKERS),
        help="in this order, comma-separated (the baselines run on the first)",
    )
    p.add_argument("--duration", type=int, default=15, help="seconds of each measured load")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each load")
    p.add_argument("--connections", type=int, default=64, help="wrk connections, clients, raw")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--products", type=int, default=16)
    p.add_argument("--stock", type=int, default=1_000_000, help="units of each product")
    p.add_argument("--users", type=int, default=64)
    p.add_argument("--idle", type=int, default=200, help="sequential orders measured")
    p.add_argument("--idle-warmup", type=int, default=20, help="sequential orders before them")
    p.add_argument("--bus", type=int, default=200, help="sequential round trips measured, each")
    p.add_argument(
        "--prime", type=int, default=2000, help="unmeasured UpdateProduct requests after start"
    )
    p.add_argument("--idle-cpu", type=float, default=5.0, help="seconds of CPU at rest")
    p.add_argument("--poll", type=float, default=0.02, help="seconds between payment polls")
    p.add_argument("--settle", type=float, default=30.0, help="most seconds to wait for quiet")
    p.add_argument("--wrk", default=None, help="the wrk program (default: wrk on PATH)")
    p.add_argument("--wrk-timeout", type=int, default=30, help="wrk --timeout, seconds")
    p.set_defaults(command=COMMAND)
    args = p.parse_args(argv)
    if args.users < args.connections:
        p.error("--users must be at least --connections: one user per checkout client")
    if args.duration < 1 or args.warmup < 0:
        p.error("--duration must be at least 1 s and --warmup at least 0 s (wrk: whole s)")
    return args


def cli(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    args = parse(given)
    args.command = " ".join([COMMAND, *given])
    try:
        wrk_binary(args.wrk)
    except BenchError as e:
        progress(str(e))
        return 2
    if os.environ.get("KAFKA_BROKER"):
        progress("KAFKA_BROKER is ignored: each platform starts its own broker")
    return main([("issue9", args.command, lambda: measure(args))])


if __name__ == "__main__":
    sys.exit(cli())
