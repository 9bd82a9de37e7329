"""Every setting of every shopstream process, read from environment variables in one place."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class SettingsError(ValueError):
    """An environment variable holds a value that cannot be used."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


def _str(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name)
    return default if raw is None or raw == "" else raw


def _port_of(addr: str, name: str) -> int:
    _, _, port = addr.rpartition(":")
    try:
        return int(port)
    except ValueError:
        raise SettingsError(f"{name} must be host:port, got {addr!r}") from None


@dataclass(frozen=True)
class GrpcAddresses:
    """Where each domain's gRPC server is reached (host:port); each server listens on that port."""

    users: str = "127.0.0.1:50001"
    products: str = "127.0.0.1:40001"
    orders: str = "127.0.0.1:30001"
    payments: str = "127.0.0.1:60001"

    def of(self, domain: str) -> str:
        addr: str = getattr(self, domain)
        return addr

    def port_of(self, domain: str) -> int:
        return _port_of(self.of(domain), f"{domain.upper()}_SERVICE_ADDR")


@dataclass(frozen=True)
class KafkaTuning:
    """Consumer settings that set latency and start-up time (see docs/performance.md)."""

    fetch_max_wait_ms: int = 10
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 500
    rebalance_timeout_ms: int = 3000
    request_timeout_ms: int = 40000


@dataclass(frozen=True)
class Settings:
    database_url: str = ""
    kafka_broker: str = ""
    listen_host: str = "127.0.0.1"
    gateway_port: int = 8080
    gateway_instance: str = field(default_factory=socket.gethostname)
    grpc: GrpcAddresses = field(default_factory=GrpcAddresses)
    kafka: KafkaTuning = field(default_factory=KafkaTuning)
    request_timeout_s: float = 5.0
    jwt_secret: str = "dev-insecure-secret-change-me-0123456789"
    jwt_issuer: str = "shopstream"
    jwt_audience: str = "shopstream"
    max_body_bytes: int = 1024 * 1024
    page_size: int = 10
    db_pool_max: int = 10
    state_dir: Path = Path(".shopstream")
    log_level: str = "INFO"
    log_format: str = "json"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        d = cls()
        grpc = GrpcAddresses(
            users=_str(e, "USER_SERVICE_ADDR", d.grpc.users),
            products=_str(e, "PRODUCT_SERVICE_ADDR", d.grpc.products),
            orders=_str(e, "ORDER_SERVICE_ADDR", d.grpc.orders),
            payments=_str(e, "PAYMENT_SERVICE_ADDR", d.grpc.payments),
        )
        for domain in ("users", "products", "orders", "payments"):
            grpc.port_of(domain)
        kafka = KafkaTuning(
            fetch_max_wait_ms=_int(e, "KAFKA_FETCH_MAX_WAIT_MS", d.kafka.fetch_max_wait_ms),
            session_timeout_ms=_int(e, "KAFKA_SESSION_TIMEOUT_MS", d.kafka.session_timeout_ms),
            heartbeat_interval_ms=_int(
                e, "KAFKA_HEARTBEAT_INTERVAL_MS", d.kafka.heartbeat_interval_ms
            ),
            rebalance_timeout_ms=_int(
                e, "KAFKA_REBALANCE_TIMEOUT_MS", d.kafka.rebalance_timeout_ms
            ),
            request_timeout_ms=_int(e, "KAFKA_REQUEST_TIMEOUT_MS", d.kafka.request_timeout_ms),
        )
        if kafka.fetch_max_wait_ms < 2:
            raise SettingsError("KAFKA_FETCH_MAX_WAIT_MS below 2 loses replies on Tansu; use 5-10")
        settings = cls(
            database_url=_str(e, "DATABASE_URL", ""),
            kafka_broker=_str(e, "KAFKA_BROKER", ""),
            listen_host=_str(e, "LISTEN_HOST", d.listen_host),
            gateway_port=_int(e, "GATEWAY_PORT", d.gateway_port),
            gateway_instance=_str(e, "GATEWAY_INSTANCE", d.gateway_instance),
            grpc=grpc,
            kafka=kafka,
            request_timeout_s=_float(e, "REQUEST_TIMEOUT_S", d.request_timeout_s),
            jwt_secret=_str(e, "JWT_SECRET", d.jwt_secret),
            jwt_issuer=_str(e, "JWT_ISSUER", d.jwt_issuer),
            jwt_audience=_str(e, "JWT_AUDIENCE", d.jwt_audience),
            max_body_bytes=_int(e, "MAX_BODY_BYTES", d.max_body_bytes),
            page_size=_int(e, "PAGE_SIZE", d.page_size),
            db_pool_max=_int(e, "DB_POOL_MAX", d.db_pool_max),
            state_dir=Path(_str(e, "SHOPSTREAM_STATE_DIR", str(d.state_dir))),
            log_level=_str(e, "LOG_LEVEL", d.log_level).upper(),
            log_format=_str(e, "LOG_FORMAT", d.log_format),
        )
        if len(settings.jwt_secret) < 32:
            raise SettingsError("JWT_SECRET must be at least 32 characters")
        if settings.log_format not in ("json", "text"):
            raise SettingsError("LOG_FORMAT must be json or text")
        return settings

    def require_database(self) -> str:
        if not self.database_url:
            raise SettingsError("DATABASE_URL is not set (shopstream run sets it for its children)")
        return self.database_url

    def require_kafka(self) -> str:
        if not self.kafka_broker:
            raise SettingsError("KAFKA_BROKER is not set (shopstream run sets it for its children)")
        return self.kafka_broker
