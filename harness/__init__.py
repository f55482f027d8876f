"""What the tests and the benchmarks both need, written once: waiting for a condition with a
deadline (`waiting`), a free port (`ports`), a redis-server of one's own (`redis_server`).

Not part of tailhub (never in the wheel): `tests/` (pytest's `pythonpath`) and `bench/`
(`python -m bench`, run from the repository's root) import it from the root.
"""
