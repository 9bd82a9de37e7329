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
from typing import Any

from aiokafka.consumer.fetcher import Fetcher
from faust.transport.drivers import aiokafka as faust_aiokafka

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

    async def on_start(self) -> None:
        await super().on_start()
        fetcher = getattr(self._consumer, "_fetcher", None)
        if isinstance(fetcher, Fetcher):
            fetcher.__class__ = AdaptiveFetcher
            fetcher.tuning = self._tuning
            fetcher.last_records = time.monotonic()


class Consumer(faust_aiokafka.Consumer):
    logger = logging.getLogger("faust.transport")

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
