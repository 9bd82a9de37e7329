"""shopstream's storefront: static files committed in gateway/static/, served as they are.

It is a client of the public REST API like any other; the gateway only hands out its files.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from gateway.api import Operation, PathParam, Response, add_operations
from gateway.problems import Problem
from gateway.routes.auth import PROVIDER

STATIC = Path(__file__).resolve().parent.parent / "static"
TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
# Scripts, styles and fonts only from the gateway itself; product images may be anywhere.
CSP = (
    "default-src 'self'; img-src * data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Revalidated on every load (the ETag makes that cheap), so a new release shows at once.
    "Cache-Control": "no-cache",
}


def _file(name: str) -> web.FileResponse:
    path = STATIC / name
    content_type = TYPES.get(path.suffix)
    if name.startswith(".") or content_type is None or not path.is_file():
        raise Problem(404, f"no file {name}", code="not_found")
    response = web.FileResponse(path, headers=HEADERS)
    response.content_type = content_type
    return response


async def index(request: web.Request) -> web.FileResponse:
    """The storefront's one page; it routes by the address's #fragment."""
    return _file("index.html")


async def asset(request: web.Request) -> web.FileResponse:
    return _file(request.match_info["name"])


HTML = {200: Response("the page", media_type="text/html")}

OPERATIONS = (
    Operation("GET", "/", index, "The storefront (HTML; it routes by the #fragment)", HTML),
    # Where an OAuth provider sends the browser back (set <PROVIDER>_REDIRECT_URL to it): the
    # storefront finishes the login through /api/v1/oauth/{provider}/callback.
    Operation(
        "GET",
        "/oauth/{provider}/callback",
        index,
        "The storefront, back from an OAuth provider: it finishes the login",
        HTML,
        (404, 429),
        path_params=(PROVIDER,),
    ),
    Operation(
        "GET",
        "/assets/{name}",
        asset,
        "A file of the storefront: HTML, CSS, a JavaScript module or an SVG image",
        {200: Response("the file, with its own type", media_type="")},
        (404,),
        path_params=(PathParam("name", {"type": "string"}),),
    ),
)


def setup_routes(app: web.Application) -> None:
    add_operations(app, OPERATIONS)
