"""The payments process: payments for orders, paying, provider reports, expiry; gRPC reads."""

from __future__ import annotations

import asyncio
import logging

import faust
import grpc

from agents.common.agent import RequestMeta, command_agent, event_agent
from agents.common.runtime import DomainRuntime, create_faust_app
from agents.common.settings import Settings
from agents.payments import DOMAIN, handlers
from agents.payments.repository import PaymentsUnitOfWork
from agents.payments.servicer import PaymentServicer
from protos import payments_pb2, payments_pb2_grpc
from topics import ORDERS_EVENTS, PAYMENTS_COMMANDS, PAYMENTS_PROVIDER_EVENTS
from topics.envelope import Reply
from topics.orders import OrderAwaitingPayment
from topics.payments import PayPayment, ProviderPaymentOutcome

log = logging.getLogger(__name__)

EXPIRY_CHECK_S = 1.0


def bootstrap(settings: Settings) -> tuple[faust.App, DomainRuntime]:
    app = create_faust_app(DOMAIN, settings)

    def add_servicers(server: grpc.aio.Server, runtime: DomainRuntime) -> list[str]:
        payments_pb2_grpc.add_PaymentServiceServicer_to_server(
            PaymentServicer(runtime.pool), server
        )
        return [payments_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name]

    async def expire(runtime: DomainRuntime) -> None:
        while True:
            try:
                if await handlers.expire_due(PaymentsUnitOfWork(runtime.pool)):
                    runtime.relay.wake()
            except Exception as e:
                log.warning("expiring payments failed: %s", e)
            await asyncio.sleep(EXPIRY_CHECK_S)

    runtime = DomainRuntime(app, settings, DOMAIN, add_servicers, tasks=[expire])

    async def pay(cmd: PayPayment, _: RequestMeta) -> Reply:
        return await handlers.pay(cmd, PaymentsUnitOfWork(runtime.pool))

    async def reported(event: ProviderPaymentOutcome, _: RequestMeta) -> Reply:
        return await handlers.provider_outcome(event, PaymentsUnitOfWork(runtime.pool))

    async def awaiting(event: OrderAwaitingPayment) -> Reply:
        return await handlers.on_order_awaiting_payment(
            event, PaymentsUnitOfWork(runtime.pool), settings.payment_ttl_s
        )

    command_agent(app, runtime, PAYMENTS_COMMANDS, PayPayment.model_validate_json, pay)
    command_agent(
        app, runtime, PAYMENTS_PROVIDER_EVENTS, ProviderPaymentOutcome.model_validate_json, reported
    )
    event_agent(
        app,
        runtime,
        ORDERS_EVENTS,
        {
            "OrderAwaitingPayment": (OrderAwaitingPayment, awaiting),
        },
    )
    return app, runtime
