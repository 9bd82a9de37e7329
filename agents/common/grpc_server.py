"""A domain's gRPC aio server, with the standard health service; every other call needs a
service token (agents/common/service_tokens.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agents.common.service_tokens import ServiceAuth


@dataclass
class GrpcServer:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int
    service_names: list[str]

    async def start(self) -> None:
        # The health service starts out SERVING; a worker is not ready until it says so.
        await self.set_serving(False)
        await self.server.start()

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


def create_server(
    host: str,
    port: int,
    add_servicers: Callable[[grpc.aio.Server], list[str]],
    auth: ServiceAuth,
) -> GrpcServer:
    """Bind a server (port 0 picks one); `add_servicers` registers the servicers and names them;
    `auth` checks each call's service token."""
    server = grpc.aio.server(interceptors=[auth])
    names = add_servicers(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    return GrpcServer(server, health_servicer, bound, names)
