"""The gateway's application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from agents.common.service_tokens import ServiceTokens
from agents.common.settings import Settings
from gateway import openapi
from gateway.bus import BusClient
from gateway.catalogue import PageCache, ProductsEventsWatcher, events_consumer
from gateway.edge import (
    CLIENT_ADDRESS,
    LIMITS,
    ClientAddress,
    Limits,
    cors_middleware,
    rate_limit_middleware,
)
from gateway.grpc_clients import GrpcClients
from gateway.keys import BUS, GRPC, PAGES, SETTINGS
from gateway.middlewares import error_middleware, request_id_middleware
from gateway.routes import auth, health, orders, products, sandbox, storefront
from topics import PRODUCTS_EVENTS


async def bus_context(app: web.Application) -> AsyncIterator[None]:
    bus = BusClient(app[SETTINGS])
    await bus.start()
    app[BUS] = bus
    yield
    await bus.stop()


async def pages_context(app: web.Application) -> AsyncIterator[None]:
    pages = PageCache()
    bootstrap = app[SETTINGS].require_kafka()
    settings = app[SETTINGS]
    watcher = ProductsEventsWatcher(
        pages,
        lambda: events_consumer(bootstrap, settings.kafka_security),
        partitions=settings.topic_partitions or PRODUCTS_EVENTS.partitions,
    )
    watcher.start()
    app[PAGES] = pages
    yield
    await watcher.stop()


async def grpc_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    clients = GrpcClients(settings.grpc, ServiceTokens(settings.internal_secret, "gateway"))
    clients.open()
    app[GRPC] = clients
    yield
    await clients.close()


def create_app(
    settings: Settings,
    *,
    bus: BusClient | None = None,
    grpc: GrpcClients | None = None,
    pages: PageCache | None = None,
) -> web.Application:
    """The gateway; `bus`, `grpc` and `pages` replace the real ones (tests pass fakes).

    With a fake bus and no `pages`, nothing watches products.events, so no page is cached.
    """
    app = web.Application(
        middlewares=[
            request_id_middleware,
            cors_middleware,
            error_middleware,
            rate_limit_middleware,
        ],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[LIMITS] = Limits.from_settings(settings.edge)
    app[CLIENT_ADDRESS] = ClientAddress(settings.edge.trusted_proxies)
    if grpc is None:
        app.cleanup_ctx.append(grpc_context)
    else:
        app[GRPC] = grpc
    if bus is None:
        app.cleanup_ctx.append(bus_context)
    else:
        app[BUS] = bus
    if pages is not None:
        app[PAGES] = pages
    elif bus is None:
        app.cleanup_ctx.append(pages_context)
    else:
        app[PAGES] = PageCache()
    health.setup_routes(app)
    products.setup_routes(app)
    auth.setup_routes(app)
    orders.setup_routes(app)
    sandbox.setup_routes(app)
    storefront.setup_routes(app)
    openapi.setup_routes(app)
    return app
