"""The gateway's operations: one table per resource module, from which both the router and the
OpenAPI document are made, so a route, its models and its documentation cannot drift apart."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


@dataclass(frozen=True)
class Response:
    """One documented answer: a model (JSON), a bare description, or another media type."""

    description: str
    model: type[BaseModel] | None = None
    media_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PathParam:
    name: str
    schema: Mapping[str, Any]


@dataclass(frozen=True)
class Operation:
    method: Method
    path: str
    handler: Handler
    summary: str
    responses: Mapping[int, Response]
    # Statuses answered as problem+json.
    errors: tuple[int, ...] = ()
    # A status whose problem carries more than the usual members.
    problems: Mapping[int, type[BaseModel]] = field(default_factory=dict)
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    path_params: tuple[PathParam, ...] = ()
    secured: bool = False
    idempotent: bool = False
    # Request headers the handler reads, beyond Authorization and Idempotency-Key.
    headers: tuple[tuple[str, Mapping[str, Any], str], ...] = ()
    tags: tuple[str, ...] = ()


def add_operations(app: web.Application, operations: Iterable[Operation]) -> None:
    """Register each operation; HEAD is not answered, so `Allow` lists what the document does."""
    for op in operations:
        app.router.add_route(op.method, op.path, op.handler)
