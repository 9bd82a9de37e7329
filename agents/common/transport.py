"""Faust's aiokafka transport with a configurable consumer fetch wait (Faust hard-codes 1500 ms).

Selected by the broker URL scheme `shopstream://` through the `faust.transports` entry point.
It leans on Faust and aiokafka internals: both are pinned, and tests/integration measure latency.
"""

from __future__ import annotations

import logging
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

from agents.common.settings import KafkaTuning


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    logger = logging.getLogger("faust.transport")

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        tuning: KafkaTuning = getattr(self.app, "kafka_tuning", KafkaTuning())
        # Read by AIOKafkaConsumer.start() when it builds its fetcher.
        consumer._fetch_max_wait_ms = tuning.fetch_max_wait_ms
        return consumer


class Consumer(faust_aiokafka.Consumer):
    logger = logging.getLogger("faust.transport")

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
