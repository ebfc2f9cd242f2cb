"""The training configuration's reference page (docs/training-config.md), written from TrainConfig itself:
each key with its default, the values it takes and its description, so that the page cannot drift from the
code (tests/test_docs.py compares them). Regenerate it with
`python -m deepshield.training.reference > docs/training-config.md`."""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import AfterValidator, BaseModel
from pydantic.fields import FieldInfo

from deepshield.training.config import TrainConfig

HEADER = """# Training configuration reference

Every key `deepshield train --config FILE` (TOML, YAML or JSON), `--set key=value` and `--params FILE` take,
with its default and the values it takes. The configuration is strict: a key not listed here is an error
naming it and the nearest valid key. The packaged configurations
([default.toml](../src/deepshield/training/default.toml),
[synthetic-frozen.toml](../src/deepshield/training/synthetic-frozen.toml)) set some keys away from these
defaults. "unset" is the key left out (or `null` in YAML, JSON and `--set`; TOML has none).

This page is written from `deepshield.training.config.TrainConfig`; after changing a setting, regenerate it:
`python -m deepshield.training.reference > docs/training-config.md` (tests/test_docs.py fails until then).
"""

_BOUNDS = (
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.Le, "le", "<="),
)


def _section(annotation: Any) -> type[BaseModel] | None:
    """The model a section field (optional or not) holds; None for a leaf setting."""
    found = [a for a in (annotation, *typing.get_args(annotation)) if isinstance(a, type) and issubclass(a, BaseModel)]
    return found[0] if found else None


def _kind(annotation: Any) -> str:
    """The values a (non-optional) annotation takes, in a reader's words."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        checks = [m.func.__doc__ for m in metadata if isinstance(m, AfterValidator) and m.func.__doc__]
        return checks[0].split("\n")[0].rstrip(".") if checks else _kind(base)
    if origin is Literal:
        return " or ".join(f"`{json.dumps(value)}`" for value in typing.get_args(annotation))
    if origin is list:
        return f"list of {_kind(typing.get_args(annotation)[0])}s"
    if origin is tuple:
        return f"[{', '.join(_kind(a) for a in typing.get_args(annotation))}]"
    return {bool: "true or false", int: "integer", float: "number", str: "text", Path: "path"}.get(
        annotation, str(annotation)
    )


def _allowed(info: FieldInfo) -> str:
    annotation = info.annotation
    arguments = typing.get_args(annotation)
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in arguments
    kinds = [a for a in arguments if a is not type(None)]
    text = _kind(kinds[0] if optional and len(kinds) == 1 else annotation)
    # A field's own checks (a range's bounds) are in its metadata, not in its annotation.
    text = next((m.func.__doc__ for m in info.metadata if isinstance(m, AfterValidator) and m.func.__doc__), text)
    if any(isinstance(m, annotated_types.MinLen) and m.min_length == 1 for m in info.metadata):
        text = f"non-empty {text}"
    bounds = [
        f"{sign} {getattr(m, name)}" for m in info.metadata for kind, name, sign in _BOUNDS if isinstance(m, kind)
    ]
    if bounds:
        text += ", " + " and ".join(bounds)
    return text + (", or unset" if optional else "")


def _default(value: Any) -> str:
    return "unset" if value is None else f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(model: type[BaseModel], defaults: dict[str, Any], prefix: str) -> list[tuple[str, list[str]]]:
    """(section, table rows) for `model` and, after it, each of its sections."""
    rows: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        if (section := _section(info.annotation)) is not None:
            # An optional section (synthetic) defaults to absent: its keys' defaults apply once it is given.
            values = defaults.get(name) or section().model_dump(mode="json")
            sections += _rows(section, values, f"{key}.")
            continue
        description = info.description or ""
        rows.append(f"| `{key}` | {_default(defaults[name])} | {_cell(_allowed(info))} | {_cell(description)} |")
    title = prefix.rstrip(".") or "top level"
    own = [(title, ["| key | default | values | what it does |", "|---|---|---|---|", *rows])] if rows else []
    return own + sections


def render() -> str:
    """The reference page's text."""
    parts = [HEADER]
    for title, rows in _rows(TrainConfig, TrainConfig().model_dump(mode="json"), ""):
        parts.append(f"## `{title}`\n" if title != "top level" else "## Top level\n")
        parts.append("\n".join(rows) + "\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
