"""A process tree as /proc shows it now, and a sampler of its peak size (processes and memory).

Only processes that are still descendants count: one that detached and was reparented has left
the tree. Subtrees whose root has a given argument (the SkyPilot double's `_supervise`: a job
on the cloud's side) are pruned. Memory is PSS, so that pages the processes share (one
interpreter's code, a hundred times) are counted once in all.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Member:
    pid: int
    name: str  # comm: the executable's (or script's) file name, at most 15 characters
    pss_bytes: int


def descendants(root: int, prune: Collection[str] = ()) -> list[Member]:
    """Every live (not zombie) process below `root`, with its name and PSS, but for the
    subtrees of processes that have one of the arguments `prune`."""
    parents: dict[int, list[int]] = {}
    stats: dict[int, tuple[str, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        state, ppid = text[text.rindex(")") + 2 :].split(maxsplit=2)[:2]
        pid = int(entry.name)
        parents.setdefault(int(ppid), []).append(pid)
        stats[pid] = (name, state)
    found: list[Member] = []
    pending = list(parents.get(root, []))
    while pending:
        pid = pending.pop()
        if prune:
            arguments = _arguments(pid)
            # No arguments: it exited meanwhile (or is a kernel thread).
            if not arguments or not arguments.isdisjoint(prune):
                continue
        pending.extend(parents.get(pid, []))
        name, state = stats[pid]
        if state != "Z":
            found.append(Member(pid, name, _pss_bytes(pid)))
    return found


def _arguments(pid: int) -> set[str]:
    try:
        text = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return set()
    return set(text.split("\0")) - {""}


def _pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


@dataclass
class Peak:
    processes: int = 0
    by_name: dict[str, int] = field(default_factory=dict)  # at the moment of the peak
    pss_bytes: int = 0  # the most, summed over the tree (not necessarily at the peak count)
    samples: int = 0


class TreeSampler:
    """Samples the tree below `root` (but for `prune`d subtrees) every `interval` s on a
    thread of its own, from `with` to the block's end, keeping the peak."""

    def __init__(self, root: int, prune: Collection[str] = (), interval: float = 0.5) -> None:
        self.root = root
        self.prune = prune
        self.interval = interval
        self.peak = Peak()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        members = descendants(self.root, self.prune)
        peak = self.peak
        peak.samples += 1
        peak.pss_bytes = max(peak.pss_bytes, sum(member.pss_bytes for member in members))
        if len(members) > peak.processes:
            peak.processes = len(members)
            peak.by_name = dict(Counter(member.name for member in members))

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                self.sample()
                return
