"""Catalogue handlers against an in-memory unit of work."""

from __future__ import annotations

import uuid
from decimal import Decimal

from agents.products.handlers import handle_command
from tests.unit.fakes import FakeProductsUnitOfWork
from topics import PRODUCTS_EVENTS
from topics.envelope import ErrorType
from topics.products import (
    CreateProduct,
    DeleteProduct,
    NewProduct,
    ProductChanges,
    ProductCreated,
    ProductDeleted,
    ProductUpdated,
    UpdateProduct,
)


def create(name: str = "Mug", price: str = "9.50", stock: int = 3) -> CreateProduct:
    return CreateProduct(
        command_id=uuid.uuid4(),
        product=NewProduct(name=name, price=Decimal(price), stock=stock),
    )


async def test_create_records_the_product_and_its_event_together() -> None:
    uow = FakeProductsUnitOfWork()
    reply = await handle_command(create(), uow)
    assert reply.ok
    assert reply.result is not None
    assert reply.result["product"]["name"] == "Mug"
    assert reply.result["product"]["price"] == "9.50"
    [(topic, key, event)] = uow.committed_outbox.events
    assert topic == PRODUCTS_EVENTS.name
    assert isinstance(event, ProductCreated)
    assert key == str(event.product.id)
    assert uow.commits == 1


async def test_a_redelivered_create_changes_nothing_and_answers_the_same() -> None:
    uow = FakeProductsUnitOfWork()
    cmd = create()
    first = await handle_command(cmd, uow)
    second = await handle_command(cmd, uow)
    assert second == first
    assert len(uow.committed_products.rows) == 1
    assert len(uow.committed_outbox.events) == 1


async def test_update_changes_only_the_given_fields() -> None:
    uow = FakeProductsUnitOfWork()
    await handle_command(create(stock=3), uow)
    reply = await handle_command(
        UpdateProduct(command_id=uuid.uuid4(), product_id=1, changes=ProductChanges(stock=7)), uow
    )
    assert reply.ok
    assert reply.result is not None
    assert reply.result["product"]["stock"] == 7
    assert reply.result["product"]["name"] == "Mug"
    assert isinstance(uow.committed_outbox.events[-1][2], ProductUpdated)


async def test_update_of_a_missing_product_is_not_found_and_emits_nothing() -> None:
    uow = FakeProductsUnitOfWork()
    cmd = UpdateProduct(command_id=uuid.uuid4(), product_id=42, changes=ProductChanges(stock=1))
    reply = await handle_command(cmd, uow)
    assert not reply.ok
    assert reply.error is not None
    assert reply.error.type is ErrorType.NOT_FOUND
    assert uow.committed_outbox.events == []
    assert await handle_command(cmd, uow) == reply


async def test_delete_then_delete_again() -> None:
    uow = FakeProductsUnitOfWork()
    await handle_command(create(), uow)
    first = await handle_command(DeleteProduct(command_id=uuid.uuid4(), product_id=1), uow)
    assert first.ok
    assert isinstance(uow.committed_outbox.events[-1][2], ProductDeleted)
    again = await handle_command(DeleteProduct(command_id=uuid.uuid4(), product_id=1), uow)
    assert again.error is not None
    assert again.error.type is ErrorType.NOT_FOUND
