"""tailhub's benchmark suite: `python -m bench` (or `make bench`); `--quick` for a smoke run.

Every scenario drives the real daemon (a `tailhubd` subprocess) over its real socket, prints
figures beside the targets they answer to, and asserts nothing.
"""
