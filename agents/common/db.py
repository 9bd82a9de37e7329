"""The Postgres pool of a process and the unit of work that wraps one transaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import asyncpg

from agents.common.ledger import PgLedger, PgOutbox
from agents.common.relay import Effects


def rfc3339(value: datetime) -> str:
    """A time as the seed's clients read it: 2026-01-02T03:04:05.678Z."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A connection back in the pool needs no reset query: no code here leaves session state
    behind (no LISTEN, no SET, no temporary table; the sweeper's advisory lock is released
    after use, and with the connection if that fails). asyncpg's default costs a round trip at
    every release."""


async def create_pool(dsn: str, *, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=max_size,
        init=_init_connection,
        command_timeout=30,
        reset=_keep_session,
        # A generic plan for `= ANY($1)` turned into full scans as tables grew.
        server_settings={"plan_cache_mode": "force_custom_plan"},
    )
    assert pool is not None
    return pool


class PgUnitOfWork:
    """`async with uow:` runs one transaction of one domain; it rolls back unless committed.

    Made from a pool, it is a transaction of its own, whose events the sweeper publishes. Made
    from the connection of an agent's batch, it is a savepoint inside the batch's transaction,
    and its events go into the batch's Effects once it commits. Subclasses add their
    repositories in `bind`.
    """

    def __init__(
        self,
        source: asyncpg.Pool | asyncpg.Connection,
        domain: str,
        effects: Effects | None = None,
    ) -> None:
        self._source = source
        self.domain = domain
        self._effects = effects
        self._conn: Any = None
        self._tx: Any = None
        self.committed = False

    @property
    def connection(self) -> asyncpg.Connection:
        assert self._conn is not None, "unit of work used outside `async with`"
        conn: asyncpg.Connection = self._conn
        return conn

    @property
    def _owns_connection(self) -> bool:
        return isinstance(self._source, asyncpg.Pool)

    def bind(self, conn: asyncpg.Connection) -> None:
        self.ledger = PgLedger(conn, self.domain)
        self.outbox = PgOutbox(conn, self.domain)

    async def __aenter__(self) -> Self:
        if isinstance(self._source, asyncpg.Pool):
            self._conn = await self._source.acquire()
        else:
            self._conn = self._source
        self._tx = self._conn.transaction()
        await self._tx.start()
        self.committed = False
        self.bind(self._conn)
        return self

    async def commit(self) -> None:
        await self._tx.commit()
        self.committed = True
        if self._effects is not None:
            self._effects.rows += self.outbox.written

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self.committed:
                await self._tx.rollback()
        finally:
            if isinstance(self._source, asyncpg.Pool):
                await self._source.release(self._conn)
            self._conn = None
