"""Kafka ACLs per principal: what each process of the platform reads, writes and creates, for a
cluster with an authorizer (docs/security.md, "Kafka on a real cluster")."""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from aiokafka.protocol.admin import CreateAclsRequest

from agents.common.settings import KafkaSecurity
from topics import (
    CATALOGUE,
    ORDERS_COMMANDS,
    ORDERS_EVENTS,
    PAYMENTS_COMMANDS,
    PAYMENTS_EVENTS,
    PAYMENTS_PROVIDER_EVENTS,
    PRODUCTS_COMMANDS,
    PRODUCTS_EVENTS,
    USERS_EVENTS,
    reply_topic,
)
from topics.admin import admin_client

Resource = Literal["topic", "group"]

# Kafka's wire codes (org.apache.kafka.common.acl.AclOperation and friends).
RESOURCE_TYPES = {"topic": 2, "group": 3}
OPERATIONS = {
    "Read": 3,
    "Write": 4,
    "Create": 5,
    "Delete": 6,
    "Describe": 8,
    "DescribeConfigs": 10,
    "AlterConfigs": 11,
}
LITERAL, PREFIXED = 3, 4
ALLOW = 3

REPLIES_PREFIX = reply_topic("")
TABLES_PREFIX = "shopstream-{domain}-tables-"


@dataclass(frozen=True)
class Acl:
    """Allow `operations` on one topic or group, or on every name with the prefix `name`."""

    resource: Resource
    name: str
    operations: tuple[str, ...]
    prefixed: bool = False


def _write(*topics: str) -> tuple[Acl, ...]:
    return tuple(Acl("topic", t, ("Write",)) for t in topics)


def _consume(group: str, *topics: str) -> tuple[Acl, ...]:
    return (Acl("group", group, ("Read",)), *(Acl("topic", t, ("Read",)) for t in topics))


def _dlq(*topics: str) -> tuple[Acl, ...]:
    return _write(*(f"{t}.dlq" for t in topics))


def _tables(domain: str) -> tuple[Acl, ...]:
    """A domain's tables app: its own group, and its changelogs (read back at recovery)."""
    prefix = TABLES_PREFIX.format(domain=domain)
    return (
        Acl("group", f"shopstream-{domain}-tables", ("Read",)),
        Acl("topic", prefix, ("Read", "Write"), prefixed=True),
    )


REPLIES = Acl("topic", REPLIES_PREFIX, ("Write",), prefixed=True)

# The principals, by role. A Read or Write includes Describe; the producers are idempotent,
# which since Kafka 3.0 needs Write on the topics and no cluster ACL.
PRINCIPALS: dict[str, tuple[Acl, ...]] = {
    "gateway": (
        # Commands, and the sandbox provider's reports from its hosted page.
        *_write(PRODUCTS_COMMANDS.name, ORDERS_COMMANDS.name, PAYMENTS_COMMANDS.name),
        *_write(PAYMENTS_PROVIDER_EVENTS.name),
        # The catalogue cache reads by assignment: no group.
        Acl("topic", PRODUCTS_EVENTS.name, ("Read",)),
        # Its own reply topic, which it creates, configures, reads by assignment and deletes.
        Acl(
            "topic",
            REPLIES_PREFIX,
            ("Create", "Delete", "Read", "Write", "DescribeConfigs", "AlterConfigs"),
            prefixed=True,
        ),
    ),
    "users": _write(USERS_EVENTS.name),
    "products": (
        *_consume("shopstream-products", PRODUCTS_COMMANDS.name, ORDERS_EVENTS.name),
        *_write(PRODUCTS_EVENTS.name),
        *_dlq(PRODUCTS_COMMANDS.name, ORDERS_EVENTS.name),
        REPLIES,
        *_tables("products"),
    ),
    "orders": (
        *_consume(
            "shopstream-orders", ORDERS_COMMANDS.name, PRODUCTS_EVENTS.name, PAYMENTS_EVENTS.name
        ),
        *_write(ORDERS_EVENTS.name),
        *_dlq(ORDERS_COMMANDS.name, PRODUCTS_EVENTS.name, PAYMENTS_EVENTS.name),
        REPLIES,
    ),
    "payments": (
        *_consume(
            "shopstream-payments",
            PAYMENTS_COMMANDS.name,
            PAYMENTS_PROVIDER_EVENTS.name,
            ORDERS_EVENTS.name,
        ),
        Acl("topic", PAYMENTS_EVENTS.name, ("Read", "Write")),
        *_dlq(
            PAYMENTS_COMMANDS.name,
            PAYMENTS_PROVIDER_EVENTS.name,
            ORDERS_EVENTS.name,
            PAYMENTS_EVENTS.name,
        ),
        REPLIES,
        *_tables("payments"),
    ),
    # `shopstream topics create` (the hook job, compose's init): every topic and its configs.
    "admin": tuple(
        Acl("topic", prefix, ("Create", "Describe", "AlterConfigs"), prefixed=True)
        for prefix in sorted({f"{t.name.split('.')[0]}." for t in CATALOGUE} | {"shopstream-"})
    ),
    # A payment provider: its reports, nothing else.
    "partner": _write(PAYMENTS_PROVIDER_EVENTS.name),
}


def default_principals() -> dict[str, str]:
    """`User:shopstream-<role>` for the platform's processes, `User:partner` for a provider."""
    return {role: f"User:shopstream-{role}" for role in PRINCIPALS} | {"partner": "User:partner"}


def kafka_acls_script(principals: Mapping[str, str]) -> str:
    """A shell script of `kafka-acls.sh` calls that grant each role's ACLs to its principal
    (`$B` the bootstrap servers, `admin.properties` a super user's client settings); names with
    the same operations share a call."""
    lines = [
        "# B: the bootstrap servers; admin.properties: a super user's client settings",
        'acl() { kafka-acls.sh --bootstrap-server "$B" --command-config admin.properties '
        '--add "$@"; }',
    ]
    for role, acls in PRINCIPALS.items():
        lines.append(f"# {role}")
        calls: dict[tuple[Resource, bool, tuple[str, ...]], list[str]] = {}
        for acl in acls:
            calls.setdefault((acl.resource, acl.prefixed, acl.operations), []).append(acl.name)
        for (resource, prefixed, operations), names in calls.items():
            args = ["--allow-principal", principals[role]]
            if prefixed:
                args += ["--resource-pattern-type", "prefixed"]
            for op in operations:
                args += ["--operation", op]
            for n in names:
                args += [f"--{resource}", n]
            lines.append("acl " + shlex.join(args))
    return "\n".join(lines) + "\n"


def _creations(principals: Mapping[str, str]) -> Iterable[CreateAclsRequest]:
    for role, acls in PRINCIPALS.items():
        for acl in acls:
            for op in acl.operations:
                yield CreateAclsRequest(
                    RESOURCE_TYPES[acl.resource],
                    acl.name,
                    PREFIXED if acl.prefixed else LITERAL,
                    principals[role],
                    "*",
                    OPERATIONS[op],
                    ALLOW,
                )


async def create_acls(
    bootstrap: str, principals: Mapping[str, str], *, security: KafkaSecurity | None = None
) -> int:
    """Create every ACL of PRINCIPALS (an existing one is left as it is); returns how many."""
    admin = admin_client(bootstrap, security)
    await admin.start()
    count = 0
    try:
        for request in _creations(principals):
            response = await admin._send_request(request)
            for error_code, error_message in response.creation_responses:
                if error_code:
                    raise RuntimeError(f"cannot create an ACL: {error_message} ({error_code})")
            count += 1
    finally:
        await admin.close()
    return count
