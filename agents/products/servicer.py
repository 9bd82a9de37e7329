"""gRPC reads of the catalogue, answered from PostgreSQL; best sellers from a Faust table."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Protocol

import asyncpg
import grpc

from agents.common.rpc import rpc, timestamp
from agents.products import repository
from agents.products.best_sellers import Ranking
from protos import products_pb2, products_pb2_grpc
from topics.products import Product

MAX_PAGE_SIZE = 100
MAX_BEST_SELLERS = 100
DEFAULT_BEST_SELLERS = 10


class BestSellerReads(Protocol):
    def top(self, limit: int, now: float | None = None) -> Ranking: ...


def to_proto(p: Product) -> products_pb2.Product:
    return products_pb2.Product(
        id=p.id,
        name=p.name,
        description=p.description,
        price=f"{p.price:.2f}",
        stock=p.stock,
        image_url=p.image_url,
        created_at=timestamp(p.created_at),
        updated_at=timestamp(p.updated_at),
    )


class ProductServicer(products_pb2_grpc.ProductServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        pool: asyncpg.Pool,
        default_page_size: int,
        best_sellers: BestSellerReads | None = None,
    ) -> None:
        self._pool = pool
        self._default_page_size = default_page_size
        self._best_sellers = best_sellers

    @rpc
    async def GetProduct(
        self, request: products_pb2.GetProductRequest, context: grpc.aio.ServicerContext
    ) -> products_pb2.Product:
        product = await repository.get_product(self._pool, request.id)
        if product is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"product {request.id} does not exist")
        assert product is not None
        return to_proto(product)

    @rpc
    async def ListProducts(
        self, request: products_pb2.ListProductsRequest, context: grpc.aio.ServicerContext
    ) -> products_pb2.ListProductsResponse:
        size = request.page_size or self._default_page_size
        if request.page < 0 or request.after_id < 0 or not 1 <= size <= MAX_PAGE_SIZE:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"page and after_id must be >= 0 and page_size 1..{MAX_PAGE_SIZE}",
            )
        total, products = await repository.list_products(
            self._pool, request.page, size, request.after_id
        )
        return products_pb2.ListProductsResponse(
            total=total,
            page=request.page,
            total_page=math.ceil(total / size),
            products=[to_proto(p) for p in products],
        )

    @rpc
    async def ListBestSellers(
        self, request: products_pb2.ListBestSellersRequest, context: grpc.aio.ServicerContext
    ) -> products_pb2.ListBestSellersResponse:
        limit = request.limit or DEFAULT_BEST_SELLERS
        if not 1 <= limit <= MAX_BEST_SELLERS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"limit must be 1..{MAX_BEST_SELLERS}"
            )
        if self._best_sellers is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no best-seller table here")
        assert self._best_sellers is not None
        ranking = self._best_sellers.top(limit)
        return products_pb2.ListBestSellersResponse(
            window_start=timestamp(datetime.fromtimestamp(ranking.window_start, UTC)),
            window_end=timestamp(datetime.fromtimestamp(ranking.window_end, UTC)),
            sellers=[
                products_pb2.BestSeller(product_id=s.product_id, units=s.units)
                for s in ranking.sellers
            ],
        )
