"""One kind of daemon per state directory (DESIGN, invariant 8): alone, or one cluster node.

A cluster node's state directory holds the cluster's jobs. A daemon alone started there (by
a CLI's autostart while the node was down) adopted them from the database and ran their
commands outside any lease, beside the node that took them over: two upstreams of one job.
So the kind is known from two places, each checked where it matters:
- the record the daemon writes before it serves (`tailhubd.options`, started_with.py), which
  outlives it: the CLI reads it (`recorded_kind`) and never autostarts a daemon of another
  kind; a follower of a node waits for the node instead;
- the database, which a node marks when it joins: a daemon without --redis refuses it
  (`refuse_alone_on`) whatever the record says (it may be missing, or older).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tailhub.daemon.errors import ClusterRefused, HomeOfAnotherKind
from tailhub.daemon.paths import StatePaths
from tailhub.daemon.started_with import read_options

if TYPE_CHECKING:
    from tailhub.daemon.store import JobStore

# The node a state directory belongs to, recorded in its database when it first joins.
NODE_NAME_META = "node_name"


@dataclass(frozen=True)
class HomeKind:
    """How the last daemon of a state directory ran, as it recorded it."""

    # The cluster's Redis, without its password; None: the daemon ran alone.
    redis: str | None
    node_name: str | None
    listen: tuple[str, ...] = ()

    @property
    def is_node(self) -> bool:
        return self.redis is not None

    def describe(self) -> str:
        if self.redis is None:
            return "a daemon alone"
        return f"node {self.node_name} of the cluster at {self.redis}"

    def start_hint(self, home: StatePaths) -> str:
        """The command that starts this node again (its password through the environment)."""
        home_flag = f"--home {shlex.quote(str(home.home))}"
        name = f" --node-name {shlex.quote(self.node_name)}" if self.node_name else ""
        return f"TAILHUB_REDIS=URL tailhub daemon start {home_flag}{name}"


def recorded_kind(paths: StatePaths) -> HomeKind | None:
    """How the last daemon of `paths` ran; None when none recorded it (or the record cannot
    be read or makes no sense: it is input like any other state file)."""
    options = read_options(paths, None)
    if options is None:
        return None
    redis, node_name, listen = options.get("redis"), options.get("node-name"), options.get("listen")
    if not (isinstance(redis, str) or redis is None):
        return None
    if not (isinstance(node_name, str) or node_name is None):
        return None
    if not isinstance(listen, list) or not all(isinstance(item, str) for item in listen):
        return None
    return HomeKind(redis or None, node_name if redis else None, tuple(listen))


def refuse_alone_on(paths: StatePaths, cluster_id: str | None) -> None:
    """HomeOfAnotherKind when the database of `paths` was joined to a cluster (`cluster_id`,
    from its meta table) and this daemon has no --redis."""
    if cluster_id is None:
        return
    kind = recorded_kind(paths)
    node = kind.describe() if kind is not None and kind.is_node else "a cluster node"
    raise HomeOfAnotherKind(
        f"{paths.home} is the state directory of {node}: its jobs belong to the cluster, and "
        "a daemon without --redis would run them outside any lease; start it as that node "
        "(--redis, or TAILHUB_REDIS, with --node-name), or give this daemon its own --home"
    )


def claim_node_name(store: JobStore, name: str) -> None:
    """Records the node a state directory belongs to when it first joins; ClusterRefused when
    a node of another name starts on it: the jobs pinned to the recorded one (local, file and
    push jobs) would wait for that node for ever."""
    recorded = store.meta(NODE_NAME_META)
    if recorded is None:
        store.set_meta(NODE_NAME_META, name)
    elif recorded != name:
        raise ClusterRefused(
            f"{store.path} is the state directory of node {recorded!r}, not {name!r}: start it "
            f"as that node (--node-name {shlex.quote(recorded)}), or give node {name!r} its "
            "own --home"
        )
