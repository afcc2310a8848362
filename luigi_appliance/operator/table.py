"""Aligned columns for the operator commands' human output."""

from __future__ import annotations

from collections.abc import Sequence


def columns(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """``rows`` under ``headers``, each column as wide as its widest cell, two spaces apart (the
    last column unpadded, so long task and worker ids do not pad every line). None shows as -."""
    cells = [list(headers), *[["-" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ("  ".join([*(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)), row[-1]])
             for row in cells)
    return "\n".join(line.rstrip() for line in lines)
