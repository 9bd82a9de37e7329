"""Benchmarks: scripts that print figures (`make bench`); the numbers are in docs/performance.md.

`python -m bench.all` runs them in order; each also runs alone (`python -m bench.startup`,
`python -m bench.roundtrip`, `python -m bench.catalogue`). Progress goes to stderr, the
markdown summary for docs/performance.md to stdout.
"""
