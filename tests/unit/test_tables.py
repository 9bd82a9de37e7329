"""The table logic of payment deadlines and best sellers, with plain dicts for the tables."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import faust

from agents.payments.deadlines import Deadline, Deadlines
from agents.products.best_sellers import WINDOW_S, count, merge_lines, rank, window_of
from topics.payments import PaymentCreated, PaymentFailed, PaymentSucceeded

T0 = datetime(2026, 1, 2, 3, 0, 0, tzinfo=UTC)


def created(payment_id: int, expires_at: datetime | None = None) -> PaymentCreated:
    return PaymentCreated(
        event_id=uuid.uuid4(),
        occurred_at=T0,
        payment_id=payment_id,
        order_id=payment_id + 100,
        user_id=1,
        amount=Decimal("9.50"),
        expires_at=expires_at,
    )


def succeeded(payment_id: int) -> PaymentSucceeded:
    return PaymentSucceeded(
        event_id=uuid.uuid4(), occurred_at=T0, payment_id=payment_id, order_id=payment_id + 100
    )


def failed(payment_id: int) -> PaymentFailed:
    return PaymentFailed(
        event_id=uuid.uuid4(),
        occurred_at=T0,
        payment_id=payment_id,
        order_id=payment_id + 100,
        reason="expired",
    )


def test_a_created_payment_has_its_deadline_until_it_settles() -> None:
    book = Deadlines({}, ttl_s=60)
    book.apply(created(1, T0 + timedelta(seconds=10)))
    book.apply(created(2))
    book.apply(created(3))
    assert book.table == {
        1: (T0 + timedelta(seconds=10)).timestamp(),
        # An event without `expires_at`: its time plus the TTL.
        2: (T0 + timedelta(seconds=60)).timestamp(),
        3: (T0 + timedelta(seconds=60)).timestamp(),
    }
    book.apply(succeeded(2))
    book.apply(failed(3))
    assert list(book.table) == [1]


def test_redelivered_events_change_nothing() -> None:
    book = Deadlines({}, ttl_s=60)
    for event in (created(1), created(1), succeeded(1), succeeded(1), created(2), created(2)):
        book.apply(event)
    assert list(book.table) == [2]


def test_due_payments_and_those_adopted_from_postgres() -> None:
    now = T0.timestamp()
    book = Deadlines({1: now - 1, 2: now + 100}, ttl_s=60)
    book.adopt({1: now - 5, 3: now - 2, 4: now + 50})
    # The table's deadline wins over Postgres's for a payment it has.
    assert book.adopted == {3: now - 2, 4: now + 50}
    assert book.pending() == [
        Deadline(3, now - 2, adopted=True),
        Deadline(1, now - 1),
        Deadline(4, now + 50, adopted=True),
        Deadline(2, now + 100),
    ]
    assert book.due(now) == [1, 3]


def test_forgotten_payments_are_not_due_again_until_their_event_clears_them() -> None:
    now = T0.timestamp()
    book = Deadlines({1: now - 1}, ttl_s=60)
    book.adopt({3: now - 2})
    book.forget({1, 3})
    assert book.due(now) == []
    assert book.adopted == {}
    # The table's entry waits for the payment's PaymentFailed (or PaymentSucceeded).
    assert list(book.table) == [1]
    book.apply(failed(1))
    book.apply(created(1, T0 - timedelta(seconds=1)))
    assert book.due(now) == [1]


class FakeWindow(MutableMapping[int, int]):
    """One window of a fake windowed table."""

    def __init__(self, data: dict[Any, int], window: tuple[float, float]) -> None:
        self._data = data
        self._window = window

    def __getitem__(self, key: int) -> int:
        return self._data.get((key, self._window), 0)

    def __setitem__(self, key: int, value: int) -> None:
        self._data[(key, self._window)] = value

    def __delitem__(self, key: int) -> None:
        del self._data[(key, self._window)]

    def __contains__(self, key: object) -> bool:
        return (key, self._window) in self._data

    def __iter__(self) -> Iterator[int]:
        return iter(k for k, w in self._data if w == self._window)

    def __len__(self) -> int:
        return len(list(iter(self)))


class FakeWindowed:
    """The part of Faust's windowed table that best_sellers uses, keyed like it."""

    def __init__(self) -> None:
        self.data: dict[Any, int] = {}

    def relative_to(self, ts: float) -> FakeWindow:
        return FakeWindow(self.data, window_of(ts))


def test_a_paid_order_counts_once_in_its_hour() -> None:
    units, counted = FakeWindowed(), FakeWindowed()
    paid_at = T0.timestamp() + 10
    assert count(units, counted, 7, {1: 2, 2: 1}, paid_at)
    # Redelivered (or re-sent): counted already.
    assert not count(units, counted, 7, {1: 2, 2: 1}, paid_at)
    assert count(units, counted, 8, {1: 1}, paid_at + 60)
    start = window_of(paid_at)[0]
    assert [(s.product_id, s.units) for s in rank(units.data.items(), start, 10)] == [
        (1, 3),
        (2, 1),
    ]


def test_the_next_hour_starts_from_nothing() -> None:
    units, counted = FakeWindowed(), FakeWindowed()
    paid_at = T0.timestamp()
    count(units, counted, 7, {1: 2}, paid_at)
    count(units, counted, 8, {2: 5}, paid_at + WINDOW_S)
    this_hour, next_hour = window_of(paid_at)[0], window_of(paid_at + WINDOW_S)[0]
    assert next_hour == this_hour + WINDOW_S
    assert [(s.product_id, s.units) for s in rank(units.data.items(), this_hour, 10)] == [(1, 2)]
    assert [(s.product_id, s.units) for s in rank(units.data.items(), next_hour, 10)] == [(2, 5)]


def test_ranking_is_by_units_then_product_id_and_limited() -> None:
    start = 3600.0 * 10
    hour = (start, start + WINDOW_S - 0.1)
    data = [((5, hour), 2), ((3, hour), 2), ((9, hour), 7), ((4, hour), 0), ((6, (0.0, 1.0)), 99)]
    assert [(s.product_id, s.units) for s in rank(data, start, 2)] == [(9, 7), (3, 2)]
    # A window restored from JSON has lists for tuples and floats for its bounds.
    restored = [((9, [start, start + WINDOW_S - 0.1]), 7)]
    assert [(s.product_id, s.units) for s in rank(restored, start, 5)] == [(9, 7)]


def test_an_order_s_lines_are_merged_per_product() -> None:
    lines = [
        {"product_id": 1, "quantity": 2, "unit_price": "2.00"},
        {"product_id": 2, "quantity": 1, "unit_price": "7.50"},
        {"product_id": 1, "quantity": 1, "unit_price": "2.00"},
    ]
    assert merge_lines(lines) == {1: 3, 2: 1}


def test_windows_are_faust_s_tumbling_hours() -> None:
    window = faust.TumblingWindow(WINDOW_S)
    for ts in (T0.timestamp(), T0.timestamp() + 3599.5, 1_767_000_123.25):
        assert window.ranges(ts)[0][0] == window_of(ts)[0]
        assert window.current(ts)[0] == window_of(ts)[0]
