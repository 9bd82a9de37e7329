"""The gateway's HTTP surface with a fake bus and fake gRPC reads."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf.timestamp_pb2 import Timestamp

from agents.common.settings import Settings
from gateway.app import create_app
from gateway.auth import mint_token
from gateway.bus import BusClient, BusTimeout
from gateway.grpc_clients import GrpcClients
from protos import products_pb2
from topics.envelope import ErrorType, Reply

SETTINGS = Settings.from_env({"JWT_SECRET": "k" * 64, "MAX_BODY_BYTES": "2048"})
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _ts() -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(NOW)
    return ts


def proto_product(product_id: int) -> products_pb2.Product:
    return products_pb2.Product(
        id=product_id,
        name=f"p{product_id}",
        description="d",
        price="19.99",
        stock=5,
        image_url="",
        created_at=_ts(),
        updated_at=_ts(),
    )


class FakeProductStub:
    async def ListProducts(
        self, request: products_pb2.ListProductsRequest, **kw: Any
    ) -> products_pb2.ListProductsResponse:
        return products_pb2.ListProductsResponse(
            total=3, page=request.page, total_page=1, products=[proto_product(1)]
        )

    async def GetProduct(
        self, request: products_pb2.GetProductRequest, **kw: Any
    ) -> products_pb2.Product:
        if request.id != 1:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.NOT_FOUND,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details=f"product {request.id} does not exist",
            )
        return proto_product(1)


class FakeGrpc(GrpcClients):
    @property
    def products(self) -> Any:
        return FakeProductStub()

    async def health(self, domain: str, timeout: float = 1.0) -> bool:
        return True


class FakeBus(BusClient):
    def __init__(self) -> None:
        super().__init__(SETTINGS)
        self.sent: list[tuple[str, str, dict[str, Any], dict[str, bytes]]] = []
        self.reply: Reply | None = None

    @property
    def ready(self) -> bool:
        return True

    async def request(
        self,
        topic: str,
        key: str,
        value: bytes,
        *,
        headers: Sequence[tuple[str, bytes]] = (),
        timeout: float | None = None,
    ) -> Reply:
        body = json.loads(value)
        self.sent.append((topic, key, body, dict(headers)))
        if self.reply is None:
            raise BusTimeout("no reply")
        return self.reply


@pytest.fixture
def bus() -> FakeBus:
    return FakeBus()


@pytest.fixture
async def client(bus: FakeBus) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(SETTINGS, bus=bus, grpc=FakeGrpc(SETTINGS.grpc))
    async with TestClient(TestServer(app)) as c:
        yield c


def auth(role: str = "admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SETTINGS, sub='u1', role=role)}"}


async def problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    body: dict[str, Any] = await resp.json(content_type=None)
    assert body["status"] == status
    assert body["title"]
    assert body["detail"] == body["error"]
    return body


def product_reply(product_id: int = 7) -> Reply:
    return Reply.success(
        {
            "product": {
                "id": product_id,
                "name": "Mug",
                "description": "",
                "price": "9.50",
                "stock": 3,
                "image_url": "",
                "created_at": NOW.isoformat(),
                "updated_at": NOW.isoformat(),
            }
        }
    )


async def test_list_products_in_the_seed_shape(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/product/?page=0")
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {"total", "page", "total_page", "products"}
    [p] = body["products"]
    assert set(p) == {
        "id",
        "name",
        "description",
        "price",
        "stock",
        "image_url",
        "created_at",
        "updated_at",
    }
    assert p["price"] == 19.99
    assert p["created_at"] == "2026-01-02T03:04:05Z"


@pytest.mark.parametrize("query", ["page=-1", "page=abc", "limit=0", "limit=101"])
async def test_bad_paging_is_422(client: TestClient[Any, Any], query: str) -> None:
    body = await problem(await client.get(f"/product/?{query}"), 422)
    assert body["errors"][0]["path"].startswith("query.")


async def test_product_by_id_and_missing_one(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/api/v1/products/1")).status == 200
    assert (await client.get("/product/?id=1")).status == 200
    body = await problem(await client.get("/api/v1/products/2"), 404)
    assert "2" in body["detail"]
    await problem(await client.get("/api/v1/products/abc"), 404)


async def test_create_sends_a_command_and_answers_201(
    client: TestClient[Any, Any], bus: FakeBus
) -> None:
    bus.reply = product_reply(7)
    resp = await client.post(
        "/product/",
        json={"name": "Mug", "description": "", "price": 9.5, "stock": 3},
        headers={**auth(), "X-Request-ID": "req-123"},
    )
    assert resp.status == 201
    assert resp.headers["Location"] == "/api/v1/products/7"
    assert resp.headers["X-Request-ID"] == "req-123"
    body = await resp.json()
    assert body["price"] == 9.5
    [(topic, key, sent, headers)] = bus.sent
    assert topic == "products.commands"
    assert sent["type"] == "CreateProduct"
    assert key == sent["command_id"]
    assert headers["x-request-id"] == b"req-123"
    assert headers["x-user-id"] == b"u1"
    assert not any(b"Bearer" in v or b"eyJ" in v for v in headers.values())


async def test_idempotency_key_gives_the_same_command_id(
    client: TestClient[Any, Any], bus: FakeBus
) -> None:
    bus.reply = product_reply()
    body = {"name": "Mug", "price": 1, "stock": 1}
    for _ in range(2):
        headers = {**auth(), "Idempotency-Key": "abc"}
        assert (await client.post("/product/", json=body, headers=headers)).status == 201
    assert bus.sent[0][2]["command_id"] == bus.sent[1][2]["command_id"]


async def test_update_and_delete_by_query(client: TestClient[Any, Any], bus: FakeBus) -> None:
    bus.reply = product_reply(3)
    resp = await client.put("/product/?id=3", json={"stock": 9}, headers=auth())
    assert resp.status == 200
    assert bus.sent[-1][1] == "3"
    assert bus.sent[-1][2] == {
        "type": "UpdateProduct",
        "command_id": bus.sent[-1][2]["command_id"],
        "product_id": 3,
        "changes": {
            "name": None,
            "description": None,
            "price": None,
            "stock": 9,
            "image_url": None,
        },
    }
    bus.reply = Reply.success({"product_id": 3})
    resp = await client.delete("/product/?id=3", headers=auth())
    assert resp.status == 200
    assert (await resp.json())["message"] == "success"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ErrorType.NOT_FOUND, 404),
        (ErrorType.CONFLICT, 409),
        (ErrorType.INVALID, 422),
        (ErrorType.FORBIDDEN, 403),
        (ErrorType.UNAVAILABLE, 503),
        (ErrorType.INTERNAL, 500),
    ],
)
async def test_typed_error_replies_map_to_statuses(
    client: TestClient[Any, Any], bus: FakeBus, error: ErrorType, status: int
) -> None:
    bus.reply = Reply.failure(error, "it went wrong")
    body = await problem(await client.put("/product/?id=3", json={}, headers=auth()), status)
    assert body["code"] == error.value
    assert body["detail"] == ("it went wrong")


async def test_no_reply_in_time_is_504(client: TestClient[Any, Any]) -> None:
    body = await problem(await client.delete("/product/?id=3", headers=auth()), 504)
    assert body["code"] == "timeout"


async def test_writes_need_a_token_and_the_admin_role(client: TestClient[Any, Any]) -> None:
    body = {"name": "Mug", "price": 1, "stock": 1}
    resp = await client.post("/product/", json=body)
    await problem(resp, 401)
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    await problem(await client.post("/product/", json=body, headers=auth("user")), 403)
    await problem(await client.delete("/product/?id=1", headers=auth("user")), 403)
    await problem(await client.put("/product/?id=1", json={}, headers=auth("user")), 403)


def _claims(**override: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": SETTINGS.jwt_issuer,
        "aud": SETTINGS.jwt_audience,
        "sub": "u1",
        "role": "admin",
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
    }
    claims.update(override)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.mark.parametrize(
    "token",
    [
        jwt.encode(_claims(exp=int(time.time()) - 10), SETTINGS.jwt_secret, algorithm="HS256"),
        jwt.encode(_claims(aud="other"), SETTINGS.jwt_secret, algorithm="HS256"),
        jwt.encode(_claims(iss="other"), SETTINGS.jwt_secret, algorithm="HS256"),
        jwt.encode(_claims(role=None), SETTINGS.jwt_secret, algorithm="HS256"),
        jwt.encode(_claims(role="root"), SETTINGS.jwt_secret, algorithm="HS256"),
        jwt.encode(_claims(), "another-secret-another-secret-another", algorithm="HS256"),
        jwt.encode(_claims(), SETTINGS.jwt_secret, algorithm="HS512"),
        jwt.encode(_claims(), "", algorithm="none"),
        "garbage",
    ],
    ids=[
        "expired",
        "aud",
        "iss",
        "no-role",
        "bad-role",
        "wrong-key",
        "hs512",
        "alg-none",
        "garbage",
    ],
)
async def test_bad_tokens_are_401(client: TestClient[Any, Any], token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    await problem(await client.delete("/product/?id=1", headers=headers), 401)


async def test_invalid_bodies(client: TestClient[Any, Any]) -> None:
    body = await problem(
        await client.post("/product/", json={"name": "", "price": -1}, headers=auth()), 422
    )
    assert {e["path"] for e in body["errors"]} == {"name", "price", "stock"}
    await problem(await client.post("/product/", data=b"{nope", headers=auth()), 400)
    big = {"name": "x", "price": 1, "stock": 1, "description": "y" * 4096}
    await problem(await client.post("/product/", json=big, headers=auth()), 413)


async def test_unknown_routes_and_methods(client: TestClient[Any, Any]) -> None:
    await problem(await client.get("/nope"), 404)
    resp = await client.patch("/product/")
    await problem(resp, 405)
    assert "GET" in resp.headers["Allow"]


async def test_health_and_request_ids(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert len(resp.headers["X-Request-ID"]) == 32
    resp = await client.get("/readyz", headers={"X-Request-ID": "bad id with spaces"})
    assert resp.status == 200
    assert resp.headers["X-Request-ID"] != "bad id with spaces"


async def test_openapi_document_matches_the_routes(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    served = {
        (route.resource.canonical, route.method.lower())
        for route in client.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert served == documented


async def test_an_unexpected_failure_is_a_500_problem_without_internals(bus: FakeBus) -> None:
    class Broken(FakeGrpc):
        @property
        def products(self) -> Any:
            raise RuntimeError("secret internals")

    app = create_app(SETTINGS, bus=bus, grpc=Broken(SETTINGS.grpc))
    async with TestClient(TestServer(app)) as c:
        body = await problem(await c.get("/product/?page=0"), 500)
    assert "secret" not in json.dumps(body)
