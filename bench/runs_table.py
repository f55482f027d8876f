"""Several full runs of `python -m bench` side by side, as the Markdown docs/performance.md holds.

    .venv/bin/python -m bench.runs_table run1.json run2.json run3.json

Prints one table of the runs (commit, start, wall time, load average at start and end, and the
share of the machine's CPU other processes took during each scenario), then one of every
target: its figure in each run, with PASS or MISS.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def load_run(path: Path) -> dict[str, Any]:
    results: dict[str, Any] = json.loads(path.read_text())
    if results.get("meta", {}).get("quick"):
        raise SystemExit(f"{path}: a --quick run; the table is of full runs")
    return results


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _other_load(result: dict[str, Any]) -> str:
    machine = result.get("machine", {})
    capacity = machine.get("capacity_cpu_s") or 0
    if not capacity or result.get("status") != "ok":
        return "-"
    return f"{machine['other_cpu_s'] / capacity:.0%}"


def runs_table(runs: list[dict[str, Any]]) -> list[str]:
    """The runs' facts: one column per run."""
    headers = ["", *(f"run {index}" for index in range(1, len(runs) + 1))]
    lines = [_row(headers), _row(["---"] * len(headers))]
    metas = [run["meta"] for run in runs]
    lines.append(_row(["commit", *(f"`{meta['commit']}`" for meta in metas)]))
    lines.append(_row(["started (UTC)", *(meta["started"][:19] for meta in metas)]))
    lines.append(_row(["wall time", *(f"{meta['wall_s'] / 60:.1f} min" for meta in metas)]))
    lines.append(
        _row(
            [
                "load average (1 min), start → end",
                *(
                    f"{meta['loadavg_start'][0]:.1f} → {meta['loadavg_end'][0]:.1f}"
                    for meta in metas
                ),
            ]
        )
    )
    for name in runs[0]["scenarios"]:
        shares = [_other_load(run["scenarios"].get(name, {})) for run in runs]
        lines.append(_row([f"other processes' CPU during `{name}`", *shares]))
    return lines


def targets_table(runs: list[dict[str, Any]]) -> list[str]:
    """Every target: each run's verdict and figure."""
    headers = ["target", *(f"run {index}" for index in range(1, len(runs) + 1))]
    lines = [_row(headers), _row(["---"] * len(headers))]
    by_run = [{target["target"]: target for target in run["targets"]} for run in runs]
    names = list(by_run[0])
    for verdicts in by_run[1:]:
        names.extend(name for name in verdicts if name not in names)
    for name in names:
        cells = []
        for verdicts in by_run:
            verdict = verdicts.get(name)
            if verdict is None:
                cells.append("-")
                continue
            label = {True: "PASS", False: "MISS", None: "n/a"}[verdict["passed"]]
            cells.append(f"{label}: {verdict['figure']}")
        lines.append(_row([name, *cells]))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.runs_table", description=__doc__)
    parser.add_argument("runs", type=Path, nargs="+", help="JSON files of full runs")
    args = parser.parse_args()
    runs = [load_run(path) for path in args.runs]
    print("\n".join(runs_table(runs)))
    print()
    print("\n".join(targets_table(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
