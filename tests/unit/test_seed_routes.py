"""The seed's routes in the seed's words, and the document the gateway serves about them."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf.timestamp_pb2 import Timestamp

from agents.common.settings import PROVIDERS
from gateway.app import create_app
from gateway.auth import mint_token
from gateway.grpc_clients import GrpcClients
from gateway.schemas import seed_order_status, seed_payment_status
from protos import orders_pb2, payments_pb2, users_pb2
from tests.unit.test_gateway import SETTINGS, FakeBus, FakeProductStub, problem
from topics.envelope import Reply

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _ts(at: datetime = NOW) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def proto_order(order_id: int, status: str, reason: str = "") -> orders_pb2.Order:
    return orders_pb2.Order(
        id=order_id,
        user_id=42,
        total_price="28.00",
        status=status,
        reason=reason,
        created_at=_ts(),
        updated_at=_ts(),
        items=[
            orders_pb2.OrderItem(id=1, order_id=order_id, product_id=5, quantity=2, price="12.50")
        ],
        history=[orders_pb2.StatusChange(status="pending", at=_ts())],
    )


class FakeOrders:
    def __init__(self) -> None:
        self.limits: list[int] = []
        self.status, self.reason = "awaiting_payment", ""

    async def GetOrder(self, request: orders_pb2.GetOrderRequest, **kw: Any) -> orders_pb2.Order:
        return proto_order(request.order_id, self.status, self.reason)

    async def ListOrders(
        self, request: orders_pb2.ListOrdersRequest, **kw: Any
    ) -> orders_pb2.ListOrdersResponse:
        self.limits.append(request.limit)
        return orders_pb2.ListOrdersResponse(orders=[proto_order(1, self.status, self.reason)])


class FakePayments:
    def __init__(self) -> None:
        self.status, self.reason, self.expires = "pending", "", NOW + timedelta(days=3650)
        self.token = ""

    async def GetPaymentByOrderId(
        self, request: payments_pb2.GetPaymentByOrderIdRequest, **kw: Any
    ) -> payments_pb2.Payment:
        return payments_pb2.Payment(
            id=9,
            order_id=request.order_id,
            user_id=42,
            amount="28.00",
            status=self.status,
            reason=self.reason,
            expires_at=_ts(self.expires),
            created_at=_ts(),
            updated_at=_ts(),
            token=self.token,
            redirect_url=f"http://shop/sandbox/pay/{self.token}" if self.token else "",
        )


class FakeUsers:
    configured = True

    async def OAuthStart(
        self, request: users_pb2.OAuthStartRequest, **kw: Any
    ) -> users_pb2.OAuthStartResponse:
        if not self.configured:
            missing = ", ".join(PROVIDERS[request.provider].missing_settings)
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.NOT_FOUND,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details=f"{request.provider} login is not configured on this server: set {missing}",
            )
        return users_pb2.OAuthStartResponse(url="https://provider.example/authorize?state=s")


class Fakes(GrpcClients):
    def __init__(self) -> None:
        super().__init__(SETTINGS.grpc)
        self.fake_orders, self.fake_payments, self.fake_users = (
            FakeOrders(),
            FakePayments(),
            FakeUsers(),
        )

    @property
    def products(self) -> Any:
        return FakeProductStub()

    @property
    def orders(self) -> Any:
        return self.fake_orders

    @property
    def payments(self) -> Any:
        return self.fake_payments

    @property
    def users(self) -> Any:
        return self.fake_users

    async def health(self, domain: str, timeout: float = 1.0) -> bool:
        return True


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


@pytest.fixture
async def client(fakes: Fakes) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(SETTINGS, bus=FakeBus(), grpc=fakes)
    async with TestClient(TestServer(app)) as c:
        yield c


def buyer() -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SETTINGS, sub='42', role='user')}"}


@pytest.mark.parametrize(("query", "page"), [("", 1), ("page=0", 1), ("page=1", 1), ("page=3", 3)])
async def test_seed_pages_count_from_1(client: TestClient[Any, Any], query: str, page: int) -> None:
    body = await (await client.get(f"/product/?{query}")).json()
    assert body["page"] == page
    own = await (await client.get(f"/api/v1/products?page={page - 1}")).json()
    assert own["page"] == page - 1


async def test_seed_orders_are_15_a_page_and_v1_10(
    client: TestClient[Any, Any], fakes: Fakes
) -> None:
    seed = await (await client.get("/order/?offset=15", headers=buyer())).json()
    own = await (await client.get("/api/v1/orders", headers=buyer())).json()
    assert fakes.fake_orders.limits == [15, 10]
    assert seed["orders"][0]["status"] == "pending"
    assert "status_history" not in seed["orders"][0]
    assert own["orders"][0]["status"] == "awaiting_payment"


async def test_seed_order_is_wrapped_with_its_items_and_prices(
    client: TestClient[Any, Any],
) -> None:
    seed = await (await client.get("/order/7", headers=buyer())).json()
    assert set(seed) == {"order"}
    assert seed["order"]["id"] == 7
    assert seed["order"]["order_items"] == [
        {"id": 1, "order_id": 7, "product_id": 5, "quantity": 2, "price": 12.5}
    ]
    own = await (await client.get("/api/v1/orders/7", headers=buyer())).json()
    assert own["id"] == 7
    assert own["status_history"][0]["status"] == "pending"


@pytest.mark.parametrize(
    ("status", "reason", "seed"),
    [
        ("pending", "", "pending"),
        ("awaiting_payment", "", "pending"),
        ("paid", "", "paid"),
        ("rejected", "out of stock", "failed"),
        ("cancelled", "expired", "expired"),
        ("cancelled", "declined by the provider", "cancelled"),
    ],
)
async def test_seed_order_words(
    client: TestClient[Any, Any], fakes: Fakes, status: str, reason: str, seed: str
) -> None:
    fakes.fake_orders.status, fakes.fake_orders.reason = status, reason
    got = await (await client.get("/order/7", headers=buyer())).json()
    assert got["order"]["status"] == seed == seed_order_status(status, reason or None)
    own = await (await client.get("/api/v1/orders/7", headers=buyer())).json()
    assert own["status"] == status


@pytest.mark.parametrize(
    ("status", "reason", "overdue", "seed"),
    [
        ("pending", "", False, "pending"),
        ("pending", "", True, "expired"),
        ("succeeded", "", False, "paid"),
        ("failed", "expired", True, "expired"),
        ("failed", "declined by the provider", False, "failed"),
    ],
)
async def test_seed_payment_words_and_expired_at(
    client: TestClient[Any, Any],
    fakes: Fakes,
    status: str,
    reason: str,
    overdue: bool,
    seed: str,
) -> None:
    payments = fakes.fake_payments
    payments.status, payments.reason = status, reason
    if overdue:
        payments.expires = NOW
    got = await (await client.get("/payment/order/7", headers=buyer())).json()
    assert got["status"] == seed == seed_payment_status(status, reason or None, overdue)
    assert got["expired_at"] == payments.expires.isoformat().replace("+00:00", "Z")
    assert "expires_at" not in got
    own = await (await client.get("/api/v1/orders/7/payment", headers=buyer())).json()
    assert (own["status"], "expires_at" in own, "expired_at" in own) == (status, True, False)
    assert ("token" in got, "token" in own) == (False, False)


@pytest.mark.parametrize(("overdue", "seed"), [(False, "pending"), (True, "expired")])
async def test_a_provider_session_in_the_seed_s_words_and_in_shopstream_s(
    fakes: Fakes, overdue: bool, seed: str
) -> None:
    expires = iso(
        datetime.now(UTC) - timedelta(seconds=1) if overdue else NOW + timedelta(days=3650)
    )
    session = {
        "payment_id": 9,
        "order_id": 7,
        "provider": "sandbox",
        "amount": 28.0,
        "token": "tok",
        "redirect_url": "http://shop/sandbox/pay/tok",
        "va_number": None,
        "qr_code_url": None,
        "expired_at": expires,
        "expires_at": expires,
        "status": "pending",
    }
    bus = FakeBus()
    bus.reply = Reply.success({"session": session})
    fakes.fake_payments.token = "tok"
    async with TestClient(TestServer(create_app(SETTINGS, bus=bus, grpc=fakes))) as client:
        body = {"order_id": 7, "customer_name": "Some Buyer", "customer_email": "b@example.com"}
        resp = await client.post("/payment/initiate", json=body, headers=buyer())
        assert await resp.json() == {
            "payment_id": 9,
            "token": "tok",
            "redirect_url": "http://shop/sandbox/pay/tok",
            "expired_at": expires,
            "status": seed,
        }
        resp = await client.post("/api/v1/payments/sessions", json={"order_id": 7}, headers=buyer())
        assert resp.status == 201
        own = await resp.json()
        assert (own["status"], own["expires_at"], "expired_at" in own) == (
            "pending",
            expires,
            False,
        )
        payment = await (await client.get("/payment/order/7", headers=buyer())).json()
        assert payment["token"] == payment["gateway_token"] == "tok"
        assert payment["redirect_url"] == "http://shop/sandbox/pay/tok"
    sent = [command for _, _, command, _ in bus.sent]
    assert [c["type"] for c in sent] == ["InitiatePayment", "InitiatePayment"]
    assert (sent[0]["customer_name"], sent[1]["return_path"]) == ("Some Buyer", "/#/orders/7")


async def test_oauth_start_redirects_a_browser_and_answers_a_script(
    client: TestClient[Any, Any],
) -> None:
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    resp = await client.get("/api/v1/auth/github", headers=browser, allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "https://provider.example/authorize?state=s"
    resp = await client.get("/api/v1/auth/github", headers={"Accept": "application/json"})
    assert await resp.json() == {"url": "https://provider.example/authorize?state=s"}
    assert (await client.get("/api/v1/auth/github")).status == 200


async def test_an_unconfigured_provider_is_a_4xx_naming_its_settings(
    client: TestClient[Any, Any], fakes: Fakes
) -> None:
    fakes.fake_users.configured = False
    for accept in ("text/html", "application/json"):
        resp = await client.get("/api/v1/auth/google", headers={"Accept": accept})
        body = await problem(resp, 404)
        for name in ("GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET", "GOOGLE_REDIRECT_URL"):
            assert name in body["detail"]


async def test_a_callback_without_code_is_400(client: TestClient[Any, Any]) -> None:
    await problem(await client.get("/api/v1/oauth/github/callback?state=s"), 400)
    await problem(await client.get("/api/v1/oauth/github/callback?error=access_denied"), 401)
    await problem(await client.get("/api/v1/oauth/nope/callback?code=c&state=s"), 404)


async def test_every_ref_resolves_and_models_are_the_handlers(
    client: TestClient[Any, Any],
) -> None:
    doc = await (await client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    refs = set(re.findall(r'"\$ref": "([^"]+)"', json.dumps(doc)))
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    assert {"OrderLine", "SeedOrder", "SeedPayment", "Problem"} <= schemas.keys()
    seed_order = schemas["SeedOrder"]["properties"]["status"]["enum"]
    assert set(seed_order) == {"pending", "paid", "failed", "expired", "cancelled"}
    assert "expired_at" in schemas["SeedPayment"]["required"]


async def test_allow_lists_the_documented_methods(client: TestClient[Any, Any]) -> None:
    doc = await (await client.get("/openapi.json")).json()
    for path, ops in doc["paths"].items():
        concrete = path.replace("{provider}", "github").replace("{command_id}", "x")
        concrete = re.sub(r"\{[a-z_]+\}", "1", concrete)
        resp = await client.request("TRACE", concrete)
        assert resp.status == 405, path
        assert set(resp.headers["Allow"].split(",")) == {m.upper() for m in ops}, path


async def test_docs_page_is_offline(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/docs")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert 'fetch("openapi.json")' in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
