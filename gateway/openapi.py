"""The OpenAPI 3.1 document of the gateway, served at /openapi.json and rendered at /docs.

It is generated from the operation tables of the route modules (gateway/api.py) and the pydantic
models their handlers validate requests and serialize responses with; every schema lands in
components.schemas, so every `$ref` resolves there.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from importlib import resources
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gateway.api import Operation, Response, add_operations
from gateway.routes import auth, health, orders, products, sandbox, storefront
from gateway.schemas import Problem

REF_TEMPLATE = "#/components/schemas/{model}"
PROBLEM_JSON = "application/problem+json"
IDEMPOTENCY_KEY: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "description": (
        "a retry with the same key and the same request (target and body) is applied once and "
        "answers as the first did, through any alias of the route; the same key with another "
        "target or body is a 422; a request refused as invalid (422) does not use its key up; "
        "a key expires after IDEMPOTENCY_KEY_TTL_S (24 h). Empty: no key"
    ),
    "schema": {"type": "string", "maxLength": 255},
}


async def serve_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def serve_docs(request: web.Request) -> web.Response:
    page = resources.files("gateway").joinpath("static/docs.html").read_bytes()
    return web.Response(body=page, content_type="text/html", charset="utf-8")


OWN = (
    Operation(
        "GET", "/openapi.json", serve_openapi, "This document", {200: Response("OpenAPI 3.1")}
    ),
    Operation(
        "GET",
        "/docs",
        serve_docs,
        "This document, rendered (offline: no asset from elsewhere)",
        {200: Response("an HTML page", media_type="text/html")},
    ),
)


def operations() -> Iterator[Operation]:
    for module in (health, products, auth, orders, sandbox, storefront):
        yield from module.OPERATIONS
    yield from OWN


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema: a parameter left out is how a query says null."""
    branches = schema.get("anyOf")
    if branches is None:
        return schema
    rest = [b for b in branches if b.get("type") != "null"]
    if len(rest) != 1:
        return schema
    out = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    return {**rest[0], **out}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(mode="validation")
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema.get("properties", {}).items():
        prop = _not_null({k: v for k, v in prop.items() if k != "title"})
        description = prop.pop("description", None)
        param: dict[str, Any] = {"name": name, "in": "query", "schema": prop}
        if name in required:
            param["required"] = True
        if description:
            param["description"] = description
        params.append(param)
    return params


def _content(media_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {media_type: {"schema": schema}}


def _response(response: Response, refs: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"description": response.description}
    if response.model is not None:
        out["content"] = _content(response.media_type, refs[(response.model, "serialization")])
    elif response.media_type == "application/json":
        out["content"] = _content(response.media_type, {"type": "object"})
    elif response.media_type:
        out["content"] = _content(response.media_type, {"type": "string"})
    if response.headers:
        out["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in response.headers.items()
        }
    return out


def _operation(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    parameters = [
        {"name": p.name, "in": "path", "required": True, "schema": dict(p.schema)}
        for p in op.path_params
    ]
    if op.query is not None:
        parameters += _query_parameters(op.query)
    if op.idempotent:
        parameters.append(IDEMPOTENCY_KEY)
    responses = {str(status): _response(r, refs) for status, r in op.responses.items()}
    for status in op.errors:
        model = op.problems.get(status, Problem)
        responses[str(status)] = {
            "description": "problem details (RFC 9457)",
            "content": _content(PROBLEM_JSON, refs[(model, "serialization")]),
        }
    out: dict[str, Any] = {
        "operationId": f"{op.method.lower()}_{op.handler.__name__}_{_slug(op.path)}",
        "summary": op.summary,
        "responses": responses,
    }
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body_required,
            "content": _content(op.body_media_type, refs[(op.body, "validation")]),
        }
    if op.secured:
        out["security"] = [{"bearer": []}]
    return out


def _slug(path: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in path).strip("_") or "root"


def _models(ops: list[Operation]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Problem, "serialization")]
    for op in ops:
        if op.body is not None:
            wanted.append((op.body, "validation"))
        wanted += [(r.model, "serialization") for r in op.responses.values() if r.model]
        wanted += [(m, "serialization") for m in op.problems.values()]
    return list(dict.fromkeys(wanted))


@functools.cache
def openapi_document() -> dict[str, Any]:
    ops = list(operations())
    refs, defs = models_json_schema(_models(ops), ref_template=REF_TEMPLATE)
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "shopstream gateway",
            "version": "1.0.0",
            "description": "The seed's routes speak the seed's words (`/product/`, `/order/`, "
            "`/payment/`, `/api/v1/auth/...`); the other `/api/v1/...` routes shopstream's "
            "own. Every error is RFC 9457 problem+json.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "schemas": defs.get("$defs", {}),
        },
    }


def setup_routes(app: web.Application) -> None:
    add_operations(app, OWN)
