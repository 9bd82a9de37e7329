"""Catalogue messages: the commands on products.commands and the events on products.events."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    WithJsonSchema,
)

from topics.amounts import amount_schema, from_json_number
from topics.text import NO_NUL, NOT_BLANK

Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    Field(pattern=NOT_BLANK),
]
Description = Annotated[str, StringConstraints(max_length=5000), Field(pattern=NO_NUL)]
ImageUrl = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=2048), Field(pattern=NO_NUL)
]
PRICE_MAX = "9999999999.99"
Price = Annotated[
    Decimal,
    BeforeValidator(from_json_number),
    Field(ge=0, le=Decimal(PRICE_MAX), decimal_places=2),
    WithJsonSchema(amount_schema(PRICE_MAX), mode="validation"),
]
Stock = Annotated[int, Field(ge=0, le=2_147_483_647)]
ProductId = Annotated[int, Field(ge=1, le=2**63 - 1)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class NewProduct(_Record):
    name: Name
    description: Description = ""
    price: Price
    stock: Stock
    image_url: ImageUrl = ""


class ProductChanges(_Record):
    """The fields to change; those left out keep their value."""

    name: Name | None = None
    description: Description | None = None
    price: Price | None = None
    stock: Stock | None = None
    image_url: ImageUrl | None = None


class Product(_Record):
    id: ProductId
    name: str
    description: str
    price: Decimal
    stock: int
    image_url: str
    created_at: datetime
    updated_at: datetime


class CreateProduct(_Record):
    """Add a product to the catalogue. Key: the command id."""

    type: Literal["CreateProduct"] = "CreateProduct"
    command_id: UUID
    product: NewProduct


class UpdateProduct(_Record):
    """Change some fields of a product. Key: the product id."""

    type: Literal["UpdateProduct"] = "UpdateProduct"
    command_id: UUID
    product_id: ProductId
    changes: ProductChanges


class DeleteProduct(_Record):
    """Take a product out of the catalogue (kept for order history). Key: the product id."""

    type: Literal["DeleteProduct"] = "DeleteProduct"
    command_id: UUID
    product_id: ProductId


ProductCommand = Annotated[
    CreateProduct | UpdateProduct | DeleteProduct, Field(discriminator="type")
]
product_command: TypeAdapter[CreateProduct | UpdateProduct | DeleteProduct] = TypeAdapter(
    ProductCommand
)


class ProductCreated(_Record):
    type: Literal["ProductCreated"] = "ProductCreated"
    event_id: UUID
    occurred_at: datetime
    product: Product


class ProductUpdated(_Record):
    type: Literal["ProductUpdated"] = "ProductUpdated"
    event_id: UUID
    occurred_at: datetime
    product: Product


class ProductDeleted(_Record):
    type: Literal["ProductDeleted"] = "ProductDeleted"
    event_id: UUID
    occurred_at: datetime
    product_id: ProductId


COMMANDS: tuple[type[BaseModel], ...] = (CreateProduct, UpdateProduct, DeleteProduct)


class OrderLine(_Record):
    product_id: ProductId
    quantity: Annotated[int, Field(ge=1, le=10_000)]


class ReservedLine(_Record):
    product_id: ProductId
    quantity: int
    unit_price: Decimal


class StockReserved(_Record):
    """Every line of an order is held for it, at these unit prices. Key: the order id."""

    type: Literal["StockReserved"] = "StockReserved"
    event_id: UUID
    occurred_at: datetime
    order_id: int
    lines: list[ReservedLine]
    total: Decimal


class StockRejected(_Record):
    """Not every line could be held, so none is. Key: the order id."""

    type: Literal["StockRejected"] = "StockRejected"
    event_id: UUID
    occurred_at: datetime
    order_id: int
    reason: str


class StockReleased(_Record):
    """An unpaid order's units are back on hand. Key: the order id."""

    type: Literal["StockReleased"] = "StockReleased"
    event_id: UUID
    occurred_at: datetime
    order_id: int


EVENTS: tuple[type[BaseModel], ...] = (
    ProductCreated,
    ProductUpdated,
    ProductDeleted,
    StockReserved,
    StockRejected,
    StockReleased,
)
