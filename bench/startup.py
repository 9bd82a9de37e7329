"""Start-up and stop time of `shopstream run`: spawn → `ready: gateway on`, SIGINT → exit.

One cold run first (initdb, migrations, demo catalogue), then warm runs on the same state
directory (Postgres data kept; Tansu is memory-only, so its topics are created every time).
Every port is random.

After the ready line, a catalogue write (`PUT /product/?id=1`, retried until it answers 200)
measures when the write path over Kafka really works; then SIGINT, and the time to exit.
With --stop-at-ready, SIGINT is sent as soon as the ready line is read instead.

    python -m bench.startup [--warm-runs 3] [--stop-at-ready]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.harness import (
    MILESTONES,
    BenchError,
    Platform,
    Section,
    Table,
    admin_token,
    fmt,
    leftovers,
    main,
    median,
    platform_env,
    progress,
    temp_state_dir,
)

COMMAND = "python -m bench.startup"
PAUSE_BETWEEN_RUNS_S = 1.0
FIRST_WRITE_DEADLINE_S = 60.0


@dataclass
class Run:
    label: str
    ready: float
    stop: float
    code: int | None
    milestones: dict[str, float]
    first_write: float = math.nan
    write_answers: Counter[str] = field(default_factory=Counter)


async def first_write(platform: Platform, token: str) -> tuple[float, Counter[str]]:
    """Seconds from spawn until a catalogue write answers 200, and every answer until then."""
    answers: Counter[str] = Counter()
    deadline = time.perf_counter() + FIRST_WRITE_DEADLINE_S
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while time.perf_counter() < deadline:
            try:
                async with http.put(
                    f"{platform.gateway_url}/product/",
                    params={"id": "1"},
                    json={"stock": 40},
                    headers={"Authorization": f"Bearer {token}"},
                ) as r:
                    await r.read()
                    answers[str(r.status)] += 1
                    if r.status == 200:
                        return time.perf_counter() - platform.child.started_at, answers
            except (aiohttp.ClientError, TimeoutError) as e:
                answers[type(e).__name__] += 1
            await asyncio.sleep(0.05)
    raise BenchError(f"no write succeeded {FIRST_WRITE_DEADLINE_S:.0f} s after ready: {answers}")


async def one_run(label: str, state: Path, token: str, stop_at_ready: bool) -> Run:
    platform = Platform(state)
    written, answers = math.nan, Counter[str]()
    try:
        ready = await platform.start()
        if not stop_at_ready:
            written, answers = await first_write(platform, token)
    finally:
        stop = await platform.stop()
    code = platform.child.returncode
    progress(
        f"{label}: ready after {ready:.2f} s, first write answered after {written:.2f} s "
        f"({dict(answers)}), stopped {stop:.2f} s after SIGINT, exit code {code}"
    )
    if code != 0:
        raise BenchError(f"shopstream run exited with {code}:\n{platform.child.tail()}")
    return Run(label, ready, stop, code, dict(platform.milestones), written, answers)


def _stats(label: str, values: list[float]) -> list[str]:
    return [label, fmt(min(values)), fmt(median(values)), fmt(max(values))]


async def measure(*, warm_runs: int = 3, stop_at_ready: bool = False) -> Section:
    runs: list[Run] = []
    with temp_state_dir() as state:
        token = await admin_token(platform_env(state))
        for n in range(warm_runs + 1):
            label = "cold (initdb)" if n == 0 else f"warm {n}"
            runs.append(await one_run(label, state, token, stop_at_ready))
            await asyncio.sleep(PAUSE_BETWEEN_RUNS_S)
        left = leftovers(str(state))
    cold, warm = runs[0], runs[1:]
    when_stopped = "at the ready line" if stop_at_ready else "after the first write"
    summary = Table(["Figure", "min (s)", "median (s)", "max (s)"])
    summary.rows.append(
        _stats(f"warm start, spawn → ready ({warm_runs} runs)", [r.ready for r in warm])
    )
    if not stop_at_ready:
        summary.rows.append(
            _stats("warm start, spawn → first write answered", [r.first_write for r in warm])
        )
        summary.rows.append(
            _stats("… of which after the ready line", [r.first_write - r.ready for r in warm])
        )
    summary.rows.append(
        _stats(f"stop, SIGINT {when_stopped} → exit (warm runs)", [r.stop for r in warm])
    )
    summary.rows.append(_stats("cold start, spawn → ready (first run: initdb)", [cold.ready]))
    table = Table(
        [
            "Run",
            "spawn → `ready: gateway on` (s)",
            *(f"… {name} (s)" for name, _ in MILESTONES[:-1]),
            *([] if stop_at_ready else ["spawn → first write answered (s)"]),
            "SIGINT → exit (s)",
            "exit code",
        ]
    )
    for r in runs:
        marks = [fmt(r.milestones.get(name, math.nan)) for name, _ in MILESTONES[:-1]]
        written = [] if stop_at_ready else [fmt(r.first_write)]
        table.rows.append([r.label, fmt(r.ready), *marks, *written, fmt(r.stop), str(r.code)])
    answers = sum((r.write_answers for r in runs), Counter[str]())
    notes = [
        "The `…` columns are when `shopstream run` printed each step, in seconds after spawn "
        "(workers: the last of the four domains to pass the supervisor's gRPC health check).",
        "First write: `PUT /product/?id=1` with an admin token, sent as soon as the ready line "
        "is read and again every 50 ms until one answers 200"
        + (f"; answers seen: {dict(answers)}." if answers else "."),
    ]
    if stop_at_ready:
        notes = notes[:1]
    notes += [
        f"SIGINT (what Ctrl-C sends) is sent {when_stopped}.",
        "Every run starts Postgres, Tansu, the four domain workers and the gateway.",
        f"Processes left after the runs: {len(left)}" + (f" ({'; '.join(left)})" if left else ""),
    ]
    command = COMMAND + (f" --warm-runs {warm_runs}" if warm_runs != 3 else "")
    command += " --stop-at-ready" if stop_at_ready else ""
    title = "Start-up and stop of `shopstream run`"
    return Section(title, command, [summary, table], notes)


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    p.add_argument("--warm-runs", type=int, default=3)
    p.add_argument(
        "--stop-at-ready", action="store_true", help="SIGINT at the ready line, no write"
    )
    args = p.parse_args(argv)
    return main(
        [
            (
                "startup",
                COMMAND,
                lambda: measure(warm_runs=args.warm_runs, stop_at_ready=args.stop_at_ready),
            )
        ]
    )


if __name__ == "__main__":
    sys.exit(cli())
