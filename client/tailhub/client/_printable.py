"""Text a terminal shows as it is: control characters as escapes (shared by the CLI's output
and its lean path, which must not import click)."""

from __future__ import annotations

# C0 controls, DEL and C1 controls: a terminal acts on them (titles, colours, cursor moves).
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROLS.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
# Bidirectional embeddings, overrides and isolates: they reorder what follows on the line.
_CONTROLS.update(
    {code: f"\\u{code:04x}" for code in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}
)


def printable(text: str) -> str:
    """`text` with every control character shown as an escape (`\\x1b`, `\\n`), so that a job
    name or a daemon's message can neither steer the terminal nor break a line apart."""
    return text.translate(_CONTROLS)


def job_label(job_id: int, name: str) -> str:
    """`job 17 (train)`, or `job 17` for a job without a name."""
    return f"job {job_id} ({printable(name)})" if name else f"job {job_id}"
