"""Benchmarks: scripts that print figures (`make bench`); the numbers are in docs/performance.md."""
