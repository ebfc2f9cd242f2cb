"""A noun (or verb) as it is said of a count: "1 file", "3 files", "2 people", "is"/"are"."""

from __future__ import annotations


def plural(count: float, one: str, many: str | None = None) -> str:
    """`one` said of `count` things: itself for exactly one, else `many` (`one` with an "s" unless given)."""
    if count == 1:
        return one
    return one + "s" if many is None else many


def numbered(count: float, one: str, many: str | None = None) -> str:
    """The count and its noun: "1 file", "0 files", "2 people"."""
    return f"{count} {plural(count, one, many)}"
