"""`shopstream run` as a test fixture: started as a user would, stopped with Ctrl-C."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from agents.common.embedded import port_open
from agents.supervisor import internal_secret, jwt_secret, sandbox_secret
from tests.infra import base_env

SHOPSTREAM = str(Path(sys.executable).parent / "shopstream")


@dataclass
class Platform:
    state_dir: Path
    env: dict[str, str]
    proc: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['GATEWAY_PORT']}"

    @property
    def sandbox_secret(self) -> str:
        """The secret `shopstream run` made for the sandbox provider, as its children got it."""
        return self.env.get("SANDBOX_PROVIDER_SECRET") or sandbox_secret(self.state_dir)

    @property
    def internal_secret(self) -> str:
        """The secret `shopstream run` made for service tokens and signed commands."""
        return self.env.get("INTERNAL_SECRET") or internal_secret(self.state_dir)

    @property
    def jwt_secret(self) -> str:
        """The key `shopstream run` made for access and refresh tokens."""
        return self.env.get("JWT_SECRET") or jwt_secret(self.state_dir)

    def addr(self, env_name: str) -> str:
        return self.env[env_name]

    def found(self, pattern: str) -> str:
        for line in self.lines:
            if m := re.search(pattern, line):
                return m.group(1)
        raise AssertionError(f"{pattern!r} not in the output:\n" + "\n".join(self.lines[-50:]))

    @property
    def kafka(self) -> str:
        return self.env.get("KAFKA_BROKER") or self.found(r"(?:tansu|kafka) broker ready on (\S+)")

    @property
    def postgres_port(self) -> int:
        return int(self.found(r"postgres ready on 127\.0\.0\.1:(\d+)"))

    def ports(self) -> list[int]:
        names = [
            "USER_SERVICE_ADDR",
            "PRODUCT_SERVICE_ADDR",
            "ORDER_SERVICE_ADDR",
            "PAYMENT_SERVICE_ADDR",
        ]
        ports = [int(self.env[n].rsplit(":", 1)[1]) for n in names]
        return [*ports, int(self.env["GATEWAY_PORT"])]

    def start(self, *args: str, timeout: float = 120.0) -> None:
        self.lines.clear()
        self._queue = queue.Queue()
        self.proc = subprocess.Popen(
            [SHOPSTREAM, "run", *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.state_dir,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                tail = "\n".join(self.lines[-80:])
                raise AssertionError(f"not ready in time:\n{tail}") from None
            if line is None:
                self.proc.wait(10)
                self._close()
                raise AssertionError("exited before ready:\n" + "\n".join(self.lines[-80:]))
            if "ready: gateway on" in line:
                return

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line)
        self._queue.put(None)

    def stop(self, timeout: float = 60.0) -> int:
        """Ctrl-C, as a user would; return the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError("did not stop on Ctrl-C in time") from None
            finally:
                self._close()
        return self.proc.returncode

    def _close(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        if self._reader is not None:
            self._reader.join(10)
        self.proc.stdout.close()

    def leftovers(self) -> list[str]:
        """Processes still running that belong to this platform (by its state directory)."""
        mine = str(self.state_dir).encode()
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read()
                with open(f"/proc/{pid}/environ", "rb") as f:
                    environ = f.read()
            except OSError:
                continue
            if int(pid) != os.getpid() and (mine in cmdline or mine in environ):
                found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
        return found

    def listening(self) -> list[int]:
        return [p for p in [*self.ports(), self.postgres_port] if port_open(p)]


def platform_env(state_dir: Path) -> dict[str, str]:
    env = base_env("", "", state_dir)
    # As under `make run`, shopstream run makes the secrets itself.
    for name in (
        "DATABASE_URL",
        "KAFKA_BROKER",
        "SANDBOX_PROVIDER_SECRET",
        "JWT_SECRET",
        "INTERNAL_SECRET",
    ):
        del env[name]
    return env
