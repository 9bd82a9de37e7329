"""Exactly-once effects on an at-least-once bus: the command ledger and the transactional outbox."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, TypeVar
from uuid import UUID

import asyncpg
from pydantic import BaseModel

from agents.common.errors import DomainError
from agents.common.relay import Outgoing, write_events
from topics.envelope import ErrorType, Reply

GET_REPLY = """
SELECT reply, fingerprint FROM processed_commands WHERE domain = $1 AND command_id = $2
"""
PUT_REPLY = """
INSERT INTO processed_commands (domain, command_id, reply, fingerprint) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING RETURNING 1
"""
# A batch at a time, oldest first, so that a long backlog never holds one long transaction.
PRUNE = """
DELETE FROM processed_commands WHERE (domain, command_id) IN (
    SELECT domain, command_id FROM processed_commands
    WHERE domain = $1 AND created_at < now() - make_interval(secs => $2)
    ORDER BY created_at LIMIT $3
)
"""
PRUNE_BATCH = 1000
KEY_REUSED = "this Idempotency-Key was used for another request"


def fingerprint(message: BaseModel, id_field: str = "command_id") -> str:
    """What a command asks for, without its id: the operation, its target and its data.

    Aliases of one route make the same command, so they have the same fingerprint; another
    target (a product id from a path or a query) or another body makes another."""
    canonical = message.model_dump_json(exclude={id_field})
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Recorded:
    reply: Reply
    fingerprint: str


class CommandRaced(Exception):
    """Another worker recorded this command first; this attempt must roll back."""


class Ledger(Protocol):
    async def get(self, command_id: UUID) -> Recorded | None: ...
    async def put(self, command_id: UUID, reply: Reply, fingerprint: str) -> None: ...


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

    async def get(self, command_id: UUID) -> Recorded | None:
        row = await self._conn.fetchrow(GET_REPLY, self._domain, command_id)
        if row is None:
            return None
        return Recorded(Reply.model_validate(row["reply"]), row["fingerprint"])

    async def put(self, command_id: UUID, reply: Reply, fingerprint: str) -> None:
        # Waits on a concurrent insert of the same command, then inserts nothing.
        if not await self._conn.fetchval(
            PUT_REPLY, self._domain, command_id, reply.model_dump(mode="json"), fingerprint
        ):
            raise CommandRaced(command_id)


async def prune_ledger(
    pool: asyncpg.Pool, domain: str, ttl_s: float, batch: int = PRUNE_BATCH
) -> int:
    """Forget the domain's commands and events handled more than `ttl_s` ago; return how many.

    Their ids (and so their Idempotency-Keys) can then be used again for new requests."""
    pruned = 0
    while True:
        status: str = await pool.execute(PRUNE, domain, float(ttl_s), batch)
        done = int(status.split()[-1])
        pruned += done
        if done < batch:
            return pruned


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


def _replay(earlier: Recorded, fingerprint: str) -> Reply:
    """The recorded reply to the same request; another request under its id (a reused
    Idempotency-Key) is refused (422, as the IETF idempotency-key draft says)."""
    # A row recorded before fingerprints were (migration 0010) has none to compare.
    if earlier.fingerprint and earlier.fingerprint != fingerprint:
        return Reply.failure(ErrorType.INVALID, KEY_REUSED)
    return earlier.reply


async def handle_once(
    uow: U, command_id: UUID, apply: Callable[[U], Awaitable[Reply]], fingerprint: str = ""
) -> Reply:
    """Run `apply` in one transaction unless this command was handled before; return its reply.

    A domain error is a reply too: it is recorded, so a redelivery answers the same way, except
    an invalid command's (422): it was never accepted, so a corrected retry under the same id is
    handled. `fingerprint` (see `fingerprint`) tells a redelivery from another request under the
    same id. `apply` must raise before it writes anything, or write only what goes with success.
    When two workers race on one command, the loser rolls back and answers the winner's reply.
    """
    try:
        async with uow:
            earlier = await uow.ledger.get(command_id)
            if earlier is not None:
                return _replay(earlier, fingerprint)
            try:
                reply = await apply(uow)
            except DomainError as e:
                reply = Reply.failure(e.error_type, str(e))
                if e.error_type is ErrorType.INVALID:
                    return reply
            await uow.ledger.put(command_id, reply, fingerprint)
            await uow.commit()
        return reply
    except CommandRaced:
        async with uow:
            winner = await uow.ledger.get(command_id)
        assert winner is not None
        return _replay(winner, fingerprint)
