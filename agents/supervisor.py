"""`shopstream run`: the whole platform on one machine, started and stopped as one."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agents.common.db import create_pool
from agents.common.embedded import EmbeddedPostgres, EmbeddedTansu
from agents.common.kafka import KafkaCluster, kafka_version
from agents.common.migrate import migrate
from agents.common.process import die_with_parent
from agents.common.settings import Settings
from agents.products.demo import load_demo_catalogue
from topics import all_topics
from topics.admin import ensure_topics

DOMAINS = ("users", "products", "orders", "payments")
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
JWT_SECRET_FILE = "jwt-secret"
INTERNAL_SECRET_FILE = "internal-secret"
COLOURS = {"users": 35, "products": 36, "orders": 33, "payments": 32, "gateway": 34}


def run_file(settings: Settings) -> Path:
    """Where a running `shopstream run` says how to reach its PostgreSQL and broker."""
    return settings.state_dir / "run.json"


def state_secret(state_dir: Path, name: str) -> str:
    """A secret of this machine's `shopstream run`: made once and kept in the state directory
    (owner-only), so that what was signed with it still verifies after a restart. A deployment
    sets its secrets itself (docs/deploy.md)."""
    path = state_dir / name
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        fresh = state_dir / f".{name}.{os.getpid()}"
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(fresh, path)  # never replaces one another `shopstream run` made meanwhile
        except FileExistsError:
            pass
        finally:
            fresh.unlink()
    return path.read_text().strip()


def sandbox_secret(state_dir: Path) -> str:
    """The sandbox payment provider's report-signing secret on this machine."""
    return state_secret(state_dir, "sandbox-provider-secret")


def internal_secret(state_dir: Path) -> str:
    """The secret the gateway and the workers sign service tokens and commands with."""
    return state_secret(state_dir, INTERNAL_SECRET_FILE)


def jwt_secret(state_dir: Path) -> str:
    """The key the users worker signs access and refresh tokens with and the gateway checks."""
    return state_secret(state_dir, JWT_SECRET_FILE)


def local_secrets(env: Mapping[str, str], state_dir: Path) -> dict[str, str]:
    """The secrets `env` leaves unset, as this state directory keeps them for the children."""
    made = {
        "SANDBOX_PROVIDER_SECRET": sandbox_secret,
        "INTERNAL_SECRET": internal_secret,
        "JWT_SECRET": jwt_secret,
    }
    return {name: make(state_dir) for name, make in made.items() if not env.get(name)}


def kept_secret(state_dir: Path, name: str) -> str:
    """A secret `shopstream run` made in this state directory, or "" if it made none."""
    path = state_dir / name
    return path.read_text().strip() if path.is_file() else ""


def say(line: str) -> None:
    print(f"shopstream | {line}", flush=True)


@dataclass
class Child:
    name: str
    module: str
    proc: asyncio.subprocess.Process | None = None
    pump: asyncio.Task[None] | None = None
    started: float = field(default_factory=time.monotonic)


async def _pump(child: Child, stream: asyncio.StreamReader, colour: bool) -> None:
    width = max(len(n) for n in COLOURS)
    label = child.name.ljust(width)
    if colour:
        label = f"\x1b[{COLOURS.get(child.name, 37)}m{label}\x1b[0m"
    while line := await stream.readline():
        sys.stdout.write(f"{label} | {line.decode(errors='replace').rstrip()}\n")
        sys.stdout.flush()


async def _spawn(child: Child, env: Mapping[str, str], colour: bool) -> None:
    child.proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        child.module,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(env),
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    assert child.proc.stdout is not None
    child.pump = asyncio.create_task(_pump(child, child.proc.stdout, colour))


async def _grpc_serving(addr: str) -> bool:
    async with grpc.aio.insecure_channel(addr) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1.0
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def _http_ok(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as s, s.get(url, timeout=aiohttp.ClientTimeout(2)) as r:
            return r.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _wait_ready(child: Child, check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not await check():
        assert child.proc is not None
        if child.proc.returncode is not None:
            raise RuntimeError(f"{child.name} exited with code {child.proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{child.name} not ready after {READY_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.1)
    say(f"{child.name} ready in {time.monotonic() - child.started:.1f} s")


async def _stop_children(children: list[Child]) -> None:
    running = [c for c in children if c.proc is not None and c.proc.returncode is None]
    for c in running:
        assert c.proc is not None
        with contextlib.suppress(ProcessLookupError):
            c.proc.send_signal(signal.SIGTERM)

    async def wait(c: Child) -> None:
        assert c.proc is not None
        try:
            await asyncio.wait_for(c.proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            say(f"{c.name} did not stop in {STOP_TIMEOUT_S:.0f} s: killed")
            with contextlib.suppress(ProcessLookupError):
                c.proc.kill()
            await c.proc.wait()

    await asyncio.gather(*(wait(c) for c in running))
    await asyncio.gather(*(c.pump for c in children if c.pump is not None))


async def _prepare(children: Settings, demo: bool) -> None:
    """Topics and migrations, with the settings the children get."""
    dsn, kafka = children.require_database(), children.require_kafka()
    report = await ensure_topics(
        kafka,
        all_topics(children.topic_partitions),
        replication=children.kafka.replication_factor,
        security=children.kafka_security,
    )
    say(f"topics ready ({len(report.created)} created)")
    applied = await migrate(dsn)
    say(f"migrations applied: {', '.join(applied) or 'none pending'}")
    if demo:
        pool = await create_pool(dsn, max_size=1)
        try:
            added = await load_demo_catalogue(pool)
        finally:
            await pool.close()
        if added:
            say(f"demo catalogue loaded: {added} products")


async def _supervise(settings: Settings, env: dict[str, str], demo: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await _prepare(Settings.from_env(env), demo)
    colour = sys.stdout.isatty()
    children = [Child(d, f"agents.{d}") for d in DOMAINS] + [Child("gateway", "gateway")]
    exit_code = 0
    try:
        for child in children:
            await _spawn(child, env, colour)
        gateway_url = f"http://127.0.0.1:{settings.gateway_port}"
        checks: list[tuple[Child, Callable[[], Awaitable[bool]]]] = [
            (c, functools.partial(_grpc_serving, settings.grpc.of(c.name))) for c in children[:-1]
        ]
        checks.append((children[-1], functools.partial(_http_ok, f"{gateway_url}/readyz")))
        ready: asyncio.Future[Any] = asyncio.gather(*(_wait_ready(c, ch) for c, ch in checks))
        stopped: asyncio.Future[Any] = asyncio.create_task(stop.wait())
        first: set[asyncio.Future[Any]] = {ready, stopped}
        done, _ = await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if ready in done:
            ready.result()
            run_file(settings).write_text(
                json.dumps(
                    {
                        "database_url": env["DATABASE_URL"],
                        "kafka_broker": env["KAFKA_BROKER"],
                        "gateway_url": gateway_url,
                        "pid": os.getpid(),
                    }
                )
            )
            say(f"ready: gateway on {gateway_url}  (Ctrl-C stops everything)")
            say(f"the storefront: {gateway_url}/  (payments: the sandbox provider's page)")
            say("an admin account: .venv/bin/shopstream users create-admin --email you@example.com")
            say("or an admin token for local use: .venv/bin/shopstream dev-token --role admin")
            exits = [asyncio.create_task(c.proc.wait()) for c in children if c.proc]
            waiting: set[asyncio.Future[Any]] = {stopped, *exits}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if stopped not in done:
                gone = [c.name for c in children if c.proc and c.proc.returncode is not None]
                say(f"{', '.join(gone)} exited: stopping everything")
                exit_code = 1
            for t in exits:
                t.cancel()
        else:
            ready.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await ready
        stopped.cancel()
    except RuntimeError as e:
        say(f"failed: {e}")
        exit_code = 1
    finally:
        say("stopping")
        run_file(settings).unlink(missing_ok=True)
        await _stop_children(children)
    return exit_code


def run(settings: Settings, *, demo: bool = True) -> int:
    """Start what is missing (Postgres; Tansu or Apache Kafka), prepare, run every process;
    stop all on a signal."""
    env = dict(os.environ)
    env.setdefault("LOG_FORMAT", "text")
    env.setdefault("SHOPSTREAM_STATE_DIR", str(settings.state_dir.resolve()))
    env.update(local_secrets(env, settings.state_dir))
    postgres: EmbeddedPostgres | None = None
    tansu: EmbeddedTansu | None = None
    cluster: KafkaCluster | None = None
    # A signal during start-up stops things the same way as one later.
    previous = {s: signal.signal(s, signal.default_int_handler) for s in (signal.SIGTERM,)}
    try:
        if not settings.database_url:
            postgres = EmbeddedPostgres(settings.state_dir / "pgdata")
            env["DATABASE_URL"] = postgres.start()
            say(f"postgres ready on 127.0.0.1:{postgres.port} (data kept in {postgres.data_dir})")
        if not settings.kafka_broker and settings.embedded_broker == "kafka":
            nodes = settings.embedded_kafka_nodes
            say(f"starting Apache Kafka {kafka_version()} ({nodes} node(s); jars via Maven once)")
            cluster = KafkaCluster(settings.state_dir / "kafka", nodes=nodes)
            env["KAFKA_BROKER"] = cluster.start()
            # A real broker answers a waiting fetch as soon as data comes: a long wait costs
            # no latency, and idle consumers cost it nothing.
            for name in (
                "KAFKA_FETCH_MAX_WAIT_MS",
                "KAFKA_IDLE_FETCH_MAX_WAIT_MS",
                "KAFKA_BACKGROUND_FETCH_MAX_WAIT_MS",
            ):
                env.setdefault(name, "500")
            env.setdefault("KAFKA_REPLICATION_FACTOR", str(cluster.replication))
            say(
                f"kafka broker ready on {cluster.bootstrap} "
                f"(data kept in {cluster.base_dir}; logs kafka-N.log there)"
            )
        elif not settings.kafka_broker:
            env["KAFKA_PRODUCER_IDEMPOTENCE"] = "false"
            tansu = EmbeddedTansu(settings.state_dir / "tansu.log")
            env["KAFKA_BROKER"] = tansu.start()
            # Each worker reads every partition of its topics: on the embedded broker an empty
            # partition costs CPU at every poll, and one worker per domain gains nothing from more.
            env.setdefault("KAFKA_TOPIC_PARTITIONS", "1")
            say(f"tansu broker ready on {tansu.bootstrap} (memory only)")
        return asyncio.run(_supervise(settings, env, demo))
    except KeyboardInterrupt:
        return 130
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if tansu is not None:
            tansu.stop()
        if cluster is not None:
            cluster.stop()
        if postgres is not None:
            postgres.stop()
        say("stopped")
