"""The payment provider: sessions for the server's amount, signed reports, the sandbox's page."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import ValidationError

from agents.common.errors import Refused
from agents.common.settings import PAYMENT_PROVIDERS, PaymentSettings, Settings, SettingsError
from agents.payments import handlers
from agents.payments.providers import (
    REGISTRY,
    PaymentProvider,
    ProviderSession,
    SandboxProvider,
    SessionRequest,
    providers,
)
from agents.payments.repository import NewReview, PaymentRow, ReviewRow, SessionRow
from gateway.app import create_app
from gateway.auth import mint_token
from gateway.bus import BusClient
from gateway.grpc_clients import GrpcClients
from protos import payments_pb2
from tests.unit.fakes import FakeLedger, FakeOutbox, FakeTransaction
from topics.asyncapi import asyncapi_document
from topics.envelope import ErrorType
from topics.payments import (
    SIGNATURE_EXAMPLE,
    SIGNATURE_EXAMPLE_INPUT,
    SIGNATURE_EXAMPLE_SECRET,
    SIGNATURE_SCHEME,
    InitiatePayment,
    PaymentNeedsReview,
    ProviderPaymentOutcome,
    sign_report,
)

SECRET = "s" * 40
REFERENCE = "ps_issued-for-payment-3"
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
        "session_reference": REFERENCE,
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
    fields += [str(SIGNATURE_EXAMPLE["session_reference"])]
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
    assert "must carry `session_reference`" in document["info"]["description"]
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
    sandbox = SandboxProvider(PAYMENTS, SECRET)
    expires = soon()
    ask = SessionRequest(payment_id=3, order_id=11, amount=Decimal("28.00"), expires_at=expires)
    first, second = await sandbox.create_session(ask), await sandbox.create_session(ask)
    assert first.redirect_url == f"https://shop.example/sandbox/pay/{first.token}"
    assert first.expires_at == expires
    assert len(first.token) >= 32
    assert first.token != second.token


def test_a_signed_report_verifies_and_any_change_breaks_it() -> None:
    sandbox = SandboxProvider(PAYMENTS, SECRET)
    signed = sign_report(report(), SECRET)
    assert sandbox.verify(signed)
    changes: list[dict[str, Any]] = [
        {"amount": Decimal("0.01")},
        {"outcome": "failed"},
        {"payment_id": 4},
        {"session_reference": "ps_another"},
    ]
    for change in changes:
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
        self.recorded: list[tuple[Decimal, str, str]] = []
        self.reviews: list[ReviewRow] = []

    async def lock(self, payment_id: int) -> PaymentRow | None:
        return self.row if payment_id == self.row.id else None

    async def open_session(self, payment_id: int, provider: str) -> SessionRow | None:
        now = datetime.now(UTC)
        open_ = [s for s in self.sessions if s.provider == provider and s.expires_at > now]
        return open_[-1] if open_ else None

    async def add_session(
        self,
        payment: PaymentRow,
        provider: str,
        session: ProviderSession,
        return_path: str,
        reference: str,
    ) -> SessionRow:
        row = SessionRow(
            token=session.token,
            reference=reference,
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

    async def session_by_reference(self, reference: str) -> SessionRow | None:
        return next((s for s in self.sessions if s.reference == reference), None)

    async def charge_source(self, payment_id: int) -> str | None:
        return next((src for _, outcome, src in self.recorded if outcome == "succeeded"), None)

    async def add_review(self, review: NewReview) -> ReviewRow | None:
        """As the table's unique (provider, reference): one case per charge."""
        if any(
            (r.provider, r.reference) == (review.provider, review.reference) for r in self.reviews
        ):
            return None
        row = ReviewRow(
            id=len(self.reviews) + 1,
            payment_id=review.payment.id,
            order_id=review.payment.order_id,
            reason=review.reason,
            refund_required=review.refund_required,
            provider=review.provider,
            reference=review.reference,
            session_reference=review.session_reference,
            amount=review.amount,
            expected_amount=review.payment.amount,
            payment_status=review.payment.status,
            created_at=datetime.now(UTC),
        )
        self.reviews.append(row)
        return row

    async def settle(self, payment_id: int, status: str, reason: str | None = None) -> None:
        self.settled.append((status, reason))
        self.row = replace(self.row, status=status, reason=reason)

    async def record(self, payment_id: int, money: Decimal, outcome: str, source: str) -> None:
        self.recorded.append((money, outcome, source))


def issued(
    reference: str = REFERENCE, payment_id: int = 3, provider: str = "sandbox"
) -> SessionRow:
    """A session the platform opened (and so a reference it issued)."""
    return SessionRow(
        token=f"token-{reference}",
        reference=reference,
        payment_id=payment_id,
        order_id=11,
        provider=provider,
        amount=Decimal("28.00"),
        redirect_url="https://shop.example/sandbox/pay/x",
        return_path="/",
        va_number="",
        qr_code_url="",
        expires_at=soon(),
        payment_status="pending",
    )


class FakeUnitOfWork(FakeTransaction):
    def __init__(self, row: PaymentRow, sessions: Sequence[SessionRow] = ()) -> None:
        self.payments = FakePayments(row)
        self.payments.sessions.extend(sessions)
        self.ledger = FakeLedger()
        self.outbox = FakeOutbox()


class RecordingProvider(SandboxProvider):
    def __init__(self) -> None:
        super().__init__(PAYMENTS, SECRET)
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
    # The platform issues the session's reference and tells the provider; reports carry it.
    assert sandbox.asked[0].reference == uow.payments.sessions[0].reference == session["reference"]
    assert session["reference"].startswith("ps_")
    assert len(session["reference"]) >= 24


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
    uow = FakeUnitOfWork(payment(), [issued()])
    paid = sign_report(report(), SECRET)
    for _ in range(2):
        await handlers.provider_outcome(paid, uow)  # type: ignore[arg-type]
    late = sign_report(report(outcome="failed"), SECRET)
    await handlers.provider_outcome(late, uow)  # type: ignore[arg-type]
    # The same charge again under a new event id: the charge the payment has, no case.
    again = sign_report(report(), SECRET)
    await handlers.provider_outcome(again, uow)  # type: ignore[arg-type]
    assert uow.payments.settled == [("succeeded", None)]
    assert [type(e).__name__ for _, _, e in uow.outbox.events] == ["PaymentSucceeded"]
    assert uow.payments.reviews == []


async def test_a_declined_report_fails_the_payment_with_the_reason() -> None:
    uow = FakeUnitOfWork(payment(), [issued()])
    declined = sign_report(report(outcome="failed", reason="declined by the shopper"), SECRET)
    await handlers.provider_outcome(declined, uow)  # type: ignore[arg-type]
    assert uow.payments.settled == [("failed", "declined by the shopper")]
    assert [type(e).__name__ for _, _, e in uow.outbox.events] == ["PaymentFailed"]


# --- reports bound to what the platform issued -------------------------------------------------


def test_each_provider_s_reports_are_checked_with_its_own_secret() -> None:
    """A report naming provider A verifies only with A's secret: B's, though B is known and its
    own reports verify, is refused."""
    acme_secret = "a" * 40
    known: dict[str, PaymentProvider] = {
        "sandbox": SandboxProvider(PAYMENTS, SECRET),
        "acme": SandboxProvider(PAYMENTS, acme_secret),
    }
    decode = handlers.report_decoder(known)
    for name, secret in (("sandbox", SECRET), ("acme", acme_secret)):
        good = sign_report(report(provider=name), secret)
        assert decode(good.model_dump_json().encode()) == good
    for name, wrong in (("sandbox", acme_secret), ("acme", SECRET)):
        crossed = sign_report(report(provider=name), wrong).model_dump_json().encode()
        with pytest.raises(ValidationError, match=f"secret of provider {name}"):
            decode(crossed)


def test_a_report_without_the_session_reference_is_invalid() -> None:
    unbound = {**report(), "signature": "0" * 64}
    del unbound["session_reference"]
    with pytest.raises(ValidationError, match="session_reference"):
        ProviderPaymentOutcome.model_validate(unbound)


def test_provider_secrets_come_one_per_provider_from_the_settings() -> None:
    base = {"JWT_SECRET": "k" * 64}
    listed = Settings.from_env(base | {"PAYMENT_PROVIDER_SECRETS": f"sandbox={SECRET}"})
    assert listed.payments.secrets == {"sandbox": SECRET}
    listed.require_payment_secrets()
    made = providers(listed.payments)["sandbox"]
    assert made.verify(sign_report(report(), SECRET))
    assert not made.verify(sign_report(report(), "t" * 40))
    for bad, why in [
        ({"PAYMENT_PROVIDER_SECRETS": f"acme={SECRET}"}, "no payment provider acme"),
        ({"PAYMENT_PROVIDER_SECRETS": "sandbox=short"}, "at least 32"),
        ({"PAYMENT_PROVIDER_SECRETS": SECRET}, "name=secret"),
        (
            {"PAYMENT_PROVIDER_SECRETS": f"sandbox={SECRET}", "SANDBOX_PROVIDER_SECRET": "u" * 40},
            "differ",
        ),
    ]:
        with pytest.raises(SettingsError, match=why):
            Settings.from_env(base | bad)
    assert SECRET not in repr(listed)
    assert set(REGISTRY) == set(PAYMENT_PROVIDERS), "every provider settings accept is made"


@pytest.mark.parametrize(
    ("sessions", "changes", "why"),
    [
        ([], {}, "no session has the reference"),
        ([issued(payment_id=4)], {}, "is not for payment 3"),
        ([issued(provider="acme")], {}, "was opened with acme, not sandbox"),
        ([issued()], {"session_reference": "ps_made-up"}, "no session has the reference"),
        ([issued()], {"payment_id": 9}, "payment 9 does not exist"),
    ],
    ids=["unknown", "another-payment", "another-provider", "made-up", "no-payment"],
)
async def test_a_report_not_bound_to_an_issued_session_is_refused(
    sessions: list[SessionRow], changes: dict[str, Any], why: str
) -> None:
    """Correctly signed, but for no session the platform opened for that payment with that
    provider: refused (dead-lettered by the agent), nothing recorded, not even as handled."""
    uow = FakeUnitOfWork(payment(), sessions)
    forged = sign_report(report(**changes), SECRET)
    with pytest.raises(Refused, match=why):
        await handlers.provider_outcome(forged, uow)  # type: ignore[arg-type]
    assert uow.payments.settled == []
    assert uow.payments.recorded == []
    assert uow.outbox.events == []
    assert uow.ledger.replies == {}


# --- reconciliation: money the payment cannot take ---------------------------------------------


def _review_events(uow: FakeUnitOfWork) -> list[PaymentNeedsReview]:
    return [e for _, _, e in uow.outbox.events if isinstance(e, PaymentNeedsReview)]


async def test_a_success_for_another_amount_fails_the_payment_and_opens_a_refund_case() -> None:
    uow = FakeUnitOfWork(payment(), [issued()])
    wrong = sign_report(report(amount="27.00"), SECRET)
    for _ in range(2):  # redelivered: one case
        await handlers.provider_outcome(wrong, uow)  # type: ignore[arg-type]
    assert uow.payments.settled == [("failed", "amount mismatch")]
    assert [type(e).__name__ for _, _, e in uow.outbox.events] == [
        "PaymentNeedsReview",
        "PaymentFailed",
    ]
    (event,) = _review_events(uow)
    assert (event.reason, event.refund_required) == ("amount_mismatch", True)
    assert (event.amount, event.expected_amount) == (Decimal("27.00"), Decimal("28.00"))
    assert (event.order_id, event.session_reference) == (11, REFERENCE)
    (case,) = uow.payments.reviews
    assert (case.reason, case.payment_status) == ("amount_mismatch", "pending")


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        ("failed", "expired", "paid_after_expiry"),
        ("failed", "declined by the shopper", "paid_after_failure"),
        ("succeeded", None, "duplicate_success"),
    ],
)
async def test_a_success_after_the_payment_is_settled_opens_one_refund_case(
    status: str, reason: str | None, expected: str
) -> None:
    """The order is left as it is (cancelled, or paid once); the money is a case."""
    uow = FakeUnitOfWork(replace(payment(status=status), reason=reason), [issued()])
    if status == "succeeded":
        uow.payments.recorded.append((Decimal("28.00"), "succeeded", "api"))
    late = sign_report(report(reference="psp-late-1"), SECRET)
    await handlers.provider_outcome(late, uow)  # type: ignore[arg-type]
    await handlers.provider_outcome(late, uow)  # type: ignore[arg-type]
    # The provider's retry with a new event id: the same charge, still one case.
    await handlers.provider_outcome(sign_report(report(reference="psp-late-1"), SECRET), uow)  # type: ignore[arg-type]
    assert uow.payments.settled == []
    (event,) = _review_events(uow)
    assert [type(e).__name__ for _, _, e in uow.outbox.events] == ["PaymentNeedsReview"]
    assert (event.reason, event.refund_required, event.reference) == (expected, True, "psp-late-1")
    assert [r.reason for r in uow.payments.reviews] == [expected]


async def test_a_decline_after_the_payment_is_settled_changes_nothing() -> None:
    uow = FakeUnitOfWork(replace(payment(status="failed"), reason="expired"), [issued()])
    await handlers.provider_outcome(sign_report(report(outcome="failed"), SECRET), uow)  # type: ignore[arg-type]
    assert (uow.payments.settled, uow.outbox.events, uow.payments.reviews) == ([], [], [])
    assert [o for _, o, _ in uow.payments.recorded] == ["ignored:failed"]


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
        self.asked_reviews: list[payments_pb2.ListReviewsRequest] = []

    async def ListReviews(
        self, request: payments_pb2.ListReviewsRequest, **kw: Any
    ) -> payments_pb2.ListReviewsResponse:
        self.asked_reviews.append(request)
        review = payments_pb2.PaymentReview(
            id=5,
            payment_id=3,
            order_id=11,
            reason="paid_after_expiry",
            refund_required=True,
            provider="sandbox",
            reference="psp-9",
            session_reference="ps_open",
            amount="28.00",
            expected_amount="28.00",
            payment_status="failed",
            created_at=_ts(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        )
        return payments_pb2.ListReviewsResponse(reviews=[review])

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
            reference=f"ps_{token}",
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
    assert SandboxProvider(GATEWAY.payments, SECRET).verify(sent)
    assert sent.session_reference == "ps_open"
    assert ProviderPaymentOutcome.model_validate_json(again[2]).event_id == sent.event_id


async def test_no_report_for_a_closed_session_or_without_a_decision(
    sandbox: tuple[TestClient[Any, Any], FakeBus, FakePaymentStub],
) -> None:
    client, bus, _ = sandbox
    assert (await client.post("/sandbox/pay/paid", data={"decision": "approve"})).status == 409
    assert (await client.post("/sandbox/pay/late", data={"decision": "approve"})).status == 410
    assert (await client.post("/sandbox/pay/open", data={"decision": "maybe"})).status == 422
    assert bus.published == []


# --- reconciliation cases at the gateway -------------------------------------------------------


async def test_only_an_admin_lists_the_reconciliation_cases(
    sandbox: tuple[TestClient[Any, Any], FakeBus, FakePaymentStub],
) -> None:
    client, _, stub = sandbox

    def bearer(role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(GATEWAY, sub='7', role=role)}"}

    path = "/api/v1/admin/payments/reviews"
    assert (await client.get(path)).status == 401
    assert (await client.get(path, headers=bearer("user"))).status == 403
    assert (await client.get(f"{path}?limit=101", headers=bearer("admin"))).status == 422
    resp = await client.get(f"{path}?offset=20&limit=10", headers=bearer("admin"))
    assert resp.status == 200
    (case,) = (await resp.json())["reviews"]
    assert case == {
        "id": 5,
        "payment_id": 3,
        "order_id": 11,
        "reason": "paid_after_expiry",
        "refund_required": True,
        "provider": "sandbox",
        "reference": "psp-9",
        "session_reference": "ps_open",
        "amount": 28.0,
        "expected_amount": 28.0,
        "payment_status": "failed",
        "created_at": "2026-01-02T03:04:05Z",
    }
    assert [(a.offset, a.limit) for a in stub.asked_reviews] == [(20, 10)]
