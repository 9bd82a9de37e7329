"""Signed commands: each part of a command and its identity headers is covered by the HMAC,
and the agent dead-letters what is unsigned, forged or stale before it reads it."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from agents import cli
from agents.common.agent import BatchAgent, Route, _Item
from agents.common.command_signing import CommandSigner, CommandVerifier, producer_key
from agents.common.dlq import DeadLetter, replay_headers, resigner
from agents.common.settings import Settings
from tests.trust import TEST_INTERNAL_SECRET
from topics import ORDERS_COMMANDS, PAYMENTS_PROVIDER_EVENTS, PRODUCTS_COMMANDS, Topic
from topics.envelope import Headers

TOPIC = PRODUCTS_COMMANDS.name
KEY = b"7"
VALUE = b'{"type":"UpdateProduct","command_id":"c","product_id":7,"changes":{"price":"9.99"}}'
HEADERS = [
    (Headers.TYPE, b"UpdateProduct"),
    (Headers.REPLY_TO, b"gateway.replies.a"),
    (Headers.CORRELATION_ID, b"c0ffee"),
    (Headers.REQUEST_ID, b"r-1"),
    (Headers.USER_ID, b"1"),
    (Headers.ROLES, b"admin"),
]
NOW = 1_767_326_400.0


def _signed(producer: str = "gateway", secret: str = TEST_INTERNAL_SECRET) -> dict[str, bytes]:
    return dict(CommandSigner(secret, producer).sign(TOPIC, KEY, VALUE, HEADERS, now=NOW))


def _refusal(
    headers: dict[str, bytes],
    topic: str = TOPIC,
    key: bytes | None = KEY,
    value: bytes | None = VALUE,
    now: float = NOW,
) -> str | None:
    return CommandVerifier(TEST_INTERNAL_SECRET).refusal(topic, key, value, headers, now=now)


def test_a_signed_command_passes() -> None:
    headers = _signed()
    assert _refusal(headers) is None
    assert headers[Headers.PRODUCER] == b"gateway"
    assert headers[Headers.SIGNED_AT] == str(round(NOW * 1000)).encode()
    assert len(headers[Headers.SIGNATURE]) == 64


def test_an_unsigned_command_is_refused() -> None:
    reason = _refusal(dict(HEADERS))
    assert reason is not None
    assert reason.startswith("unsigned:")


@pytest.mark.parametrize("missing", [Headers.PRODUCER, Headers.SIGNED_AT, Headers.SIGNATURE])
def test_a_command_without_one_signature_header_is_refused(missing: str) -> None:
    headers = _signed()
    del headers[missing]
    reason = _refusal(headers)
    assert reason is not None
    assert reason.startswith("unsigned:")


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda h: {**h, "value": VALUE.replace(b"9.99", b"0.00")}, id="value"),
        pytest.param(lambda h: {**h, "key": b"8"}, id="key"),
        pytest.param(lambda h: {**h, "key": None}, id="key dropped"),
        pytest.param(lambda h: {**h, "topic": ORDERS_COMMANDS.name}, id="topic"),
        *(pytest.param(lambda h, n=name: {**h, n: h[n] + b"x"}, id=name) for name, _ in HEADERS),
        *(
            pytest.param(lambda h, n=name: {k: v for k, v in h.items() if k != n}, id=f"no {name}")
            for name, _ in HEADERS
        ),
        pytest.param(lambda h: {**h, Headers.PRODUCER: b"orders"}, id="producer"),
        pytest.param(
            lambda h: {**h, Headers.SIGNED_AT: str(round(NOW * 1000) + 1).encode()}, id="signed-at"
        ),
        pytest.param(
            lambda h: {**h, Headers.SIGNATURE: h[Headers.SIGNATURE][:-1] + b"0"}, id="signature"
        ),
    ],
)
def test_each_part_is_signed(tamper: Any) -> None:
    message: dict[str, Any] = {**_signed(), "topic": TOPIC, "key": KEY, "value": VALUE}
    changed = tamper(message)
    if changed == message:  # the last hex digit was already 0
        changed[Headers.SIGNATURE] = message[Headers.SIGNATURE][:-1] + b"1"
    topic, key, value = changed.pop("topic"), changed.pop("key"), changed.pop("value")
    reason = _refusal(changed, topic, key, value)
    assert reason is not None
    assert reason.startswith("forged:"), reason


def test_an_added_identity_header_breaks_the_signature() -> None:
    signer = CommandSigner(TEST_INTERNAL_SECRET, "gateway")
    headers = dict(signer.sign(TOPIC, KEY, VALUE, [], now=NOW))
    assert _refusal(headers) is None
    reason = _refusal({**headers, Headers.USER_ID: b"1"})
    assert reason is not None
    assert reason.startswith("forged:")


def test_another_secret_or_another_producer_key_is_forged() -> None:
    reason = _refusal(_signed(secret="another-secret-" + "q" * 40))
    assert reason is not None
    assert reason.startswith("forged:")
    # A partner's key signs as the partner only: its signature does not pass as the gateway's.
    partner = _signed("partner-feed")
    assert _refusal(partner) is None
    reason = _refusal({**partner, Headers.PRODUCER: b"gateway"})
    assert reason is not None
    assert reason.startswith("forged:")
    assert producer_key(TEST_INTERNAL_SECRET, "gateway") != producer_key(
        TEST_INTERNAL_SECRET, "partner-feed"
    )


@pytest.mark.parametrize("producer", [b"", b"Gateway", b"../x", b"\xff", b"a" * 100])
def test_a_bad_producer_name_is_forged(producer: bytes) -> None:
    reason = _refusal({**_signed(), Headers.PRODUCER: producer})
    assert reason is not None
    assert reason.startswith("forged:")


def test_a_bad_signed_at_is_forged() -> None:
    reason = _refusal({**_signed(), Headers.SIGNED_AT: b"-5"})
    assert reason is not None
    assert reason.startswith("forged:")


def test_an_old_or_future_signature_is_stale() -> None:
    headers = _signed()
    assert _refusal(headers, now=NOW + 86000) is None, "a worker down for a day loses nothing"
    old = _refusal(headers, now=NOW + 86500)
    assert old is not None
    assert old.startswith("stale:")
    future = _refusal(headers, now=NOW - 120)
    assert future is not None
    assert future.startswith("stale:")
    verifier = CommandVerifier(TEST_INTERNAL_SECRET)
    assert verifier.refusal(TOPIC, KEY, VALUE, headers, check_age=False, now=NOW + 10**6) is None


def test_without_the_secret_nothing_is_signed_and_nothing_passes() -> None:
    with pytest.raises(RuntimeError):
        CommandSigner("", "gateway")
    reason = CommandVerifier("").refusal(TOPIC, KEY, VALUE, _signed(), now=NOW)
    assert reason is not None
    assert reason.startswith("unverifiable:")


def test_signing_again_replaces_an_earlier_signature() -> None:
    once = CommandSigner(TEST_INTERNAL_SECRET, "partner-feed").sign(TOPIC, KEY, VALUE, HEADERS)
    twice = CommandSigner(TEST_INTERNAL_SECRET, "gateway").sign(TOPIC, KEY, VALUE, once)
    assert [k for k, _ in twice].count(Headers.SIGNATURE) == 1
    assert _refusal(dict(twice), now=time.time()) is None


def test_signing_and_checking_are_cheap() -> None:
    signer = CommandSigner(TEST_INTERNAL_SECRET, "gateway")
    verifier = CommandVerifier(TEST_INTERNAL_SECRET)
    started = time.perf_counter()
    for _ in range(1000):
        headers = dict(signer.sign(TOPIC, KEY, VALUE, HEADERS))
        assert verifier.refusal(TOPIC, KEY, VALUE, headers) is None
    # About 10 µs a pair here; a password hash would be thousands of times more.
    assert time.perf_counter() - started < 1.0


# The agent: what fails the check is dead-lettered, unread and unanswered.


@dataclass
class FakeMessage:
    topic: str
    partition: int = 0
    offset: int = 5


@dataclass
class FakeEvent:
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    message: FakeMessage


@dataclass
class FakeProducer:
    sent: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = field(
        default_factory=list
    )

    async def send_and_wait(
        self, topic: str, *, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        self.sent.append((topic, key, value, headers))


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[Any] = []

    async def publish(self, fx: Any) -> None:
        self.published.append(fx)


@dataclass
class FakeRuntime:
    settings: Settings
    domain: str = "products"
    producer: FakeProducer = field(default_factory=FakeProducer)
    publisher: FakePublisher = field(default_factory=FakePublisher)


def _agent(topic: Topic) -> tuple[BatchAgent, FakeRuntime, list[list[_Item]]]:
    runtime = FakeRuntime(replace(Settings(), internal_secret=TEST_INTERNAL_SECRET))
    handled: list[list[_Item]] = []

    async def no_handler(*_: Any) -> None:
        raise AssertionError("a refused command reached its handler")

    route = Route(lambda raw: raw, no_handler)
    agent = BatchAgent(runtime, topic, {"UpdateProduct": route}, commands=True)  # type: ignore[arg-type]

    async def handle(items: list[_Item]) -> None:
        handled.append(items)

    agent._handle = handle  # type: ignore[method-assign]
    return agent, runtime, handled


def _event(headers: dict[str, bytes]) -> FakeEvent:
    return FakeEvent(KEY, VALUE, headers, FakeMessage(TOPIC))


async def test_the_agent_dead_letters_an_unsigned_command_and_does_not_answer_it() -> None:
    agent, runtime, handled = _agent(PRODUCTS_COMMANDS)
    await agent.handle_batch([_event(dict(HEADERS))])
    assert handled == []
    [(topic, key, value, headers)] = runtime.producer.sent
    assert (topic, key, value) == (PRODUCTS_COMMANDS.dlq, KEY, VALUE)
    assert dict(headers)[Headers.DLQ_REASON].startswith(b"unsigned:")
    # Its reply-to is not to be trusted: nothing is sent there.
    assert runtime.publisher.published == []


async def test_the_agent_dead_letters_a_forged_command_and_handles_the_next() -> None:
    agent, runtime, handled = _agent(PRODUCTS_COMMANDS)
    good = dict(CommandSigner(TEST_INTERNAL_SECRET, "gateway").sign(TOPIC, KEY, VALUE, HEADERS))
    forged = {**good, Headers.USER_ID: b"2"}
    await agent.handle_batch([_event(forged), _event(good)])
    [dead] = runtime.producer.sent
    assert dict(dead[3])[Headers.DLQ_REASON].startswith(b"forged:")
    [[item]] = handled
    assert item.inbound.message == VALUE


async def test_the_agent_takes_a_command_as_long_as_its_key_is_kept() -> None:
    """A command that waited out a two-hour outage is handled; one older than the ledger keeps its
    command id could apply twice, and is dead-lettered."""
    agent, runtime, handled = _agent(PRODUCTS_COMMANDS)
    ttl = runtime.settings.idempotency_key_ttl_s
    signer = CommandSigner(TEST_INTERNAL_SECRET, "gateway")
    waited = dict(signer.sign(TOPIC, KEY, VALUE, HEADERS, now=time.time() - 7200))
    too_old = dict(signer.sign(TOPIC, KEY, VALUE, HEADERS, now=time.time() - ttl - 60))
    await agent.handle_batch([_event(waited), _event(too_old)])
    [[item]] = handled
    assert item.inbound.message == VALUE
    [dead] = runtime.producer.sent
    assert dict(dead[3])[Headers.DLQ_REASON].startswith(b"stale:")


async def test_a_topic_that_is_not_signed_is_not_checked() -> None:
    agent, runtime, handled = _agent(PAYMENTS_PROVIDER_EVENTS)
    await agent.handle_batch([_event(dict(HEADERS))])
    assert runtime.producer.sent == []
    assert len(handled) == 1


def test_the_command_topics_are_signed_and_the_partner_topic_is_not() -> None:
    assert PRODUCTS_COMMANDS.signed
    assert ORDERS_COMMANDS.signed
    assert not PAYMENTS_PROVIDER_EVENTS.signed


def test_the_documented_scheme_computes_the_signature() -> None:
    """What the AsyncAPI document tells a partner, written out by hand."""
    key = hmac.new(
        TEST_INTERNAL_SECRET.encode(), b"shopstream/command/partner-feed", hashlib.sha256
    ).digest()
    assert key == producer_key(TEST_INTERNAL_SECRET, "partner-feed")
    signed_at = str(round(NOW * 1000))
    fields = [
        b"shopstream-command-v1",
        TOPIC.encode(),
        KEY,
        b"partner-feed",
        signed_at.encode(),
        b"x-type",
        b"UpdateProduct",
        VALUE,
    ]
    data = b"".join(b"%d:%s," % (len(f), f) for f in fields)
    expected = hmac.new(key, data, hashlib.sha256).hexdigest()
    headers = dict(
        CommandSigner(TEST_INTERNAL_SECRET, "partner-feed").sign(
            TOPIC, KEY, VALUE, [(Headers.TYPE, b"UpdateProduct")], now=NOW
        )
    )
    assert headers[Headers.SIGNATURE] == expected.encode()


def test_a_replay_signs_a_genuine_command_afresh_and_a_forged_one_not() -> None:
    def dead(headers: dict[str, bytes]) -> DeadLetter:
        extra = ((Headers.DLQ_REASON, b"stale: ..."), (Headers.DLQ_TOPIC, TOPIC.encode()))
        return DeadLetter(TOPIC + ".dlq", 0, 3, 0, KEY, VALUE, (*headers.items(), *extra))

    resign = resigner(TEST_INTERNAL_SECRET)
    genuine = replay_headers(dead(_signed("partner-feed")), resign, TOPIC)
    assert _refusal(dict(genuine), now=time.time()) is None
    assert dict(genuine)[Headers.PRODUCER] == b"partner-feed"
    # Replayed, its reply headers are dropped; the new signature covers what is sent.
    assert Headers.REPLY_TO not in dict(genuine)
    forged = replay_headers(dead({**_signed(), Headers.USER_ID: b"2"}), resign, TOPIC)
    reason = _refusal(dict(forged), now=time.time())
    assert reason is not None
    assert reason.startswith("forged:")


def test_the_command_key_command_prints_a_producer_s_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("INTERNAL_SECRET", TEST_INTERNAL_SECRET)
    monkeypatch.setenv("SHOPSTREAM_STATE_DIR", str(tmp_path))
    assert cli.main(["command-key", "partner-feed"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert bytes.fromhex(printed) == producer_key(TEST_INTERNAL_SECRET, "partner-feed")
    assert cli.main(["command-key", "Not A Name"]) == 2
