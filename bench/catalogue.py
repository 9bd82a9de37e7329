"""Catalogue reads: `GET /product/?page=0` through the gateway, next to a direct handler.

Gateway: aiohttp → gRPC → products worker → Postgres. Direct: bench.direct, aiohttp + asyncpg
running the same SQL against the same Postgres, on its own port, in its own process. Both
measured in the same run by the same load generator: an asyncio aiohttp client holding
64 connections, a warm-up, then a fixed duration.

    python -m bench.catalogue [--duration 10] [--warmup 2] [--concurrency 64] [--rounds 1]
                              [--page 0] [--extra-products 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg

from bench.harness import (
    REPO,
    BenchError,
    Child,
    Platform,
    Sample,
    Section,
    Table,
    closed_loop,
    cpu_table,
    fmt,
    free_ports,
    leftovers,
    main,
    progress,
    temp_state_dir,
)

COMMAND = "python -m bench.catalogue"


def page_path(args: argparse.Namespace) -> str:
    return f"/product/?page={args.page}"


async def fetch_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as r:
        if r.status != 200:
            raise BenchError(f"GET {url} answered {r.status}: {await r.text()}")
        return await r.json()


async def wait_serving(http: aiohttp.ClientSession, url: str, child: Child) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            await fetch_json(http, url)
        except (aiohttp.ClientError, BenchError) as e:
            if not child.running or time.monotonic() > deadline:
                raise BenchError(f"{child.name} does not answer ({e}):\n{child.tail()}") from None
        else:
            return
        await asyncio.sleep(0.1)


def get(http: aiohttp.ClientSession, url: str) -> Callable[[int], Awaitable[None]]:
    async def call(i: int) -> None:
        async with http.get(url) as r:
            body = await r.read()
            if r.status != 200:
                raise BenchError(f"GET answered {r.status}: {body[:200]!r}")

    return call


async def load(
    http: aiohttp.ClientSession, url: str, servers: list[int], args: argparse.Namespace
) -> Sample:
    call = get(http, url)
    await closed_loop(call, concurrency=args.concurrency, duration=args.warmup)
    return await closed_loop(
        call, concurrency=args.concurrency, duration=args.duration, servers=servers
    )


async def add_products(dsn: str, count: int) -> None:
    """Grow the catalogue straight in Postgres (the bench's own throw-away database)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO products (name, price, stock) "
            "SELECT 'bench product ' || g, 1.00, 1 FROM generate_series(1, $1) AS g",
            count,
        )
        await conn.execute("ANALYZE products")
    finally:
        await conn.close()


async def measure(args: argparse.Namespace) -> Section:
    samples: dict[str, list[Sample]] = {"gateway": [], "direct": []}
    with temp_state_dir() as state:
        async with Platform(state) as platform:
            if args.extra_products:
                await add_products(platform.dsn, args.extra_products)
                progress(f"added {args.extra_products} products")
            (port,) = free_ports(1)
            direct = Child(
                "bench.direct",
                [sys.executable, "-m", "bench.direct", "--port", str(port), "--dsn", platform.dsn],
                platform.env,
                cwd=REPO,
            )
            urls = {
                "gateway": f"{platform.gateway_url}{page_path(args)}",
                "direct": f"http://127.0.0.1:{port}{page_path(args)}",
            }
            await direct.spawn()
            servers = [platform.child.pid, direct.pid]
            try:
                connector = aiohttp.TCPConnector(limit=args.concurrency)
                timeout = aiohttp.ClientTimeout(total=30)
                async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
                    await wait_serving(http, urls["direct"], direct)
                    bodies = {k: await fetch_json(http, u) for k, u in urls.items()}
                    same = bodies["gateway"] == bodies["direct"]
                    if not same:
                        progress(
                            "the two answers differ:\n"
                            + "\n".join(f"{k}: {json.dumps(b)[:600]}" for k, b in bodies.items())
                        )
                    for round_ in range(args.rounds):
                        for name, url in urls.items():
                            sample = await load(http, url, servers, args)
                            progress(f"round {round_ + 1}, {name}: {sample.describe()}")
                            if sample.errors:
                                progress(f"the last lines:\n{platform.child.tail(40)}")
                            samples[name].append(sample)
            finally:
                await direct.stop()
        left = leftovers(str(state))
    return report(samples, same, left, args)


def _best(found: list[Sample]) -> Sample:
    return max(found, key=lambda s: s.rate)


def report(
    samples: dict[str, list[Sample]], same: bool, left: list[str], args: argparse.Namespace
) -> Section:
    table = Table(
        [
            "Path",
            "Connections",
            "Seconds",
            "Requests",
            "req/s",
            "p50 (ms)",
            "p99 (ms)",
            "Errors",
            "CPU: servers (cores)",
        ]
    )
    labels = {
        "gateway": "gateway → gRPC → products → Postgres",
        "direct": "direct aiohttp + asyncpg → Postgres",
    }
    failed = False
    notes: list[str] = []
    for name, found in samples.items():
        for s in found:
            failed = failed or s.errors > 0
            table.rows.append(
                [
                    labels[name],
                    str(args.concurrency),
                    fmt(s.elapsed, 1),
                    str(s.count),
                    fmt(s.rate, 0),
                    fmt(s.ms(50)),
                    fmt(s.ms(99)),
                    str(s.errors),
                    fmt(s.server_cores),
                ]
            )
            if s.first_error:
                notes.append(f"{labels[name]}: first error: {s.first_error}")
    gateway, direct = _best(samples["gateway"]), _best(samples["direct"])
    ratio = Table(["Figure", "direct / gateway"])
    ratio.rows.append(["req/s", fmt(direct.rate / gateway.rate)])
    ratio.rows.append(["p99", fmt(direct.ms(99) / gateway.ms(99))])
    notes += [
        f"`GET {page_path(args)}` (10 products a page; the demo catalogue of 12"
        + (f" and {args.extra_products} more products" if args.extra_products else "")
        + "); "
        f"{args.warmup:g} s warm-up before each {args.duration:g} s measurement; "
        f"{args.rounds} round(s), gateway then direct"
        + (", ratio of the best round of each" if args.rounds > 1 else "")
        + ".",
        f"Both answers were {'the same JSON' if same else 'DIFFERENT (see the progress output)'}.",
        "One asyncio aiohttp client process is the load generator for both; it shares the "
        "2 cores with the platform, so it caps both figures. CPU: servers is every process "
        "of `shopstream run` (Postgres included) plus bench.direct, in cores.",
        f"Processes left after the run: {len(left)}" + (f" ({'; '.join(left)})" if left else ""),
    ]
    cpu = cpu_table(
        [
            (f"{name}, round {i + 1}", s)
            for name, found in samples.items()
            for i, s in enumerate(found)
        ]
    )
    section = Section(
        "Catalogue reads: gateway vs. direct", args.command, [table, ratio, cpu], notes
    )
    section.failed = failed or not same
    return section


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.catalogue", description=__doc__)
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per path")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per path")
    p.set_defaults(command=COMMAND)
    p.add_argument("--concurrency", type=int, default=64, help="connections in flight")
    p.add_argument("--rounds", type=int, default=1, help="gateway then direct, this many times")
    p.add_argument("--page", type=int, default=0, help="the catalogue page to read")
    p.add_argument(
        "--extra-products", type=int, default=0, help="add this many products first (SQL)"
    )
    return p.parse_args(argv)


def cli(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    args = parse(given)
    args.command = " ".join([COMMAND, *given])
    return main([("catalogue", args.command, lambda: measure(args))])


if __name__ == "__main__":
    sys.exit(cli())
