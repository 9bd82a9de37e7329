"""The orders process: PlaceOrder, the saga's order state, and gRPC OrderService."""

from __future__ import annotations

import asyncio
import logging

import faust
import grpc
from pydantic import TypeAdapter

from agents.common.agent import Route, batch_agent, each
from agents.common.failures import is_transient
from agents.common.relay import Effects
from agents.common.runtime import DomainRuntime, create_faust_app
from agents.common.settings import Settings
from agents.orders import DOMAIN, handlers, repository
from agents.orders.servicer import OrderServicer
from protos import orders_pb2, orders_pb2_grpc
from topics import ORDERS_COMMANDS, PAYMENTS_EVENTS, PRODUCTS_EVENTS
from topics.orders import PlaceOrder
from topics.payments import PaymentFailed, PaymentSucceeded
from topics.products import StockRejected, StockReserved

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 5.0

stock_decision: TypeAdapter[StockReserved | StockRejected] = TypeAdapter(
    StockReserved | StockRejected
)
payment_outcome: TypeAdapter[PaymentSucceeded | PaymentFailed] = TypeAdapter(
    PaymentSucceeded | PaymentFailed
)


def bootstrap(settings: Settings) -> tuple[faust.App, DomainRuntime]:
    app = create_faust_app(DOMAIN, settings)
    batching = settings.batching

    def add_servicers(server: grpc.aio.Server, runtime: DomainRuntime) -> list[str]:
        orders_pb2_grpc.add_OrderServiceServicer_to_server(
            OrderServicer(runtime.pool, settings.page_size), server
        )
        return [orders_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name]

    async def sweep(runtime: DomainRuntime) -> None:
        """Orders stuck pending are re-driven, then given up (see handlers.sweep_pending)."""
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            fx = Effects()
            try:
                touched = await handlers.sweep_pending(
                    runtime.pool, fx, batching.pending_redrive_s, batching.pending_give_up_s
                )
            except Exception as e:
                if not is_transient(e):
                    log.exception("sweeping pending orders failed")
                continue
            if touched:
                log.warning("%d orders still pending: re-driven or given up", touched)
                await runtime.publisher.publish(fx)

    runtime = DomainRuntime(
        app, settings, DOMAIN, add_servicers, tasks=[sweep], expire=[repository.forget_keys]
    )
    batch_agent(
        app,
        runtime,
        ORDERS_COMMANDS,
        {"PlaceOrder": Route(PlaceOrder.model_validate_json, handlers.place_orders)},
        commands=True,
    )
    decided = Route(stock_decision.validate_json, handlers.stock_decided)
    batch_agent(
        app,
        runtime,
        PRODUCTS_EVENTS,
        {"StockReserved": decided, "StockRejected": decided},
        commands=False,
    )
    paid = Route(payment_outcome.validate_json, each(handlers.on_payment_event))
    batch_agent(
        app,
        runtime,
        PAYMENTS_EVENTS,
        {"PaymentSucceeded": paid, "PaymentFailed": paid},
        commands=False,
    )
    return app, runtime
