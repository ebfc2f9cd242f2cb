"""Sizes in words for limit messages: one spelling for every limit the project prints."""

from __future__ import annotations


def format_bytes(count: float) -> str:
    """`1.5 MB`, `100 KB`, `512 bytes` (decimal units, three significant digits)."""
    if count >= 1e6:
        return f"{count / 1e6:.3g} MB"
    if count >= 1e3:
        return f"{count / 1e3:.3g} KB"
    return f"{count:.0f} bytes"


def megapixels(pixels: float) -> str:
    """The number only, so that callers can say "48 megapixels" and "the 40 megapixel limit"."""
    return f"{pixels / 1e6:.3g}"
