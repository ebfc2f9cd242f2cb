"""Strict settings: an unknown key is an error that names it and suggests the nearest valid one, so a
typo in a config file, `--set` or `--params` never silently trains the wrong experiment."""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError


def _bool_for_number(annotation: Any, value: Any) -> bool:
    """Whether `value` puts a boolean where `annotation` wants a number (int, float, optional or inside
    a tuple, list or dict of them), which pydantic's lax mode reads as 1 or 0."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _bool_for_number(args[0], value)
    if _is_union(annotation):
        kinds = [arg for arg in args if arg is not type(None)]
        return len(kinds) == 1 and _bool_for_number(kinds[0], value)
    if annotation in (int, float):
        return isinstance(value, bool)
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return any(_bool_for_number(kind, item) for kind, item in zip(args, value))
        return bool(args) and any(_bool_for_number(args[0], item) for item in value)
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return any(_bool_for_number(args[1], item) for item in value.values())
    return False


class StrictModel(BaseModel):
    # inf and nan are refused as numbers: optim.lr=Infinity trained a whole epoch to NaN scores.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """A boolean is no number: `--set optim.lr=true` (or `lr = true`) trained with lr 1.0, seed=false
        with seed 0."""
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _bool_for_number(field.annotation, value):
            raise PydanticCustomError("bool_for_number", "Input should be a number, not a boolean")
        return value


def _ordered_within(minimum: float, maximum: float) -> AfterValidator:
    def check(value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not minimum <= low <= high <= maximum:
            raise ValueError(f"must be a range with {minimum} <= low <= high <= {maximum}, got ({low}, {high})")
        return value

    check.__doc__ = f"[low, high] with {minimum} <= low <= high <= {maximum}"  # the configuration reference's words

    return AfterValidator(check)


_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]*")


def check_version(text: str) -> str:
    """A bundle version (letters, digits and . + - _, from a letter or digit): 1.2.3, 1.2.3+cal.20261206.

    As cards, file names and URLs carry it."""
    if not _VERSION.fullmatch(text):
        raise ValueError(
            "not a version: letters, digits and . + - _ only, starting with a letter or digit (e.g. 1.3.0)"
        )
    return text


# As `export --version` takes it: export.version took any text ("my model v2", "") into the card.
BundleVersion = Annotated[str, AfterValidator(check_version)]

# Inclusive (low, high) ranges a sample is drawn from: a reversed or out-of-bounds range is refused when
# the config loads, not at the first training sample.
JpegQualityRange = Annotated[tuple[int, int], _ordered_within(1, 100)]
CrfRange = Annotated[tuple[int, int], _ordered_within(0, 51)]  # H.264's constant rate factor scale
ScaleRange = Annotated[tuple[float, float], _ordered_within(0.01, 1.0)]  # shares of the side length


def _model_at(model: type[BaseModel], path: tuple) -> type[BaseModel] | None:
    """The (nested) model that `path` (a pydantic error location, minus its last part) leads to."""
    for part in path:
        field = model.model_fields.get(str(part))
        # An optional section (`Section | None`) leads to its model too.
        candidates = (getattr(field, "annotation", None), *typing.get_args(getattr(field, "annotation", None)))
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return model


def _fields_at(model: type[BaseModel], path: tuple) -> list[str] | None:
    """Field names of the (nested) model that `path` leads to."""
    found = _model_at(model, path)
    return None if found is None else list(found.model_fields)


def takes_text(model: type[BaseModel], key: str) -> bool:
    """Whether the dotted `key` of `model` is a text setting (a string or a path, optional or not): what
    `--set key=2.0` means as the text "2.0", not the number JSON reads."""
    *sections, name = key.split(".")
    section = _model_at(model, tuple(sections))
    if section is None or name not in section.model_fields:
        return False
    annotation = section.model_fields[name].annotation
    kinds = [a for a in typing.get_args(annotation) if a is not type(None)] if _is_union(annotation) else [annotation]
    # A checked text (Annotated, as BundleVersion) is text too: `export.version=2.0` was the number 2.0.
    kinds = [typing.get_args(a)[0] if typing.get_origin(a) is Annotated else a for a in kinds]
    return len(kinds) == 1 and kinds[0] in (str, Path)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _shown(value: Any, limit: int = 60) -> str:
    """A value as the settings spell it (JSON: true, "text", [1, 2]), cut to `limit` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:  # a circular structure: none reaches here from a settings file
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def explain(exc: ValidationError, model: type[BaseModel], origin: Callable[[str], str | None] | None = None) -> str:
    """One line per problem, with dotted keys; unknown keys get 'did you mean ...?'. A bad value is shown,
    and where it came from when `origin` says (the file or option that gave a dotted key)."""
    lines = []
    for error in exc.errors():
        location = tuple(error["loc"])
        key = ".".join(map(str, location))
        source = origin(key) if origin is not None else None
        if error["type"] == "extra_forbidden":
            known = _fields_at(model, location[:-1]) or []
            given = str(location[-1])
            close = [k for k in known if k.startswith(given)][:1] or difflib.get_close_matches(
                given, known, n=1, cutoff=0.5
            )
            prefix = ".".join(map(str, location[:-1]))
            *sections, leaf = key.split(".")
            if "." in given and leaf in (_fields_at(model, tuple(sections)) or []):
                # A YAML or JSON file's `optim.lr: 1` is one key named "optim.lr" (only --set and --params read
                # dots as sections): "did you mean optim?" led nowhere.
                hint = f"; dots do not nest keys in a file: write {leaf} under {'.'.join(sections)}"
            else:
                hint = (
                    f"; did you mean {prefix + '.' if prefix else ''}{close[0]}?"
                    if close
                    else (f"; valid keys: {', '.join(known)}" if known else "")
                )
            if not given.strip():  # `--set .=1`: "unknown key ; did you mean seed?"
                line = f"empty key{' in section ' + prefix if prefix else ''}"
            else:
                line = f"unknown key {key}{hint}"
            lines.append(line + (f" (from {source})" if source else ""))
        elif not key:
            lines.append(error["msg"])  # no key: the text as a whole
        else:
            value = error.get("input")
            # A section's own check (its input the whole section) or a missing key has no value to show; a
            # custom check's message may give it already.
            shown = not isinstance(value, (dict, BaseModel)) and error["type"] != "missing"
            if error["type"] == "value_error" and "got " in error["msg"]:
                shown = False
            said = [f"got {_shown(value)}"] if shown else []
            said += [f"from {source}"] if source else []
            lines.append(f"{key}: {error['msg']}" + (f" ({', '.join(said)})" if said else ""))
    return "; ".join(lines)
