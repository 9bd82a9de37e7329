"""The payments process: payments for orders, paying, provider reports, expiry; gRPC reads."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import faust
import grpc

from agents.common.agent import BatchHandler, Inbound, RequestMeta, Route, batch_agent, each
from agents.common.relay import Effects
from agents.common.runtime import DomainRuntime, create_faust_app, create_tables_app
from agents.common.settings import Settings
from agents.payments import DOMAIN, handlers
from agents.payments.deadlines import DeadlineTimer
from agents.payments.providers import providers
from agents.payments.repository import PaymentsUnitOfWork
from agents.payments.servicer import PaymentServicer
from protos import payments_pb2, payments_pb2_grpc
from topics import ORDERS_EVENTS, PAYMENTS_COMMANDS, PAYMENTS_PROVIDER_EVENTS
from topics.envelope import Reply
from topics.orders import OrderAwaitingPayment
from topics.payments import InitiatePayment, PayPayment, ProviderPaymentOutcome


def bootstrap(settings: Settings) -> tuple[faust.App, DomainRuntime]:
    # Off the client's path: an order is answered before its payment exists.
    app = create_faust_app(DOMAIN, settings, on_client_path=False)
    tables = create_tables_app(DOMAIN, settings)
    timer = DeadlineTimer(tables, settings.payment_ttl_s)

    def add_servicers(server: grpc.aio.Server, runtime: DomainRuntime) -> list[str]:
        payments_pb2_grpc.add_PaymentServiceServicer_to_server(
            PaymentServicer(runtime.pool, timer.deadlines), server
        )
        return [payments_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name]

    async def expire(runtime: DomainRuntime) -> None:
        await timer.run(runtime.pool, runtime.sweeper.wake)

    runtime = DomainRuntime(app, settings, DOMAIN, add_servicers, tasks=[expire], tables_app=tables)

    def handled(handle: Callable[[Any, PaymentsUnitOfWork], Awaitable[Reply]]) -> BatchHandler:
        async def one(message: Any, _: RequestMeta, conn: asyncpg.Connection, fx: Effects) -> Reply:
            return await handle(message, PaymentsUnitOfWork(conn, fx))

        return each(one)

    known = providers(settings.payments)

    async def pay(cmd: PayPayment, uow: PaymentsUnitOfWork) -> Reply:
        return await handlers.pay(cmd, uow)

    async def initiate(cmd: InitiatePayment, uow: PaymentsUnitOfWork) -> Reply:
        return await handlers.initiate(cmd, uow, known)

    async def reported(event: ProviderPaymentOutcome, uow: PaymentsUnitOfWork) -> Reply:
        return await handlers.provider_outcome(event, uow)

    async def awaiting(
        conn: asyncpg.Connection, batch: list[Inbound[OrderAwaitingPayment]], fx: Effects
    ) -> None:
        await handlers.create_payments(conn, batch, fx, settings.payment_ttl_s)

    batch_agent(
        app,
        runtime,
        PAYMENTS_COMMANDS,
        {
            "PayPayment": Route(PayPayment.model_validate_json, handled(pay)),
            "InitiatePayment": Route(InitiatePayment.model_validate_json, handled(initiate)),
        },
        commands=True,
    )
    batch_agent(
        app,
        runtime,
        PAYMENTS_PROVIDER_EVENTS,
        {"ProviderPaymentOutcome": Route(handlers.report_decoder(known), handled(reported))},
        commands=True,
    )
    batch_agent(
        app,
        runtime,
        ORDERS_EVENTS,
        {"OrderAwaitingPayment": Route(OrderAwaitingPayment.model_validate_json, awaiting)},
        commands=False,
    )
    return app, runtime
