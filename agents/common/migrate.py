"""Applies the numbered migrations in sql/ once each, in one transaction, one process at a time."""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
from dataclasses import dataclass

import asyncpg

log = logging.getLogger(__name__)

# Any fixed 64-bit number: every process that migrates takes this lock first.
_LOCK_ID = 0x5E0_5712_EA11

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    TEXT PRIMARY KEY,
    checksum   TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """A migration failed, or one already applied was changed afterwards."""


@dataclass(frozen=True)
class Migration:
    version: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    files = [f for f in importlib.resources.files("sql").iterdir() if f.name.endswith(".sql")]
    return [
        Migration(f.name.removesuffix(".sql"), f.read_text())
        for f in sorted(files, key=lambda f: f.name)
    ]


async def migrate(dsn: str) -> list[str]:
    """Apply what is missing; return the versions applied by this call."""
    conn = await asyncpg.connect(dsn)
    try:
        return await apply(conn, load_migrations())
    finally:
        await conn.close()


async def apply(conn: asyncpg.Connection, migrations: list[Migration]) -> list[str]:
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
        await conn.execute(_CREATE_LEDGER)
        done = {
            r["version"]: r["checksum"]
            for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for m in migrations:
            if m.version in done:
                if done[m.version] != m.checksum:
                    raise MigrationError(f"migration {m.version} was changed after it was applied")
                continue
            try:
                await conn.execute(m.sql)
            except asyncpg.PostgresError as e:
                raise MigrationError(f"migration {m.version} failed: {e}") from e
            await conn.execute(
                "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                m.version,
                m.checksum,
            )
            applied_now.append(m.version)
            log.info("applied migration %s", m.version)
    return applied_now
