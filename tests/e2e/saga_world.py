"""The checkout saga run process by process, for the proofs under crashes and outages.

The processes run one by one (not under `shopstream run`, which stops everything when a child
dies) against a PostgreSQL and a Tansu the test controls, so that a test can kill a worker or
stop PostgreSQL. Buyers talk to the gateway as a real client would (retrying with their
Idempotency-Key); once the saga has settled, its invariants (DESIGN.md) are checked in SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from agents.common import tokens
from agents.common.embedded import EmbeddedPostgres, EmbeddedTansu, free_port, port_open
from agents.common.kafka import KafkaCluster
from agents.common.migrate import migrate
from agents.common.settings import Settings
from tests.helpers import eventually
from tests.infra import (
    base_env,
    grpc_serving,
    kafka_env,
    running_kafka,
    running_postgres,
    running_tansu,
    shared_tmpdir,
)
from topics import all_topics
from topics.admin import ensure_topics

DOMAINS = ("users", "products", "orders", "payments")
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
UNPUBLISHED = "SELECT 1 FROM outbox WHERE published_at IS NULL AND dead_at IS NULL"
SETTLED = f"""
SELECT NOT EXISTS ({UNPUBLISHED})
   AND NOT EXISTS (SELECT 1 FROM orders WHERE status = 'pending')
   AND NOT EXISTS ({MISMATCHED})
   AND NOT EXISTS (SELECT 1 FROM payments p JOIN orders o ON o.id = p.order_id
                   WHERE p.status = 'succeeded' AND o.status <> 'paid')
"""
# What the gateway may answer while a worker or PostgreSQL is away: retry, same key.
RETRY_LATER = {0, 500, 502, 503, 504}

# Many buyers from one address; a short deadline, so that an order caught by a crash or an
# outage is answered 202 with a Location.
BUYERS_ENV = {
    "RATE_LIMIT_AUTH_PER_MIN": "100000",
    "RATE_LIMIT_IP_PER_MIN": "100000",
    "RATE_LIMIT_USER_PER_MIN": "100000",
    "REQUEST_TIMEOUT_S": "3",
}


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

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM), without waiting: `stop` waits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

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
    pg: EmbeddedPostgres
    kafka: EmbeddedTansu | KafkaCluster
    procs: dict[str, Proc] = field(default_factory=dict)
    # Gateway name -> its base URL; the first one is `url`.
    urls: dict[str, str] = field(default_factory=dict)

    @property
    def dsn(self) -> str:
        return self.pg.dsn

    @property
    def url(self) -> str:
        return next(iter(self.urls.values()))

    @property
    def workers(self) -> list[Proc]:
        return [self.procs[name] for name in DOMAINS]

    def grpc_addr(self, domain: str) -> str:
        return self.env[f"{domain.upper().rstrip('S')}_SERVICE_ADDR"]

    def admin(self) -> dict[str, str]:
        settings = Settings.from_env(self.env)
        token = tokens.mint(settings, sub="ops", typ="access", ttl_s=3600, role="admin").token
        return {"Authorization": f"Bearer {token}"}


def _wait_serving(addr: str, proc: Proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not grpc_serving(addr):
        assert proc.proc is not None
        if proc.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{proc.name} not serving:\n{proc.log.read_text()[-3000:]}")
        time.sleep(0.05)


def start_workers(world: World) -> None:
    """Start the stopped workers again; return once each is serving."""
    for p in world.workers:
        p.start()
    for p in world.workers:
        _wait_serving(world.grpc_addr(p.name), p)


def _leftovers(marks: Sequence[bytes]) -> list[str]:
    """Processes whose command line or environment names one of `marks`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if int(pid) != os.getpid() and any(m in cmdline or m in environ for m in marks):
            found.append(f"{pid}: " + cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def _keep_logs(tmp: Path, pg: EmbeddedPostgres) -> None:
    """With SHOPSTREAM_TEST_LOGS=<dir>, the processes' logs are copied there, to be read."""
    keep = os.environ.get("SHOPSTREAM_TEST_LOGS")
    if not keep:
        return
    dest = Path(keep) / tmp.name
    dest.mkdir(parents=True, exist_ok=True)
    for log in [*tmp.glob("*.log"), pg.log_path]:
        with contextlib.suppress(OSError):
            shutil.copy(log, dest / log.name)


@contextlib.contextmanager
def running_broker(broker: str) -> Iterator[EmbeddedTansu | KafkaCluster]:
    """ "tansu": the embedded broker; "kafka": a 3-node Apache Kafka cluster of its own."""
    if broker == "kafka":
        with running_kafka(3) as cluster:
            yield cluster
    else:
        with running_tansu() as tansu:
            yield tansu


@contextlib.contextmanager
def running_world(
    prefix: str,
    *,
    gateways: Sequence[str] = ("gateway",),
    env: dict[str, str] | None = None,
    broker: str = "tansu",
) -> Iterator[World]:
    """PostgreSQL, a broker, the four workers and the gateways, each ready; all stopped after.

    Each gateway has its own port and instance name (so its own reply topic)."""
    marks: list[bytes] = []
    with running_postgres() as pg, running_broker(broker) as kafka, shared_tmpdir(prefix) as tmp:
        marks = [str(tmp).encode(), str(pg.data_dir).encode(), kafka.bootstrap.encode()]
        asyncio.run(migrate(pg.dsn))
        asyncio.run(ensure_topics(kafka.bootstrap, all_topics()))
        common = base_env(pg.dsn, kafka.bootstrap, tmp)
        if isinstance(kafka, KafkaCluster):
            common |= kafka_env(kafka)
        common |= env or {}
        w = World(common, pg, kafka)
        for name in DOMAINS:
            w.procs[name] = Proc(name, f"agents.{name}", common, tmp / f"{name}.log")
        for i, name in enumerate(gateways):
            port = common["GATEWAY_PORT"] if i == 0 else str(free_port())
            instance = f"{name}-{uuid.uuid4().hex[:8]}"
            gateway_env = common | {"GATEWAY_PORT": port, "GATEWAY_INSTANCE": instance}
            w.procs[name] = Proc(name, "gateway", gateway_env, tmp / f"{name}.log")
            w.urls[name] = f"http://127.0.0.1:{port}"
        try:
            for p in w.procs.values():
                p.start()
            for name in DOMAINS:
                _wait_serving(w.grpc_addr(name), w.procs[name])
            deadline = time.monotonic() + 30
            for name in gateways:
                while not port_open(int(w.procs[name].env["GATEWAY_PORT"])):
                    assert time.monotonic() < deadline, f"{name} did not start"
                    time.sleep(0.05)
            yield w
        finally:
            for p in w.procs.values():
                p.terminate()
            for p in w.procs.values():
                p.stop()
            _keep_logs(tmp, pg)
    left = _leftovers(marks)
    assert left == [], f"processes left running: {left}"


@contextlib.asynccontextmanager
async def http_client(
    trace_configs: Sequence[aiohttp.TraceConfig] = (),
) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=10),
        connector=aiohttp.TCPConnector(limit=100),
        trace_configs=list(trace_configs),
    ) as s:
        yield s


async def request_json(
    http: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, dict[str, Any]]:
    """Status and JSON body; 0 and {} when the call did not get an answer."""
    try:
        async with http.request(method, url, **kw) as resp:
            return resp.status, dict(await resp.json(content_type=None))
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return 0, {}


async def retry_until(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    ok: set[int],
    *,
    deadline_s: float = 120.0,
    **kw: Any,
) -> tuple[int, dict[str, Any]]:
    """Call until one of `ok` comes back (a crashed worker only delays the answer)."""
    deadline = time.monotonic() + deadline_s
    while True:
        status, body = await request_json(http, method, url, **kw)
        if status in ok:
            return status, body
        assert time.monotonic() < deadline, (method, url, status, body)
        await asyncio.sleep(0.2)


async def new_buyer(url: str, http: aiohttp.ClientSession) -> dict[str, str]:
    """A new account, logged in: its Authorization header."""
    email, password = f"buyer-{uuid.uuid4().hex[:10]}@example.com", uuid.uuid4().hex
    await retry_until(
        http,
        "POST",
        f"{url}/api/v1/auth/register",
        {201, 409},
        json={"full_name": "Saga Buyer", "email": email, "password": password},
    )
    _, tokens_ = await retry_until(
        http,
        "POST",
        f"{url}/api/v1/auth/login",
        {200},
        json={"email": email, "password": password},
    )
    return {"Authorization": f"Bearer {tokens_['token']}"}


async def create_products(
    world: World, http: aiohttp.ClientSession, prefix: str, url: str | None = None
) -> list[int]:
    """The products of PRODUCTS, named `<prefix>-<name>`; their ids."""
    products = []
    for name, (stock, price) in PRODUCTS.items():
        _, product = await retry_until(
            http,
            "POST",
            f"{url or world.url}/product/",
            {201},
            headers=world.admin(),
            json={"name": f"{prefix}-{name}", "price": float(price), "stock": stock},
        )
        products.append(int(product["id"]))
    return products


def order_lines(products: list[int], rng: random.Random) -> list[dict[str, int]]:
    return [
        {"product_id": p, "quantity": rng.randint(1, 2)}
        for p in rng.sample(products, rng.randint(1, 2))
    ]


async def pay(
    url: str,
    http: aiohttp.ClientSession,
    buyer: dict[str, str],
    order_id: int,
    key: str,
    deadline_s: float = 120.0,
) -> None:
    """Pay an order awaiting payment, retrying with the same Idempotency-Key."""
    _, payment = await retry_until(
        http,
        "GET",
        f"{url}/payment/order/{order_id}",
        {200},
        headers=buyer,
        deadline_s=deadline_s,
    )
    await retry_until(
        http,
        "POST",
        f"{url}/payment/transaction",
        {200},
        headers={**buyer, "Idempotency-Key": f"pay-{key}"},
        json={"payment_id": payment["id"], "money": payment["amount"]},
        deadline_s=deadline_s,
    )


async def settle_and_check(
    world: World,
    accepted: set[int],
    products: list[int],
    *,
    commands: Collection[uuid.UUID] = (),
    timeout: float = 120.0,
) -> None:
    """Wait (bounded) until the saga has acted on every event, then check its invariants."""
    pool = await asyncpg.create_pool(world.dsn, min_size=1, max_size=2)
    assert pool is not None
    try:

        async def quiet() -> bool:
            """Settled: every event published and every one of them acted upon."""
            async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
                return bool(await conn.fetchval(SETTLED))

        try:
            await eventually(quiet, timeout=timeout, what="quiescence")
        except AssertionError:
            raise AssertionError(await _diagnose(pool, world)) from None
        try:
            async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
                await _check_invariants(conn, accepted, products, set(commands))
        except AssertionError as e:
            raise AssertionError(f"{e}\n{await _diagnose(pool, world)}") from None
    finally:
        await pool.close()


async def _diagnose(pool: asyncpg.Pool, world: World) -> str:
    """What is stuck, and what the workers said last: for a failure to be understood."""
    pending = await pool.fetch(
        "SELECT domain, topic, count(*) FROM outbox "
        "WHERE published_at IS NULL AND dead_at IS NULL GROUP BY 1, 2"
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
    conn: asyncpg.Connection,
    accepted: set[int],
    products: list[int],
    commands: set[uuid.UUID],
) -> None:
    """Read in one snapshot, so that nothing moves between two of the counts."""
    rows = await conn.fetch("SELECT id, status, command_id FROM orders")
    orders = {r["id"]: r["status"] for r in rows}
    assert accepted <= orders.keys(), "an accepted order is lost"
    lost = commands - {r["command_id"] for r in rows}
    assert not lost, f"orders answered 202 are lost: {sorted(map(str, lost))[:10]}"
    assert set(orders.values()) <= FINAL, "an order never finished"

    payments = await conn.fetch("SELECT order_id, status FROM payments")
    per_order: dict[int, list[str]] = {}
    for p in payments:
        per_order.setdefault(p["order_id"], []).append(p["status"])
    for order_id, status in orders.items():
        if status in ("awaiting_payment", "paid", "cancelled"):
            assert len(per_order.get(order_id, [])) == 1, f"order {order_id}: {per_order}"
        if status == "paid":
            assert per_order[order_id] == ["succeeded"]
    charges = await conn.fetch(
        "SELECT payment_id, count(*) AS n FROM payment_transactions "
        "WHERE outcome = 'succeeded' GROUP BY payment_id"
    )
    assert all(c["n"] == 1 for c in charges), "a payment was charged twice"
    paid = sum(1 for s in orders.values() if s == "paid")
    assert len(charges) == paid

    for product_id in products:
        row = await conn.fetchrow(
            "SELECT stock, reserved, sold FROM products WHERE id = $1", product_id
        )
        assert row is not None
        initial = await conn.fetchval(
            "SELECT (payload->'product'->>'stock')::int FROM outbox "
            "WHERE payload->>'type' = 'ProductCreated' AND key = $1",
            str(product_id),
        )
        assert row["stock"] >= 0
        assert row["stock"] + row["reserved"] + row["sold"] == initial
        held = await conn.fetchval(
            "SELECT coalesce(sum((l->>'quantity')::int), 0) FROM stock_reservations r, "
            "jsonb_array_elements(r.lines) l WHERE r.status = 'reserved' "
            "AND (l->>'product_id')::bigint = $1",
            product_id,
        )
        sold = await conn.fetchval(
            "SELECT coalesce(sum((l->>'quantity')::int), 0) FROM stock_reservations r, "
            "jsonb_array_elements(r.lines) l WHERE r.status = 'sold' "
            "AND (l->>'product_id')::bigint = $1",
            product_id,
        )
        mismatched = await conn.fetch(MISMATCHED)
        assert (row["reserved"], row["sold"], mismatched) == (held, sold, [])
