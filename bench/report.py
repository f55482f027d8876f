"""Printing results as plain-text tables, and writing them as JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Table:
    title: str
    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    notes: Sequence[str] = ()
    left: int = 1  # leading columns aligned left (labels); the others right (figures)


def render(table: Table) -> str:
    widths = [
        max(len(str(cell)) for cell in column)
        for column in zip(table.headers, *table.rows, strict=True)
    ]
    lines = [f"== {table.title}"]
    for row in (table.headers, *table.rows):
        cells = [
            str(cell).ljust(width) if index < table.left else str(cell).rjust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    lines.extend(f"   {note}" for note in table.notes)
    return "\n".join(lines)


def number(value: float | None, digits: int = 1, scale: float = 1.0) -> str:
    """`value * scale` with `digits` decimals and thousands separators; "-" when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * scale:,.{digits}f}"


def percent(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{number(value, digits, 100)}%"


def status_line(name: str, result: dict[str, Any]) -> str:
    return f"== {name}: {result.get('status', 'no result')}"


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(results), indent=2, default=str, allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    """NaN and infinity are not JSON: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
