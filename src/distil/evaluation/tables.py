"""The comparison table every command prints: one row per quantity, teacher | student | student as % of teacher.

`distil.train` (at the end of a run), `distil.evaluate` and `distil.finetune` print their comparisons with it.
"""

from __future__ import annotations

from collections.abc import Sequence


def percent(student: float, teacher: float) -> float | None:
    """The student's value as a percentage of the teacher's (None when the teacher's is 0)."""
    return 100.0 * student / teacher if teacher else None


def format_percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def format_comparison(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Plain-text table: a header, a rule, then one row per quantity (label left-aligned, numbers right-aligned).

    Columns are usually: label | teacher | student | student/teacher.
    """
    table = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [
        "  ".join([row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])])
        for row in table
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
