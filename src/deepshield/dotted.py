"""Dotted keys ("optim.lr") for nested settings: what --set, --params, search spaces and tracked
parameters all speak."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from deepshield.errors import DeepShieldError


def flatten(
    mapping: dict[str, Any],
    prefix: str = "",
    *,
    is_leaf: Callable[[Any], bool] = lambda value: False,
    leaf: Callable[[Any], Any] = lambda value: value,
) -> dict[str, Any]:
    """Nested dicts to {dotted key: leaf(value)}. A dict for which is_leaf is true ends a key.

    A key reached twice (`optim.lr: 1` beside `optim: {lr: 2}`), or given a value and sections under it
    (`synthetic: null` beside `synthetic.mode: joint`), is an error naming it: the last one given won
    without a word. (A key given twice the same way is the file parser's to refuse.)"""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not is_leaf(value):
            items = flatten(value, f"{name}.", is_leaf=is_leaf, leaf=leaf).items()
        else:
            items = {name: leaf(value)}.items()
        for dotted, item in items:
            if dotted in flat:
                raise DeepShieldError(f"key {dotted} is given twice (once dotted, once in its section)")
            flat[dotted] = item
    for name in flat:
        parts = name.split(".")
        for end in range(1, len(parts)):
            if ".".join(parts[:end]) in flat:
                raise DeepShieldError(f"key {'.'.join(parts[:end])} is given twice (a value, and {name} under it)")
    return flat


def set_dotted(mapping: dict[str, Any], key: str, value: Any) -> None:
    """The inverse: set mapping["a"]["b"] for key "a.b", creating sections as needed (a section that is None,
    as a dumped config holds an optional section it has not got, too)."""
    parts = key.split(".")
    node = mapping
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise DeepShieldError(f"cannot set {key}: {part} is not a section")
    node[parts[-1]] = value


def merge_dotted(mapping: dict[str, Any], key: str, value: Any) -> None:
    """set_dotted, but a section given whole (`optim: {lr: 1e-3}` in --params, `--set 'optim={"lr": 1e-3}'`)
    sets the keys it names and keeps the rest: it replaced the section, every key it left out back to the
    model's default (default.toml's optim.epochs 5 became 6)."""
    if isinstance(value, dict) and value:
        for sub, leaf in flatten(value).items():
            set_dotted(mapping, f"{key}.{sub}", leaf)
    elif isinstance(value, dict):
        set_dotted(mapping, key, get_dotted(mapping, key) or {})
    else:
        set_dotted(mapping, key, value)


def get_dotted(mapping: dict[str, Any], key: str) -> Any:
    """mapping["a"]["b"] for key "a.b"; None where any part is missing."""
    node: Any = mapping
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def parse_value(text: str) -> Any:
    """A value typed on the command line: JSON when it parses (numbers, booleans, lists, null), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_assignment(text: str, takes_text: Callable[[str], bool] = lambda key: False) -> tuple[str, Any]:
    """`section.key=value` (what --set takes) to (dotted key, parsed value). For a key that takes_text (a
    string setting) a value JSON reads as a number or a boolean is the text typed: `export.version=2.0`
    was the number 2.0, refused as "not a valid string"."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise DeepShieldError(f"override {text!r} must look like section.key=value")
    if not all(part.strip() for part in key.split(".")):  # `.=1` was "unknown key ; did you mean seed?"
        raise DeepShieldError(f"override {text!r}: its key {key.strip()!r} is empty or has an empty part")
    parsed = parse_value(value.strip())
    if isinstance(parsed, (bool, int, float)) and takes_text(key.strip()):
        return key.strip(), value.strip()
    return key.strip(), parsed
