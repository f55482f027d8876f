"""Real processes for the tests and the benchmarks, written once: waiting for a condition with
a deadline, a free port, stopping a process, a redis-server of one's own.

Not part of tailhub (never in the wheel): `tests/` (pytest's `pythonpath`) and `bench/`
(`python -m bench`, run from the repository's root) import it from the root.
"""
