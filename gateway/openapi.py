"""The OpenAPI 3.1 document of the gateway, served at /openapi.json; a test keeps it in step."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.routes.auth import LoginBody, RefreshBody, RegisterBody
from gateway.routes.orders import OrderBody, PaymentBody
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


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


PRODUCT = ref("Product")
USER = ref("User")
ORDER = ref("Order")
ORDER_ID = {"name": "order_id", "in": "path", "required": True, "schema": {"type": "integer"}}
TOKENS = {"200": {"description": "tokens", **_json(ref("TokenResponse"))}}
PROVIDER = {
    "name": "provider",
    "in": "path",
    "required": True,
    "schema": {"enum": ["google", "facebook", "github"]},
}
PAGE = {"$ref": "#/components/schemas/ProductPage"}
ID_QUERY = {"name": "id", "in": "query", "required": True, "schema": {"type": "integer"}}
ID_PATH = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
PAGING = [
    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
    {
        "name": "after",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1},
        "description": "keyset cursor: start after the product with this id; pages count from it",
    },
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
    top = _op(
        "Best sellers: units sold (paid) per product in the current hour, most first",
        {"200": {"description": "the ranking", **_json(ref("BestSellers"))}},
        422,
        503,
        504,
        parameters=[
            {
                "name": "limit",
                "in": "query",
                "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
            }
        ],
    )
    place = _op(
        "Place an order; prices come from the catalogue",
        {
            "201": {
                "description": "awaiting payment",
                **_json({"type": "object", "properties": {"order": ORDER}}),
            },
            "202": {"description": "still being placed: poll the Location"},
        },
        400,
        401,
        403,
        409,
        413,
        422,
        429,
        security=BEARER,
        parameters=[IDEMPOTENCY],
        requestBody={"required": True, **_json(ref("OrderBody"))},
    )
    list_orders = _op(
        "The caller's orders, newest first",
        {
            "200": {
                "description": "orders",
                **_json(
                    {"type": "object", "properties": {"orders": {"type": "array", "items": ORDER}}}
                ),
            }
        },
        401,
        403,
        422,
        security=BEARER,
        parameters=[{"name": "offset", "in": "query", "schema": {"type": "integer"}}],
    )
    get_order = _op(
        "One of the caller's orders, with items and status history",
        {"200": {"description": "the order", **_json(ORDER)}},
        401,
        403,
        404,
        security=BEARER,
        parameters=[ORDER_ID],
    )
    pay = _op(
        "Pay a payment: `money` must be its amount",
        {"200": {"description": "paid", **_json({"type": "object"})}},
        400,
        401,
        403,
        404,
        409,
        422,
        504,
        security=BEARER,
        parameters=[IDEMPOTENCY],
        requestBody={"required": True, **_json(ref("PaymentBody"))},
    )
    payment = _op(
        "The payment of one of the caller's orders",
        {"200": {"description": "the payment", **_json(ref("Payment"))}},
        401,
        403,
        404,
        security=BEARER,
        parameters=[ORDER_ID],
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "shopstream gateway", "version": "1.0.0"},
        "paths": {
            "/product/": {"get": list_op, "post": create, "put": update_q, "delete": delete_q},
            "/api/v1/products": {"get": list_op, "post": create},
            "/api/v1/products/best-sellers": {"get": top},
            "/api/v1/products/{id}": {
                "get": get_p,
                "put": update_p,
                "patch": update_p,
                "delete": delete_p,
            },
            "/api/v1/auth/register": {
                "post": _op(
                    "Create an account",
                    {
                        "201": {
                            "description": "created",
                            **_json(
                                {
                                    "type": "object",
                                    "properties": {"message": {"type": "string"}, "user": USER},
                                }
                            ),
                        }
                    },
                    400,
                    409,
                    413,
                    422,
                    429,
                    504,
                    requestBody={"required": True, **_json(ref("RegisterBody"))},
                )
            },
            "/api/v1/auth/login": {
                "post": _op(
                    "Log in with email and password",
                    TOKENS,
                    400,
                    401,
                    422,
                    429,
                    504,
                    requestBody={"required": True, **_json(ref("LoginBody"))},
                )
            },
            "/api/v1/auth/refresh-token": {
                "get": _op(
                    "Rotate the refresh token sent as Bearer (seed)",
                    TOKENS,
                    401,
                    429,
                    504,
                    security=BEARER,
                )
            },
            "/api/v1/auth/refresh": {
                "post": _op(
                    "Rotate a refresh token (Bearer or body)",
                    TOKENS,
                    401,
                    429,
                    504,
                    requestBody={"required": False, **_json(ref("RefreshBody"))},
                )
            },
            "/api/v1/auth/logout": {
                "post": _op(
                    "Revoke a refresh token's family",
                    {"200": {"description": "logged out"}},
                    401,
                    429,
                    504,
                    requestBody={"required": False, **_json(ref("RefreshBody"))},
                )
            },
            "/api/v1/auth/{provider}": {
                "get": _op(
                    "The provider's authorization URL (state + PKCE S256)",
                    {
                        "200": {
                            "description": "the URL",
                            **_json({"type": "object", "properties": {"url": {"type": "string"}}}),
                        }
                    },
                    404,
                    429,
                    503,
                    parameters=[PROVIDER],
                )
            },
            "/api/v1/oauth/{provider}/callback": {
                "get": _op(
                    "Finish an OAuth login",
                    TOKENS,
                    400,
                    401,
                    404,
                    429,
                    503,
                    504,
                    parameters=[
                        PROVIDER,
                        {"name": "code", "in": "query", "schema": {"type": "string"}},
                        {"name": "state", "in": "query", "schema": {"type": "string"}},
                    ],
                )
            },
            "/api/v1/users/me": {
                "get": _op(
                    "The caller's account",
                    {"200": {"description": "the user", **_json(USER)}},
                    401,
                    404,
                    429,
                    security=BEARER,
                )
            },
            "/order/": {"post": place, "get": list_orders},
            "/api/v1/orders": {"post": place, "get": list_orders},
            "/order/{order_id}": {"get": get_order},
            "/api/v1/orders/{order_id}": {"get": get_order},
            "/api/v1/orders/requests/{command_id}": {
                "get": _op(
                    "The order a placement made (poll after a 202)",
                    {"200": {"description": "the order", **_json(ORDER)}},
                    401,
                    403,
                    404,
                    security=BEARER,
                    parameters=[
                        {
                            "name": "command_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                )
            },
            "/payment/transaction": {"post": pay},
            "/api/v1/payments/transaction": {"post": pay},
            "/payment/order/{order_id}": {"get": payment},
            "/api/v1/orders/{order_id}/payment": {"get": payment},
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
                "RegisterBody": RegisterBody.model_json_schema(),
                "OrderBody": OrderBody.model_json_schema(),
                "PaymentBody": PaymentBody.model_json_schema(),
                "Order": {
                    "type": "object",
                    "required": [
                        "id",
                        "user_id",
                        "total_price",
                        "status",
                        "created_at",
                        "updated_at",
                        "order_items",
                        "status_history",
                    ],
                },
                "Payment": {
                    "type": "object",
                    "required": ["id", "order_id", "amount", "total_price", "status", "created_at"],
                },
                "LoginBody": LoginBody.model_json_schema(),
                "RefreshBody": RefreshBody.model_json_schema(),
                "TokenResponse": {
                    "type": "object",
                    "required": [
                        "message",
                        "token",
                        "expired_at",
                        "refresh_token",
                        "refresh_token_expired_at",
                        "role",
                    ],
                    "properties": {
                        "message": {"type": "string"},
                        "token": {"type": "string"},
                        "expired_at": {"type": "string", "format": "date-time"},
                        "refresh_token": {"type": "string"},
                        "refresh_token_expired_at": {"type": "string", "format": "date-time"},
                        "role": {"enum": ["user", "admin"]},
                    },
                },
                "User": {
                    "type": "object",
                    "required": ["id", "full_name", "email", "role", "created_at", "updated_at"],
                    "properties": {
                        "id": {"type": "integer"},
                        "full_name": {"type": "string"},
                        "email": {"type": "string"},
                        "role": {"enum": ["user", "admin"]},
                        "provider": {"type": "string"},
                        "provider_id": {"type": "string"},
                        "created_at": {"type": "string", "format": "date-time"},
                        "updated_at": {"type": "string", "format": "date-time"},
                    },
                },
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
                "BestSellers": {
                    "type": "object",
                    "required": ["window", "products"],
                    "properties": {
                        "window": {
                            "type": "object",
                            "description": "the tumbling hour counted: [start, end)",
                            "required": ["start", "end"],
                            "properties": {
                                "start": {"type": "string", "format": "date-time"},
                                "end": {"type": "string", "format": "date-time"},
                            },
                        },
                        "products": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["product_id", "units_sold"],
                                "properties": {
                                    "product_id": {"type": "integer"},
                                    "units_sold": {"type": "integer"},
                                },
                            },
                        },
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
