"""The figures of issue 8 in one table: orders through the gateway next to a direct handler and
the raw reserve-stock transaction, idle latency, catalogue reads, checkout, CPU. One platform.

In this order, on one freshly started platform (`shopstream run`, embedded Postgres and Tansu):

1. Idle CPU: nothing sent for `--idle-cpu` s right after the ready line; every process of
   `shopstream run` (Postgres and the broker included), split by process.
2. Setup through the gateway: `--products` products of `--stock` units (admin token), `--users`
   users registered and logged in (as bench.checkout does).
3. One order at a time: `--idle-warmup` orders, then `--idle` sequential `POST /order/`; then
   `--cold` times: `--cold-gap` s of nothing, then one order (the first order after a pause).
4. `POST /order/` through the gateway, driven by wrk (`-t --threads -c --connections -d
   --duration`, after a `--warmup` s wrk run): each request takes the next user's token and
   product, an `Idempotency-Key` of its own, body `{"items":[{"product_id":P,"quantity":1}]}`.
   201, 202 (the reply was late: counted, not a failure) and other answers counted apart.
   CPU per process meanwhile, and wrk's own.
5. The same wrk load on bench.direct's `POST /order/` (aiohttp + asyncpg, one process, the same
   Postgres: prices read from `products`, the order and its lines inserted into scratch copies of
   `orders` and `order_items` in schema `bench_direct`, dropped afterwards).
6. `GET /product/?page=--page`, wrk, through the gateway, then bench.direct's handler.
7. Checkout (order, payment polled until it exists, pay) at `--connections` clients: the
   closed loop of bench.checkout (aiohttp, in this process), `--warmup` s then `--duration` s.
8. The raw reserve-stock transaction of bench.checkout (`RESERVE_LINE` + INSERT), at
   `--connections` asyncpg connections, `--warmup` s then `--duration` s, nothing else running.

Between the loads, the script waits (at most `--settle` s) until the platform's CPU is back
near its idle level, so that a run does not pay for the saga still finishing the last one.

    python -m bench.issue8 [--duration 15] [--warmup 2] [--connections 64] [--threads 2]
                           [--products 16] [--stock 1000000] [--users 64] [--idle 200]
                           [--idle-warmup 20] [--cold 5] [--cold-gap 10] [--idle-cpu 10]
                           [--page 1] [--poll 0.02] [--settle 30] [--wrk PATH]
                           [--wrk-timeout 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from bench import direct as direct_handler
from bench.catalogue import fetch_json, wait_serving
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
    REPO,
    BenchError,
    Child,
    Platform,
    Sample,
    Section,
    Table,
    admin_token,
    closed_loop,
    cpu_snapshot,
    cpu_used,
    fmt,
    free_ports,
    idle,
    leftovers,
    main,
    median,
    progress,
    temp_state_dir,
)
from bench.wrk import WrkResult, lua_script, run_wrk, wrk_binary

COMMAND = "python -m bench.issue8"
SAME_TRIES = 10


@dataclass
class Results:
    idle_cpu: Sample
    sequential: Sample
    sequential_steps: Steps
    cold: Sample
    cold_steps: Steps
    cold_gaps: list[Sample]
    orders_gateway: WrkResult
    orders_direct: WrkResult
    catalogue_gateway: WrkResult
    catalogue_direct: WrkResult
    checkout: Sample
    checkout_warm: Sample
    checkout_steps: Steps
    raw: Sample
    scratch: dict[str, int]
    warm_ok: dict[str, int]
    settled: dict[str, tuple[float, int | None]]
    same_page: bool
    dsn_source: str
    probe: str
    left: list[str] = field(default_factory=list)


PENDING = "SELECT count(*) FROM orders WHERE status = 'pending'"


async def pending_orders(dsn: str) -> int | None:
    """Orders the saga has not decided yet (None if that cannot be read)."""
    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        return int(await conn.fetchval(PENDING))
    except asyncpg.PostgresError:
        return None
    finally:
        await conn.close()


async def quiet(
    servers: Sequence[int], idle_cores: float, limit: float, dsn: str
) -> tuple[float, int | None]:
    """Wait until no order is pending and the servers use at most their idle CPU + 0.15 cores
    over 1 s, for at most `limit` seconds: (the seconds waited, the orders still pending)."""
    started = time.perf_counter()
    threshold = (0.0 if math.isnan(idle_cores) else idle_cores) + 0.15
    pending = await pending_orders(dsn)
    while time.perf_counter() - started < limit:
        before, t0 = cpu_snapshot(servers), time.perf_counter()
        await asyncio.sleep(1.0)
        elapsed = time.perf_counter() - t0
        busy = sum(cpu_used(before, cpu_snapshot(servers), elapsed).values()) > threshold
        pending = await pending_orders(dsn)
        if not busy and not pending:
            break
    waited = time.perf_counter() - started
    progress(f"settled in {waited:.1f} s ({pending} orders pending)")
    return waited, pending


async def same_page(http: aiohttp.ClientSession, urls: Sequence[str]) -> bool:
    """Both handlers give the same JSON for the page (retried while the saga moves stock)."""
    bodies: list[Any] = []
    for _ in range(SAME_TRIES):
        bodies = [await fetch_json(http, u) for u in urls]
        if all(b == bodies[0] for b in bodies):
            return True
        await asyncio.sleep(1.0)
    progress(
        "the answers differ:\n"
        + "\n".join(f"{u}: {json.dumps(b)[:600]}" for u, b in zip(urls, bodies, strict=True))
    )
    return False


async def probe_direct_order(
    http: aiohttp.ClientSession, url: str, user: User, product_id: int
) -> str:
    """One order on the direct handler, sent twice with one Idempotency-Key: 201 both times,
    the same order; what it answered, for the notes."""
    body = {"items": [{"product_id": product_id, "quantity": 1}]}
    headers = {**user.headers, "Idempotency-Key": f"probe-{uuid.uuid4().hex}"}
    found: list[dict[str, Any]] = []
    for _ in range(2):
        async with http.post(f"{url}/order/", json=body, headers=headers) as r:
            text = await r.text()
            if r.status != 201:
                raise BenchError(f"direct POST /order/ answered {r.status}: {text[:300]}")
            found.append(json.loads(text)["order"])
    if found[0]["id"] != found[1]["id"]:
        raise BenchError(f"direct POST /order/ replayed a key as a new order: {found}")
    order = found[0]
    return (
        f"order {order['id']}, {order['status']}, total {order['total_price']}, "
        f"{len(order['order_items'])} line(s); the same order again for the same key"
    )


async def run(platform: Platform, args: argparse.Namespace, wrk: str) -> Results:
    if args.users < args.connections:
        raise BenchError("--users must be at least --connections: one user per checkout client")
    if args.duration < 1 or args.warmup < 0:
        raise BenchError("--duration must be at least 1 s and --warmup at least 0 s (wrk: whole s)")
    servers = [platform.child.pid]

    idle_cpu = await idle(args.idle_cpu, servers)
    progress(f"idle right after start, {args.idle_cpu:g} s: {idle_cpu.describe()}")
    dsn, dsn_source = database_url(platform)
    settled: dict[str, tuple[float, int | None]] = {}

    async def settle(before: str, watched: list[int]) -> None:
        settled[before] = await quiet(watched, idle_cpu.server_cores, args.settle, dsn)

    connector = aiohttp.TCPConnector(limit=args.connections + 8)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        shop = Shop(http, platform.gateway_url, args.poll)
        admin = {"Authorization": f"Bearer {await admin_token(platform.env)}"}
        ids = [await shop.create_product(admin, n, args.stock) for n in range(args.products)]
        users: list[User] = await gather_limited(args.users, 8, shop.new_user)
        progress(f"{len(ids)} products of {args.stock} units, {len(users)} users")

        def place(steps: Steps | None, offset: int = 0) -> Call:
            async def call(i: int) -> None:
                k = i + offset
                await shop.place(users[k % len(users)], ids[k % len(ids)], steps)

            return call

        # One order at a time, then the first order after a pause.
        await closed_loop(place(None), concurrency=1, requests=args.idle_warmup)
        sequential_steps = Steps()
        sequential = await closed_loop(
            place(sequential_steps), concurrency=1, requests=args.idle, servers=servers
        )
        progress(f"one order at a time: {sequential.describe()}")
        cold, cold_steps, gaps = Sample(), Steps(), []
        for k in range(args.cold):
            gaps.append(await idle(args.cold_gap, servers))
            one = await closed_loop(place(cold_steps, k), concurrency=1, requests=1)
            cold.latencies += one.latencies
            cold.errors += one.errors
            cold.first_error = cold.first_error or one.first_error
            cold.elapsed += one.elapsed
            progress(f"first order after {args.cold_gap:g} s of nothing: {one.describe()}")

        # POST /order/ through the gateway, with wrk.
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
        page = f"/product/?page={args.page}"
        page_lua = lua_script(method="GET", path=page, threads=args.threads)

        async def load(name: str, url: str, script: str, watched: list[int]) -> WrkResult:
            """A wrk warm-up run, then the measured one."""
            if args.warmup > 0:
                warm = await run_wrk(
                    f"{name}, warm-up",
                    url,
                    script,
                    wrk=wrk,
                    threads=args.threads,
                    connections=args.connections,
                    duration=args.warmup,
                    timeout_s=args.wrk_timeout,
                )
                warm_ok[name] = warm.ok
            return await run_wrk(
                name,
                url,
                script,
                wrk=wrk,
                threads=args.threads,
                connections=args.connections,
                duration=args.duration,
                timeout_s=args.wrk_timeout,
                servers=watched,
            )

        warm_ok: dict[str, int] = {}
        await settle("before the order load", servers)
        orders_gateway = await load("orders, gateway", platform.gateway_url, orders_lua, servers)
        await settle("after the gateway's order load", servers)

        # The direct handler: orders, then the catalogue page next to the gateway's.
        (port,) = free_ports(1)
        direct_url = f"http://127.0.0.1:{port}"
        await direct_handler.create_scratch(dsn)
        direct = Child(
            "bench.direct",
            [sys.executable, "-m", "bench.direct", "--port", str(port), "--dsn", dsn],
            platform.env,
            cwd=REPO,
        )
        scratch: dict[str, int] = {}
        try:
            await direct.spawn()
            both = [*servers, direct.pid]
            await wait_serving(http, f"{direct_url}{page}", direct)
            probe = await probe_direct_order(http, direct_url, users[0], ids[0])
            orders_direct = await load("orders, direct", direct_url, orders_lua, both)
            await settle("after the direct order load", both)
            same = await same_page(http, [f"{platform.gateway_url}{page}", f"{direct_url}{page}"])
            catalogue_gateway = await load(
                "catalogue, gateway", platform.gateway_url, page_lua, both
            )
            catalogue_direct = await load("catalogue, direct", direct_url, page_lua, both)
        finally:
            await direct.stop()
            scratch = await direct_handler.drop_scratch(dsn)
        progress(f"the scratch tables held {scratch}; dropped")

        # Checkout: bench.checkout's closed loop, one user per client.
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

    await settle("before the raw transactions", servers)
    raw_args = argparse.Namespace(
        concurrency=args.connections, raw_warmup=args.warmup, raw_duration=args.duration
    )
    raw = await raw_reservations(dsn, ids, raw_args, servers)
    progress(f"raw reservations, {args.connections} connections: {raw.describe()}")
    return Results(
        idle_cpu=idle_cpu,
        sequential=sequential,
        sequential_steps=sequential_steps,
        cold=cold,
        cold_steps=cold_steps,
        cold_gaps=gaps,
        orders_gateway=orders_gateway,
        orders_direct=orders_direct,
        catalogue_gateway=catalogue_gateway,
        catalogue_direct=catalogue_direct,
        checkout=checkout_sample,
        checkout_warm=checkout_warm,
        checkout_steps=checkout_steps,
        raw=raw,
        scratch=scratch,
        warm_ok=warm_ok,
        settled=settled,
        same_page=same,
        dsn_source=dsn_source,
        probe=probe,
    )


async def measure(args: argparse.Namespace) -> Section:
    wrk = wrk_binary(args.wrk)
    with temp_state_dir() as state:
        platform = Platform(state)
        watch = LogWatch(platform)
        async with platform:
            try:
                results = await run(platform, args, wrk)
            except BaseException:
                progress(f"the last lines of shopstream run:\n{platform.child.tail(40)}")
                raise
        results.left = leftovers(str(state))
    if watch.count:
        progress(f"{watch.count} warnings or errors from shopstream run, first:")
        for line in watch.first:
            progress(f"  {line}")
    return report(results, args, watch)


# --- the report -------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


def _split(cores_by: dict[str, float]) -> str:
    """`total cores: label cores (share %), ...`, the biggest first."""
    total = sum(cores_by.values())
    parts = [
        f"`{k}` {v:.2f} ({100 * v / total:.0f} %)" if total else f"`{k}` {v:.2f}"
        for k, v in sorted(cores_by.items(), key=lambda kv: -kv[1])
        if v >= 0.005
    ]
    return f"{total:.2f} cores: " + ", ".join(parts)


def _statuses(w: WrkResult) -> str:
    s = w.status
    text = f"201: {s['201']}, 202: {s['202']}"
    if s["200"] or s["2xx"]:
        text += f", other 2xx: {s['200'] + s['2xx']}"
    return text + f", other: {s['other']}, socket errors: {w.socket_errors}"


def _ms(values: Sequence[float]) -> str:
    return ", ".join(f"{v * 1000:.1f}" for v in values)


def report(r: Results, args: argparse.Namespace, watch: LogWatch) -> Section:
    n, secs = args.connections, args.duration
    og, od = r.orders_gateway, r.orders_direct
    cg, cd = r.catalogue_gateway, r.catalogue_direct
    wrk_line = f"wrk -t{args.threads} -c{n} -d{secs}s"
    table = Table(["#", "Figure", "Value", "p50 (ms)", "p99 (ms)", "Ratio"])
    table.rows += [
        [
            "1",
            f"`POST /order/` through the gateway, `{wrk_line}`",
            f"**{og.rate:.1f} orders/s** ({_statuses(og)})",
            fmt(og.ms("p50")),
            fmt(og.ms("p99")),
            f"gateway ÷ direct **{fmt(_ratio(og.rate, od.rate), 3)}**; "
            f"gateway ÷ raw reserve **{fmt(_ratio(og.rate, r.raw.rate), 3)}**",
        ],
        [
            "2",
            f"`POST /order/`, direct aiohttp + asyncpg handler (1 process), `{wrk_line}`",
            f"**{od.rate:.1f} orders/s** ({_statuses(od)})",
            fmt(od.ms("p50")),
            fmt(od.ms("p99")),
            "",
        ],
        [
            "3",
            f"raw reserve-stock transaction (`RESERVE_LINE` + INSERT), {n} asyncpg connections, "
            f"{secs} s",
            f"**{r.raw.rate:.0f} /s** ({r.raw.errors} errors)",
            fmt(r.raw.ms(50)),
            fmt(r.raw.ms(99)),
            "",
        ],
        [
            "4a",
            f"one order, idle: {args.idle} sequential `POST /order/` after {args.idle_warmup} "
            "of warm-up",
            f"{r.sequential.rate:.1f} orders/s, 202: {r.sequential_steps.accepted}, errors: "
            f"{r.sequential.errors}",
            fmt(r.sequential.ms(50)),
            fmt(r.sequential.ms(99)),
            "",
        ],
        [
            "4b",
            f"first order after {args.cold_gap:g} s of nothing ({args.cold} samples; p99 = max)",
            f"each (ms): {_ms(r.cold.latencies)}; 202: {r.cold_steps.accepted}, errors: "
            f"{r.cold.errors}",
            fmt(r.cold.ms(50)),
            fmt(r.cold.ms(99)),
            f"÷ idle p50 {fmt(_ratio(r.cold.ms(50), r.sequential.ms(50)))}",
        ],
        [
            "5a",
            f"catalogue `GET /product/?page={args.page}` through the gateway, `{wrk_line}`",
            f"**{cg.rate:.0f} req/s** (other: {cg.status['other']}, socket errors: "
            f"{cg.socket_errors})",
            fmt(cg.ms("p50")),
            fmt(cg.ms("p99")),
            f"gateway ÷ direct **{fmt(_ratio(cg.rate, cd.rate), 3)}** (p99 "
            f"{fmt(_ratio(cg.ms('p99'), cd.ms('p99')))})",
        ],
        [
            "5b",
            f"… the direct handler, `{wrk_line}`",
            f"**{cd.rate:.0f} req/s** (other: {cd.status['other']}, socket errors: "
            f"{cd.socket_errors})",
            fmt(cd.ms("p50")),
            fmt(cd.ms("p99")),
            "",
        ],
        [
            "6",
            f"checkout (order, payment polled, pay) at {n} clients, closed loop, {secs} s",
            f"**{r.checkout.rate:.1f} checkouts/s** ({r.checkout.count} done, `POST /order/` "
            f"202: {r.checkout_steps.accepted}, `GET /payment/order/{{id}}` 503: "
            f"{r.checkout_steps.unavailable}, errors: {r.checkout.errors})",
            fmt(r.checkout.ms(50)),
            fmt(r.checkout.ms(99)),
            f"checkout ÷ raw reserve {fmt(_ratio(r.checkout.rate, r.raw.rate), 3)}",
        ],
        [
            "7",
            f"idle CPU, the whole platform, {args.idle_cpu:g} s right after start",
            _split(r.idle_cpu.server_cores_by),
            "",
            "",
            f"of {os.cpu_count()} cores",
        ],
        [
            "8",
            "CPU under the order load of row 1 (the platform; wrk apart)",
            _split(og.server_cores_by) + f"; **wrk {og.wrk_cores:.2f} cores** (not in the total)",
            "",
            "",
            f"CPU ms per order: {fmt(_ratio(og.server_cores * 1000, og.rate))}",
        ],
    ]

    runs: list[tuple[str, WrkResult]] = [
        ("`POST /order/`, gateway", og),
        ("`POST /order/`, direct", od),
        (f"`GET /product/?page={args.page}`, gateway", cg),
        (f"`GET /product/?page={args.page}`, direct", cd),
    ]
    wrk_table = Table(
        [
            "wrk run",
            "Seconds",
            "Answers",
            "2xx/s",
            "Statuses",
            "p50 (ms)",
            "p90 (ms)",
            "p99 (ms)",
            "max (ms)",
            "CPU: servers (cores)",
            "CPU: wrk (cores)",
        ]
    )
    for name, w in runs:
        wrk_table.rows.append(
            [
                name,
                fmt(w.seconds, 1),
                str(w.requests),
                fmt(w.rate, 1),
                ", ".join(f"{k}: {v}" for k, v in w.status.items() if v) or "none",
                fmt(w.ms("p50")),
                fmt(w.ms("p90")),
                fmt(w.ms("p99")),
                fmt(w.ms("max")),
                fmt(w.server_cores),
                fmt(w.wrk_cores),
            ]
        )

    columns: list[tuple[str, dict[str, float], float, str]] = [
        ("idle after start", r.idle_cpu.server_cores_by, r.idle_cpu.client_cores, "bench"),
        ("orders one at a time", r.sequential.server_cores_by, r.sequential.client_cores, "bench"),
        *((name, w.server_cores_by, w.wrk_cores, "wrk") for name, w in runs),
        (f"checkout, {n} clients", r.checkout.server_cores_by, r.checkout.client_cores, "bench"),
        (f"raw, {n} connections", r.raw.server_cores_by, r.raw.client_cores, "bench"),
    ]
    labels: list[str] = []
    for _, by, _, _ in columns:
        labels += [k for k in sorted(by, key=lambda k: -by[k]) if k not in labels]
    cpu = Table(["CPU, cores (share of the servers' total)", *(c[0] for c in columns)])
    for label in labels:
        row = [f"`{label}`"]
        for _, by, _, _ in columns:
            total = sum(by.values())
            v = by.get(label, 0.0)
            row.append(f"{v:.2f} ({100 * v / total:.0f} %)" if total else f"{v:.2f}")
        cpu.rows.append(row)
    cpu.rows.append(["all of the above", *(fmt(sum(c[1].values())) for c in columns)])
    cpu.rows.append(
        [
            "load generator (wrk, or bench: this script's aiohttp / asyncpg client)",
            *(f"{c[3]} {fmt(c[2])}" for c in columns),
        ]
    )

    gaps = [g.server_cores for g in r.cold_gaps]
    warm = ", ".join(f"{k} {v}" for k, v in r.warm_ok.items())
    notes = [
        f"Setup: {args.products} products of {args.stock} units, {args.users} users registered "
        f"and logged in through the gateway; every order is one line of 1 unit.",
        f"wrk: `{wrk_line} --timeout {args.wrk_timeout}s --latency -s <generated Lua>`, after a "
        f"{args.warmup} s wrk warm-up run of each (2xx in the warm-ups: {warm or 'none'}). "
        f"For `POST /order/`, request k of wrk thread t (of {args.threads}) takes user "
        f"(t + {args.threads}k) mod {args.users}'s token and product (t + {args.threads}k) mod "
        f"{args.products}, and an `Idempotency-Key` of its own (a prefix new for each wrk "
        "run, the thread, a counter): "
        "wrk's Lua has no per-connection hook, so the users are spread over the requests, one "
        f"in flight per user on average. Orders/s = 2xx answers ÷ wrk's seconds; 202 (the order "
        "reply came after the gateway's request timeout) is counted, not a failure; requests "
        "still in flight when wrk stops are not counted. Latencies are wrk's (every answer).",
        "wrk is a C program in a process of its own: it costs the platform's processes "
        "nothing, but it shares the cores; its CPU (user + system, from `wait4`) is shown apart "
        "and is not in the servers' total.",
        f"The direct handler (`python -m bench.direct`, aiohttp + asyncpg, pool of "
        f"`DB_POOL_MAX`) reads the prices from `products` and inserts the order and its line "
        f"into `bench_direct.orders` / `bench_direct.order_items` (the columns of "
        f"`sql/0005_orders.sql`) in one transaction; it checks the token as the gateway does; "
        f"it reserves no stock and writes no event, outbox or status history. The scratch "
        f"tables held {r.scratch.get('orders', 0)} orders and {r.scratch.get('items', 0)} "
        "lines at the end (warm-up and a first probe included), then were dropped. The probe, "
        f"one order sent twice with one `Idempotency-Key`: {r.probe}.",
        "`bench.direct` runs the page's SQL on every request (no cache). "
        f"Catalogue page {args.page}: both answers were "
        + ("the same JSON." if r.same_page else "DIFFERENT (see the progress output)."),
        f"Raw: bench.checkout's raw run, {n} asyncpg connections to the platform's Postgres (DSN "
        f"from {r.dsn_source}), {args.warmup} s warm-up, {secs} s measured, nothing else running.",
        f"Checkout: bench.checkout's closed loop ({args.warmup} s warm-up: "
        f"{r.checkout_warm.count} checkouts, {r.checkout_warm.errors} errors), each client its "
        f"own user, the payment polled every {args.poll * 1000:g} ms until it exists.",
        f"Idle CPU during the {args.cold} pauses before the cold orders (after the sequential "
        f"ones): {', '.join(fmt(g) for g in gaps)} cores (median {fmt(median(gaps))}).",
        "Before each load, waited until no order was pending and the platform's CPU was back "
        f"near idle (+0.15 cores), at most {args.settle:g} s: "
        + ", ".join(f"{k} {t:.1f} s ({n} pending)" for k, (t, n) in r.settled.items())
        + ".",
        f"Lines at WARNING or above from `shopstream run`: {watch.count}"
        + (f"; the first: `{watch.first[0]}`" if watch.first else ""),
        f"Processes left after the run: {len(r.left)}"
        + (f" ({'; '.join(r.left)})" if r.left else ""),
    ]
    for name, w in runs:
        if not w.requests:
            notes.append(f"{name}: NO answer within the {secs} s of the run.")
        if w.first_other:
            notes.append(f"{name}, first non-2xx answer: `{w.first_other[:200]}`")
    for name, s in (
        ("one order at a time", r.sequential),
        ("first order after a pause", r.cold),
        ("checkout", r.checkout),
        ("raw", r.raw),
    ):
        if s.first_error:
            notes.append(f"{name}, first error: {s.first_error}")
    section = Section(
        "Issue 8: orders through the gateway, a direct handler and Postgres; idle; catalogue; "
        "checkout; CPU",
        args.command,
        [table, wrk_table, cpu],
        notes,
    )
    section.failed = (
        any(w.failures or not w.requests for _, w in runs)
        or any(s.errors for s in (r.sequential, r.cold, r.checkout, r.raw))
        or not r.same_page
        or r.checkout.count == 0
    )
    return section


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__)
    p.add_argument("--duration", type=int, default=15, help="seconds of each measured load")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each load")
    p.add_argument("--connections", type=int, default=64, help="wrk connections, clients, raw")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--products", type=int, default=16)
    p.add_argument("--stock", type=int, default=1_000_000, help="units of each product")
    p.add_argument("--users", type=int, default=64)
    p.add_argument("--idle", type=int, default=200, help="sequential orders measured")
    p.add_argument("--idle-warmup", type=int, default=20, help="sequential orders before them")
    p.add_argument("--cold", type=int, default=5, help="orders each after a pause")
    p.add_argument("--cold-gap", type=float, default=10.0, help="seconds of each pause")
    p.add_argument("--idle-cpu", type=float, default=10.0, help="seconds of idle CPU at start")
    p.add_argument("--page", type=int, default=1, help="the catalogue page to read")
    p.add_argument("--poll", type=float, default=0.02, help="seconds between payment polls")
    p.add_argument("--settle", type=float, default=30.0, help="most seconds to wait for quiet")
    p.add_argument("--wrk", default=None, help="the wrk program (default: wrk on PATH)")
    p.add_argument("--wrk-timeout", type=int, default=30, help="wrk --timeout, seconds")
    p.set_defaults(command=COMMAND)
    return p.parse_args(argv)


def cli(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    args = parse(given)
    args.command = " ".join([COMMAND, *given])
    return main([("issue8", args.command, lambda: measure(args))])


if __name__ == "__main__":
    sys.exit(cli())
