"""Real infrastructure for tests: embedded Postgres, Tansu or Apache Kafka, domain processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agents.common.embedded import EmbeddedPostgres, EmbeddedTansu, free_port
from agents.common.kafka import KafkaCluster

TEST_JWT_SECRET = "test-secret-" + "x" * 52
TEST_SANDBOX_SECRET = "test-sandbox-secret-" + "y" * 44
TEST_INTERNAL_SECRET = "test-internal-secret-" + "z" * 43


@contextlib.contextmanager
def shared_tmpdir(prefix: str) -> Iterator[Path]:
    """A temp dir that PostgreSQL, run as another user when we are root, can enter."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def running_postgres() -> Iterator[EmbeddedPostgres]:
    with shared_tmpdir("shopstream-pg-") as tmp:
        pg = EmbeddedPostgres(tmp / "data", durable=False)
        pg.start()
        try:
            yield pg
        finally:
            pg.stop()


@contextlib.contextmanager
def running_tansu() -> Iterator[EmbeddedTansu]:
    with shared_tmpdir("shopstream-kafka-") as tmp:
        broker = EmbeddedTansu(tmp / "tansu.log")
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()


@contextlib.contextmanager
def running_kafka(nodes: int = 3) -> Iterator[KafkaCluster]:
    """An Apache Kafka KRaft cluster of its own (replication 3 and min ISR 2 with 3 nodes)."""
    with shared_tmpdir("shopstream-apache-kafka-") as tmp:
        cluster = KafkaCluster(tmp, nodes=nodes)
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()


def kafka_env(cluster: KafkaCluster) -> dict[str, str]:
    """What a process needs on Apache Kafka, as `shopstream run --broker kafka` sets it."""
    wait = "500"
    return {
        "KAFKA_BROKER": cluster.bootstrap,
        "KAFKA_REPLICATION_FACTOR": str(cluster.replication),
        "KAFKA_PRODUCER_IDEMPOTENCE": "true",
        "KAFKA_FETCH_MAX_WAIT_MS": wait,
        "KAFKA_IDLE_FETCH_MAX_WAIT_MS": wait,
        "KAFKA_BACKGROUND_FETCH_MAX_WAIT_MS": wait,
    }


def grpc_serving(addr: str) -> bool:
    with grpc.insecure_channel(addr) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=0.5
            )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def base_env(dsn: str, kafka: str, state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BROKER")}
    env.update(
        {
            "DATABASE_URL": dsn,
            "KAFKA_BROKER": kafka,
            "SHOPSTREAM_STATE_DIR": str(state_dir),
            "JWT_SECRET": TEST_JWT_SECRET,
            "INTERNAL_SECRET": TEST_INTERNAL_SECRET,
            "SANDBOX_PROVIDER_SECRET": TEST_SANDBOX_SECRET,
            # Tansu has no idempotent producer; kafka_env() turns it on for Apache Kafka.
            "KAFKA_PRODUCER_IDEMPOTENCE": "false",
            "LOG_FORMAT": "text",
            "USER_SERVICE_ADDR": f"127.0.0.1:{free_port()}",
            "PRODUCT_SERVICE_ADDR": f"127.0.0.1:{free_port()}",
            "ORDER_SERVICE_ADDR": f"127.0.0.1:{free_port()}",
            "PAYMENT_SERVICE_ADDR": f"127.0.0.1:{free_port()}",
            "GATEWAY_PORT": str(free_port()),
        }
    )
    return env


@contextlib.contextmanager
def domain_process(
    domain: str, env: Mapping[str, str], log_path: Path, timeout: float = 60.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `python -m agents.<domain>` until its gRPC health says SERVING; stop it after."""
    addr = env[f"{domain.upper().rstrip('S')}_SERVICE_ADDR"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"agents.{domain}"],
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + timeout
        while not grpc_serving(addr):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{domain} did not get ready:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode
