"""What the tests and the benchmarks both need, written once: waiting for a condition with a
deadline (`waiting`), a free port (`ports`), processes of one's own, each ended with its whole
process group (`processes`), a tailhubd of one's own (`daemon_process`), a redis-server of
one's own (`redis_server`), and what /proc says of a process (`readings`).

Not part of tailhub (never in the wheel): `tests/` (pytest's `pythonpath`) and `bench/`
(`python -m bench`, run from the repository's root) import it from the root.
"""
