"""The one reader of the text files the product takes settings from: a config, --params or search-space
file, a scan's `<out>.settings.json`, a prepared dataset's dataset.json. Each is UTF-8: a file
that is not (a picture named as --config) ended in a UnicodeDecodeError traceback."""

from __future__ import annotations

from pathlib import Path

from deepshield.errors import DeepShieldError


def read_text(path: Path, what: str, error: type[DeepShieldError] = DeepShieldError) -> str:
    """The text of `path`, the `what` (e.g. "config file") named in the error when it is not UTF-8. A
    failed read (OSError) is the caller's to word: some have their own for a missing file."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})") from None

