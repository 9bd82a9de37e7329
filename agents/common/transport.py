"""Faust's aiokafka transport with a configurable consumer fetch wait (Faust hard-codes 1500 ms).

Selected by the broker URL scheme `shopstream://` through the `faust.transports` entry point.
On Tansu a fetch is answered only at its deadline, so the wait is each hop's latency and each
poll costs the broker CPU. The wait is `fetch_max_wait_ms` while messages flow, and grows to
`idle_fetch_max_wait_ms` once a consumer has had nothing for `idle_after_s`: an idle platform
then costs little, and the first message after a quiet spell is late by at most that wait.
It leans on Faust and aiokafka internals: both are pinned, and tests/integration measure latency.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka.consumer.fetcher import Fetcher
from faust.transport.consumer import ensure_TP
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.utils.queues import FlowControlEvent

from agents.common.settings import KafkaTuning


class AdaptiveFetcher(Fetcher):  # type: ignore[misc]
    """aiokafka's Fetcher, whose fetch wait depends on how recently records came."""

    tuning: KafkaTuning
    last_records: float

    @property
    def _fetch_max_wait_ms(self) -> int:
        if time.monotonic() - self.last_records < self.tuning.idle_after_s:
            return self.tuning.fetch_max_wait_ms
        return max(self.tuning.fetch_max_wait_ms, self.tuning.idle_fetch_max_wait_ms)

    @_fetch_max_wait_ms.setter
    def _fetch_max_wait_ms(self, value: int) -> None:
        pass  # set by Fetcher.__init__; the tuning decides

    async def fetched_records(self, *args: Any, **kwargs: Any) -> Any:
        records = await super().fetched_records(*args, **kwargs)
        if records:
            self.last_records = time.monotonic()
        return records


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    logger = logging.getLogger("faust.transport")

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher.
        consumer._fetch_max_wait_ms = self._tuning.fetch_max_wait_ms
        return consumer

    @property
    def _tuning(self) -> KafkaTuning:
        tuning: KafkaTuning = getattr(self.app, "kafka_tuning", KafkaTuning())
        return tuning

    async def seek_to_committed(self) -> Mapping[Any, int]:
        committed: Mapping[Any, int] = await self.call_thread(self._seek_to_committed)
        return committed

    async def _seek_to_committed(self) -> Mapping[Any, int]:
        """aiokafka's seek_to_committed, which also moves a partition whose committed offset is
        0 (it seeks only above 0) or absent: left where its fetch got to, what was fetched and
        dropped before the seek (a table's recovery) would never be read again."""
        consumer = self._ensure_consumer()
        committed: dict[Any, int] = await consumer.seek_to_committed()
        for tp, offset in committed.items():
            if offset == 0:
                consumer.seek(tp, 0)
        never = [tp for tp, offset in committed.items() if offset is None or offset < 0]
        if never:
            # The apps read a group's new partitions from the earliest offset.
            await consumer.seek_to_beginning(*never)
        return committed

    async def on_start(self) -> None:
        await super().on_start()
        fetcher = getattr(self._consumer, "_fetcher", None)
        if isinstance(fetcher, Fetcher):
            fetcher.__class__ = AdaptiveFetcher
            fetcher.tuning = self._tuning
            fetcher.last_records = time.monotonic()


log = logging.getLogger(__name__)


def _queued(queues: Any) -> dict[Any, tuple[int, int, int]]:
    """The events waiting in the streams' queues: per partition, (count, first, last offset)."""
    found: dict[Any, tuple[int, int, int]] = {}
    for queue in list(queues):
        for event in list(getattr(queue, "_queue", ())):
            message = getattr(event, "message", None)
            if message is None:
                continue
            n, first, last = found.get(message.tp, (0, message.offset, message.offset))
            found[message.tp] = (n + 1, min(first, message.offset), max(last, message.offset))
    return found


class FlowControl(FlowControlEvent):
    """mode's flow control of the streams' queues, which empties them only on a real resume.

    Faust empties every stream's queue whenever `flow_control.resume()` is called, also when
    flow is running already. A table's recovery resumes flow to read its changelogs, resumes the
    stream partitions, seeks them to their committed offsets, then calls `resume()` again: the
    events the fetcher delivered in between are thrown away unacknowledged. aiokafka does not
    seek a partition whose committed offset is 0, and the fetcher may deliver the rest of a batch
    fetched before the seek after it, past the thrown away offsets: those messages are never
    delivered again, and the group either never commits again or commits past them. A queue is
    emptied here only when flow was suspended (a rebalance), which a seek always follows."""

    def __init__(self, *, on_clear: Callable[[], None] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_clear = on_clear

    def resume(self) -> None:
        if self.is_active():
            queued = _queued(self._queues)
            if queued:
                log.info(
                    "flow resumed while running: %d queued events kept (tp: n, first, last) %s",
                    sum(n for n, _, _ in queued.values()),
                    queued,
                )
            return
        super().resume()

    def clear(self) -> None:
        if self._on_clear is not None:
            self._on_clear()
        super().clear()


class ReadOffsets(defaultdict):  # type: ignore[type-arg]
    """Faust's read offset of each partition, and in which era of the queues it was set.

    An era ends whenever the streams' queues are emptied: a read offset set before then is of
    messages that were thrown away, and must be read again; one set since, of messages that are
    queued or processed."""

    def __init__(self) -> None:
        super().__init__(lambda: None)
        self.era = 0
        self.era_of: dict[Any, int] = {}

    def __setitem__(self, tp: Any, offset: int | None) -> None:
        super().__setitem__(tp, offset)
        self.era_of[tp] = self.era


class Consumer(faust_aiokafka.Consumer):
    logger = logging.getLogger("faust.transport")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = ReadOffsets()

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def on_queues_cleared(self) -> None:
        """The streams' queues were emptied: what was delivered until now must be read again."""
        reads = self._read_offset
        if isinstance(reads, ReadOffsets):
            reads.era += 1

    def _flow_running(self) -> bool:
        return bool(self.flow_active and self.app.flow_control.is_active())

    async def perform_seek(self) -> None:
        """Seek every partition to its committed offset, as Faust does, except that while flow
        runs (a table's recovery completing), the messages delivered since the queues were last
        emptied are queued or processed: their partitions keep their read offset, so that what
        the seek fetches again up to it is dropped as read, and no message is taken for a gap;
        and keep a committed offset above the broker's (a commit in flight, or one refused),
        so that their acknowledgements are not left below a gap that never closes."""
        reads = self._read_offset
        if not isinstance(reads, ReadOffsets):
            await super().perform_seek()
            return
        running = self._flow_running()
        committed = await self.seek_to_committed()
        running = running and self._flow_running()
        era = reads.era
        for tp, offset in committed.items():
            new = offset if offset is not None and offset >= 0 else None
            old = reads.get(tp)
            if (
                running
                and old is not None
                and reads.era_of.get(tp) == era
                and (new is None or old > new)
            ):
                log.info(
                    "seek to committed while flow runs: %s keeps read offset %d (committed %s)",
                    tp,
                    old,
                    offset,
                )
                continue
            reads[tp] = new
        for tp, offset in committed.items():
            if offset is None:
                continue
            new_committed = offset if offset else None
            old_committed = self._committed_offset.get(ensure_TP(tp))
            if (
                running
                and old_committed is not None
                and (new_committed is None or old_committed > new_committed)
            ):
                log.info(
                    "seek to committed while flow runs: %s keeps committed %d (broker %s)",
                    tp,
                    old_committed,
                    offset,
                )
                continue
            self._committed_offset[ensure_TP(tp)] = new_committed


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
