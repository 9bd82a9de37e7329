"""Workers SIGKILLed again and again during a run of orders and payments lose nothing.

The processes run one by one (not under `shopstream run`, which stops everything when a child
dies); a killer SIGKILLs a random saga worker (its outbox relay with it) every few seconds and
starts it again, while buyers place and pay orders, retrying with their Idempotency-Key as a
real client would. After quiescence the invariants of DESIGN.md are checked in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from agents.common import tokens
from agents.common.embedded import port_open
from agents.common.migrate import migrate
from agents.common.settings import Settings
from tests.helpers import eventually
from tests.infra import base_env, grpc_serving, running_postgres, running_tansu, shared_tmpdir
from topics import all_topic_names
from topics.admin import create_topics

pytestmark = pytest.mark.e2e

ORDERS = 300
BUYERS = 12
IN_FLIGHT = 16
KILL_EVERY_S = 4.0
KILLS = 6
PRODUCTS = {"cheap": (250, "2.00"), "mid": (200, "7.50"), "rare": (30, "99.00")}
FINAL = {"awaiting_payment", "paid", "rejected", "cancelled"}
# An order's state and its reservation's agree once the saga has acted on every event.
MISMATCHED = """
SELECT o.id, o.status, r.status AS reservation FROM orders o
LEFT JOIN stock_reservations r ON r.order_id = o.id
WHERE NOT (o.status, coalesce(r.status, '-')) IN (
    ('awaiting_payment', 'reserved'), ('paid', 'sold'), ('rejected', 'rejected'),
    ('cancelled', 'released'), ('rejected', 'abandoned'), ('rejected', 'released'))
"""
SETTLED = f"""
SELECT NOT EXISTS (SELECT 1 FROM outbox WHERE published_at IS NULL AND dead_at IS NULL)
   AND NOT EXISTS (SELECT 1 FROM orders WHERE status = 'pending')
   AND NOT EXISTS ({MISMATCHED})
   AND NOT EXISTS (SELECT 1 FROM payments p JOIN orders o ON o.id = p.order_id
                   WHERE p.status = 'succeeded' AND o.status <> 'paid')
"""


@dataclass
class Proc:
    name: str
    module: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    kills: int = 0

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class World:
    env: dict[str, str]
    dsn: str
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['GATEWAY_PORT']}"


def _wait_serving(addr: str, proc: Proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not grpc_serving(addr):
        assert proc.proc is not None
        if proc.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{proc.name} not serving:\n{proc.log.read_text()[-3000:]}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with running_postgres() as pg, running_tansu() as kafka, shared_tmpdir("crash-") as tmp:
        asyncio.run(migrate(pg.dsn))
        asyncio.run(create_topics(kafka.bootstrap, all_topic_names()))
        env = base_env(pg.dsn, kafka.bootstrap, tmp) | {
            "RATE_LIMIT_AUTH_PER_MIN": "100000",
            "RATE_LIMIT_IP_PER_MIN": "100000",
            "RATE_LIMIT_USER_PER_MIN": "100000",
            "REQUEST_TIMEOUT_S": "3",
        }
        w = World(env, pg.dsn)
        for name in ("users", "products", "orders", "payments"):
            w.procs[name] = Proc(name, f"agents.{name}", env, tmp / f"{name}.log")
        w.procs["gateway"] = Proc("gateway", "gateway", env, tmp / "gateway.log")
        try:
            for p in w.procs.values():
                p.start()
            for name in ("users", "products", "orders", "payments"):
                addr = env[f"{name.upper().rstrip('S')}_SERVICE_ADDR"]
                _wait_serving(addr, w.procs[name])
            deadline = time.monotonic() + 30
            while not port_open(int(env["GATEWAY_PORT"])):
                assert time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.05)
            yield w
        finally:
            for p in w.procs.values():
                p.stop()


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=10), connector=aiohttp.TCPConnector(limit=100)
    ) as s:
        yield s


async def _json(
    http: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, dict[str, Any]]:
    try:
        async with http.request(method, url, **kw) as resp:
            return resp.status, dict(await resp.json(content_type=None))
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return 0, {}


async def _retry(
    http: aiohttp.ClientSession, method: str, url: str, ok: set[int], **kw: Any
) -> tuple[int, dict[str, Any]]:
    """Call until one of `ok` comes back (a crashed worker only delays the answer)."""
    deadline = time.monotonic() + 120
    while True:
        status, body = await _json(http, method, url, **kw)
        if status in ok:
            return status, body
        assert time.monotonic() < deadline, (method, url, status, body)
        await asyncio.sleep(0.2)


async def _buyer(world: World, http: aiohttp.ClientSession) -> dict[str, str]:
    email, password = f"crash-{uuid.uuid4().hex[:10]}@example.com", uuid.uuid4().hex
    await _retry(
        http,
        "POST",
        f"{world.url}/api/v1/auth/register",
        {201, 409},
        json={"full_name": "Crash Buyer", "email": email, "password": password},
    )
    _, tokens_ = await _retry(
        http,
        "POST",
        f"{world.url}/api/v1/auth/login",
        {200},
        json={"email": email, "password": password},
    )
    return {"Authorization": f"Bearer {tokens_['token']}"}


async def _checkout(
    world: World,
    http: aiohttp.ClientSession,
    buyer: dict[str, str],
    products: list[int],
    rng: random.Random,
) -> int:
    """Place one order (and pay two of three), retrying through crashes; return its id."""
    key = uuid.uuid4().hex
    items = [
        {"product_id": p, "quantity": rng.randint(1, 2)}
        for p in rng.sample(products, rng.randint(1, 2))
    ]
    headers = {**buyer, "Idempotency-Key": key}
    status, body = await _retry(
        http,
        "POST",
        f"{world.url}/order/",
        {201, 202, 409, 504},
        headers=headers,
        json={"items": items},
    )
    while status in (202, 504) or (status == 409 and "order" not in body):
        status, body = await _retry(
            http,
            "POST",
            f"{world.url}/order/",
            {201, 202, 409, 504},
            headers=headers,
            json={"items": items},
        )
    order = body["order"]
    if order["status"] != "awaiting_payment" or rng.random() < 1 / 3:
        return int(order["id"])
    _, payment = await _retry(
        http, "GET", f"{world.url}/payment/order/{order['id']}", {200}, headers=buyer
    )
    pay_headers = {**buyer, "Idempotency-Key": f"pay-{key}"}
    await _retry(
        http,
        "POST",
        f"{world.url}/payment/transaction",
        {200},
        headers=pay_headers,
        json={"payment_id": payment["id"], "money": payment["amount"]},
    )
    return int(order["id"])


async def _killer(world: World, rng: random.Random) -> None:
    """SIGKILL a random saga worker KILLS times, a first one at once, and start it again."""
    victims = ["products", "orders", "payments"]
    for i in range(KILLS):
        await asyncio.sleep(0.5 if i == 0 else KILL_EVERY_S)
        proc = world.procs[rng.choice(victims)]
        await asyncio.to_thread(proc.kill)
        proc.start()


@pytest.mark.timeout(600)
async def test_sigkilled_workers_lose_no_order_and_charge_none_twice(
    world: World, http: aiohttp.ClientSession
) -> None:
    rng = random.Random(int(os.environ.get("CRASH_SEED", "7")))
    settings = Settings.from_env(world.env)
    admin = {
        "Authorization": "Bearer "
        + tokens.mint(settings, sub="ops", typ="access", ttl_s=3600, role="admin").token
    }
    products = []
    for name, (stock, price) in PRODUCTS.items():
        _, product = await _retry(
            http,
            "POST",
            f"{world.url}/product/",
            {201},
            headers=admin,
            json={"name": f"crash-{name}", "price": float(price), "stock": stock},
        )
        products.append(int(product["id"]))
    buyers = [await _buyer(world, http) for _ in range(BUYERS)]

    killer = asyncio.create_task(_killer(world, rng))
    accepted: list[int] = []

    async def buyer(n: int) -> None:
        # Orders go on until there are enough of them and every crash has happened.
        while len(accepted) < ORDERS or not killer.done():
            accepted.append(await _checkout(world, http, buyers[n % BUYERS], products, rng))

    try:
        await asyncio.gather(*(buyer(n) for n in range(IN_FLIGHT)))
    finally:
        killer.cancel()
        await asyncio.gather(killer, return_exceptions=True)
    assert sum(p.kills for p in world.procs.values()) == KILLS
    assert len(accepted) >= ORDERS

    pool = await asyncpg.create_pool(world.dsn, min_size=1, max_size=2)
    assert pool is not None
    try:

        async def quiet() -> bool:
            """Settled: every event published and every one of them acted upon."""
            async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
                return bool(await conn.fetchval(SETTLED))

        try:
            await eventually(quiet, timeout=120, what="quiescence")
        except AssertionError:
            raise AssertionError(await _diagnose(pool, world)) from None
        try:
            async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
                await _check_invariants(conn, set(accepted), products)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{await _diagnose(pool, world)}") from None
        paid = await pool.fetchval("SELECT count(*) FROM orders WHERE status = 'paid'")
        assert paid > 0
    finally:
        await pool.close()


async def _diagnose(pool: asyncpg.Pool, world: World) -> str:
    """What is stuck, and what the workers said last: for a failure to be understood."""
    pending = await pool.fetch(
        "SELECT domain, topic, count(*) FROM outbox WHERE published_at IS NULL GROUP BY 1, 2"
    )
    orders = await pool.fetch("SELECT status, count(*) FROM orders GROUP BY 1")
    mismatched = await pool.fetch(MISMATCHED)
    logs = "\n".join(
        f"--- {p.name}\n"
        + "\n".join(
            line
            for line in p.log.read_text().splitlines()
            if "ERROR" in line or "WARNING" in line or "could not" in line
        )[-4000:]
        for p in world.procs.values()
    )
    return f"unpublished {pending}, orders {orders}, mismatched {mismatched}\n{logs}"


async def _check_invariants(
    pool: asyncpg.Connection, accepted: set[int], products: list[int]
) -> None:
    """Read in one snapshot, so that nothing moves between two of the counts."""
    orders = {r["id"]: r["status"] for r in await pool.fetch("SELECT id, status FROM orders")}
    assert accepted <= orders.keys(), "an accepted order is lost"
    assert set(orders.values()) <= FINAL, "an order never finished"

    payments = await pool.fetch("SELECT order_id, status FROM payments")
    per_order: dict[int, list[str]] = {}
    for p in payments:
        per_order.setdefault(p["order_id"], []).append(p["status"])
    for order_id, status in orders.items():
        if status in ("awaiting_payment", "paid", "cancelled"):
            assert len(per_order.get(order_id, [])) == 1, f"order {order_id}: {per_order}"
        if status == "paid":
            assert per_order[order_id] == ["succeeded"]
    charges = await pool.fetch(
        "SELECT payment_id, count(*) AS n FROM payment_transactions "
        "WHERE outcome = 'succeeded' GROUP BY payment_id"
    )
    assert all(c["n"] == 1 for c in charges), "a payment was charged twice"
    paid = sum(1 for s in orders.values() if s == "paid")
    assert len(charges) == paid

    for product_id in products:
        row = await pool.fetchrow(
            "SELECT stock, reserved, sold FROM products WHERE id = $1", product_id
        )
        assert row is not None
        initial = await pool.fetchval(
            "SELECT (payload->'product'->>'stock')::int FROM outbox "
            "WHERE payload->>'type' = 'ProductCreated' AND key = $1",
            str(product_id),
        )
        assert row["stock"] >= 0
        assert row["stock"] + row["reserved"] + row["sold"] == initial
        held = await pool.fetchval(
            "SELECT coalesce(sum((l->>'quantity')::int), 0) FROM stock_reservations r, "
            "jsonb_array_elements(r.lines) l WHERE r.status = 'reserved' "
            "AND (l->>'product_id')::bigint = $1",
            product_id,
        )
        sold = await pool.fetchval(
            "SELECT coalesce(sum((l->>'quantity')::int), 0) FROM stock_reservations r, "
            "jsonb_array_elements(r.lines) l WHERE r.status = 'sold' "
            "AND (l->>'product_id')::bigint = $1",
            product_id,
        )
        mismatched = await pool.fetch(MISMATCHED)
        assert (row["reserved"], row["sold"], mismatched) == (held, sold, [])
