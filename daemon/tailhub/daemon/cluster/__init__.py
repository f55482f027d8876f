"""Cluster mode (`tailhubd --redis`): several daemons share jobs through Redis Streams.

Importing this package imports no Redis client: only a daemon started with `--redis` loads
`cluster.node` and what it needs.
"""

from __future__ import annotations
