"""The storefront's files: served by the gateway as committed, nothing loaded from elsewhere."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agents.common.settings import Settings
from gateway.app import create_app
from gateway.grpc_clients import GrpcClients
from gateway.routes.storefront import STATIC
from tests.unit.test_gateway import FakeBus

SETTINGS = Settings.from_env({"JWT_SECRET": "k" * 64})
FILES = sorted(p.name for p in STATIC.iterdir() if p.is_file())


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(SETTINGS, bus=FakeBus(), grpc=GrpcClients(SETTINGS.grpc))
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_the_page_and_its_files_are_served_with_their_types_and_policy(
    client: TestClient[Any, Any],
) -> None:
    for path, kind in [
        ("/", "text/html"),
        ("/oauth/github/callback", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/style.css", "text/css"),
        ("/assets/placeholder.svg", "image/svg+xml"),
    ]:
        resp = await client.get(path)
        assert resp.status == 200, path
        assert resp.content_type == kind, path
        assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    for missing in ("/assets/nope.js", "/assets/.hidden", "/assets/..%2Fapp.py"):
        assert (await client.get(missing)).status == 404, missing


@pytest.mark.parametrize("name", FILES)
def test_nothing_comes_from_the_internet(name: str) -> None:
    text = (STATIC / name).read_text()
    # The one address allowed is the SVG namespace, which is a name, not a download.
    addresses = set(re.findall(r"https?://[^\s\"')]+", text)) - {"http://www.w3.org/2000/svg"}
    assert not addresses, addresses
    assert "@import" not in text
    assert "fonts." not in text


def test_every_module_and_file_the_page_names_is_there() -> None:
    named: set[str] = set()
    for name in FILES:
        text = (STATIC / name).read_text()
        named |= set(re.findall(r"/assets/([\w.-]+)", text))
        named |= set(re.findall(r"from \"\./([\w.-]+)\"", text))
    assert named
    assert named <= set(FILES), named - set(FILES)
