"""KAFKA_SECURITY_* as Settings reads them and every client gets them; the catalogue's topic
configs and how `shopstream topics create` caps them to the cluster."""

from __future__ import annotations

import base64
import ssl
import uuid
from pathlib import Path

import pytest
from faust.auth import SASLCredentials, SSLCredentials

from agents.common import kafka
from agents.common.kafka_auth import client_options, faust_credentials
from agents.common.settings import KafkaSecurity, Settings, SettingsError
from topics import (
    CATALOGUE,
    DAY_MS,
    DLQ_RETENTION_MS,
    HOUR_MS,
    ORDERS_EVENTS,
    Topic,
    all_topic_names,
    all_topics,
    gateway_replies,
    reply_topic,
)
from topics.admin import replication_on

SECRET = "s" * 32


def security(**env: str) -> KafkaSecurity:
    return Settings.from_env({"JWT_SECRET": SECRET, **env}).kafka_security


def test_plaintext_by_default() -> None:
    assert security() == KafkaSecurity()
    assert client_options(KafkaSecurity()) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(KafkaSecurity()) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "scram-sha-256", "SCRAM-SHA-512"])
def test_sasl_plaintext(mechanism: str) -> None:
    s = security(
        KAFKA_SECURITY_PROTOCOL="sasl_plaintext",
        KAFKA_SASL_MECHANISM=mechanism,
        KAFKA_SASL_USERNAME="shop",
        KAFKA_SASL_PASSWORD="pw",
    )
    assert client_options(s) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism.upper(),
        "sasl_plain_username": "shop",
        "sasl_plain_password": "pw",
    }
    creds = faust_credentials(s)
    assert isinstance(creds, SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value) == (
        "shop",
        "pw",
        s.sasl_mechanism,
    )
    assert creds.protocol.value == "SASL_PLAINTEXT"
    assert "pw" not in repr(s)


def test_sasl_ssl_verifies_the_brokers() -> None:
    s = security(
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        KAFKA_SASL_USERNAME="shop",
        KAFKA_SASL_PASSWORD="pw",
    )
    options = client_options(s)
    assert options["security_protocol"] == "SASL_SSL"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    creds = faust_credentials(s)
    assert isinstance(creds, SASLCredentials)
    assert creds.protocol.value == "SASL_SSL"
    assert creds.ssl_context is not None


def test_ssl_reads_the_ca_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "ca.crt")
    s = security(KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CAFILE=missing)
    assert s.ssl_cafile == missing
    with pytest.raises(FileNotFoundError):
        client_options(s)
    plain = security(KAFKA_SECURITY_PROTOCOL="SSL")
    creds = faust_credentials(plain)
    assert isinstance(creds, SSLCredentials)
    assert creds.protocol.value == "SSL"
    assert "sasl_mechanism" not in client_options(plain)


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI"},
            "KAFKA_SASL_MECHANISM",
        ),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u"}, "PASSWORD"),
        ({"KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}, "SASL_"),
        ({"KAFKA_SSL_CAFILE": "/ca.crt"}, "SSL or SASL_SSL"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": "/c.pem"}, "go together"),
    ],
)
def test_bad_security_settings_are_refused(env: dict[str, str], match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        security(**env)


def test_catalogue_configs() -> None:
    assert ORDERS_EVENTS.configs(3) == {
        "min.insync.replicas": "2",
        "cleanup.policy": "delete",
        "retention.ms": str(7 * DAY_MS),
    }
    assert ORDERS_EVENTS.configs(2)["min.insync.replicas"] == "1", "one broker may be down"
    assert ORDERS_EVENTS.configs(1)["min.insync.replicas"] == "1"
    compacted = Topic(name="t", partitions=1, key="k", summary="s", compacted=True)
    assert compacted.configs(3) == {"min.insync.replicas": "2", "cleanup.policy": "compact"}
    windowed = Topic(name="w", partitions=1, key="k", summary="s", compacted=True, windowed=True)
    assert windowed.configs(1) == {
        "min.insync.replicas": "1",
        "cleanup.policy": "compact,delete",
        "retention.ms": str(windowed.retention_ms),
    }
    dead = compacted.dead_letters()
    assert (dead.name, dead.partitions, dead.compacted) == ("t.dlq", 1, False)
    assert dead.configs(3)["retention.ms"] == str(DLQ_RETENTION_MS)
    replies = gateway_replies("gw-1")
    assert replies.name == reply_topic("gw-1")
    assert replies.configs(3)["retention.ms"] == str(HOUR_MS)


def test_every_topic_has_its_dead_letter_topic() -> None:
    topics = {t.name: t for t in all_topics()}
    for t in CATALOGUE:
        assert topics[t.name] == t
        assert topics[t.dlq].retention_ms == DLQ_RETENTION_MS
        assert topics[t.dlq].partitions == 1
    assert all_topic_names() == [(t.name, t.partitions) for t in all_topics()]
    assert {p for n, p in all_topic_names(2) if not n.endswith(".dlq")} == {2}


@pytest.mark.parametrize(
    ("brokers", "override", "expected"), [(1, 0, 1), (3, 0, 3), (5, 0, 3), (5, 5, 5), (2, 3, 2)]
)
def test_replication_is_capped_to_the_brokers(brokers: int, override: int, expected: int) -> None:
    assert replication_on(ORDERS_EVENTS, brokers, override) == expected


def test_a_cluster_id_never_looks_like_an_option(monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-storage took an id with a leading `-` for an option and the broker never started
    (one fresh state folder in 64)."""
    dashed = uuid.UUID(bytes=base64.urlsafe_b64decode("-" + "A" * 21 + "=="))
    ids = iter([dashed, uuid.uuid4()])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(ids))
    cluster_id = kafka.new_cluster_id()
    assert not cluster_id.startswith("-")
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
