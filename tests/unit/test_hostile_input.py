"""Hostile input at the gateway: deep JSON, hostile replies, non-ASCII digit ids (issue 11)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agents.common.settings import Settings
from gateway.app import create_app
from gateway.auth import mint_token
from gateway.bus import BusClient
from gateway.server import runner
from gateway.validation import MAX_JSON_DEPTH, deeper_than, loads, parse_id
from tests.unit.test_gateway import FakeBus, FakeGrpc, problem
from topics.envelope import Reply

SETTINGS = Settings.from_env({"JWT_SECRET": "h" * 64})


class _Unreachable:
    """A gRPC stub that no call with a bad id may reach."""

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"{name} was called")

        return call


class IdGrpc(FakeGrpc):
    @property
    def orders(self) -> Any:
        return _Unreachable()

    @property
    def payments(self) -> Any:
        return _Unreachable()


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(SETTINGS, bus=FakeBus(), grpc=IdGrpc(SETTINGS.grpc))
    async with TestClient(TestServer(app)) as c:
        yield c


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def test_depth_is_measured_outside_strings() -> None:
    assert not deeper_than(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    assert deeper_than(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    assert deeper_than(b"[" * 100_000)
    assert not deeper_than(b'{"a": "' + b"[" * 5000 + b'", "b": "\\"[[[[' + b"{" * 999 + b'"}')
    assert loads(_nested(MAX_JSON_DEPTH)) is not None
    with pytest.raises(ValueError, match="deeper than 400"):
        loads(b"[" * 100_000 + b"]" * 100_000)
    # In UTF-16 the high byte of U+2200 is a quote's: counting bytes would miss the brackets.
    depth = MAX_JSON_DEPTH + 100  # deep enough to refuse, shallow enough for json.loads
    hidden = '["\u2200", ' + "[" * depth + '"\u2200"' + "]" * (depth + 1)
    for encoding in ("utf-16-le", "utf-16-be", "utf-32-le"):
        with pytest.raises(ValueError, match="deeper than 400"):
            loads(hidden.encode(encoding))
    assert loads(json.dumps([[["\u2200"]]]).encode("utf-16")) == [[["\u2200"]]]


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
async def test_a_deeply_nested_body_is_a_400_problem(
    client: TestClient[Any, Any], depth: int
) -> None:
    token = mint_token(SETTINGS, sub="7", role="admin")
    for path in ("/api/v1/products", "/api/v1/auth/login", "/order/"):
        resp = await client.post(
            path,
            data=b"[" * depth + b"]" * depth,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        body = await problem(resp, 400)
        assert "nested deeper than 400" in body["detail"], path


async def test_a_body_at_the_depth_limit_is_parsed(client: TestClient[Any, Any]) -> None:
    token = mint_token(SETTINGS, sub="7", role="admin")
    resp = await client.post(
        "/api/v1/products",
        data=_nested(MAX_JSON_DEPTH - 1),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    await problem(resp, 422)  # parsed, then refused by the schema


HOSTILE_IDS = ["²", "١٢", "\uff11", " 1", "+1", "1_000", "-1", "0", "9" * 19, "9" * 5000]


def test_ids_are_ascii_digits_within_int64() -> None:
    assert [parse_id(raw) for raw in HOSTILE_IDS] == [None] * len(HOSTILE_IDS)
    assert parse_id("42") == 42
    assert parse_id(str(2**63 - 1)) == 2**63 - 1
    assert parse_id(str(2**63)) is None


async def test_ascii_only_parameters_keep_their_bounds_in_the_document(
    client: TestClient[Any, Any],
) -> None:
    doc = await (await client.get("/openapi.json")).json()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            assert not {"ge", "le", "gt", "lt"} & node.keys(), node
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    (param,) = [p for p in doc["paths"]["/product/"]["put"]["parameters"] if p["name"] == "id"]
    assert (param["schema"]["minimum"], param["schema"]["maximum"]) == (1, 2**63 - 1)


@pytest.mark.parametrize("raw", HOSTILE_IDS)
async def test_a_hostile_id_is_404_or_422_on_every_route(
    client: TestClient[Any, Any], raw: str
) -> None:
    user = {"Authorization": f"Bearer {mint_token(SETTINGS, sub='5', role='user')}"}
    admin = {"Authorization": f"Bearer {mint_token(SETTINGS, sub='6', role='admin')}"}
    segment = quote(raw, safe="")
    for path in (
        f"/order/{segment}",
        f"/api/v1/orders/{segment}",
        f"/payment/order/{segment}",
        f"/api/v1/orders/{segment}/payment",
        f"/api/v1/products/{segment}",
        f"/api/v1/orders/requests/{segment}",
    ):
        resp = await client.get(path, headers=user)
        await problem(resp, 404)
    for name, path in (
        ("id", "/product/"),
        ("id", "/api/v1/products"),
        ("after", "/api/v1/products"),
        ("offset", "/order/"),
    ):
        if (name, raw) == ("offset", "0"):
            continue  # the first page
        resp = await client.get(path, params={name: raw}, headers=user)
        await problem(resp, 422)
    for method in ("PUT", "DELETE"):
        resp = await client.request(
            method, "/product/", params={"id": raw}, json={"name": "x"}, headers=admin
        )
        await problem(resp, 422)
    for method in ("PUT", "PATCH", "DELETE"):
        resp = await client.request(
            method, f"/api/v1/products/{segment}", json={"name": "x"}, headers=admin
        )
        await problem(resp, 404)


class FakeMessage:
    def __init__(self, value: object) -> None:
        self.value = value


class FakeConsumer:
    """Hands out queued batches; a queued exception is raised by getmany instead."""

    def __init__(self) -> None:
        self.batches: asyncio.Queue[list[object] | Exception] = asyncio.Queue()

    async def getmany(self, timeout_ms: int = 0) -> dict[str, list[FakeMessage]]:
        batch = await self.batches.get()
        if isinstance(batch, Exception):
            raise batch
        return {"tp": [FakeMessage(v) for v in batch]}


def _reply(correlation_id: object, value: object = None) -> bytes:
    body = Reply.success({"n": 1}).model_dump() if value is None else value
    return json.dumps({"key": None, "value": body, "correlation_id": correlation_id}).encode()


HOSTILE_REPLIES: list[object] = [
    None,
    "text, not bytes",
    b"",
    b"not json",
    b"\xff\xfe",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"correlation_id": "w", "value": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b"[" * 100_000,
    b'"a string"',
    b"[1, 2]",
    b"9" * 5000,
    _reply({"unhashable": True}),
    _reply(["w"]),
    _reply(None),
    _reply("w", "not a reply"),
    _reply("w", {"ok": "maybe"}),
    b'{"correlation_id": "w"}',
]


@pytest.fixture
async def reading() -> AsyncIterator[tuple[BusClient, FakeConsumer]]:
    bus = BusClient(SETTINGS)
    bus.restart_delay_s = 0.0
    consumer = FakeConsumer()
    bus._consumer = consumer
    bus._reader = asyncio.create_task(bus._read_replies())
    yield bus, consumer
    bus._reader.cancel()
    await asyncio.gather(bus._reader, return_exceptions=True)


def _waiting(bus: BusClient, correlation_id: str) -> asyncio.Future[Reply]:
    fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
    bus._pending[correlation_id] = fut
    return fut


async def test_the_reply_reader_skips_hostile_messages_and_counts_them(
    reading: tuple[BusClient, FakeConsumer],
) -> None:
    bus, consumer = reading
    fut = _waiting(bus, "w")
    consumer.batches.put_nowait([*HOSTILE_REPLIES, _reply("somebody-else"), _reply("w")])
    async with asyncio.timeout(10):
        reply = await fut
    assert reply.ok
    assert reply.result == {"n": 1}
    assert bus.ready
    assert bus.stats.unreadable == len(HOSTILE_REPLIES)
    assert bus.stats.unknown == 1
    assert bus.stats.restarts == 0


async def test_the_reply_reader_restarts_after_an_unexpected_failure(
    reading: tuple[BusClient, FakeConsumer],
) -> None:
    bus, consumer = reading
    fut = _waiting(bus, "after")
    consumer.batches.put_nowait(RuntimeError("a bug"))
    consumer.batches.put_nowait(RecursionError("deeper still"))
    consumer.batches.put_nowait([_reply("after")])
    async with asyncio.timeout(10):
        assert (await fut).ok
    assert bus.ready
    assert bus.stats.restarts == 2


async def test_healthz_fails_when_the_reply_reader_is_dead() -> None:
    async def crash() -> None:
        raise RecursionError("the reader died")

    bus = BusClient(SETTINGS)
    bus._reader = asyncio.create_task(crash())
    await asyncio.gather(bus._reader, return_exceptions=True)
    app = create_app(SETTINGS, bus=bus, grpc=IdGrpc(SETTINGS.grpc))
    async with TestClient(TestServer(app)) as c:
        body = await problem(await c.get("/healthz"), 503)
        assert "reply reader" in body["detail"]

    async def forever() -> None:
        await asyncio.Event().wait()

    alive = BusClient(SETTINGS)
    alive._reader = asyncio.create_task(forever())
    app = create_app(SETTINGS, bus=alive, grpc=IdGrpc(SETTINGS.grpc))
    try:
        async with TestClient(TestServer(app)) as c:
            assert (await c.get("/healthz")).status == 200
    finally:
        alive._reader.cancel()
        await asyncio.gather(alive._reader, return_exceptions=True)


@pytest.fixture
async def gateway_port() -> AsyncIterator[int]:
    """The gateway served as `python -m gateway` serves it, on a free loopback port."""
    app = create_app(SETTINGS, bus=FakeBus(), grpc=IdGrpc(SETTINGS.grpc))
    served = runner(app)
    await served.setup()
    try:
        site = web.TCPSite(served, "127.0.0.1", 0)
        await site.start()
        yield served.addresses[0][1]
    finally:
        await served.cleanup()


async def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as is; the status, headers and body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = dict(line.split(": ", 1) for line in lines[1:] if line)
            body = await reader.readexactly(int(headers["Content-Length"]))
    finally:
        writer.close()
        await writer.wait_closed()
    return int(lines[0].split()[1]), headers, body


def _get(target: str, *headers: str) -> bytes:
    return "\r\n".join([f"GET {target} HTTP/1.1", "Host: gw", *headers, "", ""]).encode()


@pytest.mark.parametrize(
    ("request_bytes", "status", "detail"),
    [
        (_get("/healthz", "X-Big: " + "a" * 9000), 431, "header is longer than 8190"),
        (_get("/healthz", "X-" + "b" * 9000 + ": 1"), 431, "header is longer than 8190"),
        (_get("/healthz", *(f"X-{i}: 1" for i in range(200))), 431, "more than 128"),
        (_get("/healthz?q=" + "c" * 70_000), 414, "request line is longer than 65536"),
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "not valid HTTP"),
        (b"GET / HTTP/1.1\r\nHost: gw\r\nContent-Length: x\r\n\r\n", 400, "not valid HTTP"),
    ],
)
async def test_requests_the_parser_refuses_are_problems(
    gateway_port: int, request_bytes: bytes, status: int, detail: str
) -> None:
    got, headers, body = await _raw(gateway_port, request_bytes)
    assert got == status, body
    assert headers["Content-Type"].startswith("application/problem+json")
    problem_body = json.loads(body)
    assert problem_body["status"] == status
    assert detail in problem_body["detail"]


async def test_long_but_allowed_lines_are_served(gateway_port: int) -> None:
    status, _, _ = await _raw(
        gateway_port, _get("/healthz?q=" + "c" * 60_000, "X-Fine: " + "a" * 8000)
    )
    assert status == 200


# Text a client sends may hold anything but NUL, which PostgreSQL's `text` refuses (a 500 once).
OPAQUE_TEXT = {"password", "refresh_token", "token"}  # hashed or decoded, never stored as text


def _text_fields(doc: dict[str, Any], schema: dict[str, Any], path: str) -> Any:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    for alternative in schema.get("anyOf", []) + schema.get("allOf", []):
        yield from _text_fields(doc, alternative, path)
    if schema.get("type") == "string" and "enum" not in schema and "format" not in schema:
        yield path, schema.get("pattern")
    for name, prop in schema.get("properties", {}).items():
        yield from _text_fields(doc, prop, f"{path}.{name}")


async def test_no_text_field_of_a_request_body_takes_nul(client: TestClient[Any, Any]) -> None:
    doc = await (await client.get("/openapi.json")).json()
    fields = [
        (f"{method} {route}", path, pattern)
        for route, operations in doc["paths"].items()
        for method, op in operations.items()
        if isinstance(op, dict) and "requestBody" in op
        for content in op["requestBody"]["content"].values()
        for path, pattern in _text_fields(doc, content["schema"], "body")
        if path.rsplit(".", 1)[1] not in OPAQUE_TEXT
    ]
    assert len(fields) > 20
    for operation, path, pattern in fields:
        assert pattern, f"{operation} {path} has no pattern"
        assert re.fullmatch(pattern, "a\x00b") is None, f"{operation} {path} takes NUL"


async def test_a_nul_in_a_name_is_a_422_and_reaches_no_worker() -> None:
    bus = FakeBus()
    app = create_app(SETTINGS, bus=bus, grpc=IdGrpc(SETTINGS.grpc))
    token = mint_token(SETTINGS, sub="7", role="admin")
    async with TestClient(TestServer(app)) as c:
        resp = await c.post(
            "/api/v1/products",
            json={"name": "Lamp\x00", "description": "", "price": 5, "stock": 1},
            headers={"Authorization": f"Bearer {token}"},
        )
        body = await problem(resp, 422)
        assert [e["path"] for e in body["errors"]] == ["name"]
        resp = await c.post(
            "/api/v1/auth/register",
            json={"full_name": "Nul\x00 Person", "email": "n@x.io", "password": "secret123"},
        )
        await problem(resp, 422)
    assert bus.sent == []
