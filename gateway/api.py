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
    # A regex the router matches the segment with: a path that it does not match is another
    # route's (or none), so `Allow` names only the methods of the routes that match.
    pattern: str = ""


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
    # How the body comes: JSON, or a browser's form (application/x-www-form-urlencoded).
    body_media_type: str = "application/json"
    query: type[BaseModel] | None = None
    path_params: tuple[PathParam, ...] = ()
    secured: bool = False
    idempotent: bool = False

    @property
    def route_path(self) -> str:
        path = self.path
        for p in self.path_params:
            if p.pattern:
                path = path.replace(f"{{{p.name}}}", f"{{{p.name}:{p.pattern}}}")
        return path


def add_operations(app: web.Application, operations: Iterable[Operation]) -> None:
    """Register each operation; HEAD is not answered, so `Allow` lists what the document does."""
    for op in operations:
        app.router.add_route(op.method, op.route_path, op.handler)
