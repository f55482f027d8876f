"""`python -m bench`: run every scenario once, print the tables and the targets, write JSON."""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

from bench import (
    capacity,
    catchup,
    ceiling,
    cli_latency,
    cluster,
    fairness,
    fanout,
    fencing,
    memory,
    rapid_reset,
    sky_load,
    skypilot,
    ssh,
)
from bench.measure import machine_cpu, own_tree_cpu
from bench.report import Table, render, status_line, write_json
from bench.targets import evaluate
from harness.processes import REPO

# In running order: the ceiling copies the fan-out's load, so it comes after it.
SCENARIOS: dict[str, ModuleType] = {
    "fanout": fanout,
    "ceiling": ceiling,
    "capacity": capacity,
    "catchup": catchup,
    "memory": memory,
    "ssh": ssh,
    "cli_latency": cli_latency,
    "skypilot": skypilot,
    "sky_load": sky_load,
    "cluster": cluster,
    "fencing": fencing,
    "rapid_reset": rapid_reset,
    "fairness": fairness,
}
DEFAULT_JSON = REPO / "bench" / "results" / "latest.json"
DEFAULT_PROFILES = REPO / "bench" / "results" / "py-spy"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a tiny smoke configuration (<60 s)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")
    parser.add_argument("--only", action="append", choices=list(SCENARIOS), help="repeatable")
    parser.add_argument(
        "--py-spy",
        type=Path,
        nargs="?",
        const=DEFAULT_PROFILES,
        metavar="DIR",
        help=f"py-spy the daemon at its capacity (raw stacks into DIR; {DEFAULT_PROFILES})",
    )
    parser.add_argument(
        "--capacity-experiments",
        action="store_true",
        help="also search the minimal server split over two processes",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()

    started = time.monotonic()
    # Short: Unix socket paths under it must stay within 107 bytes.
    scratch = Path(tempfile.mkdtemp(prefix="thb-", dir="/tmp"))
    results: dict[str, Any] = {"meta": _meta(args.quick), "scenarios": {}}
    scenarios: dict[str, dict[str, Any]] = results["scenarios"]
    try:
        for name, module in SCENARIOS.items():
            scenarios[name] = _run(name, module, args, scratch / name, scenarios)
    finally:
        if args.keep:
            print(f"scratch kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    verdicts = evaluate(scenarios)
    results["targets"] = [dataclasses.asdict(verdict) for verdict in verdicts]
    results["meta"]["wall_s"] = time.monotonic() - started
    results["meta"]["loadavg_end"] = os.getloadavg()

    for name, module in SCENARIOS.items():
        print()
        result = scenarios[name]
        if result.get("status") == "ok":
            print("\n\n".join(render(table) for table in module.tables(result)))
            print(f"   (scenario wall time {result['wall_s']:.0f} s; {_background(result)})")
        else:
            print(status_line(name, result))
    print()
    rows = [(verdict.label, verdict.target, verdict.figure) for verdict in verdicts]
    print(render(Table("targets", ("", "target", "figure"), rows, left=3)))
    write_json(args.json, results)
    print(f"\nJSON: {args.json}\ntotal wall time: {results['meta']['wall_s']:.0f} s")
    return 0


def _run(
    name: str,
    module: ModuleType,
    args: argparse.Namespace,
    directory: Path,
    earlier: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    if args.only and name not in args.only:
        return {"status": "skipped: not selected (--only)"}
    settings = module.QUICK if args.quick else module.FULL
    if settings is None:
        return {"status": f"skipped: --quick leaves out the {name} scenario (it needs sshd)"}
    if name == "capacity" and args.py_spy:
        settings = dataclasses.replace(settings, profile_dir=args.py_spy.resolve())
    if name == "capacity" and args.capacity_experiments:
        settings = dataclasses.replace(settings, **capacity.EXPERIMENTS)
    print(f"-- {name} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    busy_before, total_before = machine_cpu()
    ours_before = own_tree_cpu()
    try:
        result: dict[str, Any] = module.run(settings, directory, earlier)
    except Exception as error:  # one scenario failing must not lose the others' figures
        traceback.print_exc()
        result = {"status": f"error: {type(error).__name__}: {error}"}
    busy, total = machine_cpu()
    ours = own_tree_cpu() - ours_before + result.get("external_cpu_s", 0.0)
    result["wall_s"] = time.monotonic() - started
    result["machine"] = {
        "capacity_cpu_s": total - total_before,
        "busy_cpu_s": busy - busy_before,
        "benchmark_cpu_s": ours,
        "other_cpu_s": max(0.0, busy - busy_before - ours),
    }
    print(f"   {name}: {result['status']} in {result['wall_s']:.0f} s", file=sys.stderr)
    return result


def _background(result: dict[str, Any]) -> str:
    machine = result["machine"]
    share = machine["other_cpu_s"] / machine["capacity_cpu_s"] if machine["capacity_cpu_s"] else 0
    return f"other processes used {share:.0%} of the machine's CPU meanwhile"


def _meta(quick: bool) -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    ).stdout.strip()
    return {
        "quick": quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": commit,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "kernel": platform.release(),
        "loadavg_start": os.getloadavg(),
    }


if __name__ == "__main__":
    sys.exit(main())
