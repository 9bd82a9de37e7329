"""Signed commands: proof that the gateway or a named internal service made a command.

The scheme is topics/command_signature.py's SCHEME (it is in the AsyncAPI document): three
headers, an HMAC-SHA256 under a key derived from INTERNAL_SECRET and the producer's name, so
that a partner given its own key cannot sign as the gateway. The agent checks it, in constant
time, before it reads the command; what fails goes to the dead-letter topic with the reason
and changes nothing."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

from agents.common.internal_keys import MissingSecret, derive_key
from topics.command_signature import PRODUCER_NAME, SIGNATURE_HEADERS, signing_input
from topics.envelope import Headers

# A command waits in its topic while its worker is down. The agents accept it for as long as its
# command id stays in the ledger (IDEMPOTENCY_KEY_TTL_S, 24 h), so that an outage shorter than that
# loses no accepted command and a genuine one replayed later cannot apply twice; older, it goes to
# the dead-letter topic (`shopstream dlq replay` signs it afresh).
MAX_AGE_S = 86400.0
# Clocks of two hosts may differ this much.
MAX_SKEW_S = 60.0
MAX_KEYS = 64


def producer_key(secret: str, producer: str) -> bytes:
    """The signing key of one producer (what `shopstream command-key` prints for a partner)."""
    if not PRODUCER_NAME.fullmatch(producer):
        raise ValueError(f"not a producer name: {producer!r}")
    return derive_key(secret, f"command/{producer}")


def signature(
    key: bytes,
    topic: str,
    record_key: bytes | None,
    value: bytes | None,
    headers: Mapping[str, bytes],
    producer: str,
    signed_at: str,
) -> str:
    data = signing_input(topic, record_key, value, headers, producer, signed_at)
    return hmac.new(key, data, hashlib.sha256).hexdigest()


class CommandSigner:
    """Signs what one producer sends to command topics."""

    def __init__(self, secret: str, producer: str) -> None:
        self.producer = producer
        self._key = producer_key(secret, producer)

    def sign(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        *,
        now: float | None = None,
    ) -> list[tuple[str, bytes]]:
        """The headers with the signature's three added (any earlier ones dropped)."""
        own = [(k, v) for k, v in headers if k not in SIGNATURE_HEADERS]
        signed_at = str(round((time.time() if now is None else now) * 1000))
        mac = signature(self._key, topic, key, value, dict(own), self.producer, signed_at)
        return [
            *own,
            (Headers.PRODUCER, self.producer.encode()),
            (Headers.SIGNED_AT, signed_at.encode()),
            (Headers.SIGNATURE, mac.encode()),
        ]


class CommandVerifier:
    """Checks the signature of commands read from a command topic."""

    def __init__(
        self, secret: str, *, max_age_s: float = MAX_AGE_S, max_skew_s: float = MAX_SKEW_S
    ) -> None:
        self._secret = secret
        self._max_age_s = max_age_s
        self._max_skew_s = max_skew_s
        self._keys: dict[str, bytes] = {}

    def _key(self, producer: str) -> bytes:
        key = self._keys.get(producer)
        if key is None:
            key = producer_key(self._secret, producer)
            if len(self._keys) < MAX_KEYS:
                self._keys[producer] = key
        return key

    def refusal(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Mapping[str, bytes],
        *,
        check_age: bool = True,
        now: float | None = None,
    ) -> str | None:
        """Why the command must be refused; None when its signature holds."""
        producer = headers.get(Headers.PRODUCER)
        signed_at = headers.get(Headers.SIGNED_AT)
        given = headers.get(Headers.SIGNATURE)
        if producer is None or signed_at is None or given is None:
            return (
                f"unsigned: a command needs the {Headers.PRODUCER}, {Headers.SIGNED_AT} and "
                f"{Headers.SIGNATURE} headers"
            )
        try:
            name = producer.decode("ascii")
            at = signed_at.decode("ascii")
            mac_key = self._key(name)
        except (UnicodeDecodeError, ValueError):
            return f"forged: {Headers.PRODUCER} is not a producer name"
        except MissingSecret:
            return "unverifiable: INTERNAL_SECRET is not set on this worker"
        if not at.isdigit():
            return f"forged: {Headers.SIGNED_AT} is not milliseconds since the epoch"
        expected = signature(mac_key, topic, key, value, headers, name, at)
        if not hmac.compare_digest(expected.encode(), given):
            return f"forged: the signature does not match (producer {name})"
        if check_age:
            age = (time.time() if now is None else now) - int(at) / 1000
            if age > self._max_age_s:
                return f"stale: signed {age:.0f} s ago, more than {self._max_age_s:.0f} s"
            if age < -self._max_skew_s:
                return f"stale: signed {-age:.0f} s in the future"
        return None
