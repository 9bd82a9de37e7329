"""One domain process: a Faust app plus the resources its agents and gRPC reads share."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import asyncpg
import faust
import grpc
import mode
from aiokafka import AIOKafkaProducer
from mode import Service
from mode.utils.objects import cached_property

from agents.common.db import create_pool
from agents.common.failures import is_transient
from agents.common.grpc_server import GrpcServer, create_server
from agents.common.kafka_auth import client_options, faust_credentials
from agents.common.ledger import prune_ledger
from agents.common.logs import formatter_for
from agents.common.relay import OutboxSweeper, Publisher
from agents.common.service_tokens import ServiceAuth
from agents.common.settings import KafkaTuning, Settings
from agents.common.transport import Consumer, FlowControl

log = logging.getLogger(__name__)

POSTGRES_CHECK_EVERY_S = 2.0
GIL_SWITCH_INTERVAL_S = 0.0005


class DomainApp(faust.App):
    """A Faust app that carries the consumer tuning our transport reads."""

    logger = logging.getLogger("faust.app")
    kafka_tuning: KafkaTuning

    @cached_property
    def flow_control(self) -> FlowControl:
        """Faust's flow control of the streams' queues, emptied only on a real resume
        (agents/common/transport.py)."""
        return FlowControl(loop=self.loop, on_clear=self._on_queues_cleared)

    def _on_queues_cleared(self) -> None:
        consumer = self._consumer
        if isinstance(consumer, Consumer):
            consumer.on_queues_cleared()


def create_faust_app(domain: str, settings: Settings, *, on_client_path: bool = True) -> DomainApp:
    """The domain's Faust app; one off the client's path polls the broker less often."""
    tuning = settings.kafka
    if not on_client_path:
        tuning = replace(tuning, fetch_max_wait_ms=tuning.background_fetch_max_wait_ms)
    datadir = settings.state_dir / "faust" / domain
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = DomainApp(
        f"shopstream-{domain}",
        broker=[f"shopstream://{host}" for host in settings.require_kafka().split(",")],
        broker_credentials=faust_credentials(settings.kafka_security),
        autodiscover=False,
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_disable_leader=True,
        topic_allow_declare=False,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=tuning.session_timeout_ms / 1000,
        broker_heartbeat_interval=tuning.heartbeat_interval_ms / 1000,
        broker_rebalance_timeout=tuning.rebalance_timeout_ms / 1000,
        broker_request_timeout=tuning.request_timeout_ms / 1000,
        broker_commit_interval=0.5,
        stream_wait_empty=False,
        producer_acks=-1,
        producer_linger=0.0,
        topic_replication_factor=tuning.replication_factor or 1,
    )
    app.kafka_tuning = tuning
    return app


def create_tables_app(domain: str, settings: Settings) -> DomainApp:
    """A second Faust app of the domain, for its Faust tables and the agents that fill them.

    It has a consumer group of its own (`shopstream-<domain>-tables`): a table's recovery after
    a restart pauses and re-seeks only this group, never the saga's agents. With tables in the
    saga's own app, the SIGKILL proof lost messages on Apache Kafka (see the README)."""
    return create_faust_app(f"{domain}-tables", settings, on_client_path=False)


async def _connect_pool(dsn: str, max_size: int, timeout: float = 60.0) -> asyncpg.Pool:
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        try:
            return await create_pool(dsn, max_size=max_size)
        except (OSError, asyncpg.CannotConnectNowError) as e:
            if time.monotonic() > deadline:
                raise
            log.warning("postgres not reachable yet (%s), retrying", e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


Expire = Callable[[asyncpg.Pool, float], Awaitable[int]]


async def prune_every(
    pool: asyncpg.Pool, domain: str, jobs: Sequence[Expire], *, every_s: float, ttl_s: float
) -> None:
    """Forget, every `every_s`, what is older than the Idempotency-Key's time to live: each job
    prunes one table (the command ledger, and the domain's own keys). A job that fails is tried
    again at the next turn."""
    while True:
        await asyncio.sleep(every_s)
        for job in jobs:
            try:
                pruned = await job(pool, ttl_s)
            except Exception as e:
                if not is_transient(e):
                    log.exception("pruning expired keys of %s failed", domain)
                continue
            if pruned:
                log.info("%s: %d expired idempotency records pruned", domain, pruned)


class DomainRuntime(Service):
    """Postgres pool, Kafka producer, outbox relay and gRPC server of one domain process.

    Started before the Faust app (as a dependency of the worker), stopped after it.
    """

    logger = logging.getLogger("mode.runtime")

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        domain: str,
        add_servicers: Callable[[grpc.aio.Server, DomainRuntime], list[str]],
        tasks: Sequence[Callable[[DomainRuntime], Awaitable[None]]] = (),
        tables_app: faust.App | None = None,
        expire: Sequence[Expire] = (),
        **kwargs: Any,
    ) -> None:
        self._background = tasks
        self._expire: tuple[Expire, ...] = (
            lambda pool, ttl_s: prune_ledger(pool, domain, ttl_s),
            *expire,
        )
        self.tables_app = tables_app
        self.app = app
        self.settings = settings
        self.domain = domain
        self._add_servicers = add_servicers
        self._pool: asyncpg.Pool | None = None
        self._producer: AIOKafkaProducer | None = None
        self._sweeper: OutboxSweeper | None = None
        self._publisher: Publisher | None = None
        self.grpc: GrpcServer | None = None
        self._started_ready = False
        super().__init__(**kwargs)

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "runtime not started"
        return self._pool

    @property
    def producer(self) -> AIOKafkaProducer:
        assert self._producer is not None, "runtime not started"
        return self._producer

    @property
    def sweeper(self) -> OutboxSweeper:
        assert self._sweeper is not None, "runtime not started"
        return self._sweeper

    @property
    def publisher(self) -> Publisher:
        assert self._publisher is not None, "runtime not started"
        return self._publisher

    async def on_start(self) -> None:
        self._pool = await _connect_pool(
            self.settings.require_database(), self.settings.db_pool_max
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.require_kafka(),
            acks="all",
            linger_ms=0,
            enable_idempotence=self.settings.kafka.idempotent_producer,
            **client_options(self.settings.kafka_security),
        )
        await self._producer.start()
        self._sweeper = OutboxSweeper(
            self._pool, self._producer, self.domain, dsn=self.settings.require_database()
        )
        self._publisher = Publisher(self._pool, self._producer, self.domain, self._sweeper)
        self.add_future(self._sweeper.run())
        self.add_future(self._prune_expired())
        for task in self._background:
            self.add_future(task(self))
        self.grpc = create_server(
            self.settings.listen_host,
            self.settings.grpc.port_of(self.domain),
            lambda server: self._add_servicers(server, self),
            ServiceAuth(self.settings.internal_secret, self.domain),
        )
        await self.grpc.start()
        if self.app.agents:
            self.app.on_rebalance_complete.connect(self._on_rebalance_complete)
        else:
            await self._ready()

    async def _on_rebalance_complete(
        self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any
    ) -> None:
        await self._ready()

    async def _ready(self) -> None:
        assert self.grpc is not None
        if self._started_ready:
            return
        self._started_ready = True
        await self.grpc.set_serving(True)
        self.add_future(self._watch_postgres(self.grpc))
        log.info("%s ready: gRPC on %s:%d", self.domain, self.settings.listen_host, self.grpc.port)

    async def _watch_postgres(self, server: GrpcServer) -> None:
        """Keep gRPC health in step with Postgres: NOT_SERVING while it does not answer."""
        serving = True
        while True:
            await asyncio.sleep(POSTGRES_CHECK_EVERY_S)
            try:
                async with asyncio.timeout(POSTGRES_CHECK_EVERY_S):
                    await self.pool.fetchval("SELECT 1")
                ok = True
            except Exception:
                ok = False
            if ok != serving:
                serving = ok
                log.warning("postgres %s", "answers again" if ok else "does not answer")
                await server.set_serving(ok)

    async def _prune_expired(self) -> None:
        await prune_every(
            self.pool,
            self.domain,
            self._expire,
            every_s=self.settings.idempotency_prune_every_s,
            ttl_s=self.settings.idempotency_key_ttl_s,
        )

    async def on_stop(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop(grace=2.0)
        if self._publisher is not None:
            await self._publisher.stop()
        if self._producer is not None:
            await self._producer.stop()
        if self._pool is not None:
            await self._pool.close()


def run_worker(app: faust.App, runtime: DomainRuntime, settings: Settings) -> None:
    """Run the Faust worker with the runtime started first; returns on SIGTERM/SIGINT."""
    # Faust's consumer runs in a thread of its own: with the default 5 ms GIL switch interval,
    # a message handed from it to the agents' loop could wait that long at every hop.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    # A domain with no agents (identity is all gRPC) runs without a Faust consumer.
    options = _worker_options(runtime, settings)
    services: list[Any] = [runtime]
    if runtime.tables_app is not None:
        runtime.tables_app.finalize()
        services.append(runtime.tables_app)
    worker = (
        faust.Worker(app, *services, **options) if app.agents else mode.Worker(*services, **options)
    )
    worker.execute_from_commandline()


def _worker_options(runtime: DomainRuntime, settings: Settings) -> dict[str, Any]:
    quiet = "DEBUG" if settings.log_level == "DEBUG" else "WARNING"
    return {
        "loglevel": settings.log_level,
        "logging_config": {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "default": {"()": lambda: formatter_for(runtime.domain, settings.log_format)}
            },
            "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default"}},
            "root": {"handlers": ["default"], "level": settings.log_level},
            # Faust and mode narrate every service start and stop at INFO.
            "loggers": {name: {"level": quiet} for name in ("aiokafka", "faust", "mode")},
        },
    }
