"""What can go wrong in the catalogue."""

from __future__ import annotations

from agents.common.errors import DomainError, NotFound


class ProductError(DomainError):
    pass


class ProductNotFound(ProductError, NotFound):
    def __init__(self, product_id: int) -> None:
        super().__init__(f"product {product_id} does not exist")
        self.product_id = product_id
