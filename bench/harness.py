"""What the benchmarks share: child processes, `shopstream run`, a load generator, the summary."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import platform as host
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from agents.common.embedded import PG_DATABASE, free_port
from agents.common.process import die_with_parent
from agents.common.settings import Settings

READY_MARK = "ready: gateway on"
SERVICE_ADDRS = (
    "USER_SERVICE_ADDR",
    "PRODUCT_SERVICE_ADDR",
    "ORDER_SERVICE_ADDR",
    "PAYMENT_SERVICE_ADDR",
)
RESERVED_PORTS = frozenset({8080})
# The gateway's per-user, per-IP and auth-route rate limits, lifted: the benchmarks measure the
# platform, not the limiter (which still runs). Set these variables to measure with other limits.
BENCH_DEFAULTS = {
    "RATE_LIMIT_USER_PER_MIN": "100000000",
    "RATE_LIMIT_IP_PER_MIN": "100000000",
    "RATE_LIMIT_AUTH_PER_MIN": "100000000",
}
REPO = Path(__file__).resolve().parent.parent


def progress(message: str) -> None:
    """Progress goes to stderr, so that stdout is only the markdown summary."""
    print(f"bench | {message}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """A benchmark could not run (the platform did not start, a request failed...)."""


# --- ports, state, commands -------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports on 127.0.0.1, never 8080."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports and port not in RESERVED_PORTS:
            ports.append(port)
    return ports


@contextlib.contextmanager
def temp_state_dir() -> Iterator[Path]:
    """A fresh SHOPSTREAM_STATE_DIR, removed afterwards.

    Enterable by all, since PostgreSQL runs as `nobody` when we are root.
    """
    path = Path(tempfile.mkdtemp(prefix="shopstream-bench-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def shopstream_command() -> list[str]:
    """The `shopstream` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "shopstream"
    if script.exists():
        return [str(script)]
    found = shutil.which("shopstream")
    return [found] if found else [sys.executable, "-m", "agents.cli"]


BROKERS = ("tansu", "kafka")
# What `shopstream run` gives its processes on Apache Kafka unless set (agents/supervisor.py):
# the clients this script builds itself get the same.
KAFKA_CLIENT_DEFAULTS = {
    "KAFKA_FETCH_MAX_WAIT_MS": "500",
    "KAFKA_IDLE_FETCH_MAX_WAIT_MS": "500",
    "KAFKA_BACKGROUND_FETCH_MAX_WAIT_MS": "500",
}


def platform_env(state_dir: Path, broker: str | None = None) -> dict[str, str]:
    """The environment of `shopstream run`: every port random, embedded Postgres, and the
    embedded broker `broker` (`tansu` or `kafka`: Apache Kafka, 1 node unless
    SHOPSTREAM_KAFKA_NODES says otherwise; None: SHOPSTREAM_BROKER's, Tansu by default).

    It is also the environment of the Settings the benchmarks build themselves (a BusClient):
    Tansu has no idempotent producers, so KAFKA_PRODUCER_IDEMPOTENCE is false there, as the
    supervisor sets it for its own processes."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BROKER")}
    if broker is not None:
        env["SHOPSTREAM_BROKER"] = broker
    chosen = env.get("SHOPSTREAM_BROKER", "").strip().lower() or "tansu"
    if chosen not in BROKERS:
        raise BenchError(f"SHOPSTREAM_BROKER must be one of {', '.join(BROKERS)}, not {chosen!r}")
    if chosen == "kafka":
        for name, value in KAFKA_CLIENT_DEFAULTS.items():
            env.setdefault(name, value)
        env.setdefault("KAFKA_PRODUCER_IDEMPOTENCE", "true")
    else:
        env["KAFKA_PRODUCER_IDEMPOTENCE"] = "false"
    # Shared by the platform and the benchmark's own BusClient, which signs its commands, and
    # the JWT key by the platform and bench.direct, which checks the platform's tokens.
    env.setdefault("INTERNAL_SECRET", secrets.token_hex(32))
    env.setdefault("JWT_SECRET", secrets.token_hex(32))
    gateway, *services = free_ports(1 + len(SERVICE_ADDRS))
    env.update(
        {name: f"127.0.0.1:{port}" for name, port in zip(SERVICE_ADDRS, services, strict=True)}
    )
    env["GATEWAY_PORT"] = str(gateway)
    env["LISTEN_HOST"] = "127.0.0.1"
    env["SHOPSTREAM_STATE_DIR"] = str(state_dir)
    for name, value in BENCH_DEFAULTS.items():
        env.setdefault(name, value)
    return env


def leftovers(marker: str) -> list[str]:
    """Processes other than this one whose command line or environment names `marker`."""
    found: list[str] = []
    wanted = marker.encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if wanted in cmdline or wanted in environ:
            args = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{pid}: {args}")
    return found


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, CPU clock ticks used) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(rest[1]), int(rest[11]) + int(rest[12])


def process_label(pid: int) -> str:
    """What a process of the platform is, from its command line."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "gone"
    if not args:
        return "unknown"
    text = " ".join(args)
    if "postgres" in Path(args[0]).name or text.startswith("postgres:"):
        return "postgres"
    if "tansu" in Path(args[0]).name:
        return "tansu"
    if Path(args[0]).name == "java" and "kafka.Kafka" in args:
        return "kafka"
    if "-m" in args[:-1]:
        return args[args.index("-m") + 1]
    if len(args) > 1 and Path(args[1]).name == "shopstream":
        return "shopstream " + " ".join(args[2:3])
    return Path(args[0]).name


CpuSnapshot = dict[int, tuple[str, int]]


def cpu_snapshot(roots: Sequence[int]) -> CpuSnapshot:
    """The CPU clock ticks used so far by each of `roots` and their descendants, with labels."""
    stats = {int(p): _stat(int(p)) for p in os.listdir("/proc") if p.isdigit()}
    children: dict[int, list[int]] = {}
    for pid, st in stats.items():
        if st is not None:
            children.setdefault(st[0], []).append(pid)
    found: CpuSnapshot = {}
    todo = list(roots)
    while todo:
        pid = todo.pop()
        st = stats.get(pid)
        if pid in found or st is None:
            continue
        found[pid] = (process_label(pid), st[1])
        todo += children.get(pid, [])
    return found


def cpu_used(before: CpuSnapshot, after: CpuSnapshot, seconds: float) -> dict[str, float]:
    """Cores used between two snapshots, by label (a process started in between counts whole)."""
    cores: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid, (label, ticks) in after.items():
        used = ticks - before.get(pid, (label, 0))[1]
        cores[label] = cores.get(label, 0.0) + used / tick / seconds
    return dict(sorted(cores.items(), key=lambda kv: -kv[1]))


# --- child processes --------------------------------------------------------------------------


class Child:
    """A child process whose output is read line by line (the last lines are kept).

    It gets a session of its own (a Ctrl-C at the terminal reaches only us; we pass it on) and
    dies with us if we are killed (PR_SET_PDEATHSIG).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str],
        on_line: Callable[[str, float], None] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.cwd = cwd
        self.argv = list(argv)
        self.env = env
        self.on_line = on_line
        self.lines: deque[str] = deque(maxlen=300)
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.stop_s: float | None = None
        self._pump: asyncio.Task[None] | None = None

    async def spawn(self) -> None:
        self.started_at = time.perf_counter()
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        assert self.proc.stdout is not None
        self._pump = asyncio.create_task(self._read(self.proc.stdout), name=f"{self.name}-out")

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than the reader's limit
                raw = await stream.read(1 << 16)
            if not raw:
                return
            now = time.perf_counter()
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if self.on_line is not None:
                self.on_line(line, now)

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} not started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def tail(self, n: int = 60) -> str:
        return "\n".join(list(self.lines)[-n:])

    async def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> float:
        """Send `sig`, wait for the exit (kill after `timeout`); the seconds it took to exit."""
        if self.proc is None:
            return 0.0
        if self.proc.returncode is None:
            started = time.perf_counter()
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                progress(f"{self.name} did not exit {timeout:.0f} s after {sig!r}: killed")
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
            self.stop_s = time.perf_counter() - started
        if self._pump is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._pump, 10)
            self._pump = None
        return self.stop_s or 0.0


# --- the platform -----------------------------------------------------------------------------

MILESTONES = (
    ("postgres", re.compile(r"^shopstream \| postgres ready on 127\.0\.0\.1:(\d+)")),
    ("broker", re.compile(r"^shopstream \| (tansu|kafka) broker ready on (\S+)")),
    ("topics", re.compile(r"^shopstream \| topics ready")),
    ("migrations", re.compile(r"^shopstream \| migrations applied")),
    ("workers", re.compile(r"^shopstream \| (?:users|products|orders|payments) ready in")),
    ("gateway", re.compile(r"^shopstream \| gateway ready in")),
    ("ready", re.compile(r"^shopstream \| " + re.escape(READY_MARK))),
)


class Platform:
    """`shopstream run` as a child process, with random ports and the given state directory.

    `async with Platform(dir) as p:` starts it and stops it with SIGINT (Ctrl-C), whatever
    happens in between.
    """

    def __init__(
        self, state_dir: Path, *, start_timeout: float = 180.0, broker: str | None = None
    ) -> None:
        self.state_dir = state_dir
        self.env = platform_env(state_dir, broker)
        self.start_timeout = start_timeout
        self.gateway_url = f"http://127.0.0.1:{self.env['GATEWAY_PORT']}"
        self.postgres_port: int | None = None
        self.kafka: str | None = None
        # The broker of the ready line: "tansu" or "kafka" (Apache Kafka).
        self.broker: str | None = None
        # Seconds after spawn at which each milestone line was read (the last one for workers).
        self.milestones: dict[str, float] = {}
        self._ready = asyncio.Event()
        self.child = Child("shopstream run", [*shopstream_command(), "run"], self.env, self._line)

    @property
    def dsn(self) -> str:
        if self.postgres_port is None:
            raise BenchError("the postgres port was not seen in the output of shopstream run")
        return f"postgresql://postgres@127.0.0.1:{self.postgres_port}/{PG_DATABASE}"

    def _line(self, line: str, at: float) -> None:
        for name, pattern in MILESTONES:
            m = pattern.search(line)
            if m is None:
                continue
            self.milestones[name] = at - self.child.started_at
            if name == "postgres":
                self.postgres_port = int(m.group(1))
            elif name == "broker":
                self.broker, self.kafka = m.group(1), m.group(2)
            elif name == "ready":
                self._ready.set()

    async def start(self) -> float:
        """Start it; the seconds from spawn to the line with `ready: gateway on`."""
        await self.child.spawn()
        assert self.child.proc is not None
        ready = asyncio.create_task(self._ready.wait())
        exited = asyncio.create_task(self.child.proc.wait())
        try:
            await asyncio.wait(
                {ready, exited}, timeout=self.start_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for t in (ready, exited):
                t.cancel()
            await asyncio.gather(ready, exited, return_exceptions=True)
        if not self._ready.is_set():
            why = "exited" if not self.child.running else f"not ready in {self.start_timeout:.0f} s"
            raise BenchError(f"shopstream run {why}; its last lines:\n{self.child.tail()}")
        return self.milestones["ready"]

    async def stop(self) -> float:
        """Ctrl-C, as a user would; the seconds until it exited."""
        return await self.child.stop(signal.SIGINT, timeout=60.0)

    async def __aenter__(self) -> Platform:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        if self.child.returncode not in (0, None):
            progress(f"shopstream run exited with {self.child.returncode}:\n{self.child.tail(30)}")


async def admin_token(env: dict[str, str]) -> str:
    """`shopstream dev-token --role admin`: the token is its last line."""
    proc = await asyncio.create_subprocess_exec(
        *shopstream_command(),
        "dev-token",
        "--role",
        "admin",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    out, err = await proc.communicate()
    lines = out.decode().strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise BenchError(f"shopstream dev-token failed: {err.decode().strip()}")
    return lines[-1].strip()


# --- load -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile `q` (0-100) of `values`."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Sample:
    """The outcome of one load run: the latency of each successful call, and the failures."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    elapsed: float = 0.0
    # CPU used during the run, in cores: this process (the load generator), and the servers.
    client_cores: float = math.nan
    server_cores_by: dict[str, float] = field(default_factory=dict)

    @property
    def server_cores(self) -> float:
        return sum(self.server_cores_by.values()) if self.server_cores_by else math.nan

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed > 0 else math.nan

    def ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    def describe(self) -> str:
        text = (
            f"n={self.count} p50={self.ms(50):.2f} ms p99={self.ms(99):.2f} ms "
            f"{self.rate:.0f} req/s errors={self.errors}"
        )
        text += f" cpu: client {self.client_cores:.2f}, servers {self.server_cores:.2f} cores"
        if self.server_cores_by:
            text += " (" + ", ".join(f"{k} {v:.2f}" for k, v in self.server_cores_by.items()) + ")"
        return text + (f" (first: {self.first_error})" if self.first_error else "")


async def closed_loop(
    call: Callable[[int], Awaitable[None]],
    *,
    concurrency: int,
    requests: int | None = None,
    duration: float | None = None,
    servers: Sequence[int] = (),
) -> Sample:
    """`concurrency` workers, each calling `call(i)` again as soon as the last call returned,
    until `requests` calls were made or `duration` seconds passed. A call that raises is an
    error (its latency is not counted). `servers`: the pids whose process trees' CPU to count."""
    if requests is None and duration is None:
        raise ValueError("give requests or duration")
    sample = Sample()
    counter = itertools.count()
    cpu_client, cpu_servers = time.process_time(), cpu_snapshot(servers)
    started = time.perf_counter()
    deadline = started + duration if duration is not None else math.inf

    async def worker() -> None:
        while True:
            i = next(counter)
            if requests is not None and i >= requests:
                return
            t0 = time.perf_counter()
            if t0 >= deadline:
                return
            try:
                await call(i)
            except Exception as e:
                sample.errors += 1
                if sample.first_error is None:
                    sample.first_error = f"{type(e).__name__}: {e}"[:300]
            else:
                sample.latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    sample.elapsed = time.perf_counter() - started
    sample.client_cores = (time.process_time() - cpu_client) / sample.elapsed
    if servers:
        sample.server_cores_by = cpu_used(cpu_servers, cpu_snapshot(servers), sample.elapsed)
    return sample


async def idle(seconds: float, servers: Sequence[int]) -> Sample:
    """No requests for `seconds`: what the servers use doing nothing."""
    sample = Sample()
    cpu_client, cpu_servers = time.process_time(), cpu_snapshot(servers)
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    sample.elapsed = time.perf_counter() - started
    sample.client_cores = (time.process_time() - cpu_client) / sample.elapsed
    sample.server_cores_by = cpu_used(cpu_servers, cpu_snapshot(servers), sample.elapsed)
    return sample


# --- the summary ------------------------------------------------------------------------------


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [
            "| " + " | ".join(self.headers) + " |",
            "|" + "|".join("---" for _ in self.headers) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass
class Section:
    """What one benchmark reports."""

    title: str
    command: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: bool = False

    def markdown(self) -> str:
        parts = [f"### {self.title}", "", f"Command: `{self.command}`", ""]
        for table in self.tables:
            parts += [table.markdown(), ""]
        parts += [f"- {note}" for note in self.notes]
        return "\n".join(parts).rstrip() + "\n"


def cpu_table(columns: Sequence[tuple[str, Sample]]) -> Table:
    """Cores used by each kind of process (rows) during each run (columns)."""
    labels: list[str] = []
    for _, sample in columns:
        labels += [k for k in sample.server_cores_by if k not in labels]
    table = Table(["CPU (cores)", *(name for name, _ in columns)])
    for label in labels:
        table.rows.append(
            [f"`{label}`", *(fmt(s.server_cores_by.get(label, 0.0)) for _, s in columns)]
        )
    table.rows.append(["all of the above", *(fmt(s.server_cores) for _, s in columns)])
    table.rows.append(["load generator (bench)", *(fmt(s.client_cores) for _, s in columns)])
    return table


def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return host.processor() or "unknown CPU"


def _git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
            cwd=REPO,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
            cwd=REPO,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev} (with uncommitted changes)" if dirty else rev


def _loadavg() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass
class Machine:
    started: datetime
    load_before: str
    load_after: str = ""

    def markdown(self) -> str:
        tuning = Settings.from_env().kafka
        return "\n".join(
            [
                "| Run facts | |",
                "|---|---|",
                f"| Date (UTC) | {self.started:%Y-%m-%d %H:%M} |",
                f"| Machine | {os.cpu_count()} cores, {_cpu_model()}, {host.system()} "
                f"{host.release()} |",
                f"| Load average (1/5/15 min) before / after | {self.load_before} "
                f"→ {self.load_after} |",
                f"| Python | {host.python_version()} |",
                f"| Commit | {_git_revision()} |",
                "| Kafka client tuning (defaults) | fetch max wait "
                f"{tuning.fetch_max_wait_ms} ms, session timeout "
                f"{tuning.session_timeout_ms / 1000:g} s, heartbeat "
                f"{tuning.heartbeat_interval_ms / 1000:g} s, rebalance timeout "
                f"{tuning.rebalance_timeout_ms / 1000:g} s |",
                "| Gateway rate limits | "
                + ", ".join(f"{k}={os.environ.get(k, v)}" for k, v in BENCH_DEFAULTS.items())
                + " |",
            ]
        )


Measure = Callable[[], Awaitable[Section]]


async def _run_all(measures: Sequence[tuple[str, str, Measure]]) -> list[Section]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    sections: list[Section] = []
    for title, command, measure in measures:
        progress(f"--- {title}")
        try:
            section = await measure()
        except Exception as e:
            progress(f"{title} failed: {type(e).__name__}: {e}")
            section = Section(title, command, notes=[f"FAILED: {type(e).__name__}: {e}"])
            section.failed = True
        print(section.markdown(), file=sys.stderr, flush=True)
        sections.append(section)
    return sections


def main(measures: Sequence[tuple[str, str, Measure]]) -> int:
    """Run the benchmarks in order and print the markdown summary; 1 if one failed."""
    machine = Machine(started=datetime.now(UTC), load_before=_loadavg())
    try:
        sections = asyncio.run(_run_all(measures))
    except (KeyboardInterrupt, asyncio.CancelledError):
        progress("interrupted: everything started was stopped")
        return 130
    machine.load_after = _loadavg()
    print("## Benchmark run\n")
    print(machine.markdown() + "\n")
    for section in sections:
        print(section.markdown())
    return 1 if any(s.failed for s in sections) else 0
