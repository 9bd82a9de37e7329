"""The demo catalogue that a first `make run` loads, so a newcomer sees products."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from agents.products.repository import PgProductsUnitOfWork
from topics import PRODUCTS_EVENTS
from topics.products import NewProduct, ProductCreated

FLAG = "demo_catalogue_loaded"

DEMO = [
    ("Espresso beans, 1 kg", "Dark roast, chocolate notes.", "24.90", 40),
    ("Ceramic mug", "350 ml, dishwasher safe.", "12.50", 120),
    ("Pour-over kettle", "Gooseneck, 1 l, stainless steel.", "49.00", 15),
    ("Hand grinder", "Conical burrs, 40 settings.", "79.00", 8),
    ("Paper filters (100)", "Size 02, unbleached.", "6.90", 300),
    ("Green tea, 100 g", "Sencha from Shizuoka.", "9.80", 60),
    ("Travel tumbler", "Keeps hot for 6 hours.", "21.00", 45),
    ("Milk frother", "Handheld, battery powered.", "15.40", 30),
    ("Cold brew jar", "1.5 l with mesh filter.", "27.50", 20),
    ("Tasting notebook", "120 pages, lay-flat binding.", "8.00", 75),
    ("Barista scale", "0.1 g precision with timer.", "39.90", 12),
    ("Gift card", "Worth 50 in the shop.", "50.00", 999),
]


async def load_demo_catalogue(pool: asyncpg.Pool) -> int:
    """Add the demo products once per database; return how many were added."""
    async with PgProductsUnitOfWork(pool) as uow:
        conn = uow.connection
        if not await conn.fetchval(
            "INSERT INTO platform_flags (name) VALUES ($1) ON CONFLICT DO NOTHING RETURNING 1", FLAG
        ):
            return 0
        for name, description, price, stock in DEMO:
            product = await uow.products.add(
                NewProduct(name=name, description=description, price=Decimal(price), stock=stock)
            )
            event = ProductCreated(
                event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), product=product
            )
            await uow.outbox.add(PRODUCTS_EVENTS.name, str(product.id), event)
        await uow.commit()
    return len(DEMO)
