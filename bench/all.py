"""Every benchmark in order (what `make bench` runs): start-up, round trip, catalogue reads,
checkout, password hashing, and the figures of issue 8 in one table (wrk).

    python -m bench.all

Progress and each section as it completes go to stderr; the whole markdown summary, ready
for docs/performance.md, goes to stdout at the end.
"""

from __future__ import annotations

import sys

from bench import catalogue, checkout, issue8, passwords, roundtrip, startup
from bench.harness import main


def cli() -> int:
    round_trip = roundtrip.parse([])
    reads = catalogue.parse([])
    checkouts = checkout.parse([])
    hashing = passwords.parse([])
    figures = issue8.parse([])
    return main(
        [
            ("startup", startup.COMMAND, startup.measure),
            ("roundtrip", roundtrip.COMMAND, lambda: roundtrip.measure(round_trip)),
            ("catalogue", catalogue.COMMAND, lambda: catalogue.measure(reads)),
            ("checkout", checkout.COMMAND, lambda: checkout.measure(checkouts)),
            ("passwords", passwords.COMMAND, lambda: passwords.measure(hashing)),
            ("issue8", issue8.COMMAND, lambda: issue8.measure(figures)),
        ]
    )


if __name__ == "__main__":
    sys.exit(cli())
