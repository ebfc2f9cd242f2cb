"""Text written on one line, whatever it quotes: a table's cell, a message on stderr, a log line. A file's
name can hold a newline, a carriage return, an ANSI escape or a direction control; written raw, it forges a
line of its own, drives the terminal or turns the line round."""

from __future__ import annotations

import unicodedata

# The characters that turn the text after them right to left, or left to right, up to the line's end: in a
# file's name ("Rede_\u202eKCAF.jpg"), they turned its row's verdict and scores round in a terminal that
# lays out right-to-left text, and, taking no column, put the row's columns one out. Unicode's Bidi_Control
# characters, the marks too (LRM, RLM, ALM): an RLM first in a row turned it round as an override did.
_DIRECTION_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def one_line(text: str) -> str:
    """`text` on one line as it is: control characters (a newline in a file's name) and direction controls
    escaped as Python writes them."""
    return "".join(
        repr(ch)[1:-1] if unicodedata.category(ch) == "Cc" or ch in _DIRECTION_CONTROLS else ch for ch in text
    )
