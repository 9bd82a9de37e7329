"""Which failures are the infrastructure's (wait, retry) and which are the message's (give up)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)

R = TypeVar("R")

# SQLSTATE classes: 08 connection, 53 insufficient resources, 57 operator intervention (admin or
# crash shutdown, cannot connect now), 58 system error; and single states that pass with time.
_TRANSIENT_CLASSES = ("08", "53", "57", "58")
_TRANSIENT_STATES = {
    "25006",  # read-only transaction: a standby, or a primary being failed over
    "40001",  # serialization failure
    "40P01",  # deadlock detected
    "55P03",  # lock not available
}
LOG_EVERY_S = 10.0


def is_transient(e: BaseException) -> bool:
    """True when retrying later can succeed: Postgres or Kafka down, restarting, failing over."""
    if isinstance(e, OSError | TimeoutError | asyncpg.InterfaceError):
        return True
    if isinstance(e, asyncpg.InternalClientError):
        # A connection the server dropped (a shutdown's FATAL arrives on an idle connection)
        # can be handed out again before asyncpg sees it closed: "cannot switch to state 15;
        # another operation (2) is in progress". A new connection succeeds.
        return True
    if isinstance(e, asyncpg.PostgresError):
        state = getattr(e, "sqlstate", None) or ""
        return state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES
    if isinstance(e, KafkaError):
        return bool(e.retriable) or type(e).__name__ in (
            "KafkaTimeoutError",
            "KafkaConnectionError",
        )
    return False


async def retry_while_transient(call: Callable[[], Awaitable[R]], what: str) -> R:
    """Run `call` until it succeeds or fails for a reason retrying cannot fix.

    An infrastructure failure is retried for as long as it lasts, with backoff up to 2 s; the
    caller waits meanwhile, so a consumer stops taking messages instead of dropping them."""
    delay = 0.05
    first_failure: float | None = None
    last_log = 0.0
    while True:
        try:
            result = await call()
        except Exception as e:
            if not is_transient(e):
                raise
            now = time.monotonic()
            if first_failure is None:
                first_failure = now
            if now - last_log >= LOG_EVERY_S:
                last_log = now
                log.warning(
                    "%s: %s; retrying (down for %.0f s)", what, _describe(e), now - first_failure
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            continue
        if first_failure is not None:
            log.warning("%s: works again after %.1f s", what, time.monotonic() - first_failure)
        return result


def _describe(e: BaseException) -> str:
    state = getattr(e, "sqlstate", None)
    return f"{type(e).__name__}{f' [{state}]' if state else ''}: {e}"
