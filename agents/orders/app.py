"""The orders process: PlaceOrder, the saga's order state, and gRPC OrderService."""

from __future__ import annotations

from typing import Any

import faust
import grpc

from agents.common.agent import RequestMeta, command_agent, event_agent
from agents.common.runtime import DomainRuntime, create_faust_app
from agents.common.settings import Settings
from agents.orders import DOMAIN, handlers
from agents.orders.repository import OrdersUnitOfWork
from agents.orders.servicer import OrderServicer
from protos import orders_pb2, orders_pb2_grpc
from topics import ORDERS_COMMANDS, PAYMENTS_EVENTS, PRODUCTS_EVENTS
from topics.envelope import Reply
from topics.orders import PlaceOrder
from topics.payments import PaymentCreated, PaymentFailed, PaymentSucceeded
from topics.products import StockRejected, StockReserved


def bootstrap(settings: Settings) -> tuple[faust.App, DomainRuntime]:
    app = create_faust_app(DOMAIN, settings)

    def add_servicers(server: grpc.aio.Server, runtime: DomainRuntime) -> list[str]:
        orders_pb2_grpc.add_OrderServiceServicer_to_server(
            OrderServicer(runtime.pool, settings.page_size), server
        )
        return [orders_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name]

    runtime = DomainRuntime(app, settings, DOMAIN, add_servicers)

    def uow() -> OrdersUnitOfWork:
        return OrdersUnitOfWork(runtime.pool)

    async def place(cmd: PlaceOrder, meta: RequestMeta) -> Reply | None:
        return await handlers.place_order(cmd, meta, uow)

    def on(handler: Any) -> Any:
        async def handle(event: Any) -> Reply:
            reply: Reply = await handler(event, uow())
            return reply

        return handle

    command_agent(app, runtime, ORDERS_COMMANDS, PlaceOrder.model_validate_json, place)
    event_agent(
        app,
        runtime,
        PRODUCTS_EVENTS,
        {
            "StockReserved": (StockReserved, on(handlers.on_stock_reserved)),
            "StockRejected": (StockRejected, on(handlers.on_stock_rejected)),
        },
    )
    event_agent(
        app,
        runtime,
        PAYMENTS_EVENTS,
        {
            "PaymentCreated": (PaymentCreated, on(handlers.on_payment_created)),
            "PaymentSucceeded": (PaymentSucceeded, on(handlers.on_payment_succeeded)),
            "PaymentFailed": (PaymentFailed, on(handlers.on_payment_failed)),
        },
    )
    return app, runtime
