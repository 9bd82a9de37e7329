"""The gateway's routes, one module per resource, and what their gRPC calls share."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.keys import REQUEST_ID, SETTINGS


def grpc_options(request: web.Request) -> dict[str, Any]:
    """The deadline and metadata of a gRPC call made for this request."""
    return {
        "timeout": request.app[SETTINGS].request_timeout_s,
        "metadata": (("x-request-id", request[REQUEST_ID]),),
    }
