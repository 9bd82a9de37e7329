"""The gateway's catalogue-page cache: hits, invalidation, the generation race, the watcher."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from gateway.app import create_app
from gateway.catalogue import PageCache, ProductsEventsWatcher
from protos import products_pb2
from tests.helpers import eventually
from tests.unit.test_gateway import SETTINGS, FakeBus, FakeGrpc, auth, product_reply, proto_product
from topics.envelope import ErrorType, Reply

FOREVER = float("inf")


async def until(condition: Callable[[], bool], what: str) -> None:
    async def probe() -> bool:
        return condition()

    await eventually(probe, timeout=5, what=what)


def serving_cache(max_pages: int = 256) -> PageCache:
    pages = PageCache(max_pages)
    pages.serve_until(FOREVER)
    return pages


class CountingStub:
    """ListProducts answers with `stock` as it is when the call starts; `gate` holds replies."""

    def __init__(self) -> None:
        self.calls: list[products_pb2.ListProductsRequest] = []
        self.stock = 5
        self.gate: asyncio.Event | None = None

    async def ListProducts(
        self, request: products_pb2.ListProductsRequest, **kw: Any
    ) -> products_pb2.ListProductsResponse:
        self.calls.append(request)
        product = proto_product(1)
        product.stock = self.stock
        if self.gate is not None:
            await self.gate.wait()
        return products_pb2.ListProductsResponse(
            total=1, page=request.page, total_page=1, products=[product]
        )


class CountingGrpc(FakeGrpc):
    def __init__(self, stub: CountingStub) -> None:
        super().__init__(SETTINGS.grpc)
        self.stub = stub

    @property
    def products(self) -> Any:
        return self.stub


@pytest.fixture
def stub() -> CountingStub:
    return CountingStub()


@pytest.fixture
def pages() -> PageCache:
    return serving_cache()


@pytest.fixture
async def client(
    stub: CountingStub, pages: PageCache, bus: FakeBus
) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(SETTINGS, bus=bus, grpc=CountingGrpc(stub), pages=pages)
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.fixture
def bus() -> FakeBus:
    return FakeBus()


async def page(client: TestClient[Any, Any], query: str = "page=0") -> tuple[bytes, str]:
    resp = await client.get(f"/product/?{query}")
    assert resp.status == 200, await resp.text()
    return await resp.read(), resp.headers["Content-Type"]


# --- PageCache --------------------------------------------------------------------------------


def test_a_stored_page_is_served_as_it_was_stored() -> None:
    pages = serving_cache()
    pages.put((0, 0, 10, 0), b'{"total": 1}', pages.generation)
    assert pages.get((0, 0, 10, 0)) == b'{"total": 1}'
    assert pages.get((0, 1, 10, 0)) is None


def test_the_least_recently_used_page_goes_first() -> None:
    pages = serving_cache(max_pages=2)
    for n in range(2):
        pages.put((0, n, 10, 0), b"%d" % n, pages.generation)
    assert pages.get((0, 0, 10, 0)) == b"0"
    pages.put((0, 2, 10, 0), b"2", pages.generation)
    assert len(pages) == 2
    assert pages.get((0, 1, 10, 0)) is None
    assert pages.get((0, 0, 10, 0)) == b"0"


def test_invalidation_empties_the_cache_and_moves_the_generation() -> None:
    pages = serving_cache()
    pages.put((0, 0, 10, 0), b"old", pages.generation)
    before = pages.generation
    pages.invalidate()
    assert pages.generation == before + 1
    assert pages.get((0, 0, 10, 0)) is None


def test_a_page_fetched_before_an_invalidation_is_not_kept() -> None:
    pages = serving_cache()
    generation = pages.generation
    pages.invalidate()
    pages.put((0, 0, 10, 0), b"read before the change", generation)
    assert pages.get((0, 0, 10, 0)) is None
    assert len(pages) == 0


@pytest.mark.parametrize("how", ["stopped", "expired"])
def test_unwatched_the_cache_neither_serves_nor_stores(how: str) -> None:
    pages = serving_cache()
    pages.put((0, 0, 10, 0), b"page", pages.generation)
    if how == "stopped":
        pages.stop_serving()
    else:
        pages.serve_until(time.monotonic() - 0.001)
    assert not pages.serving
    assert pages.get((0, 0, 10, 0)) is None
    pages.put((0, 1, 10, 0), b"page", pages.generation)
    pages.serve_until(FOREVER)
    assert pages.get((0, 1, 10, 0)) is None


# --- the route --------------------------------------------------------------------------------


async def test_repeated_page_reads_stay_in_the_gateway(
    client: TestClient[Any, Any], stub: CountingStub
) -> None:
    first = await page(client)
    assert await page(client) == first
    assert first[1] == "application/json; charset=utf-8"
    assert len(stub.calls) == 1
    await page(client, "page=0&limit=5")
    # The seed's pages count from 1, and page 0 is its first page too: both are cached already.
    await page(client, "page=1")
    await page(client, "page=2")
    await page(client, "after=9")
    assert [(c.page, c.page_size, c.after_id) for c in stub.calls] == [
        (0, 10, 0),
        (0, 5, 0),
        (1, 10, 0),
        (0, 10, 9),
    ]


@pytest.mark.parametrize(
    ("method", "path", "body", "reply"),
    [
        ("POST", "/product/", {"name": "Mug", "price": 1, "stock": 1}, product_reply(7)),
        ("PUT", "/product/?id=1", {"stock": 4}, product_reply(1)),
        ("PATCH", "/api/v1/products/1", {"stock": 4}, product_reply(1)),
        ("DELETE", "/product/?id=1", None, Reply.success({"product_id": 1})),
    ],
)
async def test_a_write_empties_the_cache_before_its_reply(
    client: TestClient[Any, Any],
    stub: CountingStub,
    pages: PageCache,
    bus: FakeBus,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    reply: Reply,
) -> None:
    before, _ = await page(client)
    bus.reply = reply
    stub.stock = 4
    resp = await client.request(method, path, json=body, headers=auth())
    assert resp.status in (200, 201)
    assert len(pages) == 0
    after, _ = await page(client)
    assert after != before
    assert b'"stock":4' in after
    assert len(stub.calls) == 2


@pytest.mark.parametrize(
    ("reply", "status"), [(Reply.failure(ErrorType.NOT_FOUND, "no product 1"), 404), (None, 504)]
)
async def test_a_write_refused_or_unanswered_leaves_the_cache(
    client: TestClient[Any, Any], pages: PageCache, bus: FakeBus, reply: Reply | None, status: int
) -> None:
    await page(client)
    bus.reply = reply
    resp = await client.put("/product/?id=1", json={"stock": 4}, headers=auth())
    assert resp.status == status
    assert len(pages) == 1


async def test_a_read_that_started_before_an_invalidation_does_not_store_its_page(
    client: TestClient[Any, Any], stub: CountingStub, pages: PageCache
) -> None:
    stub.gate = asyncio.Event()
    slow = asyncio.create_task(page(client))
    await until(lambda: bool(stub.calls), "the read started")
    stub.stock = 4
    pages.invalidate()
    stub.gate.set()
    old, _ = await slow
    assert b'"stock":5' in old
    assert len(pages) == 0
    new, _ = await page(client)
    assert b'"stock":4' in new
    assert len(stub.calls) == 2


async def test_with_nobody_watching_every_read_goes_to_grpc(
    client: TestClient[Any, Any], stub: CountingStub, pages: PageCache
) -> None:
    pages.stop_serving()
    for _ in range(3):
        await page(client)
    assert len(stub.calls) == 3
    assert len(pages) == 0


async def test_with_a_fake_bus_and_no_cache_given_nothing_is_cached(stub: CountingStub) -> None:
    app = create_app(SETTINGS, bus=FakeBus(), grpc=CountingGrpc(stub))
    async with TestClient(TestServer(app)) as c:
        for _ in range(2):
            await page(c)
    assert len(stub.calls) == 2


# --- the watcher ------------------------------------------------------------------------------


class FakeBroker:
    """What the fake consumers see: batches to hand out, when partitions were last polled."""

    def __init__(self) -> None:
        self.down = False
        self.fail_fetch = False
        self.started = 0
        self.fetches = 0
        self.consumers: list[FakeConsumer] = []
        self.polled_ms: int | None = None
        self.batches: asyncio.Queue[dict[TopicPartition, list[Any]]] = asyncio.Queue()

    def poll_now(self) -> None:
        self.polled_ms = int(time.time() * 1000)

    def consumer(self) -> FakeConsumer:
        self.consumers.append(FakeConsumer(self))
        return self.consumers[-1]


class FakeConsumer:
    """The part of AIOKafkaConsumer the watcher uses."""

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.assigned: list[TopicPartition] = []
        self.seeked: list[TopicPartition] = []
        self.stopped = False

    async def start(self) -> None:
        self.broker.started += 1
        if self.broker.down:
            raise KafkaConnectionError("broker down")

    async def stop(self) -> None:
        self.stopped = True

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {1, 0}

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = tps

    async def seek_to_end(self, *tps: TopicPartition) -> None:
        self.seeked = list(tps)

    async def getmany(
        self, *tps: TopicPartition, timeout_ms: int
    ) -> dict[TopicPartition, list[Any]]:
        self.broker.fetches += 1
        if self.broker.fail_fetch:
            raise KafkaConnectionError("connection lost")
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                return await self.broker.batches.get()
        except TimeoutError:
            return {}

    def last_poll_timestamp(self, tp: TopicPartition) -> int | None:
        assert tp in self.assigned
        return self.broker.polled_ms


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
async def watched(broker: FakeBroker) -> AsyncIterator[PageCache]:
    pages = PageCache()
    watcher = ProductsEventsWatcher(pages, broker.consumer, topic="t", fresh_for_s=2, retry_s=0.01)
    watcher.start()
    yield pages
    await watcher.stop()
    assert not pages.serving
    assert all(c.stopped for c in broker.consumers)


async def serving(pages: PageCache, broker: FakeBroker) -> None:
    broker.poll_now()
    await broker.batches.put({})
    await until(lambda: pages.serving, "serving")


async def test_the_watcher_follows_every_partition_from_the_end_then_serves(
    watched: PageCache, broker: FakeBroker
) -> None:
    await until(lambda: broker.fetches > 0, "a fetch")
    [consumer] = broker.consumers
    assert consumer.assigned == consumer.seeked == [TopicPartition("t", 0), TopicPartition("t", 1)]
    assert not watched.serving, "no partition was polled yet"
    generation = watched.generation
    await serving(watched, broker)
    assert watched.generation > generation, "what was read before following is not kept"


async def test_any_event_empties_the_cache(watched: PageCache, broker: FakeBroker) -> None:
    await serving(watched, broker)
    watched.put((0, 0, 10, 0), b"page", watched.generation)
    generation = watched.generation
    await broker.batches.put({TopicPartition("t", 1): [object()]})
    await until(lambda: watched.generation > generation, "an invalidation")
    assert watched.get((0, 0, 10, 0)) is None
    assert watched.serving


async def test_polls_grown_old_stop_the_serving(watched: PageCache, broker: FakeBroker) -> None:
    await serving(watched, broker)
    watched.put((0, 0, 10, 0), b"page", watched.generation)
    broker.polled_ms = int((time.time() - 5) * 1000)
    await broker.batches.put({})
    await until(lambda: not watched.serving, "not serving")
    assert len(watched) == 0
    broker.poll_now()
    await broker.batches.put({})
    await until(lambda: watched.serving, "serving again")
    assert watched.get((0, 0, 10, 0)) is None


async def test_a_failed_fetch_starts_a_new_consumer(watched: PageCache, broker: FakeBroker) -> None:
    await serving(watched, broker)
    broker.fail_fetch = True
    await until(lambda: not watched.serving, "not serving")
    broker.fail_fetch = False
    await until(lambda: len(broker.consumers) >= 2, "a new consumer")
    assert broker.consumers[0].stopped
    await serving(watched, broker)


async def test_a_broker_that_is_down_is_retried_and_nothing_is_served(broker: FakeBroker) -> None:
    pages = PageCache()
    broker.down = True
    broker.poll_now()
    watcher = ProductsEventsWatcher(pages, broker.consumer, topic="t", retry_s=0.01)
    watcher.start()
    try:
        await until(lambda: broker.started >= 3, "retries")
        assert not pages.serving
        broker.down = False
        await serving(pages, broker)
    finally:
        await watcher.stop()
