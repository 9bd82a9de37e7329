"""argon2id with the platform's parameters: what one hash and one verify cost, and how many
fit in a second through `agents.users.passwords.Passwords` (at most 4 at a time, in threads).

Registering hashes once; logging in verifies once (an unknown email verifies a decoy). No
platform is started: this is the users worker's CPU cost per call, measured in this process.

    python -m bench.passwords [--runs 50] [--concurrent 40]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

from argon2 import PasswordHasher, Type
from argon2.exceptions import VerificationError

from agents.common.settings import AuthSettings, Settings
from agents.users.passwords import MAX_CONCURRENT_HASHES, Passwords
from bench.harness import Section, Table, fmt, main, median, percentile, progress

COMMAND = "python -m bench.passwords"
WARMUP = 3


def hasher_of(auth: AuthSettings) -> PasswordHasher:
    """The hasher `Passwords` builds, with the same parameters."""
    return PasswordHasher(
        time_cost=auth.argon2_time_cost,
        memory_cost=auth.argon2_memory_kib,
        parallelism=auth.argon2_parallelism,
        type=Type.ID,
    )


def timed(runs: int, op: Callable[[int], object]) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each of `runs` calls, one at a time, after a warm-up."""
    for i in range(WARMUP):
        op(i)
    walls: list[float] = []
    cpus: list[float] = []
    for i in range(runs):
        c0, t0 = time.thread_time(), time.perf_counter()
        op(i)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.thread_time() - c0)
    return walls, cpus


async def throughput(count: int, op: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    """`count` calls started at once: (calls per second, cores used by this process)."""
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(op(i) for i in range(count)))
    elapsed = time.perf_counter() - t0
    return count / elapsed, (time.process_time() - c0) / elapsed


async def measure(args: argparse.Namespace) -> Section:
    auth = Settings.from_env().auth
    hasher = hasher_of(auth)
    passwords = [uuid.uuid4().hex for _ in range(max(args.runs, args.concurrent) + WARMUP)]
    hashes = [hasher.hash(p) for p in passwords[: args.runs + WARMUP]]
    params = hashes[0].split("$")[1:4]

    def verify(i: int) -> object:
        return hasher.verify(hashes[i], passwords[i])

    def verify_wrong(i: int) -> object:
        try:
            return hasher.verify(hashes[i], "not the password")
        except VerificationError:
            return False

    single = {
        "hash": timed(args.runs, lambda i: hasher.hash(passwords[i])),
        "verify (right password)": timed(args.runs, verify),
        "verify (wrong password)": timed(args.runs, verify_wrong),
    }
    for name, (walls, cpus) in single.items():
        progress(
            f"{name}: median {median(walls) * 1000:.1f} ms, p95 "
            f"{percentile(walls, 95) * 1000:.1f} ms, CPU median {median(cpus) * 1000:.1f} ms"
        )

    service = Passwords(auth)

    async def hash_(i: int) -> object:
        return await service.hash(passwords[i])

    async def verify_(i: int) -> object:
        return await service.verify(hashes[i % len(hashes)], passwords[i % len(hashes)])

    async def one_at_a_time(i: int) -> object:
        return hasher.hash(passwords[i])

    await throughput(MAX_CONCURRENT_HASHES, hash_)  # the threads of the default executor
    rates = {
        "hash, one at a time in the event loop's thread": await _sequential(
            args.concurrent, one_at_a_time
        ),
        f"hash via `Passwords.hash`, {args.concurrent} at once "
        f"(at most {MAX_CONCURRENT_HASHES} run)": await throughput(args.concurrent, hash_),
        f"verify via `Passwords.verify`, {args.concurrent} at once "
        f"(at most {MAX_CONCURRENT_HASHES} run)": await throughput(args.concurrent, verify_),
    }
    for name, (rate, cores) in rates.items():
        progress(f"{name}: {rate:.1f}/s, {cores:.2f} cores")

    latency = Table(
        ["Operation, single-threaded", "Runs", "median (ms)", "p95 (ms)", "CPU median (ms)"]
    )
    for name, (walls, cpus) in single.items():
        latency.rows.append(
            [
                name,
                str(len(walls)),
                fmt(median(walls) * 1000, 1),
                fmt(percentile(walls, 95) * 1000, 1),
                fmt(median(cpus) * 1000, 1),
            ]
        )
    rate_table = Table(["Throughput", "per s", "cores used"])
    for name, (rate, cores) in rates.items():
        rate_table.rows.append([name, fmt(rate, 1), fmt(cores)])
    notes = [
        f"Parameters: `{'$'.join(params)}` (`AuthSettings`: memory "
        f"{auth.argon2_memory_kib} KiB, time cost {auth.argon2_time_cost}, parallelism "
        f"{auth.argon2_parallelism}), argon2-cffi, {os.cpu_count()} cores.",
        f"Single-threaded: {WARMUP} calls of warm-up, then {args.runs} timed one after another "
        "(wall time; CPU is this thread's). A wall time well above the CPU time means the "
        "machine was busy with other work.",
        f"Throughput: {args.concurrent} calls started together through `Passwords`, which "
        f"runs at most {MAX_CONCURRENT_HASHES} at a time in `asyncio.to_thread`; argon2-cffi "
        "releases the GIL, so the threads can use every core.",
    ]
    return Section("Password hashing (argon2id)", args.command, [latency, rate_table], notes)


async def _sequential(count: int, op: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(count):
        await op(i)
    elapsed = time.perf_counter() - t0
    return count / elapsed, (time.process_time() - c0) / elapsed


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__)
    p.add_argument("--runs", type=int, default=50, help="timed calls of each, one at a time")
    p.add_argument("--concurrent", type=int, default=40, help="calls started together")
    p.set_defaults(command=COMMAND)
    return p.parse_args(argv)


def cli(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    args = parse(given)
    args.command = " ".join([COMMAND, *given])
    return main([("passwords", args.command, lambda: measure(args))])


if __name__ == "__main__":
    sys.exit(cli())
