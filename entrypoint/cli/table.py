"""Plain text tables for the CLI."""

from __future__ import annotations


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """Plain left-aligned columns, two spaces apart (no trailing newline)."""
    table = [[str(c) for c in row] for row in [headers, *rows]]
    ncols = max(map(len, table))
    table = [row + [""] * (ncols - len(row)) for row in table]
    widths = [max(len(row[i]) for row in table) for i in range(ncols)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table)
