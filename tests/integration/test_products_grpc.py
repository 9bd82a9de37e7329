"""The catalogue's gRPC reads on a real server and a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agents.common.grpc_server import GrpcServer, create_server
from agents.common.service_tokens import ServiceAuth
from agents.products.repository import PgProductsUnitOfWork
from agents.products.servicer import ProductServicer
from protos import products_pb2, products_pb2_grpc
from tests.helpers import random_name
from tests.trust import TEST_INTERNAL_SECRET, service_channel
from topics.products import NewProduct, Product


@pytest.fixture
async def server(pool: asyncpg.Pool) -> AsyncIterator[GrpcServer]:
    def add(s: grpc.aio.Server) -> list[str]:
        products_pb2_grpc.add_ProductServiceServicer_to_server(ProductServicer(pool, 10), s)
        return ["shopstream.products.v1.ProductService"]

    srv = create_server("127.0.0.1", 0, add, ServiceAuth(TEST_INTERNAL_SECRET, "products"))
    await srv.start()
    yield srv
    await srv.stop(grace=0)


@pytest.fixture
async def stub(server: GrpcServer) -> AsyncIterator[products_pb2_grpc.ProductServiceStub]:
    async with service_channel(f"127.0.0.1:{server.port}", "products") as channel:
        yield products_pb2_grpc.ProductServiceStub(channel)


async def _product(pool: asyncpg.Pool) -> Product:
    async with PgProductsUnitOfWork(pool) as uow:
        p = await uow.products.add(NewProduct(name=random_name(), price=Decimal("3.30"), stock=4))
        await uow.commit()
    return p


async def test_get_product(pool: asyncpg.Pool, stub: products_pb2_grpc.ProductServiceStub) -> None:
    p = await _product(pool)
    got = await stub.GetProduct(products_pb2.GetProductRequest(id=p.id), timeout=5)
    assert (got.id, got.name, got.price, got.stock) == (p.id, p.name, "3.30", 4)


async def test_missing_product_is_not_found(stub: products_pb2_grpc.ProductServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.GetProduct(products_pb2.GetProductRequest(id=2**62), timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_pages(pool: asyncpg.Pool, stub: products_pb2_grpc.ProductServiceStub) -> None:
    for _ in range(3):
        await _product(pool)
    page = await stub.ListProducts(products_pb2.ListProductsRequest(page=0, page_size=2), timeout=5)
    assert len(page.products) == 2
    assert page.total >= 3
    assert page.total_page == -(-page.total // 2)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.ListProducts(products_pb2.ListProductsRequest(page=-1), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_page_past_the_end_is_empty_but_counts(
    pool: asyncpg.Pool, stub: products_pb2_grpc.ProductServiceStub
) -> None:
    await _product(pool)
    request = products_pb2.ListProductsRequest(page=100_000, page_size=100)
    page = await stub.ListProducts(request, timeout=5)
    assert list(page.products) == []
    assert page.total >= 1
    assert (page.page, page.total_page) == (100_000, -(-page.total // 100))


async def test_keyset_pages_start_after_the_cursor(
    pool: asyncpg.Pool, stub: products_pb2_grpc.ProductServiceStub
) -> None:
    a, b, c = [await _product(pool) for _ in range(3)]
    first = await stub.ListProducts(products_pb2.ListProductsRequest(page_size=2), timeout=5)
    assert [p.id for p in first.products] == [c.id, b.id]
    after = products_pb2.ListProductsRequest(page_size=2, after_id=first.products[-1].id)
    second = await stub.ListProducts(after, timeout=5)
    assert second.products[0].id == a.id
    assert second.total == first.total
    assert [p.id for p in second.products] == sorted((p.id for p in second.products), reverse=True)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.ListProducts(products_pb2.ListProductsRequest(after_id=-1), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_health_service_follows_readiness(server: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        await server.set_serving(True)
        reply = await health.Check(
            health_pb2.HealthCheckRequest(service="shopstream.products.v1.ProductService"),
            timeout=5,
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await server.set_serving(False)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
