"""GET /api/v1/products/best-sellers with a fake gRPC products service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf.timestamp_pb2 import Timestamp

from agents.common.settings import Settings
from gateway.app import create_app
from gateway.bus import BusClient
from gateway.grpc_clients import GrpcClients
from protos import products_pb2

SETTINGS = Settings.from_env({"JWT_SECRET": "k" * 64})
HOUR = datetime(2026, 1, 2, 3, 0, 0, tzinfo=UTC)


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


class FakeProducts:
    def __init__(self) -> None:
        self.asked: list[int] = []
        self.fail: grpc.StatusCode | None = None

    async def ListBestSellers(
        self, request: products_pb2.ListBestSellersRequest, **kw: Any
    ) -> products_pb2.ListBestSellersResponse:
        self.asked.append(request.limit)
        if self.fail is not None:
            raise grpc.aio.AioRpcError(
                self.fail, grpc.aio.Metadata(), grpc.aio.Metadata(), details="away"
            )
        sellers = [products_pb2.BestSeller(product_id=p, units=u) for p, u in ((4, 9), (2, 3))]
        return products_pb2.ListBestSellersResponse(
            window_start=_ts(HOUR),
            window_end=_ts(HOUR.replace(hour=4)),
            sellers=sellers[: request.limit],
        )


class FakeGrpc(GrpcClients):
    def __init__(self, products: FakeProducts) -> None:
        super().__init__(SETTINGS.grpc)
        self._fake = products

    @property
    def products(self) -> Any:
        return self._fake


class IdleBus(BusClient):
    @property
    def ready(self) -> bool:
        return True


@pytest.fixture
def products() -> FakeProducts:
    return FakeProducts()


@pytest.fixture
async def client(products: FakeProducts) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(SETTINGS, bus=IdleBus(SETTINGS), grpc=FakeGrpc(products))
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_best_sellers_of_the_hour(
    client: TestClient[Any, Any], products: FakeProducts
) -> None:
    resp = await client.get("/api/v1/products/best-sellers")
    assert resp.status == 200
    assert await resp.json() == {
        "window": {"start": "2026-01-02T03:00:00Z", "end": "2026-01-02T04:00:00Z"},
        "products": [{"product_id": 4, "units_sold": 9}, {"product_id": 2, "units_sold": 3}],
    }
    resp = await client.get("/api/v1/products/best-sellers?limit=1")
    assert (await resp.json())["products"] == [{"product_id": 4, "units_sold": 9}]
    assert products.asked == [10, 1]


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten", "1.5"])
async def test_a_bad_limit_is_a_422_problem(
    client: TestClient[Any, Any], products: FakeProducts, limit: str
) -> None:
    resp = await client.get(f"/api/v1/products/best-sellers?limit={limit}")
    assert resp.status == 422
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    body = await resp.json(content_type=None)
    assert body["status"] == 422
    assert body["errors"][0]["path"] == "query.limit"
    assert products.asked == []


async def test_products_away_is_a_503_problem(
    client: TestClient[Any, Any], products: FakeProducts
) -> None:
    products.fail = grpc.StatusCode.UNAVAILABLE
    resp = await client.get("/api/v1/products/best-sellers")
    assert resp.status == 503
    assert resp.headers["Content-Type"].startswith("application/problem+json")


async def test_the_route_is_documented(client: TestClient[Any, Any]) -> None:
    doc = await (await client.get("/openapi.json")).json()
    op = doc["paths"]["/api/v1/products/best-sellers"]["get"]
    assert {"200", "422"} <= op["responses"].keys()
    assert op["parameters"][0]["name"] == "limit"
    assert "BestSellers" in doc["components"]["schemas"]
