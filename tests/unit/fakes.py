"""In-memory stand-ins for the Postgres unit of work."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Self
from uuid import UUID

from pydantic import BaseModel

from agents.common.ledger import Recorded
from topics.envelope import Reply
from topics.products import NewProduct, Product, ProductChanges


class FakeLedger:
    def __init__(self) -> None:
        self.replies: dict[UUID, Recorded] = {}

    async def get(self, command_id: UUID) -> Recorded | None:
        return self.replies.get(command_id)

    async def put(self, command_id: UUID, reply: Reply, fingerprint: str) -> None:
        assert command_id not in self.replies, "a command recorded twice"
        self.replies[command_id] = Recorded(reply, fingerprint)


class FakeOutbox:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, BaseModel]] = []

    async def add(
        self, topic: str, key: str, event: BaseModel, headers: Mapping[str, str] | None = None
    ) -> None:
        self.events.append((topic, key, event))


class FakeProducts:
    def __init__(self) -> None:
        self.rows: dict[int, Product] = {}
        self.deleted: set[int] = set()

    async def add(self, new: NewProduct) -> Product:
        now = datetime.now(UTC)
        product = Product(id=len(self.rows) + 1, created_at=now, updated_at=now, **new.model_dump())
        self.rows[product.id] = product
        return product

    async def update(self, product_id: int, changes: ProductChanges) -> Product | None:
        if product_id not in self.rows or product_id in self.deleted:
            return None
        fields = {k: v for k, v in changes.model_dump().items() if v is not None}
        product = self.rows[product_id].model_copy(
            update={**fields, "updated_at": datetime.now(UTC)}
        )
        self.rows[product_id] = product
        return product

    async def delete(self, product_id: int) -> bool:
        if product_id not in self.rows or product_id in self.deleted:
            return False
        self.deleted.add(product_id)
        return True


class FakeTransaction:
    """A unit of work's `async with` and commit, doing nothing; subclasses hold the state."""

    async def __aenter__(self) -> Self:
        return self

    async def commit(self) -> None:
        return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class FakeProductsUnitOfWork(FakeTransaction):
    """Commits copy the staged state; leaving without commit discards it, like a rollback."""

    def __init__(self) -> None:
        self.committed_products = FakeProducts()
        self.committed_ledger = FakeLedger()
        self.committed_outbox = FakeOutbox()
        self.commits = 0

    async def __aenter__(self) -> Self:
        self.products = FakeProducts()
        self.products.rows = dict(self.committed_products.rows)
        self.products.deleted = set(self.committed_products.deleted)
        self.ledger = FakeLedger()
        self.ledger.replies = dict(self.committed_ledger.replies)
        self.outbox = FakeOutbox()
        self.outbox.events = list(self.committed_outbox.events)
        return self

    async def commit(self) -> None:
        self.committed_products = self.products
        self.committed_ledger = self.ledger
        self.committed_outbox = self.outbox
        self.commits += 1
