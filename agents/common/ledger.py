"""Exactly-once effects on an at-least-once bus: the command ledger and the transactional outbox."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Protocol, Self, TypeVar
from uuid import UUID

import asyncpg
from pydantic import BaseModel

from agents.common.errors import DomainError
from agents.common.relay import Outgoing, write_events
from topics.envelope import Reply

GET_REPLY = "SELECT reply FROM processed_commands WHERE domain = $1 AND command_id = $2"
PUT_REPLY = """
INSERT INTO processed_commands (domain, command_id, reply) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING RETURNING 1
"""


class CommandRaced(Exception):
    """Another worker recorded this command first; this attempt must roll back."""


class Ledger(Protocol):
    async def get(self, command_id: UUID) -> Reply | None: ...
    async def put(self, command_id: UUID, reply: Reply) -> None: ...


class Outbox(Protocol):
    async def add(
        self, topic: str, key: str, event: BaseModel, headers: Mapping[str, str] | None = None
    ) -> None: ...


class UnitOfWork(Protocol):
    @property
    def ledger(self) -> Ledger: ...
    @property
    def outbox(self) -> Outbox: ...

    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    async def commit(self) -> None: ...


class PgLedger:
    def __init__(self, conn: asyncpg.Connection, domain: str) -> None:
        self._conn = conn
        self._domain = domain

    async def get(self, command_id: UUID) -> Reply | None:
        row = await self._conn.fetchval(GET_REPLY, self._domain, command_id)
        return None if row is None else Reply.model_validate(row)

    async def put(self, command_id: UUID, reply: Reply) -> None:
        # Waits on a concurrent insert of the same command, then inserts nothing.
        if not await self._conn.fetchval(
            PUT_REPLY, self._domain, command_id, reply.model_dump(mode="json")
        ):
            raise CommandRaced(command_id)


class PgOutbox:
    def __init__(self, conn: asyncpg.Connection, domain: str) -> None:
        self._conn = conn
        self._domain = domain
        self.written: list[Outgoing] = []

    async def add(
        self, topic: str, key: str, event: BaseModel, headers: Mapping[str, str] | None = None
    ) -> None:
        self.written += await write_events(
            self._conn, self._domain, [(topic, key, event)], dict(headers or {})
        )


U = TypeVar("U", bound=UnitOfWork)


async def handle_once(uow: U, command_id: UUID, apply: Callable[[U], Awaitable[Reply]]) -> Reply:
    """Run `apply` in one transaction unless this command was handled before; return its reply.

    A domain error is a reply too: it is recorded, so a redelivery answers the same way.
    `apply` must raise before it writes anything, or write only what goes with success.
    When two workers race on one command, the loser rolls back and answers the winner's reply.
    """
    try:
        async with uow:
            earlier = await uow.ledger.get(command_id)
            if earlier is not None:
                return earlier
            try:
                reply = await apply(uow)
            except DomainError as e:
                reply = Reply.failure(e.error_type, str(e))
            await uow.ledger.put(command_id, reply)
            await uow.commit()
        return reply
    except CommandRaced:
        async with uow:
            winner = await uow.ledger.get(command_id)
        assert winner is not None
        return winner
