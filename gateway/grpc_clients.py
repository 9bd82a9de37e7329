"""The gateway's gRPC channels to each domain, and their health checks. Each call carries a
service token for the end user it is made for (gateway.routes.grpc_options names them)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agents.common.service_tokens import OnBehalfOf, ServiceTokens
from agents.common.settings import GrpcAddresses
from protos import orders_pb2_grpc, payments_pb2_grpc, products_pb2_grpc, users_pb2_grpc

DOMAINS = ("users", "products", "orders", "payments")


@dataclass
class GrpcClients:
    addresses: GrpcAddresses
    # None only for a fake that never opens a channel.
    tokens: ServiceTokens | None = None
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    _products: products_pb2_grpc.ProductServiceStub | None = None
    _users: users_pb2_grpc.AuthServiceStub | None = None
    _orders: orders_pb2_grpc.OrderServiceStub | None = None
    _payments: payments_pb2_grpc.PaymentServiceStub | None = None

    def open(self) -> None:
        if self.tokens is None:
            raise RuntimeError("GrpcClients needs the gateway's ServiceTokens to open channels")
        for domain in DOMAINS:
            self.channels[domain] = grpc.aio.insecure_channel(
                self.addresses.of(domain), interceptors=[OnBehalfOf(self.tokens, domain)]
            )
        self._products = products_pb2_grpc.ProductServiceStub(self.channels["products"])
        self._users = users_pb2_grpc.AuthServiceStub(self.channels["users"])
        self._orders = orders_pb2_grpc.OrderServiceStub(self.channels["orders"])
        self._payments = payments_pb2_grpc.PaymentServiceStub(self.channels["payments"])

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.channels.values()))

    @property
    def products(self) -> products_pb2_grpc.ProductServiceStub:
        assert self._products is not None, "GrpcClients.open() was not called"
        return self._products

    @property
    def users(self) -> users_pb2_grpc.AuthServiceStub:
        assert self._users is not None, "GrpcClients.open() was not called"
        return self._users

    @property
    def orders(self) -> orders_pb2_grpc.OrderServiceStub:
        assert self._orders is not None, "GrpcClients.open() was not called"
        return self._orders

    @property
    def payments(self) -> payments_pb2_grpc.PaymentServiceStub:
        assert self._payments is not None, "GrpcClients.open() was not called"
        return self._payments

    async def health(self, domain: str, timeout: float = 1.0) -> bool:
        stub = health_pb2_grpc.HealthStub(self.channels[domain])
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
