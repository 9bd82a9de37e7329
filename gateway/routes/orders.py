"""Orders and payments: the seed's /order/ and /payment/ routes verbatim, and /api/v1 beside them.

Placing and paying are commands on Kafka; reading is gRPC. A user sees only their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import grpc
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway.api import Handler, Operation, PathParam, Response, add_operations
from gateway.auth import require_role
from gateway.bus import BusTimeout
from gateway.keys import GRPC, IDENTITY, SETTINGS
from gateway.problems import Problem
from gateway.routes import (
    command_id,
    grpc_options,
    iso_time,
    json_response,
    request_reply,
    send_command,
)
from gateway.schemas import (
    Accepted,
    InitiatedPayment,
    Order,
    OrderList,
    OrderRejected,
    Paid,
    Payment,
    PaymentReview,
    PaymentReviewList,
    PaymentSession,
    PlacedOrder,
    SeedOrder,
    SeedOrderList,
    SeedOrderRejected,
    SeedPayment,
    SeedPlacedOrder,
    seed_order_status,
    seed_payment_status,
)
from gateway.validation import ASCII_DIGITS, parse_id, parse_uuid, read_body, read_query
from protos import orders_pb2, payments_pb2
from topics import ORDERS_COMMANDS, PAYMENTS_COMMANDS
from topics.orders import PlaceOrder
from topics.payments import Id, InitiatePayment, Money, PayPayment, ReturnPath
from topics.products import OrderLine
from topics.text import NO_NUL

PAGE = 10
# The seed's storefront asks for offsets 0, 15, 30… and takes fewer than 15 as the last page.
SEED_PAGE = 15
MAX_ID = 2**63 - 1


class OrderBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: Annotated[list[OrderLine], Field(min_length=1, max_length=100)]
    # The seed's clients send a total; the server computes it and never reads this one.
    total_price: float | None = None


class PaymentBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    payment_id: Annotated[int, Field(ge=1, le=MAX_ID)]
    money: Money


class OffsetQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    offset: Annotated[
        int, Field(ge=0, le=10_000_000, description="orders to skip"), ASCII_DIGITS
    ] = 0


class ReviewQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    offset: Annotated[int, Field(ge=0, le=10_000_000, description="cases to skip")] = 0
    limit: Annotated[int, Field(ge=1, le=100, description="cases per page")] = 20


class _Customer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    customer_name: Annotated[str, Field(max_length=200, pattern=NO_NUL)] = ""
    customer_email: Annotated[str, Field(max_length=254, pattern=NO_NUL)] = ""
    customer_phone: Annotated[str, Field(max_length=50, pattern=NO_NUL)] = ""
    payment_method: Annotated[str, Field(max_length=50, pattern=NO_NUL)] = ""
    payment_channel: Annotated[str, Field(max_length=50, pattern=NO_NUL)] = ""


class InitiateBody(_Customer):
    """The seed's `POST /payment/initiate`; no amount: the payment's own is charged."""

    order_id: Id
    customer_name: Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]
    customer_email: Annotated[str, Field(min_length=3, max_length=254, pattern=NO_NUL)]


class SessionBody(_Customer):
    order_id: Id
    return_path: ReturnPath | None = Field(
        default=None,
        description="where the provider's page sends the shopper back (default: the order's page)",
    )


def _money(value: str) -> float | None:
    return float(Decimal(value)) if value else None


def order_json(o: orders_pb2.Order) -> Order:
    return Order.model_validate(
        {
            "id": o.id,
            "user_id": o.user_id,
            "total_price": _money(o.total_price),
            "status": o.status,
            "reason": o.reason or None,
            "created_at": iso_time(o.created_at),
            "updated_at": iso_time(o.updated_at),
            "order_items": [
                {
                    "id": i.id,
                    "order_id": i.order_id,
                    "product_id": i.product_id,
                    "quantity": i.quantity,
                    "price": _money(i.price),
                }
                for i in o.items
            ],
            "status_history": [
                {"status": h.status, "reason": h.reason or None, "at": iso_time(h.at)}
                for h in o.history
            ],
        }
    )


def seed_order(order: Order) -> SeedOrder:
    """The order in the seed's words."""
    return SeedOrder.model_validate(
        {
            **order.model_dump(exclude={"status_history"}),
            "status": seed_order_status(order.status, order.reason),
        }
    )


def payment_json(p: payments_pb2.Payment) -> Payment:
    amount = _money(p.amount)
    session = (
        {"token": p.token, "gateway_token": p.token, "redirect_url": p.redirect_url}
        if p.token
        else {}
    )
    return Payment.model_validate(
        {
            "id": p.id,
            "order_id": p.order_id,
            "user_id": p.user_id,
            "amount": amount,
            "total_price": amount,
            "status": p.status,
            "reason": p.reason or None,
            "expires_at": iso_time(p.expires_at),
            "created_at": iso_time(p.created_at),
            "updated_at": iso_time(p.updated_at),
            **session,
        }
    )


def seed_payment(p: payments_pb2.Payment) -> SeedPayment:
    """The payment in the seed's words: `paid`, `expired`, and `expired_at` for its deadline."""
    payment = payment_json(p)
    overdue = p.expires_at.ToDatetime(tzinfo=UTC) <= datetime.now(UTC)
    return SeedPayment.model_validate(
        {
            # Unset: no session's token yet, so none in the answer.
            **payment.model_dump(exclude={"expires_at"}, exclude_unset=True),
            "status": seed_payment_status(payment.status, payment.reason, overdue),
            "expired_at": payment.expires_at,
        }
    )


def _user_id(request: web.Request) -> int:
    user_id = parse_id(request[IDENTITY].user_id)
    if user_id is None:
        raise Problem(
            403, "orders need an account: log in (a dev token has no user)", code="forbidden"
        )
    return user_id


def _request_hash(body: OrderBody) -> str:
    lines = sorted((line.product_id, line.quantity) for line in body.items)
    return hashlib.sha256(json.dumps(lines).encode()).hexdigest()


async def _place(request: web.Request) -> Order | web.Response:
    """The placed order, or a 202 to poll when the outcome did not come in time."""
    user_id = _user_id(request)
    body = await read_body(request, OrderBody)
    cid = command_id(request, "orders.place")
    cmd = PlaceOrder(
        command_id=cid, user_id=user_id, items=body.items, request_hash=_request_hash(body)
    )
    try:
        reply = await request_reply(request, ORDERS_COMMANDS.name, str(user_id), cmd)
    except BusTimeout:
        location = f"/api/v1/orders/requests/{cid}"
        return json_response(
            Accepted(message="accepted: the order is being placed", location=location),
            status=202,
            headers={"Location": location},
        )
    if not reply.ok:
        assert reply.error is not None
        raise Problem.of(reply.error.type, reply.error.detail, reply.error.errors)
    assert reply.result is not None
    return Order.model_validate(reply.result["order"])


def _rejected(order: Order, shown: BaseModel) -> Problem:
    return Problem(
        409,
        f"order {order.id} was rejected: {order.reason}",
        code="conflict",
        extra={"order": shown.model_dump(mode="json")},
    )


def _placed_headers(order: Order) -> dict[str, str]:
    return {"Location": f"/api/v1/orders/{order.id}"}


@require_role("user", "admin")
async def place_order(request: web.Request) -> web.Response:
    order = await _place(request)
    if isinstance(order, web.Response):
        return order
    if order.status == "rejected":
        raise _rejected(order, order)
    return json_response(PlacedOrder(order=order), status=201, headers=_placed_headers(order))


@require_role("user", "admin")
async def seed_place_order(request: web.Request) -> web.Response:
    order = await _place(request)
    if isinstance(order, web.Response):
        return order
    shown = seed_order(order)
    if order.status == "rejected":
        raise _rejected(order, shown)
    return json_response(SeedPlacedOrder(order=shown), status=201, headers=_placed_headers(order))


async def _orders(request: web.Request, limit: int) -> list[Order]:
    offset = read_query(request, OffsetQuery).offset
    reply = await request.app[GRPC].orders.ListOrders(
        orders_pb2.ListOrdersRequest(user_id=_user_id(request), offset=offset, limit=limit),
        **grpc_options(request),
    )
    return [order_json(o) for o in reply.orders]


@require_role("user", "admin")
async def list_orders(request: web.Request) -> web.Response:
    return json_response(OrderList(orders=await _orders(request, PAGE)))


@require_role("user", "admin")
async def seed_list_orders(request: web.Request) -> web.Response:
    orders = await _orders(request, SEED_PAGE)
    return json_response(SeedOrderList(orders=[seed_order(o) for o in orders]))


def _id(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    value = parse_id(raw)
    if value is None:
        raise Problem(404, f"no such {name.removesuffix('_id')} {raw}", code="not_found")
    return value


async def _order(request: web.Request) -> Order:
    reply = await request.app[GRPC].orders.GetOrder(
        orders_pb2.GetOrderRequest(user_id=_user_id(request), order_id=_id(request, "order_id")),
        **grpc_options(request),
    )
    return order_json(reply)


@require_role("user", "admin")
async def get_order(request: web.Request) -> web.Response:
    return json_response(await _order(request))


@require_role("user", "admin")
async def seed_get_order(request: web.Request) -> web.Response:
    return json_response(SeedPlacedOrder(order=seed_order(await _order(request))))


@require_role("user", "admin")
async def order_by_request(request: web.Request) -> web.Response:
    raw = request.match_info["command_id"]
    requested = parse_uuid(raw)
    if requested is None:
        raise Problem(404, f"no order request {raw}", code="not_found")
    reply = await request.app[GRPC].orders.GetOrderByRequest(
        orders_pb2.GetOrderByRequestRequest(user_id=_user_id(request), command_id=str(requested)),
        **grpc_options(request),
    )
    return json_response(order_json(reply))


@require_role("user", "admin")
async def pay(request: web.Request) -> web.Response:
    body = await read_body(request, PaymentBody)
    cmd = PayPayment(
        command_id=command_id(request, "payments.pay"),
        payment_id=body.payment_id,
        user_id=_user_id(request),
        money=body.money,
    )
    result = await send_command(request, PAYMENTS_COMMANDS.name, str(body.payment_id), cmd)
    return json_response(Paid.model_validate(result))


# Statuses of an order whose payment exists, or is being created from its OrderAwaitingPayment.
HAS_PAYMENT = ("awaiting_payment", "paid", "cancelled")
PAYMENT_POLL_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


@require_role("user", "admin")
async def payment_by_order(request: web.Request) -> web.Response:
    payment = await order_payment(request, _user_id(request), _id(request, "order_id"))
    return json_response(payment_json(payment))


@require_role("user", "admin")
async def seed_payment_by_order(request: web.Request) -> web.Response:
    payment = await order_payment(request, _user_id(request), _id(request, "order_id"))
    return json_response(seed_payment(payment))


async def order_payment(request: web.Request, user_id: int, order_id: int) -> payments_pb2.Payment:
    """The order's payment. It follows the order's acceptance as an event, so right after a
    201 it may not exist yet: then the gateway waits for it (within the request's deadline)
    rather than answer a wrong 404."""
    grpc_ = request.app[GRPC]
    ask = payments_pb2.GetPaymentByOrderIdRequest(user_id=user_id, order_id=order_id)
    try:
        reply: payments_pb2.Payment = await grpc_.payments.GetPaymentByOrderId(
            ask, **grpc_options(request)
        )
    except grpc.aio.AioRpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            raise
        order = await grpc_.orders.GetOrder(
            orders_pb2.GetOrderRequest(user_id=user_id, order_id=order_id),
            **grpc_options(request),
        )
        if order.status not in HAS_PAYMENT:
            raise
        reply = await _payment_soon(request, ask)
    return reply


async def _payment_soon(
    request: web.Request, ask: payments_pb2.GetPaymentByOrderIdRequest
) -> payments_pb2.Payment:
    deadline = time.monotonic() + request.app[SETTINGS].request_timeout_s
    for pause in itertools.chain(PAYMENT_POLL_S, itertools.repeat(PAYMENT_POLL_S[-1])):
        await asyncio.sleep(pause)
        try:
            payment: payments_pb2.Payment = await request.app[GRPC].payments.GetPaymentByOrderId(
                ask, **grpc_options(request)
            )
            return payment
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
        if time.monotonic() + pause > deadline:
            break
    raise Problem(
        503,
        "the order's payment is still being created: retry in a moment",
        code="unavailable",
        headers={"Retry-After": "1"},
    )


async def _open_session(request: web.Request, body: SessionBody) -> dict[str, Any]:
    """A provider session for the order's payment, for its amount (never the client's)."""
    user_id = _user_id(request)
    payment = await order_payment(request, user_id, body.order_id)
    cmd = InitiatePayment(
        command_id=command_id(request, "payments.session"),
        payment_id=payment.id,
        user_id=user_id,
        provider=request.app[SETTINGS].payments.provider,
        return_path=body.return_path or f"/#/orders/{body.order_id}",
        **body.model_dump(exclude={"order_id", "return_path"}),
    )
    result = await send_command(request, PAYMENTS_COMMANDS.name, str(payment.id), cmd)
    session: dict[str, Any] = result["session"]
    return session


@require_role("user", "admin")
async def initiate_payment(request: web.Request) -> web.Response:
    """The seed's answer: `payment_id`, `token`, `redirect_url`, `expired_at`, `status` (in the
    seed's words)."""
    body = await read_body(request, InitiateBody)
    session = await _open_session(request, SessionBody(**body.model_dump()))
    seed = ("payment_id", "token", "redirect_url", "va_number", "qr_code_url", "expired_at")
    answer = {k: session[k] for k in seed if session[k] is not None}
    overdue = datetime.fromisoformat(session["expired_at"]) <= datetime.now(UTC)
    status = seed_payment_status(session["status"], None, overdue)
    return json_response(InitiatedPayment.model_validate(answer | {"status": status}))


@require_role("user", "admin")
async def create_session(request: web.Request) -> web.Response:
    body = await read_body(request, SessionBody)
    session = await _open_session(request, body)
    return json_response(PaymentSession.model_validate(session), status=201)


@require_role("admin")
async def payment_reviews(request: web.Request) -> web.Response:
    """Reconciliation cases, newest first."""
    query = read_query(request, ReviewQuery)
    reply = await request.app[GRPC].payments.ListReviews(
        payments_pb2.ListReviewsRequest(offset=query.offset, limit=query.limit),
        **grpc_options(request),
    )
    reviews = [
        PaymentReview.model_validate(
            {
                "id": r.id,
                "payment_id": r.payment_id,
                "order_id": r.order_id,
                "reason": r.reason,
                "refund_required": r.refund_required,
                "provider": r.provider,
                "reference": r.reference,
                "session_reference": r.session_reference,
                "amount": float(Decimal(r.amount)),
                "expected_amount": float(Decimal(r.expected_amount)),
                "payment_status": r.payment_status,
                "created_at": iso_time(r.created_at),
            }
        )
        for r in reply.reviews
    ]
    return json_response(PaymentReviewList(reviews=reviews))


ORDER_ID = PathParam("order_id", {"type": "integer", "minimum": 1, "maximum": MAX_ID})
COMMAND_ID = PathParam("command_id", {"type": "string", "format": "uuid"})
ACCEPTED = Response(
    "not decided in time: poll the Location", Accepted, headers={"Location": "where to poll"}
)
PLACE_ERRORS = (400, 401, 403, 409, 413, 422, 429, 503)
READ_ERRORS = (401, 403, 404, 429, 503, 504)
PAY_ERRORS = (400, 401, 403, 404, 409, 413, 422, 429, 503, 504)


def _place_op(
    path: str,
    handler: Handler,
    model: type[BaseModel],
    rejected: type[BaseModel],
    summary: str,
) -> Operation:
    return Operation(
        "POST",
        path,
        handler,
        summary,
        {
            201: Response("placed, waiting for payment", model, headers={"Location": "its URL"}),
            202: ACCEPTED,
        },
        PLACE_ERRORS,
        problems={409: rejected},
        body=OrderBody,
        secured=True,
        idempotent=True,
    )


def _pay_op(path: str) -> Operation:
    return Operation(
        "POST",
        path,
        pay,
        "Pay a payment: `money` must be its amount",
        {200: Response("paid", Paid)},
        PAY_ERRORS,
        body=PaymentBody,
        secured=True,
        idempotent=True,
    )


OPERATIONS = (
    _place_op(
        "/order/",
        seed_place_order,
        SeedPlacedOrder,
        SeedOrderRejected,
        "Place an order (seed words: `pending` until paid); prices come from the catalogue",
    ),
    Operation(
        "GET",
        "/order/",
        seed_list_orders,
        "The caller's orders, newest first, 15 a page (seed words)",
        {200: Response("orders", SeedOrderList)},
        (401, 403, 422, 429, 503, 504),
        query=OffsetQuery,
        secured=True,
    ),
    Operation(
        "GET",
        "/order/{order_id}",
        seed_get_order,
        "One of the caller's orders with its items and their prices (seed words)",
        {200: Response("the order", SeedPlacedOrder)},
        READ_ERRORS,
        path_params=(ORDER_ID,),
        secured=True,
    ),
    _place_op(
        "/api/v1/orders",
        place_order,
        PlacedOrder,
        OrderRejected,
        "Place an order; prices come from the catalogue",
    ),
    Operation(
        "GET",
        "/api/v1/orders",
        list_orders,
        "The caller's orders, newest first, 10 a page",
        {200: Response("orders", OrderList)},
        (401, 403, 422, 429, 503, 504),
        query=OffsetQuery,
        secured=True,
    ),
    Operation(
        "GET",
        "/api/v1/orders/{order_id}",
        get_order,
        "One of the caller's orders, with items and status history",
        {200: Response("the order", Order)},
        READ_ERRORS,
        path_params=(ORDER_ID,),
        secured=True,
    ),
    Operation(
        "GET",
        "/api/v1/orders/requests/{command_id}",
        order_by_request,
        "The order a placement made (poll after a 202)",
        {200: Response("the order", Order)},
        READ_ERRORS,
        path_params=(COMMAND_ID,),
        secured=True,
    ),
    _pay_op("/payment/transaction"),
    Operation(
        "GET",
        "/payment/order/{order_id}",
        seed_payment_by_order,
        "The payment of one of the caller's orders (seed words, `expired_at`)",
        {200: Response("the payment", SeedPayment)},
        READ_ERRORS,
        path_params=(ORDER_ID,),
        secured=True,
    ),
    Operation(
        "POST",
        "/payment/initiate",
        initiate_payment,
        "Open a session with the payment provider for the order's payment (seed words); pay "
        "at `redirect_url`. The amount is the payment's own",
        {200: Response("the session", InitiatedPayment)},
        PAY_ERRORS,
        body=InitiateBody,
        secured=True,
        idempotent=True,
    ),
    _pay_op("/api/v1/payments/transaction"),
    Operation(
        "POST",
        "/api/v1/payments/sessions",
        create_session,
        "Open a session with the payment provider for the order's payment; pay at "
        "`redirect_url`, which sends the shopper back to `return_path`",
        {201: Response("the session", PaymentSession)},
        PAY_ERRORS,
        body=SessionBody,
        secured=True,
        idempotent=True,
    ),
    Operation(
        "GET",
        "/api/v1/admin/payments/reviews",
        payment_reviews,
        "Reconciliation cases, newest first (admin): money a provider reported that a payment "
        "could not take (another amount, after expiry or failure, a second charge)",
        {200: Response("cases", PaymentReviewList)},
        (401, 403, 422, 429, 503, 504),
        query=ReviewQuery,
        secured=True,
    ),
    Operation(
        "GET",
        "/api/v1/orders/{order_id}/payment",
        payment_by_order,
        "The payment of one of the caller's orders",
        {200: Response("the payment", Payment)},
        READ_ERRORS,
        path_params=(ORDER_ID,),
        secured=True,
    ),
)


def setup_routes(app: web.Application) -> None:
    add_operations(app, OPERATIONS)
