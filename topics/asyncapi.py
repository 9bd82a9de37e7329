"""The AsyncAPI 3.0 document of the topic catalogue, generated from the message records."""

from __future__ import annotations

from typing import Any

from topics import CATALOGUE, INBOUND
from topics.command_signature import SCHEME as COMMAND_SIGNATURE_SCHEME
from topics.envelope import Headers, Reply
from topics.payments import (
    SIGNATURE_EXAMPLE,
    SIGNATURE_EXAMPLE_INPUT,
    SIGNATURE_EXAMPLE_SECRET,
    SIGNATURE_SCHEME,
)

# Major: a change a partner's producer or consumer must follow (CHANGES says which).
VERSION = "3.0.0"
CHANGES = (
    "3.0.0: a `ProviderPaymentOutcome` must carry `session_reference` (required, and part of "
    "the signing input): the reference the platform gave the provider when it opened the "
    "session; a report whose reference the platform did not issue for that payment and "
    "provider is dead-lettered. `PaymentNeedsReview` on `payments.events`: money a provider "
    "reported that the payment could not take, a case for an operator. "
    "Every message on a command topic (`products.commands`, `orders.commands`, "
    f"`payments.commands`) must carry the signature headers `{Headers.PRODUCER}`, "
    f"`{Headers.SIGNED_AT}` and `{Headers.SIGNATURE}` (see those channels' description); an "
    "unsigned, forged or stale command is dead-lettered, changes nothing and gets no reply. "
    "2.0.0: a `ProviderPaymentOutcome` on `payments.provider-events` must carry `signature` "
    "(required; see that message's description for its exact input and algorithm), and may "
    "name its `provider`; a report without a valid signature is dead-lettered and changes "
    "nothing. `InitiatePayment` on `payments.commands` opens a provider session."
)


SIGNATURE_HEADERS = {
    "type": "object",
    "required": [Headers.PRODUCER, Headers.SIGNED_AT, Headers.SIGNATURE],
    "properties": {
        Headers.PRODUCER: {"type": "string", "pattern": "^[a-z0-9][a-z0-9.-]{0,62}$"},
        Headers.SIGNED_AT: {
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "milliseconds since the Unix epoch",
        },
        Headers.SIGNATURE: {
            "type": "string",
            "pattern": "^[0-9a-f]{64}$",
            "description": "HMAC-SHA256 of the signing input, lowercase hexadecimal",
        },
    },
}


def _message(model: type[Any]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {
        "name": model.__name__,
        "title": model.__name__,
        "summary": (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else "",
        "contentType": "application/json",
        "payload": schema,
    }


def asyncapi_document() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    inbound = {t.name for t in INBOUND}
    for topic in CATALOGUE:
        refs = {}
        for model in topic.messages:
            messages[model.__name__] = _message(model)
            refs[model.__name__] = {"$ref": f"#/components/messages/{model.__name__}"}
        description = (
            f"{topic.summary} Partitions: {topic.partitions} (`KAFKA_TOPIC_PARTITIONS` "
            f"changes it; one under `shopstream run` on its embedded broker). Key: "
            f"{topic.key}. Each message names its `type` in its JSON; the platform also "
            f"sets it in the `{Headers.TYPE}` header, which a producer may set too, so "
            "that a consumer skips what it does not handle without parsing it."
        )
        if topic.signed:
            description += "\n\n" + COMMAND_SIGNATURE_SCHEME
            for model in topic.messages:
                messages[model.__name__]["headers"] = SIGNATURE_HEADERS
        channels[topic.name] = {"address": topic.name, "description": description, "messages": refs}
        operations[f"{'send' if topic.name in inbound else 'receive'}:{topic.name}"] = {
            "action": "send" if topic.name in inbound else "receive",
            "channel": {"$ref": f"#/channels/{topic.name}"},
        }
        channels[topic.dlq] = {
            "address": topic.dlq,
            "description": (
                f"Messages from {topic.name} that could not be handled (invalid, or failing "
                "for a reason retrying cannot fix), unchanged, with the reason in the "
                f"`{Headers.DLQ_REASON}` header and their origin in `{Headers.DLQ_TOPIC}`, "
                f"`{Headers.DLQ_PARTITION}`, `{Headers.DLQ_OFFSET}`. `shopstream dlq` lists, "
                "shows and replays them."
            ),
        }
    messages["ProviderPaymentOutcome"] |= {
        "description": SIGNATURE_SCHEME,
        "examples": [
            {
                "name": "signed",
                "summary": (
                    f"Signed with the secret `{SIGNATURE_EXAMPLE_SECRET}`; the signing input is "
                    f"`{SIGNATURE_EXAMPLE_INPUT}`."
                ),
                "payload": SIGNATURE_EXAMPLE,
            }
        ],
    }
    messages["Reply"] = _message(Reply)
    channels["gateway.replies.{instance}"] = {
        "address": "gateway.replies.{instance}",
        "description": (
            "Replies to requests that carried the headers "
            f"`{Headers.REPLY_TO}` and `{Headers.CORRELATION_ID}`: Faust's ReqRepResponse "
            "envelope {key, value, correlation_id} whose value is a Reply."
        ),
        "parameters": {"instance": {"description": "the gateway instance"}},
        "messages": {"Reply": {"$ref": "#/components/messages/Reply"}},
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "shopstream topics",
            "version": VERSION,
            "description": (
                "Topic names, keys and message schemas: the API for partner systems.\n\n"
                f"Changes: {CHANGES}"
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }
