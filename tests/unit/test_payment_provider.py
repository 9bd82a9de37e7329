"""The payment provider: sessions for the server's amount, signed reports, the sandbox's page."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any, Self

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import ValidationError

from agents.common.settings import PaymentSettings, Settings
from agents.payments import handlers
from agents.payments.providers import (
    PaymentProvider,
    ProviderSession,
    SandboxProvider,
    SessionRequest,
    providers,
)
from agents.payments.repository import PaymentRow, SessionRow
from gateway.app import create_app
from gateway.bus import BusClient
from gateway.grpc_clients import GrpcClients
from protos import payments_pb2
from tests.unit.fakes import FakeLedger, FakeOutbox
from topics.asyncapi import asyncapi_document
from topics.envelope import ErrorType
from topics.payments import (
    SIGNATURE_EXAMPLE,
    SIGNATURE_EXAMPLE_INPUT,
    SIGNATURE_EXAMPLE_SECRET,
    SIGNATURE_SCHEME,
    InitiatePayment,
    ProviderPaymentOutcome,
    sign_report,
)

SECRET = "s" * 40
PAYMENTS = PaymentSettings(public_url="https://shop.example", sandbox_secret=SECRET)


def soon() -> datetime:
    """Ten minutes from now, taken when a test runs (the suite may run long after import)."""
    return datetime.now(UTC) + timedelta(minutes=10)


def payment(
    status: str = "pending", user_id: int = 7, expires_at: datetime | None = None
) -> PaymentRow:
    now = datetime.now(UTC)
    return PaymentRow(
        id=3,
        order_id=11,
        user_id=user_id,
        amount=Decimal("28.00"),
        status=status,
        reason=None,
        expires_at=expires_at or soon(),
        created_at=now,
        updated_at=now,
    )


def report(**changes: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "payment_id": 3,
        "outcome": "succeeded",
        "amount": "28.00",
        "reference": "sandbox:abc",
    } | changes


# --- what partners are told to send (docs/asyncapi.json) ---------------------------------------


def test_the_documented_signature_example_is_what_the_platform_accepts() -> None:
    """The example follows the documented scheme computed by hand, not only by our own code."""
    by_hand = hmac.new(
        SIGNATURE_EXAMPLE_SECRET.encode(), SIGNATURE_EXAMPLE_INPUT.encode(), hashlib.sha256
    ).hexdigest()
    assert by_hand == SIGNATURE_EXAMPLE["signature"]
    fields = [str(SIGNATURE_EXAMPLE[k]) for k in ("event_id", "payment_id", "outcome", "amount")]
    fields += [str(SIGNATURE_EXAMPLE[k]) for k in ("reference", "reason", "provider")]
    assert "|".join(fields) == SIGNATURE_EXAMPLE_INPUT
    report = ProviderPaymentOutcome.model_validate(SIGNATURE_EXAMPLE)
    assert report.signing_input() == SIGNATURE_EXAMPLE_INPUT.encode()
    assert report.signed_by(SIGNATURE_EXAMPLE_SECRET)
    # The canonical UUID and two decimals, whatever the report's JSON holds.
    loose = {**SIGNATURE_EXAMPLE, "event_id": str(SIGNATURE_EXAMPLE["event_id"]).upper()}
    assert ProviderPaymentOutcome.model_validate(loose | {"amount": 28}).signed_by(
        SIGNATURE_EXAMPLE_SECRET
    )


def test_the_asyncapi_document_says_what_partners_must_send() -> None:
    document = asyncapi_document()
    assert document["info"]["version"].split(".")[0] == "3", "a new required field: major"
    assert "must carry `signature`" in document["info"]["description"]
    message = document["components"]["messages"]["ProviderPaymentOutcome"]
    assert "signature" in message["payload"]["required"]
    assert message["description"] == SIGNATURE_SCHEME
    assert "HMAC-SHA256" in SIGNATURE_SCHEME
    for name in ProviderPaymentOutcome.model_fields.keys() - {"type", "signature"}:
        assert f"`{name}`" in SIGNATURE_SCHEME, name
    (example,) = message["examples"]
    assert example["payload"] == SIGNATURE_EXAMPLE
    assert SIGNATURE_EXAMPLE_INPUT in example["summary"]


# --- the sandbox provider and signed reports --------------------------------------------------


async def test_a_sandbox_session_is_a_page_at_the_public_url_for_the_payment_s_expiry() -> None:
    sandbox = SandboxProvider(PAYMENTS)
    expires = soon()
    ask = SessionRequest(payment_id=3, order_id=11, amount=Decimal("28.00"), expires_at=expires)
    first, second = await sandbox.create_session(ask), await sandbox.create_session(ask)
    assert first.redirect_url == f"https://shop.example/sandbox/pay/{first.token}"
    assert first.expires_at == expires
    assert len(first.token) >= 32
    assert first.token != second.token


def test_a_signed_report_verifies_and_any_change_breaks_it() -> None:
    sandbox = SandboxProvider(PAYMENTS)
    signed = sign_report(report(), SECRET)
    assert sandbox.verify(signed)
    for change in ({"amount": Decimal("0.01")}, {"outcome": "failed"}, {"payment_id": 4}):
        assert not sandbox.verify(signed.model_copy(update=change)), change
    assert not sandbox.verify(sign_report(report(), "another-secret-" + "x" * 30))
    assert not signed.signed_by("")


def test_the_decoder_refuses_reports_not_signed_by_a_known_provider() -> None:
    decode = handlers.report_decoder(providers(PAYMENTS))
    good = sign_report(report(), SECRET)
    assert decode(good.model_dump_json().encode()) == good
    forged = sign_report(report(), "forger-" + "x" * 40).model_dump_json().encode()
    with pytest.raises(ValidationError) as caught:
        decode(forged)
    assert caught.value.errors()[0]["loc"] == ("signature",)
    stranger = sign_report(report(provider="acme"), SECRET).model_dump_json().encode()
    with pytest.raises(ValidationError, match="provider acme"):
        decode(stranger)
    with pytest.raises(ValidationError):
        decode(b'{"type": "ProviderPaymentOutcome", "payment_id": 3}')


@pytest.mark.parametrize("path", ["//evil.example/", "https://evil.example", "/\\evil", "x"])
def test_a_return_path_is_a_path_on_the_platform_s_own_site(path: str) -> None:
    with pytest.raises(ValidationError):
        InitiatePayment(command_id=uuid.uuid4(), payment_id=1, user_id=1, return_path=path)
    assert InitiatePayment(command_id=uuid.uuid4(), payment_id=1, user_id=1).return_path == "/"


# --- initiating, with the payments unit of work faked ------------------------------------------


class FakePayments:
    def __init__(self, row: PaymentRow) -> None:
        self.row = row
        self.sessions: list[SessionRow] = []
        self.settled: list[tuple[str, str | None]] = []

    async def lock(self, payment_id: int) -> PaymentRow | None:
        return self.row if payment_id == self.row.id else None

    async def open_session(self, payment_id: int, provider: str) -> SessionRow | None:
        now = datetime.now(UTC)
        open_ = [s for s in self.sessions if s.provider == provider and s.expires_at > now]
        return open_[-1] if open_ else None

    async def add_session(
        self, payment: PaymentRow, provider: str, session: ProviderSession, return_path: str
    ) -> SessionRow:
        row = SessionRow(
            token=session.token,
            payment_id=payment.id,
            order_id=payment.order_id,
            provider=provider,
            amount=payment.amount,
            redirect_url=session.redirect_url,
            return_path=return_path,
            va_number="",
            qr_code_url="",
            expires_at=session.expires_at,
            payment_status=payment.status,
        )
        self.sessions.append(row)
        return row

    async def settle(self, payment_id: int, status: str, reason: str | None = None) -> None:
        self.settled.append((status, reason))
        self.row = replace(self.row, status=status, reason=reason)

    async def record(self, payment_id: int, money: Decimal, outcome: str, source: str) -> None:
        return None


class FakeUnitOfWork:
    def __init__(self, row: PaymentRow) -> None:
        self.payments = FakePayments(row)
        self.ledger = FakeLedger()
        self.outbox = FakeOutbox()

    async def __aenter__(self) -> Self:
        return self

    async def commit(self) -> None:
        return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class RecordingProvider(SandboxProvider):
    def __init__(self) -> None:
        super().__init__(PAYMENTS)
        self.asked: list[SessionRequest] = []

    async def create_session(self, request: SessionRequest) -> ProviderSession:
        self.asked.append(request)
        return await super().create_session(request)


def initiate(user_id: int = 7, provider: str = "sandbox") -> InitiatePayment:
    return InitiatePayment(
        command_id=uuid.uuid4(),
        payment_id=3,
        user_id=user_id,
        provider=provider,
        return_path="/#/orders/11",
    )


async def test_a_session_is_opened_for_the_payment_s_amount_and_reused_while_open() -> None:
    uow, sandbox = FakeUnitOfWork(payment()), RecordingProvider()
    known: dict[str, PaymentProvider] = {"sandbox": sandbox}
    first = await handlers.initiate(initiate(), uow, known)  # type: ignore[arg-type]
    again = await handlers.initiate(initiate(), uow, known)  # type: ignore[arg-type]
    assert first.ok
    assert again.ok
    assert first.result is not None
    assert again.result is not None
    session = first.result["session"]
    assert session["amount"] == 28.0
    assert session["status"] == "pending"
    assert session["redirect_url"] == f"https://shop.example/sandbox/pay/{session['token']}"
    assert again.result["session"]["token"] == session["token"]
    assert [a.amount for a in sandbox.asked] == [Decimal("28.00")]
    assert uow.payments.sessions[0].return_path == "/#/orders/11"


@pytest.mark.parametrize(
    ("row", "who", "provider", "error"),
    [
        (payment(), 8, "sandbox", ErrorType.NOT_FOUND),
        (payment(status="succeeded"), 7, "sandbox", ErrorType.CONFLICT),
        (payment(status="failed"), 7, "sandbox", ErrorType.CONFLICT),
        (payment(expires_at=datetime.now(UTC) - timedelta(seconds=1)), 7, "sandbox", "conflict"),
        (payment(), 7, "acme", ErrorType.INVALID),
    ],
)
async def test_a_session_only_for_the_caller_s_payment_still_to_pay(
    row: PaymentRow, who: int, provider: str, error: str
) -> None:
    uow = FakeUnitOfWork(row)
    reply = await handlers.initiate(initiate(who, provider), uow, providers(PAYMENTS))  # type: ignore[arg-type]
    assert not reply.ok
    assert reply.error is not None
    assert reply.error.type == error
    assert uow.payments.sessions == []


async def test_a_report_settles_the_payment_once_however_often_it_comes() -> None:
    uow = FakeUnitOfWork(payment())
    paid = sign_report(report(), SECRET)
    for _ in range(2):
        await handlers.provider_outcome(paid, uow)  # type: ignore[arg-type]
    late = sign_report(report(outcome="failed"), SECRET)
    await handlers.provider_outcome(late, uow)  # type: ignore[arg-type]
    assert uow.payments.settled == [("succeeded", None)]
    assert [type(e).__name__ for _, _, e in uow.outbox.events] == ["PaymentSucceeded"]


async def test_a_declined_report_fails_the_payment_with_the_reason() -> None:
    uow = FakeUnitOfWork(payment())
    declined = sign_report(report(outcome="failed", reason="declined by the shopper"), SECRET)
    await handlers.provider_outcome(declined, uow)  # type: ignore[arg-type]
    assert uow.payments.settled == [("failed", "declined by the shopper")]
    assert [type(e).__name__ for _, _, e in uow.outbox.events] == ["PaymentFailed"]


# --- the sandbox's hosted page at the gateway --------------------------------------------------

GATEWAY = Settings.from_env(
    {"JWT_SECRET": "k" * 64, "SANDBOX_PROVIDER_SECRET": SECRET, "PUBLIC_URL": "http://shop"}
)


def _ts(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


class FakePaymentStub:
    def __init__(self) -> None:
        self.sessions: dict[str, payments_pb2.PaymentSession] = {}

    async def GetSession(
        self, request: payments_pb2.GetSessionRequest, **kw: Any
    ) -> payments_pb2.PaymentSession:
        if request.token not in self.sessions:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata()
            )
        return self.sessions[request.token]


class FakeGrpc(GrpcClients):
    stub = FakePaymentStub()

    @property
    def payments(self) -> Any:
        return self.stub


class FakeBus(BusClient):
    def __init__(self) -> None:
        super().__init__(GATEWAY)
        self.published: list[tuple[str, str, bytes, dict[str, bytes]]] = []

    async def publish(
        self, topic: str, key: str, value: bytes, *, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        self.published.append((topic, key, value, dict(headers)))


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[TestClient[Any, Any], FakeBus, FakePaymentStub]]:
    bus, grpc_ = FakeBus(), FakeGrpc(GATEWAY.grpc)
    grpc_.stub = FakePaymentStub()
    for token, status, expires in [
        ("open", "pending", soon()),
        ("paid", "succeeded", soon()),
        ("late", "pending", datetime.now(UTC) - timedelta(seconds=1)),
    ]:
        grpc_.stub.sessions[token] = payments_pb2.PaymentSession(
            token=token,
            payment_id=3,
            order_id=11,
            provider="sandbox",
            amount="28.00",
            return_path="/#/orders/11",
            expires_at=_ts(expires),
            payment_status=status,
        )
    async with TestClient(TestServer(create_app(GATEWAY, bus=bus, grpc=grpc_))) as client:
        yield client, bus, grpc_.stub


async def test_the_hosted_page_shows_the_amount_and_loads_nothing_from_elsewhere(
    sandbox: tuple[TestClient[Any, Any], FakeBus, FakePaymentStub],
) -> None:
    client, _, _ = sandbox
    resp = await client.get("/sandbox/pay/open")
    assert resp.status == 200
    page = await resp.text()
    assert '<dd id="amount">28.00</dd>' in page
    assert 'value="approve"' in page
    assert 'value="decline"' in page
    assert "src=" not in page
    assert "href=" not in page
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    assert (await client.get("/sandbox/pay/nope")).status == 404
    assert (await client.get("/sandbox/pay/paid")).status == 409
    assert (await client.get("/sandbox/pay/late")).status == 410


@pytest.mark.parametrize(("decision", "outcome"), [("approve", "succeeded"), ("decline", "failed")])
async def test_a_decision_is_reported_signed_and_the_shopper_sent_back(
    sandbox: tuple[TestClient[Any, Any], FakeBus, FakePaymentStub], decision: str, outcome: str
) -> None:
    client, bus, _ = sandbox
    for _ in range(2):
        resp = await client.post(
            "/sandbox/pay/open", data={"decision": decision}, allow_redirects=False
        )
        assert resp.status == 303
        assert resp.headers["Location"] == "/#/orders/11"
    (topic, key, value, headers), again = bus.published
    assert (topic, key, headers["x-type"]) == (
        "payments.provider-events",
        "3",
        b"ProviderPaymentOutcome",
    )
    sent = ProviderPaymentOutcome.model_validate_json(value)
    assert (sent.outcome, sent.amount, sent.payment_id) == (outcome, Decimal("28.00"), 3)
    assert SandboxProvider(GATEWAY.payments).verify(sent)
    assert ProviderPaymentOutcome.model_validate_json(again[2]).event_id == sent.event_id


async def test_no_report_for_a_closed_session_or_without_a_decision(
    sandbox: tuple[TestClient[Any, Any], FakeBus, FakePaymentStub],
) -> None:
    client, bus, _ = sandbox
    assert (await client.post("/sandbox/pay/paid", data={"decision": "approve"})).status == 409
    assert (await client.post("/sandbox/pay/late", data={"decision": "approve"})).status == 410
    assert (await client.post("/sandbox/pay/open", data={"decision": "maybe"})).status == 422
    assert bus.published == []
