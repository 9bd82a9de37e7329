"""The gRPC reads of the tables (best sellers, pending deadlines) on a real gRPC server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import grpc
import pytest

from agents.common.grpc_server import GrpcServer, create_server
from agents.common.service_tokens import ServiceAuth
from agents.payments.deadlines import Deadlines
from agents.payments.servicer import PaymentServicer
from agents.products.best_sellers import Ranking, Seller
from agents.products.servicer import ProductServicer
from protos import payments_pb2, payments_pb2_grpc, products_pb2, products_pb2_grpc
from tests.trust import TEST_INTERNAL_SECRET, service_channel

NO_POOL = cast(asyncpg.Pool, None)
HOUR = 1_767_326_400.0


class FakeBestSellers:
    def top(self, limit: int, now: float | None = None) -> Ranking:
        sellers = [Seller(3, 8), Seller(1, 2), Seller(2, 1)]
        return Ranking(HOUR, HOUR + 3600, sellers[:limit])


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    deadlines = Deadlines({7: HOUR + 0.25}, ttl_s=900)
    deadlines.adopt({9: HOUR + 10})

    def add(s: grpc.aio.Server) -> list[str]:
        products_pb2_grpc.add_ProductServiceServicer_to_server(
            ProductServicer(NO_POOL, 10, FakeBestSellers()), s
        )
        payments_pb2_grpc.add_PaymentServiceServicer_to_server(
            PaymentServicer(NO_POOL, deadlines), s
        )
        return []

    srv = create_server("127.0.0.1", 0, add, ServiceAuth(TEST_INTERNAL_SECRET, "products"))
    await srv.start()
    yield srv
    await srv.stop(grace=0)


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    async with service_channel(f"127.0.0.1:{server.port}", "products") as ch:
        yield ch


async def test_best_sellers(channel: grpc.aio.Channel) -> None:
    stub: Any = products_pb2_grpc.ProductServiceStub(channel)
    reply = await stub.ListBestSellers(products_pb2.ListBestSellersRequest(limit=2), timeout=5)
    assert [(s.product_id, s.units) for s in reply.sellers] == [(3, 8), (1, 2)]
    assert reply.window_start.seconds == int(HOUR)
    assert reply.window_end.seconds == int(HOUR) + 3600
    default = await stub.ListBestSellers(products_pb2.ListBestSellersRequest(), timeout=5)
    assert len(default.sellers) == 3


@pytest.mark.parametrize("limit", [-1, 101])
async def test_a_bad_limit_is_invalid(channel: grpc.aio.Channel, limit: int) -> None:
    stub: Any = products_pb2_grpc.ProductServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.ListBestSellers(products_pb2.ListBestSellersRequest(limit=limit), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_pending_deadlines(channel: grpc.aio.Channel) -> None:
    stub: Any = payments_pb2_grpc.PaymentServiceStub(channel)
    reply = await stub.ListPendingDeadlines(payments_pb2.ListPendingDeadlinesRequest(), timeout=5)
    assert [(d.payment_id, d.expires_at_us, d.adopted) for d in reply.deadlines] == [
        (7, int(HOUR) * 1_000_000 + 250_000, False),
        (9, (int(HOUR) + 10) * 1_000_000, True),
    ]
