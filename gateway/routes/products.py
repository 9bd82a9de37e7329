"""The catalogue: the seed's /product/ routes verbatim, and /api/v1/products beside them."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

from aiohttp import web

from gateway.auth import require_role
from gateway.keys import GRPC, PAGES, SETTINGS
from gateway.problems import Problem
from gateway.routes import command_id as new_command_id
from gateway.routes import grpc_options, iso_time, send_command
from gateway.validation import int_query, read_body
from protos import products_pb2
from topics import PRODUCTS_COMMANDS
from topics.products import (
    CreateProduct,
    DeleteProduct,
    NewProduct,
    ProductChanges,
    ProductCommand,
    UpdateProduct,
)

MAX_PAGE_SIZE = 100
MAX_BEST_SELLERS = 100
DEFAULT_BEST_SELLERS = 10
IDEMPOTENCY_NS = uuid.UUID("6f1c1a52-6a8e-4d5e-9f55-1b7f3c1f0a11")


def product_json(p: products_pb2.Product) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "price": float(Decimal(p.price)),
        "stock": p.stock,
        "image_url": p.image_url,
        "created_at": iso_time(p.created_at),
        "updated_at": iso_time(p.updated_at),
    }


def reply_product_json(p: dict[str, Any]) -> dict[str, Any]:
    return {**p, "price": float(Decimal(str(p["price"])))}


def page_body(reply: products_pb2.ListProductsResponse) -> bytes:
    return json.dumps(
        {
            "total": reply.total,
            "page": reply.page,
            "total_page": reply.total_page,
            "products": [product_json(p) for p in reply.products],
        }
    ).encode()


async def list_products(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if "id" in request.query:
        return await get_product_by_query(request)
    page = int_query(request, "page", default=0, maximum=1_000_000)
    size = int_query(request, "limit", default=settings.page_size, minimum=1, maximum=MAX_PAGE_SIZE)
    after = int_query(request, "after", default=0, minimum=1)
    pages, key = request.app[PAGES], (page, size, after)
    body = pages.get(key)
    if body is None:
        generation = pages.generation
        reply = await request.app[GRPC].products.ListProducts(
            products_pb2.ListProductsRequest(page=page, page_size=size, after_id=after),
            **grpc_options(request),
        )
        body = page_body(reply)
        pages.put(key, body, generation)
    return web.Response(body=body, content_type="application/json", charset="utf-8")


async def best_sellers(request: web.Request) -> web.Response:
    """Units sold (paid) per product in the current hour, most first."""
    limit = int_query(
        request, "limit", default=DEFAULT_BEST_SELLERS, minimum=1, maximum=MAX_BEST_SELLERS
    )
    reply = await request.app[GRPC].products.ListBestSellers(
        products_pb2.ListBestSellersRequest(limit=limit), **grpc_options(request)
    )
    return web.json_response(
        {
            "window": {"start": iso_time(reply.window_start), "end": iso_time(reply.window_end)},
            "products": [
                {"product_id": s.product_id, "units_sold": s.units} for s in reply.sellers
            ],
        }
    )


async def _get(request: web.Request, product_id: int) -> web.Response:
    reply = await request.app[GRPC].products.GetProduct(
        products_pb2.GetProductRequest(id=product_id),
        **grpc_options(request),
    )
    return web.json_response(product_json(reply))


async def get_product_by_query(request: web.Request) -> web.Response:
    return await _get(request, int_query(request, "id", minimum=1))


async def get_product(request: web.Request) -> web.Response:
    return await _get(request, _path_id(request))


def _path_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or not 1 <= int(raw) < 2**63:
        raise Problem(404, f"no product {raw}", code="not_found")
    return int(raw)


async def write(request: web.Request, key: str, command: ProductCommand) -> dict[str, Any]:
    """Send a catalogue write; once it is applied, empty the page cache, then answer."""
    result = await send_command(request, PRODUCTS_COMMANDS.name, key, command)
    request.app[PAGES].invalidate()
    return result


@require_role("admin")
async def create_product(request: web.Request) -> web.Response:
    new = await read_body(request, NewProduct)
    cid = new_command_id(request)
    result = await write(request, str(cid), CreateProduct(command_id=cid, product=new))
    product = reply_product_json(result["product"])
    return web.json_response(
        product, status=201, headers={"Location": f"/api/v1/products/{product['id']}"}
    )


async def _update(request: web.Request, product_id: int) -> web.Response:
    changes = await read_body(request, ProductChanges)
    cid = new_command_id(request)
    result = await write(
        request,
        str(product_id),
        UpdateProduct(command_id=cid, product_id=product_id, changes=changes),
    )
    return web.json_response(reply_product_json(result["product"]))


async def _delete(request: web.Request, product_id: int) -> web.Response:
    cid = new_command_id(request)
    await write(request, str(product_id), DeleteProduct(command_id=cid, product_id=product_id))
    return web.json_response({"message": "success", "id": product_id})


@require_role("admin")
async def update_product_by_query(request: web.Request) -> web.Response:
    return await _update(request, int_query(request, "id", minimum=1))


@require_role("admin")
async def delete_product_by_query(request: web.Request) -> web.Response:
    return await _delete(request, int_query(request, "id", minimum=1))


@require_role("admin")
async def update_product(request: web.Request) -> web.Response:
    return await _update(request, _path_id(request))


@require_role("admin")
async def delete_product(request: web.Request) -> web.Response:
    return await _delete(request, _path_id(request))


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/product/", list_products)
    app.router.add_post("/product/", create_product)
    app.router.add_put("/product/", update_product_by_query)
    app.router.add_delete("/product/", delete_product_by_query)
    app.router.add_get("/api/v1/products", list_products)
    app.router.add_post("/api/v1/products", create_product)
    # Before /api/v1/products/{id}, which would take it for a product id.
    app.router.add_get("/api/v1/products/best-sellers", best_sellers)
    app.router.add_get("/api/v1/products/{id}", get_product)
    app.router.add_put("/api/v1/products/{id}", update_product)
    app.router.add_patch("/api/v1/products/{id}", update_product)
    app.router.add_delete("/api/v1/products/{id}", delete_product)
