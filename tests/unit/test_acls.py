"""The Kafka ACLs per principal (topics/acls.py): what the docs show, and who may write where."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from topics import CATALOGUE, INBOUND, PAYMENTS_PROVIDER_EVENTS
from topics.acls import PRINCIPALS, default_principals, kafka_acls_script

DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def writers(topic: str) -> set[str]:
    return {
        role
        for role, acls in PRINCIPALS.items()
        for acl in acls
        if acl.resource == "topic"
        and "Write" in acl.operations
        and (topic.startswith(acl.name) if acl.prefixed else topic == acl.name)
    }


def test_the_docs_show_what_the_command_prints() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agents.cli", "topics", "acls"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == kafka_acls_script(default_principals())
    blocks = re.findall(r"```sh\n(.*?)```", DOCS.read_text(), re.S)
    assert done.stdout in blocks, "docs/security.md: paste `shopstream topics acls` again"


def test_only_the_gateway_writes_commands_and_partners_only_their_reports() -> None:
    for topic in INBOUND:
        expected = {"gateway", "partner"} if topic == PAYMENTS_PROVIDER_EVENTS else {"gateway"}
        assert writers(topic.name) == expected, topic.name
    assert [a.name for a in PRINCIPALS["partner"]] == [PAYMENTS_PROVIDER_EVENTS.name]


def test_each_event_topic_has_one_writer_its_domain() -> None:
    for topic in CATALOGUE:
        if topic in INBOUND:
            continue
        domain = topic.name.split(".")[0]
        assert writers(topic.name) == {domain}, topic.name
