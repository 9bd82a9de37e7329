"""The checkout saga: place an order, wait for its payment, pay; next to the raw SQL it guards.

On a freshly started platform, with products of plenty of stock and users of their own:

1. Idle: sequential `POST /order/` round trips (gateway → orders.commands → orders agent →
   OrderPlaced → products agent reserves the stock → StockReserved → orders agent → reply),
   then sequential whole checkouts.
2. Loaded: N clients, each a user of its own, each running whole checkouts in a closed loop:
   `POST /order/` (201 awaiting_payment), `GET /payment/order/{id}` polled until the payment
   exists (it is created asynchronously), `POST /payment/transaction` (200).
3. Raw: against the same Postgres (the `database_url` of the supervisor's run.json), N asyncpg
   connections each running, in one transaction, the products agent's conditional UPDATE of
   one line (`RESERVE_LINE`) and an INSERT into a scratch table: the bound the database puts
   on reservations, without Kafka, gRPC, HTTP or the saga's other steps.

Between 2 and 3, the script checks the books: orders, payments and stock agree.

    python -m bench.checkout [--products 16] [--stock 1000000] [--users 64] [--concurrency 64]
                             [--idle 100] [--idle-checkouts 50] [--warmup 5] [--duration 20]
                             [--raw-duration 20] [--poll 0.02]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

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
    leftovers,
    main,
    percentile,
    progress,
    temp_state_dir,
)

COMMAND = "python -m bench.checkout"
TIMEOUT_S = 60.0
PAYMENT_WAIT_S = 30.0
IDLE_WARMUP = 20
SETTLE_S = 30.0
SCRATCH = "bench_reservations"
CREATE_SCRATCH = f"""
CREATE TABLE {SCRATCH} (
    id         BIGSERIAL PRIMARY KEY,
    product_id BIGINT NOT NULL,
    quantity   INTEGER NOT NULL,
    price      NUMERIC(12, 2) NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""
INSERT_SCRATCH = f"INSERT INTO {SCRATCH} (product_id, quantity, price) VALUES ($1, $2, $3)"
# The products agent's conditional reservation of one line, as it was in agents/products/stock.py
# (RESERVE_LINE) up to commit 69032f6: the whole oversell guard, in one statement. Kept here, not
# imported, so that the raw figure stays the same transaction while the engine changes.
RESERVE_LINE = """
UPDATE products SET stock = stock - $2, reserved = reserved + $2
WHERE id = $1 AND deleted_at IS NULL AND stock >= $2
RETURNING price
"""


@dataclass(frozen=True)
class User:
    email: str
    headers: dict[str, str]


@dataclass
class Steps:
    """The latency of each step of the checkouts of one run, and what came back unusual."""

    place: list[float] = field(default_factory=list)
    wait: list[float] = field(default_factory=list)
    pay: list[float] = field(default_factory=list)
    polls: list[int] = field(default_factory=list)
    accepted: int = 0  # 202: the reply did not come within the gateway's request timeout
    # 503 to `GET /payment/order/{id}`: the gateway waited its request timeout for the payment
    unavailable: int = 0

    def ms(self, step: str, q: float) -> float:
        values: list[float] = getattr(self, step)
        return percentile(values, q) * 1000


@dataclass
class Totals:
    """Every order and payment this script made succeed, all phases together."""

    orders: int = 0
    paid: int = 0


class Shop:
    """The gateway's checkout calls, as a client makes them."""

    def __init__(self, http: aiohttp.ClientSession, url: str, poll: float) -> None:
        self.http = http
        self.url = url
        self.poll = poll
        self.totals = Totals()

    async def _json(
        self,
        method: str,
        path: str,
        expect: int,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> Any:
        async with self.http.request(method, f"{self.url}{path}", json=body, headers=headers) as r:
            text = await r.text()
            if r.status != expect:
                raise BenchError(f"{method} {path} answered {r.status}: {text[:300]}")
            return json.loads(text)

    async def create_product(self, admin: dict[str, str], n: int, stock: int) -> int:
        body = {"name": f"bench-{n}-{uuid.uuid4().hex[:8]}", "price": 1 + n * 0.25, "stock": stock}
        product = await self._json("POST", "/product/", 201, admin, body)
        return int(product["id"])

    async def new_user(self, n: int) -> User:
        email = f"bench-{n}-{uuid.uuid4().hex[:8]}@example.com"
        password = uuid.uuid4().hex
        await self._json(
            "POST",
            "/api/v1/auth/register",
            201,
            body={"full_name": f"Bench Buyer {n}", "email": email, "password": password},
        )
        tokens = await self._json(
            "POST", "/api/v1/auth/login", 200, body={"email": email, "password": password}
        )
        return User(email, {"Authorization": f"Bearer {tokens['token']}"})

    async def place(self, user: User, product_id: int, steps: Steps | None) -> int:
        """Place a one-line order; its id once it awaits payment."""
        t0 = time.perf_counter()
        body = {"items": [{"product_id": product_id, "quantity": 1}]}
        async with self.http.post(f"{self.url}/order/", json=body, headers=user.headers) as r:
            text = await r.text()
            status = r.status
        if status == 201:
            order = json.loads(text)["order"]
            awaiting = "pending"  # the seed's word on its own route
        elif status == 202:  # the gateway gave up waiting: follow the order to its outcome
            if steps is not None:
                steps.accepted += 1
            order = await self._follow(user, json.loads(text)["location"])
            awaiting = "awaiting_payment"
        else:
            raise BenchError(f"POST /order/ answered {status}: {text[:300]}")
        if order["status"] != awaiting:
            raise BenchError(f"order {order['id']} is {order['status']}: {order.get('reason')}")
        if steps is not None:
            steps.place.append(time.perf_counter() - t0)
        self.totals.orders += 1
        return int(order["id"])

    async def _follow(self, user: User, location: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            async with self.http.get(f"{self.url}{location}", headers=user.headers) as r:
                if r.status == 200:
                    order: dict[str, Any] = await r.json()
                    if order["status"] != "pending":
                        return order
                elif r.status != 404:
                    raise BenchError(f"GET {location} answered {r.status}: {await r.text()}")
            await asyncio.sleep(self.poll)
        raise BenchError(f"the order of {location} was still pending after {TIMEOUT_S:.0f} s")

    async def payment(self, user: User, order_id: int, steps: Steps | None) -> tuple[int, float]:
        """Poll until the order's payment exists: (its id, its amount)."""
        t0 = time.perf_counter()
        deadline = time.monotonic() + PAYMENT_WAIT_S
        polls = 0
        while True:
            polls += 1
            async with self.http.get(
                f"{self.url}/payment/order/{order_id}", headers=user.headers
            ) as r:
                text = await r.text()
                status = r.status
                retry_after = r.headers.get("Retry-After", "")
            if status == 200:
                break
            if status not in (404, 503):
                raise BenchError(f"GET /payment/order/{order_id} answered {status}: {text[:300]}")
            if time.monotonic() > deadline:
                raise BenchError(f"no payment for order {order_id} after {PAYMENT_WAIT_S:.0f} s")
            pause = self.poll
            if status == 503:  # the gateway already waited for it: retry as it says (at most 1 s)
                if steps is not None:
                    steps.unavailable += 1
                pause = min(float(retry_after), 1.0) if retry_after.isdigit() else 1.0
            await asyncio.sleep(pause)
        found = json.loads(text)
        if steps is not None:
            steps.wait.append(time.perf_counter() - t0)
            steps.polls.append(polls)
        return int(found["id"]), float(found["amount"])

    async def pay(self, user: User, payment_id: int, amount: float, steps: Steps | None) -> None:
        t0 = time.perf_counter()
        body = {"payment_id": payment_id, "money": amount}
        await self._json("POST", "/payment/transaction", 200, user.headers, body)
        if steps is not None:
            steps.pay.append(time.perf_counter() - t0)
        self.totals.paid += 1

    async def checkout(self, user: User, product_id: int, steps: Steps | None) -> None:
        order_id = await self.place(user, product_id, steps)
        payment_id, amount = await self.payment(user, order_id, steps)
        await self.pay(user, payment_id, amount, steps)


@contextlib.asynccontextmanager
async def lent(pool: asyncio.Queue[Any]) -> AsyncIterator[Any]:
    """One item of `pool` for the time of a call: each in-flight call has its own."""
    item = pool.get_nowait()
    try:
        yield item
    finally:
        pool.put_nowait(item)


def queue_of(items: list[Any]) -> asyncio.Queue[Any]:
    pool: asyncio.Queue[Any] = asyncio.Queue()
    for item in items:
        pool.put_nowait(item)
    return pool


Call = Callable[[int], Awaitable[None]]


async def gather_limited(n: int, limit: int, make: Callable[[int], Awaitable[Any]]) -> list[Any]:
    slots = asyncio.Semaphore(limit)

    async def one(i: int) -> Any:
        async with slots:
            return await make(i)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def database_url(platform: Platform) -> tuple[str, str]:
    """The supervisor's run.json (written just before the ready line), else the harness's DSN;
    and which of the two it is."""
    run = Path(platform.env["SHOPSTREAM_STATE_DIR"]) / "run.json"
    try:
        return str(json.loads(run.read_text())["database_url"]), "`run.json`"
    except (OSError, ValueError, KeyError):
        return platform.dsn, "the postgres line of `shopstream run`"


# --- the books --------------------------------------------------------------------------------

BOOKS = """
SELECT
    (SELECT coalesce(sum(stock), 0) FROM products WHERE id = ANY($1::bigint[])) AS stock,
    (SELECT coalesce(sum(reserved), 0) FROM products WHERE id = ANY($1::bigint[])) AS reserved,
    (SELECT coalesce(sum(sold), 0) FROM products WHERE id = ANY($1::bigint[])) AS sold,
    (SELECT count(*) FROM orders WHERE status = 'pending') AS pending,
    (SELECT count(*) FROM orders WHERE status = 'awaiting_payment') AS awaiting,
    (SELECT count(*) FROM orders WHERE status = 'paid') AS paid,
    (SELECT count(*) FROM orders WHERE status IN ('rejected', 'cancelled')) AS other,
    (SELECT coalesce(sum(i.quantity), 0) FROM order_items i JOIN orders o ON o.id = i.order_id
        WHERE o.status = 'awaiting_payment') AS awaiting_units,
    (SELECT coalesce(sum(i.quantity), 0) FROM order_items i JOIN orders o ON o.id = i.order_id
        WHERE o.status = 'paid') AS paid_units,
    (SELECT count(*) FROM payments WHERE status = 'pending') AS payments_pending,
    (SELECT count(*) FROM payments WHERE status = 'succeeded') AS payments_succeeded,
    (SELECT count(*) FROM payments WHERE status = 'failed') AS payments_failed,
    (SELECT count(*) FROM payment_transactions WHERE outcome = 'succeeded') AS charges
"""


async def books(dsn: str, product_ids: list[int]) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(BOOKS, product_ids)
    finally:
        await conn.close()
    return {k: int(v) for k, v in dict(row).items()}


async def settled_books(dsn: str, product_ids: list[int]) -> tuple[dict[str, int], float]:
    """The books once the saga has caught up (two equal reads), and how long that took."""
    started = time.perf_counter()
    last = await books(dsn, product_ids)
    while time.perf_counter() - started < SETTLE_S:
        await asyncio.sleep(0.5)
        now = await books(dsn, product_ids)
        if now == last and now["pending"] == 0 and now["payments_succeeded"] == now["paid"]:
            break
        last = now
    return last, time.perf_counter() - started


def check_books(found: dict[str, int], totals: Totals, products: int, stock: int) -> list[str]:
    """What disagrees; empty when the books balance."""
    expected = {
        "stock + reserved + sold": (
            found["stock"] + found["reserved"] + found["sold"],
            products * stock,
        ),
        "orders placed (201/202 seen by the client)": (
            found["awaiting"] + found["paid"] + found["pending"] + found["other"],
            totals.orders,
        ),
        "orders paid": (found["paid"], totals.paid),
        "payments succeeded": (found["payments_succeeded"], totals.paid),
        "charges (succeeded transactions)": (found["charges"], totals.paid),
        "payments (one per accepted order)": (
            found["payments_pending"] + found["payments_succeeded"] + found["payments_failed"],
            found["awaiting"] + found["paid"],
        ),
        "units reserved (= units of orders awaiting payment)": (
            found["reserved"],
            found["awaiting_units"],
        ),
        "units sold (= units of paid orders)": (found["sold"], found["paid_units"]),
        "orders still pending": (found["pending"], 0),
    }
    return [f"{k}: {got} (expected {want})" for k, (got, want) in expected.items() if got != want]


# --- raw reservations -------------------------------------------------------------------------


async def raw_reservations(
    dsn: str, product_ids: list[int], args: argparse.Namespace, servers: list[int]
) -> Sample:
    """N asyncpg connections, each reserving one unit of one product per transaction."""
    admin = await asyncpg.connect(dsn)
    conns: list[asyncpg.Connection] = []
    try:
        await admin.execute(f"DROP TABLE IF EXISTS {SCRATCH}")
        await admin.execute(CREATE_SCRATCH)
        conns = list(await asyncio.gather(*(asyncpg.connect(dsn) for _ in range(args.concurrency))))
        pool = queue_of(conns)

        async def reserve(i: int) -> None:
            product_id = product_ids[i % len(product_ids)]
            async with lent(pool) as conn, conn.transaction():
                price = await conn.fetchval(RESERVE_LINE, product_id, 1)
                if price is None:
                    raise BenchError(f"product {product_id} is out of stock")
                await conn.execute(INSERT_SCRATCH, product_id, 1, price)

        await closed_loop(reserve, concurrency=args.concurrency, duration=args.raw_warmup)
        sample = await closed_loop(
            reserve, concurrency=args.concurrency, duration=args.raw_duration, servers=servers
        )
        await admin.execute(f"DROP TABLE {SCRATCH}")
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
        await admin.close()
    return sample


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Results:
    idle_place: Sample
    idle_checkout: Sample
    idle_steps: Steps
    warm: Sample
    loaded: Sample
    steps: Steps
    raw: Sample
    books: dict[str, int]
    settle_s: float
    disagreements: list[str]
    totals: Totals
    left: list[str]
    dsn_source: str


WARNING = re.compile(
    r"\b(?:WARNING|ERROR|CRITICAL)\b|\"level\": \"(?:warning|error|critical)\"|Traceback"
)


class LogWatch:
    """Counts the lines of `shopstream run` at WARNING or above (all its processes log there)."""

    def __init__(self, platform: Platform, keep: int = 5) -> None:
        self.count = 0
        self.first: list[str] = []
        self.keep = keep
        self._inner = platform.child.on_line
        platform.child.on_line = self._line

    def _line(self, line: str, at: float) -> None:
        if WARNING.search(line):
            self.count += 1
            if len(self.first) < self.keep:
                self.first.append(line[:300].replace("`", "'"))
        if self._inner is not None:
            self._inner(line, at)


async def measure(args: argparse.Namespace) -> Section:
    with temp_state_dir() as state:
        platform = Platform(state)
        watch = LogWatch(platform)
        async with platform:
            try:
                results = await run(platform, args)
            except BaseException:
                progress(f"the last lines of shopstream run:\n{platform.child.tail(40)}")
                raise
        results.left = leftovers(str(state))
    if watch.count:
        progress(f"{watch.count} warnings or errors from shopstream run, first:")
        for line in watch.first:
            progress(f"  {line}")
    return report(results, args, watch)


async def run(platform: Platform, args: argparse.Namespace) -> Results:
    if args.users < args.concurrency:
        raise BenchError("--users must be at least --concurrency: one user per client")
    servers = [platform.child.pid]
    dsn, dsn_source = database_url(platform)
    connector = aiohttp.TCPConnector(limit=args.concurrency + 8)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        shop = Shop(http, platform.gateway_url, args.poll)
        admin = {"Authorization": f"Bearer {await admin_token(platform.env)}"}
        t0 = time.perf_counter()
        ids = [await shop.create_product(admin, n, args.stock) for n in range(args.products)]
        t1 = time.perf_counter()
        users: list[User] = await gather_limited(args.users, 8, shop.new_user)
        progress(
            f"{len(ids)} products of {args.stock} units: {t1 - t0:.1f} s; {len(users)} users "
            f"registered and logged in, 8 at a time: {time.perf_counter() - t1:.1f} s"
        )

        def place(steps: Steps | None) -> Call:
            async def call(i: int) -> None:
                await shop.place(users[i % len(users)], ids[i % len(ids)], steps)

            return call

        await closed_loop(place(None), concurrency=1, requests=IDLE_WARMUP)
        idle_steps = Steps()
        idle_place = await closed_loop(
            place(idle_steps), concurrency=1, requests=args.idle, servers=servers
        )
        progress(f"place order, idle: {idle_place.describe()}")

        def checkout(steps: Steps | None, pool: asyncio.Queue[Any]) -> Call:
            async def call(i: int) -> None:
                async with lent(pool) as user:
                    await shop.checkout(user, ids[i % len(ids)], steps)

            return call

        idle_checkout_steps = Steps()
        idle_checkout = await closed_loop(
            checkout(idle_checkout_steps, queue_of(users)),
            concurrency=1,
            requests=args.idle_checkouts,
            servers=servers,
        )
        idle_steps.wait = idle_checkout_steps.wait
        idle_steps.pay = idle_checkout_steps.pay
        idle_steps.polls = idle_checkout_steps.polls
        idle_steps.unavailable = idle_checkout_steps.unavailable
        progress(f"checkout, idle: {idle_checkout.describe()}")

        clients = queue_of(users[: args.concurrency])
        warm = await closed_loop(
            checkout(None, clients), concurrency=args.concurrency, duration=args.warmup
        )
        progress(f"checkout warm-up, {args.concurrency} clients: {warm.describe()}")
        steps = Steps()
        loaded = await closed_loop(
            checkout(steps, clients),
            concurrency=args.concurrency,
            duration=args.duration,
            servers=servers,
        )
        progress(f"checkout, {args.concurrency} clients: {loaded.describe()}")

    found, settle_s = await settled_books(dsn, ids)
    disagreements = check_books(found, shop.totals, args.products, args.stock)
    progress(f"books after {settle_s:.1f} s: {found}; disagreements: {disagreements or 'none'}")

    raw = await raw_reservations(dsn, ids, args, servers)
    progress(f"raw reservations, {args.concurrency} connections: {raw.describe()}")
    return Results(
        idle_place=idle_place,
        idle_checkout=idle_checkout,
        idle_steps=idle_steps,
        warm=warm,
        loaded=loaded,
        steps=steps,
        raw=raw,
        books=found,
        settle_s=settle_s,
        disagreements=disagreements,
        totals=shop.totals,
        left=[],
        dsn_source=dsn_source,
    )


def _mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else math.nan


def _share_late(polls: list[int]) -> float:
    """The percentage of checkouts whose first `GET /payment/order/{id}` found no payment."""
    return 100 * sum(1 for p in polls if p > 1) / len(polls) if polls else math.nan


def report(r: Results, args: argparse.Namespace, watch: LogWatch) -> Section:
    n = args.concurrency
    main_table = Table(
        [
            "Run",
            "In flight",
            "Seconds",
            "Done",
            "per s",
            "p50 (ms)",
            "p99 (ms)",
            "Errors",
            "CPU: platform (cores)",
        ]
    )
    rows: list[tuple[str, int, Sample]] = [
        ("place order (`POST /order/`), sequential", 1, r.idle_place),
        ("whole checkout, sequential", 1, r.idle_checkout),
        ("whole checkout", n, r.loaded),
        (f"raw asyncpg reservation (`RESERVE_LINE` + INSERT into `{SCRATCH}`)", n, r.raw),
    ]
    for name, in_flight, s in rows:
        main_table.rows.append(
            [
                name,
                str(in_flight),
                fmt(s.elapsed, 1),
                str(s.count),
                fmt(s.rate, 1),
                fmt(s.ms(50)),
                fmt(s.ms(99)),
                str(s.errors),
                fmt(s.server_cores),
            ]
        )
    ratio = r.raw.rate / r.loaded.rate if r.loaded.rate else math.nan
    step_table = Table(
        [
            "Step",
            "sequential p50 (ms)",
            "sequential p99 (ms)",
            f"{n} clients p50 (ms)",
            f"{n} clients p99 (ms)",
        ]
    )
    for step, name in (
        ("place", "`POST /order/` → 201 awaiting_payment"),
        ("wait", "`GET /payment/order/{id}` polled until 200"),
        ("pay", "`POST /payment/transaction` → 200"),
    ):
        step_table.rows.append(
            [
                name,
                fmt(r.idle_steps.ms(step, 50)),
                fmt(r.idle_steps.ms(step, 99)),
                fmt(r.steps.ms(step, 50)),
                fmt(r.steps.ms(step, 99)),
            ]
        )
    step_table.rows.append(
        [
            "whole checkout",
            fmt(r.idle_checkout.ms(50)),
            fmt(r.idle_checkout.ms(99)),
            fmt(r.loaded.ms(50)),
            fmt(r.loaded.ms(99)),
        ]
    )
    ratio_table = Table(["Figure", "value"])
    ratio_table.rows += [
        ["checkouts/s through the platform", fmt(r.loaded.rate, 1)],
        ["raw reserve-stock transactions/s in Postgres", fmt(r.raw.rate, 0)],
        ["raw / checkout", fmt(ratio, 1)],
    ]
    b = r.books
    notes = [
        f"Setup: {args.products} products of {args.stock} units each, {args.users} users "
        f"(registered and logged in through the gateway); each order is one line of 1 unit, "
        f"products in turn; in the loaded run each of the {n} clients is a user of its own.",
        f"Idle: {IDLE_WARMUP} orders of warm-up, then {args.idle} sequential orders and "
        f"{args.idle_checkouts} sequential checkouts. Loaded: {args.warmup:g} s of warm-up "
        f"({r.warm.count} checkouts, {r.warm.errors} errors), then {args.duration:g} s measured; "
        "calls still in flight at the deadline finish and count.",
        f"The payment is polled every {args.poll * 1000:g} ms: "
        f"{fmt(_mean(r.steps.polls), 1)} `GET`s per checkout on average under load "
        f"({fmt(_mean(r.idle_steps.polls), 1)} sequential); the first `GET`, sent as soon "
        f"as the order was answered, found no payment yet (404) in "
        f"{fmt(_share_late(r.steps.polls), 0)} % of the checkouts under load "
        f"({fmt(_share_late(r.idle_steps.polls), 0)} % sequential). "
        f"`POST /order/` answered 202 (no reply within the gateway's request timeout; the "
        f"order then followed to its outcome) {r.steps.accepted} times under load. "
        f"`GET /payment/order/{{id}}` answered 503 (the gateway waited its request timeout for "
        f"the payment; retried after its `Retry-After`, at most 1 s) {r.steps.unavailable} "
        f"times under load, {r.idle_steps.unavailable} sequential.",
        f"Raw: {n} asyncpg connections to the platform's Postgres (DSN from {r.dsn_source}), "
        f"each running `BEGIN; {' '.join(RESERVE_LINE.split())}; INSERT INTO {SCRATCH} ...; "
        f"COMMIT` on the same {args.products} products in turn, {args.raw_warmup:g} s of "
        f"warm-up then {args.raw_duration:g} s; the platform idle meanwhile. The products "
        "agent's transaction does more (the reservation row and its status check, a "
        "savepoint, the outbox, processed_commands), and a checkout is seven such "
        "transactions (order placed, stock reserved, order awaiting payment, payment created, "
        "paid, order paid, stock sold), each followed by an outbox relay's, and about ten "
        "Kafka messages.",
        f"Books after the load, read straight from Postgres once settled ({r.settle_s:.1f} s): "
        f"orders {b['awaiting']} awaiting payment, {b['paid']} paid, {b['pending']} pending, "
        f"{b['other']} rejected or cancelled; payments {b['payments_pending']} pending, "
        f"{b['payments_succeeded']} succeeded, {b['payments_failed']} failed; "
        f"units reserved {b['reserved']}, sold {b['sold']}; the client saw "
        f"{r.totals.orders} orders placed and {r.totals.paid} paid. "
        + (
            "Everything balances."
            if not r.disagreements
            else "DISAGREEMENTS: " + "; ".join(r.disagreements) + "."
        ),
        "The load generator (aiohttp client, and the asyncpg connections of the raw run) runs "
        "on the same 2 cores as the platform.",
        f"Lines at WARNING or above in the output of `shopstream run` (start to stop): "
        f"{watch.count}" + (f"; the first: `{watch.first[0]}`" if watch.first else ""),
        f"Processes left after the run: {len(r.left)}"
        + (f" ({'; '.join(r.left)})" if r.left else ""),
    ]
    for name, _, s in rows:
        if s.first_error:
            notes.append(f"{name}, first error: {s.first_error}")
    section = Section(
        "Checkout saga, next to the raw reserve-stock transaction",
        args.command,
        [
            main_table,
            step_table,
            ratio_table,
            cpu_table(
                [
                    ("place order, sequential", r.idle_place),
                    (f"checkout, {n} clients", r.loaded),
                    (f"raw asyncpg, {n} connections", r.raw),
                ]
            ),
        ],
        notes,
    )
    section.failed = bool(r.disagreements) or any(s.errors for _, _, s in rows)
    return section


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__)
    p.add_argument("--products", type=int, default=16)
    p.add_argument("--stock", type=int, default=1_000_000, help="units of each product")
    p.add_argument("--users", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=64, help="clients, and raw connections")
    p.add_argument("--idle", type=int, default=100, help="sequential orders measured")
    p.add_argument("--idle-checkouts", type=int, default=50, help="sequential checkouts measured")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of loaded warm-up")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of checkout load")
    p.add_argument("--raw-warmup", type=float, default=2.0)
    p.add_argument("--raw-duration", type=float, default=20.0)
    p.add_argument("--poll", type=float, default=0.02, help="seconds between payment polls")
    p.set_defaults(command=COMMAND)
    return p.parse_args(argv)


def cli(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    args = parse(given)
    args.command = " ".join([COMMAND, *given])
    return main([("checkout", args.command, lambda: measure(args))])


if __name__ == "__main__":
    sys.exit(cli())
