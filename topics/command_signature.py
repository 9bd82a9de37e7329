"""What a command's signature covers: the part of the topic API that every producer of a
command topic (the gateway, an internal service, a partner feed) must follow."""

from __future__ import annotations

import re
from collections.abc import Mapping

from topics.envelope import Headers

VERSION = b"shopstream-command-v1"
# The headers an agent reads besides the signature's own: each present one is signed, in
# this order, so that none can be changed or added after signing.
SIGNED_HEADERS = (
    Headers.TYPE,
    Headers.REPLY_TO,
    Headers.CORRELATION_ID,
    Headers.REQUEST_ID,
    Headers.USER_ID,
    Headers.ROLES,
)
SIGNATURE_HEADERS = (Headers.PRODUCER, Headers.SIGNED_AT, Headers.SIGNATURE)
PRODUCER_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{0,62}")
KEY_PURPOSE = "shopstream/command/{producer}"


def _part(data: bytes) -> bytes:
    return b"%d:%s," % (len(data), data)


def signing_input(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Mapping[str, bytes],
    producer: str,
    signed_at: str,
) -> bytes:
    """Netstrings (`<length>:<bytes>,`) of the version, topic, key, producer, signed-at, each
    present signed header's name and value (SIGNED_HEADERS' order), then the value."""
    parts = [VERSION, topic.encode(), key or b"", producer.encode(), signed_at.encode()]
    for name in SIGNED_HEADERS:
        found = headers.get(name)
        if found is not None:
            parts += [name.encode(), found]
    parts.append(value or b"")
    return b"".join(map(_part, parts))


_LISTED = ", ".join(f"`{h}`" for h in SIGNED_HEADERS)
SCHEME = f"""\
Every message on this topic must be signed by the gateway or a named internal producer (a
partner feed is one: the operator gives it its own key with `shopstream command-key NAME`).
A message that is unsigned, whose signature does not hold, or that was signed longer ago than
the platform keeps command ids (IDEMPOTENCY_KEY_TTL_S, 24 hours by default) or over a minute in
the future is dead-lettered with the reason (`unsigned:`,
`forged:`, `stale:`), changes nothing and gets no reply.

Three headers carry the signature:
- `{Headers.PRODUCER}`: the producer's name, `{PRODUCER_NAME.pattern}`;
- `{Headers.SIGNED_AT}`: when it was signed, milliseconds since the Unix epoch, in decimal;
- `{Headers.SIGNATURE}`: HMAC-SHA256 of the signing input under the producer's key, as 64
  lowercase hexadecimal digits.

The producer's key is HMAC-SHA256(key = INTERNAL_SECRET as UTF-8, message =
`{KEY_PURPOSE}` with the name), the 32 raw bytes (`shopstream command-key` prints them in
hexadecimal); it signs as that producer only.

The signing input is a sequence of netstrings, each `<decimal length>:<bytes>,`, of, in
order: `{VERSION.decode()}`; the topic's name; the message key (empty if none); the producer's
name; the signed-at value; then for each of the headers {_LISTED}
that the message carries, in that order, its name and its value; last, the message value. A
header not listed is not signed and not read."""
