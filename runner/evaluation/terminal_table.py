"""`python -m runner.runs` on a terminal: the table fitted to its width (shutil.get_terminal_size).

What every listed run shares (a column with one value, the overrides all runs were given) is said
once above the table instead of on every row; when the rest is still wider than the terminal, the
least telling columns go first (start, git, checkpoint, other, ci95; a group's row keeps its mean and ci95,
its headline, and lets kind and std go), then the overrides wrap onto more lines, whole, as narrow as the
rest leaves them (one override longer than the line ends in an ellipsis): no line is wider than the terminal. Piped (no terminal, no $COLUMNS) and in csv and markdown the table is left whole: those
are for other programs.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap

DROPPED_FIRST = ("start", "git", "checkpoint", "other", "ci95")  # on a narrow terminal, in this order
GROUP_DROPPED_FIRST = ("kind", "std", "status")  # the runs table's group rows (a "mean" column): ci95 is kept
WRAPPED = "overrides"
NARROWEST_WRAP = 24  # the overrides wrap no narrower than this while a column can still be dropped instead
NARROWEST_OVERRIDES = 20  # then the folder column is shortened from the left ("…/lr0.01") to leave them this much
SHORTENED = ("group", "run")
GAP = "  "


def terminal_width() -> int | None:
    if os.environ.get("COLUMNS", "").isdigit() or sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def common_overrides(rows: list[dict]) -> list[str]:
    """The overrides every row was given (only when there are two rows or more to compare)."""
    lists = [r.get("_shown") for r in rows]
    if len(rows) < 2 or any(shown is None for shown in lists):
        return []
    return [o for o in lists[0] if all(o in shown for shown in lists[1:])]


def width_of(columns: list[str], cells: list[list[str]], wrap_at: int | None = None) -> int:
    widths = [max(len(x) for x in column) for column in zip(columns, *cells, strict=True)]
    if wrap_at is not None and WRAPPED in columns:
        widths[columns.index(WRAPPED)] = min(widths[columns.index(WRAPPED)], wrap_at)
    return sum(widths) + len(GAP) * (len(columns) - 1)


def wrapped(text: str, width: int) -> list[str]:
    """Words (overrides) onto lines of at most width: whole overrides, never split; one longer than the line ends
    in an ellipsis."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word if len(word) <= width else word[:max(width - 1, 0)] + "…")
    return lines or [""]


def fitted(columns: list[str], rows: list[dict], cells: list[list[str]], width: int | None = None) -> str:
    """The plain-text table in at most `width` characters a line: the terminal's (or $COLUMNS); piped into
    another program without $COLUMNS, the whole table, one line a run."""
    width = width or terminal_width()
    if width is None:
        return "\n".join(table_lines(columns, cells, 10**6, [None] * len(cells))) + "\n"
    common = common_overrides(rows)
    if common and WRAPPED in columns:
        at = columns.index(WRAPPED)
        cells = [[*row[:at], " ".join(o for o in r["_shown"] if o not in common) or "-", *row[at + 1:]]
                 for row, r in zip(cells, rows, strict=True)]
    notes = [f"every run: {' '.join(common)}"] if common else []
    if len(cells) > 1:  # a column with one value in every row is said once
        same = [c for i, c in enumerate(columns) if c != WRAPPED and len({row[i] for row in cells}) == 1]
        notes += [", ".join(f"{c} {cells[0][columns.index(c)]}" for c in same)] if same else []
        columns, cells = drop(columns, cells, same)
    for column in GROUP_DROPPED_FIRST if "mean" in columns else DROPPED_FIRST:
        if width_of(columns, cells, NARROWEST_WRAP) <= width:
            break
        columns, cells = drop(columns, cells, [column])
    cells = shortened(columns, cells, width_of(columns, cells, NARROWEST_OVERRIDES) - width)
    lines = [line for note in notes for line in textwrap.wrap(note, width, subsequent_indent="  ")]
    # a failed run's reason (the other column) goes under its row when that column did not fit
    below = [f"    {r['other']}"[:width] if r.get("status") == "failed" and "other" not in columns
             and r.get("other", "-") != "-" else None for r in rows]
    return "\n".join([*lines, *table_lines(columns, cells, width, below)]) + "\n"


def shortened(columns: list[str], cells: list[list[str]], excess: int) -> list[list[str]]:
    """The folder column cut from the left by excess characters (its last part tells the rows apart)."""
    at = next((columns.index(c) for c in SHORTENED if c in columns), None)
    if excess <= 0 or at is None:
        return cells
    keep = max(8, max(len(row[at]) for row in cells) - excess)
    return [[*row[:at], row[at] if len(row[at]) <= keep else "…" + row[at][1 - keep:], *row[at + 1:]] for row in cells]


def drop(columns: list[str], cells: list[list[str]], dropped: list[str]) -> tuple[list[str], list[list[str]]]:
    kept = [i for i, c in enumerate(columns) if c not in dropped]
    return [columns[i] for i in kept], [[row[i] for i in kept] for row in cells]


def table_lines(columns: list[str], cells: list[list[str]], width: int, below: list[str | None]) -> list[str]:
    """Aligned columns; the overrides wrapped into what the other columns leave of the width."""
    widths = [max(len(x) for x in column) for column in zip(columns, *cells, strict=True)]
    if WRAPPED in columns:
        at = columns.index(WRAPPED)
        widths[at] = max(1, min(widths[at], width - (width_of(columns, cells) - widths[at])))
    lines = []
    for row, under in zip([columns, *cells], [None, *below], strict=True):
        parts = [wrapped(x, w) if c == WRAPPED else [x] for x, w, c in zip(row, widths, columns, strict=True)]
        for depth in range(max(len(p) for p in parts)):
            lines.append(GAP.join((p[depth] if depth < len(p) else "").ljust(w)
                                  for p, w in zip(parts, widths, strict=True)).rstrip()[:width])
        lines += [under] if under else []
    return lines
