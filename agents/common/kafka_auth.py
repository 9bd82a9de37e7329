"""KAFKA_SECURITY_PROTOCOL and its credentials, as every Kafka client of shopstream takes them."""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context
from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from agents.common.settings import KafkaSecurity


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext:
    """Verifies the brokers' certificates and host names (against KAFKA_SSL_CAFILE, else the
    system's CAs), and presents the client certificate when one is given."""
    context: ssl.SSLContext = create_ssl_context(
        cafile=security.ssl_cafile or None,
        certfile=security.ssl_certfile or None,
        keyfile=security.ssl_keyfile or None,
    )
    return context


def client_options(security: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments for every aiokafka producer, consumer and admin client."""
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.tls:
        options["ssl_context"] = ssl_context(security)
    if security.sasl:
        options |= {
            "sasl_mechanism": security.sasl_mechanism,
            "sasl_plain_username": security.sasl_username,
            "sasl_plain_password": security.sasl_password,
        }
    return options


def faust_credentials(security: KafkaSecurity) -> CredentialsT | None:
    """The same, as a Faust app's `broker_credentials` (None: plaintext)."""
    context = ssl_context(security) if security.tls else None
    if security.sasl:
        return SASLCredentials(
            username=security.sasl_username,
            password=security.sasl_password,
            mechanism=security.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return SSLCredentials(context)
    return None
