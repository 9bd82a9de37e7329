"""Apache Kafka on this machine: its jars from Maven Central, and a KRaft cluster of 1 or 3 nodes.

Each node is a broker and a controller in one JVM, on free loopback ports. The jars are resolved
once with Maven (`topics/kafka/pom.xml`) into a cache folder; a node's data folder outlives it,
so a stopped or killed node comes back with its logs.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from agents.common.embedded import EmbeddedError, free_port, port_open
from agents.common.process import die_with_parent

POM = Path(__file__).resolve().parents[2] / "topics" / "kafka" / "pom.xml"
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_T = TypeVar("_T")

LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def kafka_version() -> str:
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    assert match, f"no kafka.version in {POM}"
    return match.group(1)


def jars_dir() -> Path:
    """KAFKA_JARS_DIR, else a cache folder named after the pinned version."""
    explicit = os.environ.get("KAFKA_JARS_DIR")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "shopstream" / f"kafka-{kafka_version()}"


def resolve_jars(timeout: float = 600.0) -> Path:
    """The folder of every jar the broker needs, copied there by Maven the first time."""
    target = jars_dir()
    done = target / ".complete"
    if done.exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise EmbeddedError("Apache Kafka needs Maven (mvn) to fetch its jars; none on PATH")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    result = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={partial}",
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-2000:]
        raise EmbeddedError(f"mvn could not fetch Apache Kafka's jars:\n{tail}")
    (partial / ".complete").write_text(kafka_version())
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def _run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to its end from sync code, even when called under a running loop."""
    box: dict[str, Any] = {}

    def main() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as e:
            box["error"] = e

    thread = threading.Thread(target=main, name="kafka-check")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


@dataclass
class KafkaNode:
    node_id: int
    port: int
    controller_port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = field(default=None, repr=False)
    # The SASL_PLAINTEXT listener's port, when the cluster has one (0: none).
    sasl_port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"kafka-{self.node_id}.log"

    @property
    def config_path(self) -> Path:
        return self.data_dir.parent / f"kafka-{self.node_id}.properties"


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64, never with a leading `-`, which
    kafka-storage would take for an option (one id in 64 did, as Kafka's own Uuid avoids)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaCluster:
    """A KRaft cluster of `nodes` combined broker+controller JVMs under `base_dir`.

    With 3 nodes or more, topics default to replication 3 and `min.insync.replicas` 2.
    With `sasl_users` ({name: password}), each node also has a SASL_PLAINTEXT listener
    (`sasl_bootstrap`) taking those users with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512.
    With `acls`, the brokers authorize every request (KRaft's StandardAuthorizer, nothing allowed
    without an ACL); the PLAINTEXT listeners' anonymous principal is the super user.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        nodes: int = 1,
        heap_mb: int = 512,
        sasl_users: Mapping[str, str] | None = None,
        acls: bool = False,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.base_dir = base_dir.resolve()
        self.heap_mb = heap_mb
        self.sasl_users = dict(sasl_users or {})
        self.acls = acls
        self.nodes = [
            KafkaNode(
                i,
                free_port(),
                free_port(),
                self.base_dir / f"node-{i}",
                sasl_port=free_port() if self.sasl_users else 0,
            )
            for i in range(1, nodes + 1)
        ]
        self._jars: Path | None = None

    @property
    def replication(self) -> int:
        return min(3, len(self.nodes))

    @property
    def min_insync(self) -> int:
        return 2 if self.replication >= 3 else 1

    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes)

    @property
    def sasl_bootstrap(self) -> str:
        if not self.sasl_users:
            raise EmbeddedError("this cluster has no SASL listener (no sasl_users)")
        return ",".join(f"127.0.0.1:{n.sasl_port}" for n in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def _config(self, node: KafkaNode) -> str:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        rf, isr = self.replication, self.min_insync
        lines = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},"
            f"CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": node.data_dir,
            "auto.create.topics.enable": "false",
            "num.partitions": 1,
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": 8,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            "group.initial.rebalance.delay.ms": 0,
            "unclean.leader.election.enable": "false",
            "num.network.threads": 2,
            "num.io.threads": 4,
            "log.segment.bytes": 64 * 1024 * 1024,
        }
        if self.sasl_users:
            lines |= self._sasl_config(node)
        if self.acls:
            lines |= {
                "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "super.users": "User:ANONYMOUS",
                "allow.everyone.if.no.acl.found": "false",
            }
        return "".join(f"{k}={v}\n" for k, v in lines.items())

    def _sasl_config(self, node: KafkaNode) -> dict[str, object]:
        """A SASL_PLAINTEXT listener next to the PLAINTEXT one (which the brokers keep between
        themselves). PLAIN users are listed in its JAAS config, SCRAM ones stored at format."""
        sasl = f"SASL://127.0.0.1:{node.sasl_port}"
        plain_users = " ".join(f'user_{u}="{pw}"' for u, pw in self.sasl_users.items())
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return {
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},{sasl},"
            f"CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port},{sasl}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL:SASL_PLAINTEXT,"
            "CONTROLLER:PLAINTEXT",
            "listener.name.sasl.sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
            "listener.name.sasl.plain.sasl.jaas.config": "org.apache.kafka.common.security"
            f".plain.PlainLoginModule required {plain_users};",
            "listener.name.sasl.scram-sha-256.sasl.jaas.config": scram,
            "listener.name.sasl.scram-sha-512.sasl.jaas.config": scram,
        }

    def _scram_arguments(self) -> list[str]:
        return [
            arg
            for mechanism in SASL_MECHANISMS[1:]
            for user, password in self.sasl_users.items()
            for arg in ("--add-scram", f"{mechanism}=[name={user},password={password}]")
        ]

    def _java(self, main: str, *args: str) -> list[str]:
        assert self._jars is not None
        java = shutil.which("java")
        if java is None:
            raise EmbeddedError("Apache Kafka needs a Java runtime (17 or newer); none on PATH")
        return [
            java,
            f"-Xms{self.heap_mb // 2}m",
            f"-Xmx{self.heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.base_dir / 'log4j2.properties'}",
            "-cp",
            f"{self._jars}/*",
            main,
            *args,
        ]

    def _format(self) -> None:
        """Format every node's storage once; a formatted node keeps its data and cluster id."""
        id_file = self.base_dir / "cluster.id"
        if not id_file.exists() or id_file.read_text().startswith("-"):
            id_file.write_text(new_cluster_id())
        cluster_id = id_file.read_text().strip()
        for node in self.nodes:
            node.config_path.write_text(self._config(node))
            if (node.data_dir / "meta.properties").exists():
                continue
            result = subprocess.run(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    "--ignore-formatted",
                    "-t",
                    cluster_id,
                    "-c",
                    str(node.config_path),
                    *self._scram_arguments(),
                ),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if result.returncode != 0:
                raise EmbeddedError(f"kafka storage format failed: {result.stderr[-2000:]}")

    def start(self, timeout: float = 120.0) -> str:
        self._jars = resolve_jars()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        (self.base_dir / "log4j2.properties").write_text(LOG4J2)
        self._format()
        try:
            for node in self.nodes:
                self._launch(node)
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self.bootstrap

    def _launch(self, node: KafkaNode) -> None:
        node.log = node.log_path.open("ab")
        node.proc = subprocess.Popen(
            self._java("kafka.Kafka", str(node.config_path)),
            stdout=node.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until every node answers a metadata request listing all nodes and a controller."""
        deadline = time.monotonic() + timeout
        while True:
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    raise EmbeddedError(
                        f"kafka node {node.node_id} exited with code {node.proc.returncode}:"
                        f" see {node.log_path}"
                    )
            if all(port_open(n.port) for n in self.nodes) and _run_sync(self._complete()):
                return
            if time.monotonic() > deadline:
                raise EmbeddedError(f"kafka not ready after {timeout:.0f} s")
            time.sleep(0.2)

    async def _complete(self) -> bool:
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.errors import KafkaError

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
        except (TimeoutError, KafkaError, OSError):
            return False
        finally:
            await admin.close()
        return len(cluster["brokers"]) == len(self.nodes) and cluster["controller_id"] != -1

    def leader_of(self, topic: str, partition: int = 0) -> int:
        """The node that leads a partition now."""

        async def lookup() -> int:
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
            await admin.start()
            try:
                (described,) = await admin.describe_topics([topic])
            finally:
                await admin.close()
            for p in described["partitions"]:
                if p["partition"] == partition:
                    return int(p["leader"])
            raise LookupError(f"{topic} has no partition {partition}")

        return _run_sync(lookup())

    def kill(self, node_id: int) -> None:
        """SIGKILL one node, as a crash would."""
        node = self.node(node_id)
        if node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait(30)
        self._close_log(node)

    def restart(self, node_id: int, timeout: float = 120.0) -> None:
        """Start a stopped or killed node again on its ports and data; wait for the cluster."""
        node = self.node(node_id)
        if node.proc is not None and node.proc.poll() is None:
            raise EmbeddedError(f"kafka node {node_id} is still running")
        self._launch(node)
        self.wait_ready(timeout)

    def _close_log(self, node: KafkaNode) -> None:
        if node.log is not None:
            node.log.close()
            node.log = None

    def stop(self, timeout: float = 30.0) -> None:
        running = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        for node in running:
            assert node.proc is not None
            node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node in running:
            assert node.proc is not None
            try:
                node.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(10)
        for node in self.nodes:
            self._close_log(node)
            node.proc = None
