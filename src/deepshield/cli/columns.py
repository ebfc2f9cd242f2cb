"""Rows of text cells printed as aligned columns: what scan's, model's and compare's tables share."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from deepshield.one_line import one_line

# Characters a terminal draws in no column: marks on the character before them (accents) and format characters
# (zero-width space and joiners), the soft hyphen aside (drawn as a hyphen).
_ZERO_WIDTH_CATEGORIES = frozenset({"Mn", "Me", "Cf"})


def width(text: str) -> int:
    """Terminal columns `text` takes: East Asian wide and full-width characters two, marks and zero-width
    format characters none (a name holding a zero-width space put its row's columns one out)."""
    return sum(_char_width(ch) for ch in text)


def _char_width(ch: str) -> int:
    if ch != "\u00ad" and unicodedata.category(ch) in _ZERO_WIDTH_CATEGORIES:
        return 0
    return 2 if unicodedata.east_asian_width(ch) in "WF" else 1


def aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """Each row's cells padded to their column's widest, two spaces apart, trailing spaces dropped."""
    cells = [[one_line(cell) for cell in row] for row in rows]
    widths = [max(width(row[i]) for row in cells) for i in range(len(cells[0]))] if cells else []
    return [
        "  ".join(cell + " " * (column - width(cell)) for cell, column in zip(row, widths)).rstrip() for row in cells
    ]
