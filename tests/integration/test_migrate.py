"""Migrations on a real PostgreSQL: once each, recorded, safe when two processes start at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from agents.common.embedded import EmbeddedPostgres
from agents.common.migrate import Migration, MigrationError, apply, load_migrations, migrate


@pytest.fixture
async def fresh_dsn(postgres: EmbeddedPostgres) -> AsyncIterator[str]:
    name = f"m_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres.dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    yield postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


async def test_applies_every_migration_once(fresh_dsn: str) -> None:
    versions = [m.version for m in load_migrations()]
    assert versions == sorted(versions)
    assert await migrate(fresh_dsn) == versions
    assert await migrate(fresh_dsn) == []
    conn = await asyncpg.connect(fresh_dsn)
    try:
        recorded = [
            r["version"]
            for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        ]
    finally:
        await conn.close()
    assert recorded == versions


async def test_two_processes_migrating_at_once_apply_each_once(fresh_dsn: str) -> None:
    results = await asyncio.gather(*(migrate(fresh_dsn) for _ in range(4)))
    applied = [v for r in results for v in r]
    assert sorted(applied) == [m.version for m in load_migrations()]


async def test_a_changed_migration_is_refused(fresh_dsn: str) -> None:
    await migrate(fresh_dsn)
    first = load_migrations()[0]
    conn = await asyncpg.connect(fresh_dsn)
    try:
        with pytest.raises(MigrationError, match="changed"):
            await apply(conn, [Migration(first.version, first.sql + "\n-- edited")])
    finally:
        await conn.close()


async def test_a_failing_migration_rolls_back_everything(fresh_dsn: str) -> None:
    conn = await asyncpg.connect(fresh_dsn)
    try:
        bad = [
            Migration("0001_ok", "CREATE TABLE t_ok (id int)"),
            Migration("0002_bad", "CREATE TABLE nope ("),
        ]
        with pytest.raises(MigrationError, match="0002_bad"):
            await apply(conn, bad)
        assert await conn.fetchval("SELECT to_regclass('t_ok')") is None
    finally:
        await conn.close()
