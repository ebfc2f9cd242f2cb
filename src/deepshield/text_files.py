"""The one reader of the text files the product takes settings from: a config, --params or search-space
file, a scan's `<out>.settings.json`, a prepared dataset's dataset.json, a model card. Each is UTF-8: a file
that is not (a picture named as --config) ended in a UnicodeDecodeError traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads' object_pairs_hook for a JSON object whose keys are each given once (json keeps the last
    of two, silently). A ValueError, as json's own errors are."""
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise ValueError(f"key {key!r} is given twice")
        mapping[key] = value
    return mapping
