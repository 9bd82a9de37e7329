"""The products process: composition root of its agents, its gRPC reads and its resources."""

from __future__ import annotations

from typing import Any

import asyncpg
import faust
import grpc

from agents.common.agent import RequestMeta, Route, batch_agent, each
from agents.common.relay import Effects
from agents.common.runtime import DomainRuntime, create_faust_app, create_tables_app
from agents.common.settings import Settings
from agents.products import DOMAIN
from agents.products.best_sellers import BestSellers
from agents.products.handlers import handle_command
from agents.products.repository import PgProductsUnitOfWork
from agents.products.servicer import ProductServicer
from agents.products.stock import on_order_event, reserve_batch
from protos import products_pb2, products_pb2_grpc
from topics import ORDERS_EVENTS, PRODUCTS_COMMANDS
from topics.envelope import Reply
from topics.orders import OrderCancelled, OrderPaid, OrderPlaced, OrderRejected
from topics.products import CreateProduct, DeleteProduct, UpdateProduct, product_command


def bootstrap(settings: Settings) -> tuple[faust.App, DomainRuntime]:
    app = create_faust_app(DOMAIN, settings)
    tables = create_tables_app(DOMAIN, settings)
    best_sellers = BestSellers(tables, lambda: runtime.pool)

    def add_servicers(server: grpc.aio.Server, runtime: DomainRuntime) -> list[str]:
        servicer = ProductServicer(runtime.pool, settings.page_size, best_sellers)
        products_pb2_grpc.add_ProductServiceServicer_to_server(servicer, server)
        return [products_pb2.DESCRIPTOR.services_by_name["ProductService"].full_name]

    runtime = DomainRuntime(app, settings, DOMAIN, add_servicers, tables_app=tables)

    async def command(
        cmd: CreateProduct | UpdateProduct | DeleteProduct,
        _: RequestMeta,
        conn: asyncpg.Connection,
        fx: Effects,
    ) -> Reply:
        return await handle_command(cmd, PgProductsUnitOfWork(conn, fx))

    commands = Route(product_command.validate_json, each(command))
    batch_agent(
        app,
        runtime,
        PRODUCTS_COMMANDS,
        {t.__name__: commands for t in (CreateProduct, UpdateProduct, DeleteProduct)},
        commands=True,
    )

    def route(model: Any) -> Route:
        return Route(model.model_validate_json, each(on_order_event))

    batch_agent(
        app,
        runtime,
        ORDERS_EVENTS,
        {
            "OrderPlaced": Route(OrderPlaced.model_validate_json, reserve_batch),
            "OrderPaid": route(OrderPaid),
            "OrderCancelled": route(OrderCancelled),
            "OrderRejected": route(OrderRejected),
        },
        commands=False,
    )
    return app, runtime
