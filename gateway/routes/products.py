"""The catalogue: the seed's /product/ routes verbatim, and /api/v1/products beside them."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, RootModel

from gateway.api import Operation, PathParam, Response, add_operations
from gateway.auth import require_role
from gateway.keys import GRPC, PAGES, SETTINGS
from gateway.problems import Problem
from gateway.routes import command_id as new_command_id
from gateway.routes import grpc_options, iso_time, json_response, send_command
from gateway.schemas import (
    BestSeller,
    BestSellers,
    BestSellersWindow,
    Deleted,
    Product,
    ProductPage,
)
from gateway.validation import ASCII_DIGITS, parse_id, read_body, read_query
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
MAX_ID = 2**63 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID), ASCII_DIGITS]
MAX_BEST_SELLERS = 100
DEFAULT_BEST_SELLERS = 10


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore")


class PageQuery(_Query):
    page: Annotated[
        int, Field(ge=0, le=1_000_000, description="pages count from 0"), ASCII_DIGITS
    ] = 0
    limit: (
        Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE, description="page size"), ASCII_DIGITS] | None
    ) = None
    after: (
        Annotated[
            int,
            Field(
                ge=1,
                le=MAX_ID,
                description="keyset cursor: start after the product with this id; "
                "pages count from it",
            ),
            ASCII_DIGITS,
        ]
        | None
    ) = None
    id: (
        Annotated[
            int,
            Field(ge=1, le=MAX_ID, description="answer the one product with this id instead"),
            ASCII_DIGITS,
        ]
        | None
    ) = None


class SeedPageQuery(PageQuery):
    page: Annotated[
        int,
        Field(ge=0, le=1_000_000, description="pages count from 1; 0 or none is the first page"),
        ASCII_DIGITS,
    ] = 1


class BestSellersQuery(_Query):
    limit: Annotated[
        int,
        Field(ge=1, le=MAX_BEST_SELLERS, description="how many products to rank"),
        ASCII_DIGITS,
    ] = DEFAULT_BEST_SELLERS


class IdQuery(_Query):
    id: Id


class ProductOrPage(RootModel[ProductPage | Product]):
    """What GET answers: a page, or with `id` the one product."""


def product_json(p: products_pb2.Product) -> Product:
    return Product(
        id=p.id,
        name=p.name,
        description=p.description,
        price=float(Decimal(p.price)),
        stock=p.stock,
        image_url=p.image_url,
        created_at=iso_time(p.created_at),
        updated_at=iso_time(p.updated_at),
    )


def reply_product_json(p: dict[str, Any]) -> Product:
    return Product.model_validate({**p, "price": float(Decimal(str(p["price"])))})


def page_body(reply: products_pb2.ListProductsResponse, first: int = 0) -> bytes:
    return (
        ProductPage(
            total=reply.total,
            page=reply.page + first,
            total_page=reply.total_page,
            products=[product_json(p) for p in reply.products],
        )
        .model_dump_json()
        .encode()
    )


async def _list(request: web.Request, query: PageQuery, first: int) -> web.Response:
    """A page; `first` is the number of the first page (1 on the seed's route, 0 on /api/v1)."""
    if query.id is not None:
        return await _get(request, query.id)
    page = max(query.page - first, 0)
    size = query.limit or request.app[SETTINGS].page_size
    after = query.after or 0
    pages, key = request.app[PAGES], (first, page, size, after)
    body = pages.get(key)
    if body is None:
        generation = pages.generation
        reply = await request.app[GRPC].products.ListProducts(
            products_pb2.ListProductsRequest(page=page, page_size=size, after_id=after),
            **grpc_options(request),
        )
        body = page_body(reply, first)
        pages.put(key, body, generation)
    return web.Response(body=body, content_type="application/json", charset="utf-8")


async def seed_list_products(request: web.Request) -> web.Response:
    return await _list(request, read_query(request, SeedPageQuery), 1)


async def list_products(request: web.Request) -> web.Response:
    return await _list(request, read_query(request, PageQuery), 0)


async def best_sellers(request: web.Request) -> web.Response:
    """Units sold (paid) per product in the current hour, most first."""
    query = read_query(request, BestSellersQuery)
    reply = await request.app[GRPC].products.ListBestSellers(
        products_pb2.ListBestSellersRequest(limit=query.limit), **grpc_options(request)
    )
    return json_response(
        BestSellers(
            window=BestSellersWindow(
                start=iso_time(reply.window_start), end=iso_time(reply.window_end)
            ),
            products=[
                BestSeller(product_id=s.product_id, units_sold=s.units) for s in reply.sellers
            ],
        )
    )


async def _get(request: web.Request, product_id: int) -> web.Response:
    reply = await request.app[GRPC].products.GetProduct(
        products_pb2.GetProductRequest(id=product_id),
        **grpc_options(request),
    )
    return json_response(product_json(reply))


async def get_product(request: web.Request) -> web.Response:
    return await _get(request, _path_id(request))


def _path_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    product_id = parse_id(raw)
    if product_id is None:
        raise Problem(404, f"no product {raw}", code="not_found")
    return product_id


async def write(request: web.Request, key: str, command: ProductCommand) -> dict[str, Any]:
    """Send a catalogue write; once it is applied, empty the page cache, then answer."""
    result = await send_command(request, PRODUCTS_COMMANDS.name, key, command)
    request.app[PAGES].invalidate()
    return result


@require_role("admin")
async def create_product(request: web.Request) -> web.Response:
    new = await read_body(request, NewProduct)
    cid = new_command_id(request, "products.create")
    result = await write(request, str(cid), CreateProduct(command_id=cid, product=new))
    product = reply_product_json(result["product"])
    return json_response(
        product, status=201, headers={"Location": f"/api/v1/products/{product.id}"}
    )


async def _update(request: web.Request, product_id: int) -> web.Response:
    changes = await read_body(request, ProductChanges)
    cid = new_command_id(request, "products.update")
    result = await write(
        request,
        str(product_id),
        UpdateProduct(command_id=cid, product_id=product_id, changes=changes),
    )
    return json_response(reply_product_json(result["product"]))


async def _delete(request: web.Request, product_id: int) -> web.Response:
    cid = new_command_id(request, "products.delete")
    await write(request, str(product_id), DeleteProduct(command_id=cid, product_id=product_id))
    return json_response(Deleted(message="success", id=product_id))


@require_role("admin")
async def update_product_by_query(request: web.Request) -> web.Response:
    return await _update(request, read_query(request, IdQuery).id)


@require_role("admin")
async def delete_product_by_query(request: web.Request) -> web.Response:
    return await _delete(request, read_query(request, IdQuery).id)


@require_role("admin")
async def update_product(request: web.Request) -> web.Response:
    return await _update(request, _path_id(request))


@require_role("admin")
async def delete_product(request: web.Request) -> web.Response:
    return await _delete(request, _path_id(request))


# Digits only, so that /api/v1/products/best-sellers is not taken for a product id (and its
# `Allow` names only GET).
ID = PathParam("id", {"type": "integer", "minimum": 1, "maximum": MAX_ID}, pattern="[0-9]+")
WRITE_ERRORS = (400, 401, 403, 404, 413, 422, 429, 504)
PAGE = {200: Response("a page of the catalogue, newest first", ProductPage)}
ONE = {200: Response("the product", Product)}
CREATED = {201: Response("created", Product, headers={"Location": "the product's URL"})}
DELETED = {200: Response("deleted", Deleted)}
LIST_ERRORS = (404, 422, 429, 503, 504)

OPERATIONS = (
    Operation(
        "GET",
        "/product/",
        seed_list_products,
        "A page of the catalogue (seed: pages from 1), or one product with `id`",
        {200: Response("a page, or the product named by `id`", ProductOrPage)},
        LIST_ERRORS,
        query=SeedPageQuery,
    ),
    Operation(
        "POST",
        "/product/",
        create_product,
        "Create a product (admin)",
        CREATED,
        WRITE_ERRORS,
        body=NewProduct,
        secured=True,
        idempotent=True,
    ),
    Operation(
        "PUT",
        "/product/",
        update_product_by_query,
        "Update a product (admin)",
        ONE,
        WRITE_ERRORS,
        body=ProductChanges,
        query=IdQuery,
        secured=True,
        idempotent=True,
    ),
    Operation(
        "DELETE",
        "/product/",
        delete_product_by_query,
        "Delete a product (admin)",
        DELETED,
        WRITE_ERRORS,
        query=IdQuery,
        secured=True,
        idempotent=True,
    ),
    Operation(
        "GET",
        "/api/v1/products",
        list_products,
        "A page of the catalogue (pages from 0), or one product with `id`",
        {200: Response("a page, or the product named by `id`", ProductOrPage)},
        LIST_ERRORS,
        query=PageQuery,
    ),
    Operation(
        "POST",
        "/api/v1/products",
        create_product,
        "Create a product (admin)",
        CREATED,
        WRITE_ERRORS,
        body=NewProduct,
        secured=True,
        idempotent=True,
    ),
    Operation(
        "GET",
        "/api/v1/products/best-sellers",
        best_sellers,
        "Best sellers: units sold (paid) per product in the current hour, most first",
        {200: Response("the ranking", BestSellers)},
        (422, 429, 503, 504),
        query=BestSellersQuery,
    ),
    Operation(
        "GET",
        "/api/v1/products/{id}",
        get_product,
        "One product",
        ONE,
        (404, 429, 503, 504),
        path_params=(ID,),
    ),
    Operation(
        "PUT",
        "/api/v1/products/{id}",
        update_product,
        "Update a product (admin)",
        ONE,
        WRITE_ERRORS,
        body=ProductChanges,
        path_params=(ID,),
        secured=True,
        idempotent=True,
    ),
    Operation(
        "PATCH",
        "/api/v1/products/{id}",
        update_product,
        "Update some of a product's fields (admin)",
        ONE,
        WRITE_ERRORS,
        body=ProductChanges,
        path_params=(ID,),
        secured=True,
        idempotent=True,
    ),
    Operation(
        "DELETE",
        "/api/v1/products/{id}",
        delete_product,
        "Delete a product (admin)",
        DELETED,
        WRITE_ERRORS,
        path_params=(ID,),
        secured=True,
        idempotent=True,
    ),
)


def setup_routes(app: web.Application) -> None:
    add_operations(app, OPERATIONS)
