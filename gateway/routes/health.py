"""Liveness and readiness for operators and orchestrators."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.api import Operation, Response, add_operations
from gateway.grpc_clients import DOMAINS
from gateway.keys import BUS, GRPC, REQUEST_ID
from gateway.problems import problem_response
from gateway.routes import json_response
from gateway.schemas import Health, Ready


async def healthz(request: web.Request) -> web.Response:
    """Alive while the reply reader runs: a gateway without it answers nothing but timeouts."""
    if not request.app[BUS].ready:
        return problem_response(
            503,
            "the reply reader is not running",
            instance=request.path,
            request_id=request.get(REQUEST_ID),
            code="unavailable",
        )
    return json_response(Health(status="ok"))


async def readyz(request: web.Request) -> web.Response:
    """Ready when the bus client reads replies and every domain's gRPC health says SERVING.

    A domain reports SERVING only while its Postgres answers, so this covers Postgres too.
    """
    grpc = request.app[GRPC]
    results = await asyncio.gather(*(grpc.health(d) for d in DOMAINS))
    checks = {"kafka": "ok" if request.app[BUS].ready else "down"}
    checks |= {d: "ok" if ok else "down" for d, ok in zip(DOMAINS, results, strict=True)}
    if all(v == "ok" for v in checks.values()):
        return json_response(Ready(status="ready", checks=checks))
    down = ", ".join(k for k, v in checks.items() if v != "ok")
    return problem_response(
        503,
        f"not ready: {down}",
        instance=request.path,
        request_id=request.get(REQUEST_ID),
        code="unavailable",
        extra={"checks": checks},
    )


OPERATIONS = (
    Operation(
        "GET",
        "/healthz",
        healthz,
        "Alive: the gateway reads its replies",
        {200: Response("alive", Health)},
        (503,),
    ),
    Operation(
        "GET",
        "/readyz",
        readyz,
        "Ready: Kafka and every domain (and its Postgres) answer",
        {200: Response("ready", Ready)},
        (503,),
    ),
)


def setup_routes(app: web.Application) -> None:
    add_operations(app, OPERATIONS)
