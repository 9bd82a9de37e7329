"""Best sellers: units sold per product in hourly tumbling windows, a Faust table read model.

An order's units count as sold when it is paid (OrderPaid, in the hour of its `occurred_at`);
its lines are those of its stock reservation, which the products domain recorded before the
order could be paid. An order is counted once: a second table marks the orders counted, per
window, and is checked first, so a redelivered or re-sent OrderPaid adds nothing. The marker is
written before the units, so a worker killed between the two changelog records misses that
order rather than counting it twice (a read model may lag; it must not inflate).

Both tables are keyed by what they count (product id, order id), not by the stream's key, so
their changelog records are partitioned by their own key (`use_partitioner`): every record of
one product's window lands in one partition, and a restore ends on its latest value. Their keys
have no `key_type`: a windowed key is `[key, [start, end]]` in JSON, which Faust turns back into
tuples itself (with `key_type=int` a restore fails on every record, as with `value_type=bool`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, cast

import asyncpg
import faust
from faust.tables.wrappers import WindowWrapper

from agents.common.failures import retry_while_transient
from topics import ORDERS_EVENTS
from topics.envelope import Headers
from topics.orders import OrderPaid

log = logging.getLogger(__name__)

WINDOW_S = 3600.0
# Kept past their hour, so that a late redelivery still finds its order marked.
EXPIRES = timedelta(hours=2)
UNITS = "units-sold"
COUNTED = "units-sold-orders"

SOLD_LINES = "SELECT lines FROM stock_reservations WHERE order_id = $1"


@dataclass(frozen=True)
class Seller:
    product_id: int
    units: int


@dataclass(frozen=True)
class Ranking:
    window_start: float
    window_end: float
    sellers: list[Seller]


class Windowed(Protocol):
    """What is used here of a Faust windowed table."""

    def relative_to(self, ts: Any) -> Any: ...


def window_of(ts: float) -> tuple[float, float]:
    """The tumbling hour holding `ts`: [start, end). Faust's windows start there too."""
    start = ts - ts % WINDOW_S
    return start, start + WINDOW_S


def rank(data: Iterable[tuple[Any, int]], window_start: float, limit: int) -> list[Seller]:
    """The `limit` products with the most units in the window starting at `window_start`."""
    sellers = [
        Seller(int(key[0]), int(units))
        for key, units in data
        if key[1][0] == window_start and units > 0
    ]
    sellers.sort(key=lambda s: (-s.units, s.product_id))
    return sellers[:limit]


def count(
    units: Windowed,
    counted: Windowed,
    order_id: int,
    lines: Mapping[int, int],
    paid_at: float,
) -> bool:
    """Add a paid order's units to its hour, unless it was counted already; True if added."""
    marks = counted.relative_to(paid_at)
    if order_id in marks:
        return False
    marks[order_id] = 1
    hour = units.relative_to(paid_at)
    for product_id, quantity in sorted(lines.items()):
        hour[product_id] += quantity
    return True


def merge_lines(lines: Iterable[Mapping[str, Any]]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for line in lines:
        product_id = int(line["product_id"])
        merged[product_id] = merged.get(product_id, 0) + int(line["quantity"])
    return merged


class BestSellers:
    """The products worker's windowed tables of units sold, and the agent that fills them."""

    def __init__(self, app: faust.App, pool: Callable[[], asyncpg.Pool]) -> None:
        self._app = app
        self._pool = pool
        self.units: WindowWrapper = cast(
            WindowWrapper,
            app.Table(
                UNITS,
                default=int,
                value_type=int,
                partitions=ORDERS_EVENTS.partitions,
                use_partitioner=True,
                help="(product id, hour) -> units sold",
            ).tumbling(WINDOW_S, expires=EXPIRES),
        )
        self.counted: WindowWrapper = cast(
            WindowWrapper,
            app.Table(
                COUNTED,
                value_type=int,
                partitions=ORDERS_EVENTS.partitions,
                use_partitioner=True,
                help="(order id, hour) -> counted in units-sold",
            ).tumbling(WINDOW_S, expires=EXPIRES),
        )
        channel = app.topic(
            ORDERS_EVENTS.name,
            partitions=ORDERS_EVENTS.partitions,
            key_serializer="raw",
            value_serializer="raw",
        )
        app.agent(channel, name=f"{ORDERS_EVENTS.name}.{UNITS}")(self._follow)

    def top(self, limit: int, now: float | None = None) -> Ranking:
        start, end = window_of(time.time() if now is None else now)
        return Ranking(start, end, rank(self.units.table.data.items(), start, limit))

    async def _learn_changelogs(self) -> None:
        """With `use_partitioner`, Faust picks a record's partition at once from its producer's
        metadata, which knows a topic only once asked about it: until then every write fails
        ('NoneType' object is not iterable). Faust 0.15.3's aiokafka producer, asked here."""
        producer = self._app.producer._ensure_producer()  # type: ignore[attr-defined]
        for table in (self.units.table, self.counted.table):
            name = table.changelog_topic.get_topic_name()
            await retry_while_transient(
                functools.partial(producer.partitions_for, name), f"metadata of {name}"
            )

    async def _follow(self, stream: Any) -> None:
        await self._learn_changelogs()
        async for event in stream.events():
            kind = (event.headers or {}).get(Headers.TYPE)
            if kind is not None and kind != b"OrderPaid":
                continue
            try:
                paid = OrderPaid.model_validate_json(event.value or b"")
            except ValueError:
                continue
            try:
                await self._count(paid)
            except Exception:
                # An exception that escapes the agent would stop it; this order goes uncounted.
                log.exception("counting the units of order %d failed", paid.order_id)

    async def _count(self, paid: OrderPaid) -> None:
        async def lines() -> Any:
            return await self._pool().fetchval(SOLD_LINES, paid.order_id)

        found = await retry_while_transient(lines, f"reading the lines of order {paid.order_id}")
        if not found:
            log.warning("order %d is paid but has no stock reservation", paid.order_id)
            return
        count(
            self.units,
            self.counted,
            paid.order_id,
            merge_lines(found),
            paid.occurred_at.timestamp(),
        )
