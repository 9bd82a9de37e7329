"""The OpenAPI 3.1 document of the gateway, served at /openapi.json; a test keeps it in step."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from topics.products import NewProduct, ProductChanges

PROBLEM = {"$ref": "#/components/schemas/Problem"}
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _problems(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {
            "description": "problem details (RFC 9457)",
            "content": {"application/problem+json": {"schema": PROBLEM}},
        }
        for s in statuses
    }


def _op(summary: str, ok: dict[str, Any], *errors: int, **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": {**ok, **_problems(*errors)}, **extra}


PRODUCT = {"$ref": "#/components/schemas/Product"}
PAGE = {"$ref": "#/components/schemas/ProductPage"}
ID_QUERY = {"name": "id", "in": "query", "required": True, "schema": {"type": "integer"}}
ID_PATH = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
PAGING = [
    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
    {
        "name": "id",
        "in": "query",
        "schema": {"type": "integer"},
        "description": "answer the one product with this id instead of a page",
    },
]
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}
NEW = {"requestBody": {"required": True, **_json({"$ref": "#/components/schemas/NewProduct"})}}
CHANGES = {
    "requestBody": {"required": True, **_json({"$ref": "#/components/schemas/ProductChanges"})}
}
DELETED = {"200": {"description": "deleted", **_json({"type": "object"})}}
WRITE_ERRORS = (401, 403, 404, 413, 422, 504)


def openapi_document() -> dict[str, Any]:
    list_op = _op(
        "A page of the catalogue (seed: pages from 0)",
        {"200": {"description": "a page", **_json(PAGE)}},
        404,
        422,
        504,
        parameters=PAGING,
    )
    create = _op(
        "Create a product (admin)",
        {"201": {"description": "created", **_json(PRODUCT)}},
        400,
        401,
        403,
        413,
        422,
        504,
        security=BEARER,
        parameters=[IDEMPOTENCY],
        **NEW,
    )
    update_q = _op(
        "Update a product (admin)",
        {"200": {"description": "updated", **_json(PRODUCT)}},
        400,
        *WRITE_ERRORS,
        security=BEARER,
        parameters=[ID_QUERY, IDEMPOTENCY],
        **CHANGES,
    )
    delete_q = _op(
        "Delete a product (admin)",
        DELETED,
        *WRITE_ERRORS,
        security=BEARER,
        parameters=[ID_QUERY, IDEMPOTENCY],
    )
    update_p = {**update_q, "parameters": [ID_PATH, IDEMPOTENCY]}
    delete_p = {**delete_q, "parameters": [ID_PATH, IDEMPOTENCY]}
    get_p = _op(
        "One product",
        {"200": {"description": "the product", **_json(PRODUCT)}},
        404,
        504,
        parameters=[ID_PATH],
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "shopstream gateway", "version": "1.0.0"},
        "paths": {
            "/product/": {"get": list_op, "post": create, "put": update_q, "delete": delete_q},
            "/api/v1/products": {"get": list_op, "post": create},
            "/api/v1/products/{id}": {
                "get": get_p,
                "put": update_p,
                "patch": update_p,
                "delete": delete_p,
            },
            "/healthz": {"get": _op("Alive", {"200": {"description": "alive"}})},
            "/readyz": {
                "get": _op(
                    "Ready: Kafka and every domain (and its Postgres) answer",
                    {"200": {"description": "ready"}},
                    503,
                )
            },
            "/openapi.json": {"get": _op("This document", {"200": {"description": "OpenAPI"}})},
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "schemas": {
                "NewProduct": NewProduct.model_json_schema(),
                "ProductChanges": ProductChanges.model_json_schema(),
                "Product": {
                    "type": "object",
                    "required": [
                        "id",
                        "name",
                        "description",
                        "price",
                        "stock",
                        "image_url",
                        "created_at",
                        "updated_at",
                    ],
                    "properties": {
                        "id": {"type": "integer"},
                        "name": {"type": "string"},
                        "description": {"type": "string"},
                        "price": {"type": "number"},
                        "stock": {"type": "integer"},
                        "image_url": {"type": "string"},
                        "created_at": {"type": "string", "format": "date-time"},
                        "updated_at": {"type": "string", "format": "date-time"},
                    },
                },
                "ProductPage": {
                    "type": "object",
                    "required": ["total", "page", "total_page", "products"],
                    "properties": {
                        "total": {"type": "integer"},
                        "page": {"type": "integer"},
                        "total_page": {"type": "integer"},
                        "products": {"type": "array", "items": PRODUCT},
                    },
                },
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail", "error"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "error": {"type": "string", "description": "the seed's error member"},
                        "instance": {"type": "string"},
                        "code": {"type": "string"},
                        "request_id": {"type": "string"},
                        "errors": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "path": {"type": "string"},
                                    "message": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
    }


async def serve_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", serve_openapi)
