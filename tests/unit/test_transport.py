"""Our Faust transport: a stream's queued events survive a resume of flow that is running, and a
seek to the committed offsets while flow runs keeps what was delivered since the queues were
last emptied (agents/common/transport.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from faust.types import TP
from mode.utils.queues import FlowControlQueue

from agents.common.runtime import DomainApp
from agents.common.transport import Consumer, ConsumerThread, FlowControl, ReadOffsets

ORDERS = TP("orders.events", 0)
OTHER = TP("orders.events", 1)


def event(tp: TP, offset: int) -> Any:
    return SimpleNamespace(message=SimpleNamespace(tp=tp, offset=offset))


async def test_a_resume_while_flow_runs_keeps_the_queued_events() -> None:
    cleared: list[int] = []
    flow = FlowControl(on_clear=lambda: cleared.append(1))
    queue: FlowControlQueue[Any] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
    queue.put_nowait(event(ORDERS, 1))
    flow.resume()  # from suspended (a rebalance): emptied
    assert queue.empty()
    assert cleared == [1]
    queue.put_nowait(event(ORDERS, 9))
    queue.put_nowait(event(ORDERS, 10))
    flow.resume()  # running already (a table's recovery completing): kept
    assert queue.qsize() == 2
    assert cleared == [1]
    flow.suspend()
    flow.clear()  # a revocation empties them
    assert queue.empty()
    assert cleared == [1, 1]


def test_the_app_streams_use_our_flow_control() -> None:
    app = DomainApp("shopstream-test", broker="shopstream://localhost:9092")
    assert isinstance(app.flow_control, FlowControl)


def test_a_read_offset_remembers_its_era() -> None:
    reads = ReadOffsets()
    assert reads[ORDERS] is None
    reads[ORDERS] = 20
    reads.era += 1
    reads[OTHER] = 5
    assert reads.era_of == {ORDERS: 0, OTHER: 1}


def consumer(
    reads: ReadOffsets, committed: dict[Any, int | None], broker: dict[Any, int | None]
) -> Any:
    fake = SimpleNamespace(_read_offset=reads, _committed_offset=committed, flow_active=True)
    fake.app = SimpleNamespace(flow_control=FlowControl())
    fake.app.flow_control.resume()

    async def seek_to_committed() -> dict[Any, int | None]:
        await asyncio.sleep(0)
        return broker

    fake.seek_to_committed = seek_to_committed
    fake._flow_running = lambda: Consumer._flow_running(fake)  # type: ignore[arg-type]
    return fake


async def test_a_seek_while_flow_runs_keeps_what_was_delivered_since_the_last_emptying() -> None:
    reads = ReadOffsets()
    reads[OTHER] = 30  # delivered, then thrown away by an emptying of the queues
    reads.era += 1
    reads[ORDERS] = 20  # delivered since: queued or processed
    committed: dict[Any, int | None] = {ORDERS: 11}
    fake = consumer(reads, committed, {TopicPartition(*ORDERS): 9, TopicPartition(*OTHER): 4})
    await Consumer.perform_seek(fake)
    assert reads[ORDERS] == 20
    assert committed[ORDERS] == 11
    assert reads[OTHER] == 4
    assert committed[OTHER] == 4


async def test_a_seek_while_flow_is_stopped_is_faust_s() -> None:
    reads = ReadOffsets()
    reads[ORDERS] = 20
    committed: dict[Any, int | None] = {ORDERS: 11}
    fake = consumer(reads, committed, {TopicPartition(*ORDERS): 9})
    fake.flow_active = False
    await Consumer.perform_seek(fake)
    assert reads[ORDERS] == 9
    assert committed[ORDERS] == 9


async def test_a_seek_to_zero_while_flow_runs_keeps_the_read_offset() -> None:
    reads = ReadOffsets()
    reads[ORDERS] = 7
    committed: dict[Any, int | None] = {}
    fake = consumer(reads, committed, {TopicPartition(*ORDERS): 0})
    await Consumer.perform_seek(fake)
    assert reads[ORDERS] == 7
    assert committed[ORDERS] is None


class _FakeAIOKafkaConsumer:
    def __init__(self, committed: dict[str, int | None]) -> None:
        self.committed = committed
        self.seeks: dict[str, int] = {}
        self.to_beginning: list[str] = []

    async def seek_to_committed(self) -> dict[str, int | None]:
        # As aiokafka does: only a committed offset above 0 moves the partition.
        self.seeks.update({tp: o for tp, o in self.committed.items() if o and o > 0})
        return self.committed

    def seek(self, tp: str, offset: int) -> None:
        self.seeks[tp] = offset

    async def seek_to_beginning(self, *tps: str) -> None:
        self.to_beginning.extend(tps)


async def test_seek_to_committed_also_moves_partitions_committed_at_0_or_never() -> None:
    fake = _FakeAIOKafkaConsumer({"a": 0, "b": None, "c": 5})

    class Thread:
        def _ensure_consumer(self) -> _FakeAIOKafkaConsumer:
            return fake

    committed = await ConsumerThread._seek_to_committed(Thread())  # type: ignore[arg-type]
    assert committed == {"a": 0, "b": None, "c": 5}
    assert fake.seeks == {"a": 0, "c": 5}
    assert fake.to_beginning == ["b"]
