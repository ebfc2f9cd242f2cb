"""Strict settings: an unknown key is an error that names it and suggests the nearest valid one, so a
typo in a config file, `--set` or `--params` never silently trains the wrong experiment."""

from __future__ import annotations

import difflib
import typing
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError


class StrictModel(BaseModel):
    # inf and nan are refused as numbers: optim.lr=Infinity trained a whole epoch to NaN scores.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _ordered_within(minimum: float, maximum: float) -> AfterValidator:
    def check(value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not minimum <= low <= high <= maximum:
            raise ValueError(f"must be a range with {minimum} <= low <= high <= {maximum}, got ({low}, {high})")
        return value

    return AfterValidator(check)


# Inclusive (low, high) ranges a sample is drawn from: a reversed or out-of-bounds range is refused when
# the config loads, not at the first training sample.
JpegQualityRange = Annotated[tuple[int, int], _ordered_within(1, 100)]
CrfRange = Annotated[tuple[int, int], _ordered_within(0, 51)]  # H.264's constant rate factor scale
ScaleRange = Annotated[tuple[float, float], _ordered_within(0.01, 1.0)]  # shares of the side length


def _fields_at(model: type[BaseModel], path: tuple) -> list[str] | None:
    """Field names of the (nested) model that `path` (a pydantic error location, minus its last part) leads to."""
    for part in path:
        field = model.model_fields.get(str(part))
        # An optional section (`Section | None`) leads to its model too.
        candidates = (getattr(field, "annotation", None), *typing.get_args(getattr(field, "annotation", None)))
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return list(model.model_fields)


def explain(exc: ValidationError, model: type[BaseModel]) -> str:
    """One line per problem, with dotted keys; unknown keys get 'did you mean ...?'."""
    lines = []
    for error in exc.errors():
        location = tuple(error["loc"])
        key = ".".join(map(str, location))
        if error["type"] == "extra_forbidden":
            known = _fields_at(model, location[:-1]) or []
            given = str(location[-1])
            close = [k for k in known if k.startswith(given)][:1] or difflib.get_close_matches(
                given, known, n=1, cutoff=0.5
            )
            prefix = ".".join(map(str, location[:-1]))
            hint = (
                f"; did you mean {prefix + '.' if prefix else ''}{close[0]}?"
                if close
                else (f"; valid keys: {', '.join(known)}" if known else "")
            )
            lines.append(f"unknown key {key}{hint}")
        else:
            lines.append(f"{key}: {error['msg']}" if key else error["msg"])  # no key: the text as a whole
    return "; ".join(lines)
