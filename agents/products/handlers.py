"""Catalogue command handlers: plain functions of a command and a unit of work."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from agents.common.ledger import fingerprint, handle_once
from agents.products.errors import ProductNotFound
from agents.products.repository import ProductsUnitOfWork
from topics import PRODUCTS_EVENTS
from topics.envelope import Reply
from topics.products import (
    CreateProduct,
    DeleteProduct,
    ProductCreated,
    ProductDeleted,
    ProductUpdated,
    UpdateProduct,
)


def _now() -> datetime:
    return datetime.now(UTC)


async def _create(cmd: CreateProduct, uow: ProductsUnitOfWork) -> Reply:
    product = await uow.products.add(cmd.product)
    event = ProductCreated(event_id=uuid.uuid4(), occurred_at=_now(), product=product)
    await uow.outbox.add(PRODUCTS_EVENTS.name, str(product.id), event)
    return Reply.success({"product": product.model_dump(mode="json")})


async def _update(cmd: UpdateProduct, uow: ProductsUnitOfWork) -> Reply:
    product = await uow.products.update(cmd.product_id, cmd.changes)
    if product is None:
        raise ProductNotFound(cmd.product_id)
    event = ProductUpdated(event_id=uuid.uuid4(), occurred_at=_now(), product=product)
    await uow.outbox.add(PRODUCTS_EVENTS.name, str(product.id), event)
    return Reply.success({"product": product.model_dump(mode="json")})


async def _delete(cmd: DeleteProduct, uow: ProductsUnitOfWork) -> Reply:
    if not await uow.products.delete(cmd.product_id):
        raise ProductNotFound(cmd.product_id)
    event = ProductDeleted(event_id=uuid.uuid4(), occurred_at=_now(), product_id=cmd.product_id)
    await uow.outbox.add(PRODUCTS_EVENTS.name, str(cmd.product_id), event)
    return Reply.success({"product_id": cmd.product_id})


async def handle_command(
    cmd: CreateProduct | UpdateProduct | DeleteProduct, uow: ProductsUnitOfWork
) -> Reply:
    """Apply one catalogue command once; a redelivered command gets the first reply again."""
    match cmd:
        case CreateProduct():
            return await handle_once(
                uow, cmd.command_id, lambda u: _create(cmd, u), fingerprint(cmd)
            )
        case UpdateProduct():
            return await handle_once(
                uow, cmd.command_id, lambda u: _update(cmd, u), fingerprint(cmd)
            )
        case DeleteProduct():
            return await handle_once(
                uow, cmd.command_id, lambda u: _delete(cmd, u), fingerprint(cmd)
            )
