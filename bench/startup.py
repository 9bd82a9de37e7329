"""Start-up and stop time of `shopstream run`: spawn → `ready: gateway on`, SIGINT → exit.

One cold run first (initdb, migrations, demo catalogue), then warm runs on the same state
directory (Postgres data kept; Tansu is memory-only, so its topics are created every time).
Every port is random.

    python -m bench.startup [--warm-runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from bench.harness import (
    MILESTONES,
    BenchError,
    Platform,
    Section,
    Table,
    fmt,
    leftovers,
    main,
    median,
    progress,
    temp_state_dir,
)

COMMAND = "python -m bench.startup"
PAUSE_BETWEEN_RUNS_S = 1.0


async def measure(*, warm_runs: int = 3) -> Section:
    runs = Table(
        [
            "Run",
            "spawn → `ready: gateway on` (s)",
            *(f"… {name} (s)" for name, _ in MILESTONES[:-1]),
            "SIGINT → exit (s)",
            "exit code",
        ]
    )
    warm_ready: list[float] = []
    warm_stop: list[float] = []
    cold: tuple[float, float] | None = None
    with temp_state_dir() as state:
        for run in range(warm_runs + 1):
            label = "cold (initdb)" if run == 0 else f"warm {run}"
            platform = Platform(state)
            try:
                ready = await platform.start()
            finally:
                stop = await platform.stop()
            code = platform.child.returncode
            progress(f"{label}: ready after {ready:.2f} s, stopped {stop:.2f} s after SIGINT")
            if code != 0:
                raise BenchError(f"shopstream run exited with {code}:\n{platform.child.tail()}")
            marks = [fmt(platform.milestones.get(name, float("nan"))) for name, _ in MILESTONES]
            runs.rows.append([label, fmt(ready), *marks[:-1], fmt(stop), str(code)])
            if run == 0:
                cold = (ready, stop)
            else:
                warm_ready.append(ready)
                warm_stop.append(stop)
            await asyncio.sleep(PAUSE_BETWEEN_RUNS_S)
        left = leftovers(str(state))
    assert cold is not None
    summary = Table(["Figure", "min (s)", "median (s)", "max (s)"])
    summary.rows.append(
        [
            f"warm start, spawn → ready ({warm_runs} runs)",
            fmt(min(warm_ready)),
            fmt(median(warm_ready)),
            fmt(max(warm_ready)),
        ]
    )
    summary.rows.append(
        [
            f"stop, SIGINT → exit ({warm_runs} warm runs)",
            fmt(min(warm_stop)),
            fmt(median(warm_stop)),
            fmt(max(warm_stop)),
        ]
    )
    summary.rows.append(
        ["cold start (first run: initdb)", fmt(cold[0]), fmt(cold[0]), fmt(cold[0])]
    )
    notes = [
        "The `…` columns are when `shopstream run` printed each step, in seconds after spawn "
        "(workers: the last of the four domains).",
        "Every run starts Postgres, Tansu, the four domain workers and the gateway; "
        "SIGINT is what Ctrl-C sends.",
        f"Processes left after the runs: {len(left)}" + (f" ({'; '.join(left)})" if left else ""),
    ]
    return Section("Start-up and stop of `shopstream run`", COMMAND, [summary, runs], notes)


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    p.add_argument("--warm-runs", type=int, default=3)
    args = p.parse_args(argv)
    return main([("startup", COMMAND, lambda: measure(warm_runs=args.warm_runs))])


if __name__ == "__main__":
    sys.exit(cli())
