"""The composition root of placement: the one place that picks where jobs are fetched.

A daemon alone is `Standalone`; with `--redis`, a node of a cluster (cluster/node.py, whose
Redis client is imported only then). Nothing else in the daemon asks which one it got.
"""

from __future__ import annotations

from tailhub.daemon.config import DaemonConfig
from tailhub.daemon.placement import Placement, Standalone


def choose_placement(config: DaemonConfig) -> Placement:
    if config.cluster is None:
        return Standalone(config.paths)
    # Imported only when asked for: a daemon alone needs no Redis client.
    from tailhub.daemon.cluster.node import ClusterNode

    return ClusterNode(config.cluster, config)
