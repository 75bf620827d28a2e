"""How tasks talk to their user: one small helper, so library code can stay on logging."""

import sys
from collections.abc import Sequence

_MARKS = {"ok": "✓", "fail": "✗", "warn": "!", "info": "·"}


def _write(stream, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


def say(text: str) -> None:
    """Write one line for the user on standard output."""
    _write(sys.stdout, text)


def warn(text: str) -> None:
    """Write one warning line on standard error."""
    _write(sys.stderr, f"warning: {text}")


def mark(kind: str, text: str, hint: str | None = None) -> None:
    """Write a checklist line: ``✓ text``, or ``✗ text`` followed by ``→ hint``.

    + kind: one of ``ok``, ``fail``, ``warn``, ``info``
    """
    _write(sys.stdout, f"{_MARKS[kind]} {text}")
    if hint:
        _write(sys.stdout, f"  → {hint}")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Format rows as a plain left-aligned text table (returned, not written).

    >>> print(table(["name", "status"], [["agent", "Running"]]))
    name   status
    agent  Running
    """
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    return "\n".join(lines)
