"""The products process: composition root of its agent, its gRPC reads and its resources."""

from __future__ import annotations

import faust
import grpc

from agents.common.agent import RequestMeta, command_agent, event_agent
from agents.common.runtime import DomainRuntime, create_faust_app
from agents.common.settings import Settings
from agents.products import DOMAIN
from agents.products.handlers import handle_command
from agents.products.repository import PgProductsUnitOfWork
from agents.products.servicer import ProductServicer
from agents.products.stock import release_stock, reserve_stock, sell_stock
from protos import products_pb2, products_pb2_grpc
from topics import ORDERS_EVENTS, PRODUCTS_COMMANDS
from topics.envelope import Reply
from topics.orders import OrderCancelled, OrderPaid, OrderPlaced
from topics.products import CreateProduct, DeleteProduct, UpdateProduct, product_command


def bootstrap(settings: Settings) -> tuple[faust.App, DomainRuntime]:
    app = create_faust_app(DOMAIN, settings)

    def add_servicers(server: grpc.aio.Server, runtime: DomainRuntime) -> list[str]:
        servicer = ProductServicer(runtime.pool, settings.page_size)
        products_pb2_grpc.add_ProductServiceServicer_to_server(servicer, server)
        return [products_pb2.DESCRIPTOR.services_by_name["ProductService"].full_name]

    runtime = DomainRuntime(app, settings, DOMAIN, add_servicers)

    async def handle(cmd: CreateProduct | UpdateProduct | DeleteProduct, _: RequestMeta) -> Reply:
        return await handle_command(cmd, PgProductsUnitOfWork(runtime.pool))

    command_agent(app, runtime, PRODUCTS_COMMANDS, product_command.validate_json, handle)

    async def placed(event: OrderPlaced) -> Reply:
        return await reserve_stock(
            event.event_id, event.order_id, list(event.items), PgProductsUnitOfWork(runtime.pool)
        )

    async def cancelled(event: OrderCancelled) -> Reply:
        return await release_stock(
            event.event_id, event.order_id, PgProductsUnitOfWork(runtime.pool)
        )

    async def paid(event: OrderPaid) -> Reply:
        return await sell_stock(event.event_id, event.order_id, PgProductsUnitOfWork(runtime.pool))

    event_agent(
        app,
        runtime,
        ORDERS_EVENTS,
        {
            "OrderPlaced": (OrderPlaced, placed),
            "OrderCancelled": (OrderCancelled, cancelled),
            "OrderPaid": (OrderPaid, paid),
        },
    )
    return app, runtime
