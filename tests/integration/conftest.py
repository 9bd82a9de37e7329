"""Session-wide real PostgreSQL and Tansu, started once and stopped at the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from agents.common.db import create_pool
from agents.common.embedded import EmbeddedPostgres, EmbeddedTansu
from agents.common.migrate import migrate
from tests.infra import running_postgres, running_tansu
from topics import all_topic_names
from topics.admin import create_topics


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    with running_postgres() as pg:
        asyncio.run(migrate(pg.dsn))
        yield pg


@pytest.fixture(scope="session")
def kafka() -> Iterator[EmbeddedTansu]:
    with running_tansu() as broker:
        asyncio.run(create_topics(broker.bootstrap, all_topic_names()))
        yield broker


@pytest.fixture(scope="session")
async def pool(postgres: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(postgres.dsn, max_size=10)
    yield pool
    await pool.close()
