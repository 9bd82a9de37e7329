"""Every setting of every shopstream process, read from environment variables in one place."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
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


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


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
    # Consumers off the client's path (payments, the gateway's catalogue events) poll slower.
    background_fetch_max_wait_ms: int = 200
    # A consumer that has had nothing for `idle_after_s` polls at this wait until messages come.
    idle_fetch_max_wait_ms: int = 60
    idle_after_s: float = 2.0
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 500
    rebalance_timeout_ms: int = 3000
    request_timeout_ms: int = 40000
    # Idempotent producers (no duplicate on a retried send) need a broker that has them:
    # Apache Kafka does, the embedded Tansu does not (`shopstream run` turns them off there).
    idempotent_producer: bool = True
    # Replicas of every topic the platform creates; 0: the catalogue's, capped at the brokers.
    replication_factor: int = 0


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client of every process reaches the brokers (docs/deploy.md)."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    # PEM files: the CA to trust (empty: the system's), and a client certificate with its key.
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("SSL")


@dataclass(frozen=True)
class Batching:
    """What an agent takes at once: up to `max_batch` messages, for `within_s` after the first."""

    max_batch: int = 500
    within_s: float = 0.001
    pending_redrive_s: float = 15.0
    pending_give_up_s: float = 120.0


@dataclass(frozen=True)
class OAuthProvider:
    """An OAuth2 provider. Endpoints default to the real ones; tests point them at a fake."""

    name: str
    authorize_url: str
    token_url: str
    userinfo_url: str
    scope: str
    emails_url: str = ""
    client_id: str = ""
    client_secret: str = ""
    redirect_url: str = ""

    @property
    def configured(self) -> bool:
        return not self.missing_settings

    @property
    def missing_settings(self) -> list[str]:
        """The environment variables still to set before this login works."""
        prefix = self.name.upper()
        given = {
            "CLIENT_ID": self.client_id,
            "CLIENT_SECRET": self.client_secret,
            "REDIRECT_URL": self.redirect_url,
        }
        return [f"{prefix}_{name}" for name, value in given.items() if not value]


PROVIDERS: dict[str, OAuthProvider] = {
    "google": OAuthProvider(
        "google",
        authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
        token_url="https://oauth2.googleapis.com/token",
        userinfo_url="https://openidconnect.googleapis.com/v1/userinfo",
        scope="openid email profile",
    ),
    "facebook": OAuthProvider(
        "facebook",
        authorize_url="https://www.facebook.com/v19.0/dialog/oauth",
        token_url="https://graph.facebook.com/v19.0/oauth/access_token",
        userinfo_url="https://graph.facebook.com/v19.0/me?fields=id,name,email",
        scope="email public_profile",
    ),
    "github": OAuthProvider(
        "github",
        authorize_url="https://github.com/login/oauth/authorize",
        token_url="https://github.com/login/oauth/access_token",
        userinfo_url="https://api.github.com/user",
        emails_url="https://api.github.com/user/emails",
        scope="read:user user:email",
    ),
}

# OWASP's minimum for argon2id (m=19456 KiB, t=2, p=1): lower settings are refused.
ARGON2_MIN_MEMORY_KIB = 19456
ARGON2_MIN_TIME_COST = 2


@dataclass(frozen=True)
class AuthSettings:
    access_ttl_s: int = 900
    refresh_ttl_s: int = 30 * 24 * 3600
    reuse_leeway_s: float = 10.0
    argon2_time_cost: int = ARGON2_MIN_TIME_COST
    argon2_memory_kib: int = ARGON2_MIN_MEMORY_KIB
    argon2_parallelism: int = 1
    # Failed logins an email may have in a window (counted in Postgres, shared by every replica);
    # past them, its logins are refused with 429 until the window ends.
    login_failures_per_email: int = 10
    login_failure_window_s: float = 900.0
    providers: dict[str, OAuthProvider] = field(default_factory=lambda: dict(PROVIDERS))


@dataclass(frozen=True)
class EdgeSettings:
    """What the gateway does at its edge: CORS, rate limits, which proxies to believe."""

    cors_origins: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    user_rate_per_min: int = 600
    ip_rate_per_min: int = 300
    auth_rate_per_min: int = 20
    rate_limit_max_keys: int = 100_000
    # Each pod counts alone, so each takes this share of every limit (GATEWAY_REPLICAS).
    gateway_replicas: int = 1


@dataclass(frozen=True)
class PaymentSettings:
    """Payment providers: which one a new session goes to, and the secrets that sign reports."""

    provider: str = "sandbox"
    # Where browsers reach the gateway, which serves the sandbox provider's hosted page.
    public_url: str = "http://127.0.0.1:8080"
    # No default: `shopstream run` makes one (agents/supervisor.py); a deployment sets its own.
    sandbox_secret: str = field(default="", repr=False)
    # PAYMENT_PROVIDER_SECRETS: every other provider's secret, by name.
    provider_secrets: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def secrets(self) -> dict[str, str]:
        """Each provider's report-signing secret, by provider name: a report is checked with
        the secret of the provider it names, never another's."""
        return {**self.provider_secrets, "sandbox": self.sandbox_secret}


PAYMENT_PROVIDERS = ("sandbox",)
SECRET_MIN = 32

_SECRET_HINT = (
    "set one of at least 32 characters (e.g. openssl rand -hex 32), the same in every process "
    "that gets it; shopstream run makes one for its children and keeps it in its state directory"
)


@dataclass(frozen=True)
class Settings:
    database_url: str = ""
    kafka_broker: str = ""
    # What `shopstream run` starts when KAFKA_BROKER is unset: "tansu" or "kafka" (Apache Kafka).
    embedded_broker: str = "tansu"
    embedded_kafka_nodes: int = 1
    listen_host: str = "127.0.0.1"
    gateway_port: int = 8080
    gateway_instance: str = field(default_factory=socket.gethostname)
    grpc: GrpcAddresses = field(default_factory=GrpcAddresses)
    kafka: KafkaTuning = field(default_factory=KafkaTuning)
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    batching: Batching = field(default_factory=Batching)
    # Partitions of every topic `shopstream topics create` makes; 0: the topic catalogue's.
    topic_partitions: int = 0
    auth: AuthSettings = field(default_factory=AuthSettings)
    edge: EdgeSettings = field(default_factory=EdgeSettings)
    request_timeout_s: float = 5.0
    # No defaults: `shopstream run` makes both (agents/supervisor.py); a deployment sets its own.
    jwt_secret: str = field(default="", repr=False)
    # Signs the service tokens of gRPC calls and the commands on command topics (issue 11).
    internal_secret: str = field(default="", repr=False)
    jwt_issuer: str = "shopstream"
    jwt_audience: str = "shopstream"
    max_body_bytes: int = 1024 * 1024
    page_size: int = 10
    payment_ttl_s: float = 900.0
    # How long an Idempotency-Key (and the command ledger's record of a command) is kept.
    idempotency_key_ttl_s: float = 86400.0
    idempotency_prune_every_s: float = 600.0
    payments: PaymentSettings = field(default_factory=PaymentSettings)
    db_pool_max: int = 10
    state_dir: Path = Path(".shopstream")
    log_level: str = "INFO"
    log_format: str = "json"
    # How the users process sends its mails (email verification): "log" writes each one, link
    # included, to its log (development); "none" sends nothing.
    mailer: str = "log"

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
            background_fetch_max_wait_ms=_int(
                e, "KAFKA_BACKGROUND_FETCH_MAX_WAIT_MS", d.kafka.background_fetch_max_wait_ms
            ),
            idle_fetch_max_wait_ms=_int(
                e, "KAFKA_IDLE_FETCH_MAX_WAIT_MS", d.kafka.idle_fetch_max_wait_ms
            ),
            idle_after_s=_float(e, "KAFKA_IDLE_AFTER_S", d.kafka.idle_after_s),
            idempotent_producer=_bool(e, "KAFKA_PRODUCER_IDEMPOTENCE", d.kafka.idempotent_producer),
            replication_factor=_int(e, "KAFKA_REPLICATION_FACTOR", d.kafka.replication_factor),
        )
        batching = Batching(
            max_batch=_int(e, "BATCH_MAX", d.batching.max_batch),
            within_s=_float(e, "BATCH_WITHIN_S", d.batching.within_s),
            pending_redrive_s=_float(e, "ORDER_PENDING_REDRIVE_S", d.batching.pending_redrive_s),
            pending_give_up_s=_float(e, "ORDER_PENDING_GIVE_UP_S", d.batching.pending_give_up_s),
        )
        if batching.max_batch < 1 or not 0 <= batching.within_s <= 1:
            raise SettingsError("BATCH_MAX must be at least 1 and BATCH_WITHIN_S 0..1")
        if not 0 < batching.pending_redrive_s < batching.pending_give_up_s:
            raise SettingsError("ORDER_PENDING_REDRIVE_S must be below ORDER_PENDING_GIVE_UP_S")
        if kafka.fetch_max_wait_ms < 2:
            raise SettingsError("KAFKA_FETCH_MAX_WAIT_MS below 2 loses replies on Tansu; use 5-10")
        gateway_port = _int(e, "GATEWAY_PORT", d.gateway_port)
        settings = cls(
            database_url=_str(e, "DATABASE_URL", ""),
            kafka_broker=_str(e, "KAFKA_BROKER", ""),
            embedded_broker=_str(e, "SHOPSTREAM_BROKER", d.embedded_broker).lower(),
            embedded_kafka_nodes=_int(e, "SHOPSTREAM_KAFKA_NODES", d.embedded_kafka_nodes),
            listen_host=_str(e, "LISTEN_HOST", d.listen_host),
            gateway_port=gateway_port,
            gateway_instance=_str(e, "GATEWAY_INSTANCE", d.gateway_instance),
            grpc=grpc,
            kafka=kafka,
            kafka_security=_kafka_security(e),
            batching=batching,
            topic_partitions=_int(e, "KAFKA_TOPIC_PARTITIONS", d.topic_partitions),
            auth=_auth_settings(e),
            edge=_edge_settings(e, gateway_port),
            request_timeout_s=_float(e, "REQUEST_TIMEOUT_S", d.request_timeout_s),
            jwt_secret=_str(e, "JWT_SECRET", d.jwt_secret),
            internal_secret=_str(e, "INTERNAL_SECRET", d.internal_secret),
            jwt_issuer=_str(e, "JWT_ISSUER", d.jwt_issuer),
            jwt_audience=_str(e, "JWT_AUDIENCE", d.jwt_audience),
            max_body_bytes=_int(e, "MAX_BODY_BYTES", d.max_body_bytes),
            page_size=_int(e, "PAGE_SIZE", d.page_size),
            payment_ttl_s=_float(e, "PAYMENT_TTL_S", d.payment_ttl_s),
            idempotency_key_ttl_s=_float(e, "IDEMPOTENCY_KEY_TTL_S", d.idempotency_key_ttl_s),
            idempotency_prune_every_s=_float(
                e, "IDEMPOTENCY_PRUNE_EVERY_S", d.idempotency_prune_every_s
            ),
            payments=_payment_settings(e, gateway_port),
            db_pool_max=_int(e, "DB_POOL_MAX", d.db_pool_max),
            state_dir=Path(_str(e, "SHOPSTREAM_STATE_DIR", str(d.state_dir))),
            log_level=_str(e, "LOG_LEVEL", d.log_level).upper(),
            log_format=_str(e, "LOG_FORMAT", d.log_format),
            mailer=_str(e, "MAILER", d.mailer).lower(),
        )
        if settings.embedded_broker not in ("tansu", "kafka"):
            raise SettingsError("SHOPSTREAM_BROKER must be tansu or kafka")
        if settings.embedded_kafka_nodes not in (1, 3):
            raise SettingsError("SHOPSTREAM_KAFKA_NODES must be 1 or 3")
        if settings.kafka.replication_factor < 0:
            raise SettingsError("KAFKA_REPLICATION_FACTOR must be 0 (the cluster's) or more")
        if settings.topic_partitions < 0:
            raise SettingsError("KAFKA_TOPIC_PARTITIONS must be 0 (the catalogue's) or more")
        if settings.jwt_secret and len(settings.jwt_secret) < 32:
            raise SettingsError("JWT_SECRET must be at least 32 characters")
        if settings.internal_secret and len(settings.internal_secret) < 32:
            raise SettingsError("INTERNAL_SECRET must be at least 32 characters")
        if settings.idempotency_key_ttl_s <= 0 or settings.idempotency_prune_every_s <= 0:
            raise SettingsError("IDEMPOTENCY_KEY_TTL_S and IDEMPOTENCY_PRUNE_EVERY_S must be > 0")
        if settings.log_format not in ("json", "text"):
            raise SettingsError("LOG_FORMAT must be json or text")
        if settings.mailer not in MAILERS:
            raise SettingsError(f"MAILER must be one of {', '.join(MAILERS)}")
        return settings

    def require_database(self) -> str:
        if not self.database_url:
            raise SettingsError("DATABASE_URL is not set (shopstream run sets it for its children)")
        return self.database_url

    def require_jwt_secret(self) -> str:
        """The gateway and the users worker sign and check access tokens: they refuse to start
        without the key, which no two installs share."""
        if not self.jwt_secret:
            raise SettingsError(f"JWT_SECRET is not set: {_SECRET_HINT}")
        return self.jwt_secret

    def require_internal_secret(self) -> str:
        """The gateway and every worker sign and check service tokens and commands with it:
        each refuses to start without it."""
        if not self.internal_secret:
            raise SettingsError(f"INTERNAL_SECRET is not set: {_SECRET_HINT}")
        return self.internal_secret

    def require_payment_secrets(self) -> None:
        """The gateway and the payments worker sign and check provider reports: they refuse to
        start without the secret of the provider in use."""
        if self.payments.provider == "sandbox" and not self.payments.sandbox_secret:
            raise SettingsError(
                "SANDBOX_PROVIDER_SECRET is not set: the gateway and the payments worker need the "
                "same one, at least 32 characters (shopstream run makes one for its children)"
            )
        if not self.payments.secrets.get(self.payments.provider):
            raise SettingsError(
                f"PAYMENT_PROVIDER_SECRETS has no secret for {self.payments.provider}: the "
                "payments worker checks its reports with it"
            )

    def require_kafka(self) -> str:
        if not self.kafka_broker:
            raise SettingsError("KAFKA_BROKER is not set (shopstream run sets it for its children)")
        return self.kafka_broker


def _kafka_security(e: Mapping[str, str]) -> KafkaSecurity:
    d = KafkaSecurity()
    security = KafkaSecurity(
        protocol=_str(e, "KAFKA_SECURITY_PROTOCOL", d.protocol).upper(),
        sasl_mechanism=_str(e, "KAFKA_SASL_MECHANISM", d.sasl_mechanism).upper(),
        sasl_username=_str(e, "KAFKA_SASL_USERNAME", ""),
        sasl_password=_str(e, "KAFKA_SASL_PASSWORD", ""),
        ssl_cafile=_str(e, "KAFKA_SSL_CAFILE", ""),
        ssl_certfile=_str(e, "KAFKA_SSL_CERTFILE", ""),
        ssl_keyfile=_str(e, "KAFKA_SSL_KEYFILE", ""),
    )
    if security.protocol not in SECURITY_PROTOCOLS:
        raise SettingsError(
            f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(SECURITY_PROTOCOLS)}"
        )
    if security.sasl_mechanism not in SASL_MECHANISMS:
        raise SettingsError(f"KAFKA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}")
    if security.sasl and not (security.sasl_username and security.sasl_password):
        raise SettingsError(
            f"KAFKA_SECURITY_PROTOCOL={security.protocol} needs KAFKA_SASL_USERNAME and "
            "KAFKA_SASL_PASSWORD"
        )
    if not security.sasl and (security.sasl_username or security.sasl_password):
        raise SettingsError("KAFKA_SASL_USERNAME/PASSWORD need KAFKA_SECURITY_PROTOCOL=SASL_…")
    files = (security.ssl_cafile, security.ssl_certfile, security.ssl_keyfile)
    if not security.tls and any(files):
        raise SettingsError("KAFKA_SSL_* files need KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL")
    if bool(security.ssl_certfile) != bool(security.ssl_keyfile):
        raise SettingsError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")
    return security


MAILERS = ("log", "none")


def _list(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _auth_settings(e: Mapping[str, str]) -> AuthSettings:
    d = AuthSettings()
    providers = {}
    for name, p in PROVIDERS.items():
        up = name.upper()
        providers[name] = replace(
            p,
            client_id=_str(e, f"{up}_CLIENT_ID", ""),
            client_secret=_str(e, f"{up}_CLIENT_SECRET", ""),
            redirect_url=_str(e, f"{up}_REDIRECT_URL", ""),
            authorize_url=_str(e, f"{up}_AUTHORIZE_URL", p.authorize_url),
            token_url=_str(e, f"{up}_TOKEN_URL", p.token_url),
            userinfo_url=_str(e, f"{up}_USERINFO_URL", p.userinfo_url),
            emails_url=_str(e, f"{up}_EMAILS_URL", p.emails_url) if p.emails_url else "",
        )
    auth = AuthSettings(
        access_ttl_s=_int(e, "ACCESS_TOKEN_TTL_S", d.access_ttl_s),
        refresh_ttl_s=_int(e, "REFRESH_TOKEN_TTL_S", d.refresh_ttl_s),
        reuse_leeway_s=_float(e, "REFRESH_REUSE_LEEWAY_S", d.reuse_leeway_s),
        argon2_time_cost=_int(e, "ARGON2_TIME_COST", d.argon2_time_cost),
        argon2_memory_kib=_int(e, "ARGON2_MEMORY_KIB", d.argon2_memory_kib),
        argon2_parallelism=_int(e, "ARGON2_PARALLELISM", d.argon2_parallelism),
        login_failures_per_email=_int(e, "LOGIN_FAILURES_PER_EMAIL", d.login_failures_per_email),
        login_failure_window_s=_float(e, "LOGIN_FAILURE_WINDOW_S", d.login_failure_window_s),
        providers=providers,
    )
    if auth.argon2_memory_kib < ARGON2_MIN_MEMORY_KIB or auth.argon2_time_cost < 2:
        raise SettingsError("argon2id below the OWASP minimum (m=19456 KiB, t=2, p=1)")
    if auth.argon2_parallelism < 1:
        raise SettingsError("ARGON2_PARALLELISM must be at least 1")
    if not 60 <= auth.access_ttl_s <= 24 * 3600:
        raise SettingsError("ACCESS_TOKEN_TTL_S must be 60..86400")
    if auth.refresh_ttl_s <= auth.access_ttl_s:
        raise SettingsError("REFRESH_TOKEN_TTL_S must be longer than ACCESS_TOKEN_TTL_S")
    if not 0 <= auth.reuse_leeway_s <= 300:
        raise SettingsError("REFRESH_REUSE_LEEWAY_S must be 0..300")
    if auth.login_failures_per_email < 1:
        raise SettingsError("LOGIN_FAILURES_PER_EMAIL must be at least 1")
    if not 1 <= auth.login_failure_window_s <= 24 * 3600:
        raise SettingsError("LOGIN_FAILURE_WINDOW_S must be 1..86400")
    for p in providers.values():
        given = [bool(p.client_id), bool(p.client_secret), bool(p.redirect_url)]
        up = p.name.upper()
        if any(given) and not all(given):
            raise SettingsError(
                f"{up}_CLIENT_ID, {up}_CLIENT_SECRET and {up}_REDIRECT_URL go together"
            )
        if p.redirect_url and not p.redirect_url.startswith(("https://", "http://")):
            raise SettingsError(f"{up}_REDIRECT_URL must be an http(s) URL")
    return auth


def _payment_settings(e: Mapping[str, str], gateway_port: int) -> PaymentSettings:
    d = PaymentSettings()
    payments = PaymentSettings(
        provider=_str(e, "PAYMENT_PROVIDER", d.provider),
        public_url=_str(e, "PUBLIC_URL", f"http://127.0.0.1:{gateway_port}").rstrip("/"),
        sandbox_secret=_str(e, "SANDBOX_PROVIDER_SECRET", d.sandbox_secret),
    )
    listed = _provider_secrets(_str(e, "PAYMENT_PROVIDER_SECRETS", ""))
    sandbox = listed.pop("sandbox", "")
    if sandbox and payments.sandbox_secret and sandbox != payments.sandbox_secret:
        raise SettingsError("SANDBOX_PROVIDER_SECRET and PAYMENT_PROVIDER_SECRETS differ")
    payments = replace(
        payments, sandbox_secret=payments.sandbox_secret or sandbox, provider_secrets=listed
    )
    given = [secret for secret in payments.secrets.values() if secret]
    if len(set(given)) < len(given):
        raise SettingsError("each payment provider needs its own secret")
    if payments.provider not in PAYMENT_PROVIDERS:
        raise SettingsError(f"PAYMENT_PROVIDER must be one of {', '.join(PAYMENT_PROVIDERS)}")
    if not payments.public_url.startswith(("https://", "http://")):
        raise SettingsError("PUBLIC_URL must be an http(s) URL")
    if payments.sandbox_secret and len(payments.sandbox_secret) < SECRET_MIN:
        raise SettingsError("SANDBOX_PROVIDER_SECRET must be at least 32 characters")
    return payments


def _provider_secrets(raw: str) -> dict[str, str]:
    """`name=secret,name=secret`: one secret per provider the platform knows (the sandbox's may
    be SANDBOX_PROVIDER_SECRET instead), each at least 32 characters."""
    found: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, secret = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SettingsError("PAYMENT_PROVIDER_SECRETS is name=secret, comma-separated")
        if name not in PAYMENT_PROVIDERS:
            raise SettingsError(f"PAYMENT_PROVIDER_SECRETS: no payment provider {name}")
        if name in found:
            raise SettingsError(f"PAYMENT_PROVIDER_SECRETS names {name} twice")
        if len(secret) < SECRET_MIN:
            raise SettingsError(f"the secret of provider {name} must be at least 32 characters")
        found[name] = secret
    return found


def _edge_settings(e: Mapping[str, str], gateway_port: int) -> EdgeSettings:
    d = EdgeSettings()
    own = (
        "http://localhost:3000",
        f"http://localhost:{gateway_port}",
        f"http://127.0.0.1:{gateway_port}",
    )
    edge = EdgeSettings(
        cors_origins=tuple(o.rstrip("/") for o in _list(e, "CORS_ORIGINS", own)),
        trusted_proxies=_list(e, "TRUSTED_PROXIES", ()),
        user_rate_per_min=_int(e, "RATE_LIMIT_USER_PER_MIN", d.user_rate_per_min),
        ip_rate_per_min=_int(e, "RATE_LIMIT_IP_PER_MIN", d.ip_rate_per_min),
        auth_rate_per_min=_int(e, "RATE_LIMIT_AUTH_PER_MIN", d.auth_rate_per_min),
        rate_limit_max_keys=_int(e, "RATE_LIMIT_MAX_KEYS", d.rate_limit_max_keys),
        gateway_replicas=_int(e, "GATEWAY_REPLICAS", d.gateway_replicas),
    )
    for proxy in edge.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise SettingsError(
                f"TRUSTED_PROXIES: {proxy!r} is not an address or network"
            ) from None
    if min(edge.user_rate_per_min, edge.ip_rate_per_min, edge.auth_rate_per_min) < 1:
        raise SettingsError("rate limits must be at least 1 a minute")
    if edge.rate_limit_max_keys < 1:
        raise SettingsError("RATE_LIMIT_MAX_KEYS must be at least 1")
    if edge.gateway_replicas < 1:
        raise SettingsError("GATEWAY_REPLICAS must be at least 1")
    return edge
