"""Sizes and times in words: one spelling for every limit and video time the project prints or reads."""

from __future__ import annotations

import re

_CLOCK_TIME = re.compile(r"^(?:(?:(\d+):)?(\d+):)?(\d+(?:\.\d*)?|\.\d+)$")


def format_bytes(count: float) -> str:
    """`1 GB`, `1.5 MB`, `100 KB`, `512 bytes` (decimal units, three significant digits; a count that rounds
    to 1,000 of a unit is one of the next: 999,500 bytes read "1e+03 KB"). Terabytes and up in GB."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if float(f"{count:.3g}") >= size:
            shown = f"{count / size:.3g}"
            return f"{count / size:,.0f} {unit}" if "e" in shown else f"{shown} {unit}"
    return f"{count:.0f} bytes"


def megapixels(pixels: float) -> str:
    """The number only, so that callers can say "48 megapixels" and "the 40 megapixel limit": three
    significant digits, and a whole number with thousands separated from 1,000 on (never "1e+04")."""
    value = pixels / 1e6
    return f"{value:,.0f}" if value >= 999.5 else f"{value:.3g}"


def parse_clock_time(text: str) -> float:
    """A time in a video as people write it: seconds (`95`, `95.5`), `m:ss` (`1:35`) or `h:mm:ss` (`0:01:35.5`).
    Raises ValueError with the accepted forms for anything else (negative times included)."""
    found = _CLOCK_TIME.match(text.strip())
    if found is None:
        raise ValueError(f"{text!r} is not a time: write seconds (95), m:ss (1:35) or h:mm:ss (0:01:35)")
    hours, minutes, seconds = (float(part) if part else 0.0 for part in found.groups())
    if (found.group(2) is not None and seconds >= 60) or (found.group(1) is not None and minutes >= 60):
        raise ValueError(f"{text!r} is not a time: minutes and seconds after a colon are below 60")
    return hours * 3600 + minutes * 60 + seconds


def clock_time(seconds: float, digits: int = 1) -> str:
    """A time in a video as parse_clock_time reads it back: `0:07.5`, `1:35`, `1:02:03` (to `digits` places of
    a second when not whole: tenths by default)."""
    units = 10**digits
    ticks = int(seconds * units + 0.5)  # half up: 0.45 s reads 0:00.5, not 0:00.4
    whole, fraction = divmod(ticks, units)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
    return f"{text}.{fraction:0{digits}d}".rstrip("0") if fraction else text


def video_length(seconds: float) -> str:
    """A video's (or a part's) length, or a limit on it, as messages say it: `4 s`, `1.5 s`, and from a minute
    on with its clock time, `1200 s (20:00)` (three significant digits read a 20-minute video "1.2e+03 s")."""
    shown = f"{seconds:.3g}" if seconds < 100 else f"{seconds:.0f}"
    return f"{shown} s" if seconds < 60 else f"{shown} s ({clock_time(seconds)})"
