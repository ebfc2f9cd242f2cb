"""Rows of text cells printed as aligned columns: what scan's, model's and compare's tables share."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

# The characters that turn the text after them right to left, or left to right, up to the line's end: in a
# file's name ("Rede_\u202eKCAF.jpg"), they turned its row's verdict and scores round in a terminal that
# lays out right-to-left text, and, taking no column, put the row's columns one out. Unicode's Bidi_Control
# characters, the marks too (LRM, RLM, ALM): an RLM first in a row turned it round as an override did.
_DIRECTION_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def shown(cell: str) -> str:
    """A cell on one line as it is: control characters (a newline in a file's name) and direction controls
    escaped as Python writes them."""
    return "".join(
        repr(ch)[1:-1] if unicodedata.category(ch) == "Cc" or ch in _DIRECTION_CONTROLS else ch for ch in cell
    )


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
    cells = [[shown(cell) for cell in row] for row in rows]
    widths = [max(width(row[i]) for row in cells) for i in range(len(cells[0]))] if cells else []
    return [
        "  ".join(cell + " " * (column - width(cell)) for cell, column in zip(row, widths)).rstrip() for row in cells
    ]
