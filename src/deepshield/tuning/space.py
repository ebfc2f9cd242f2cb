"""The search-space file: which training-config keys a search varies, and the per-trial budget.

YAML or TOML (or JSON). Keys are dotted training-config keys (nested sections work too):

    optim.lr: {low: 1.0e-4, high: 3.0e-3, log: true}   # float range (log scale)
    optim.batch_size: [16, 32, 64]                      # list: categorical / grid values
    model.dropout: {low: 0.0, high: 0.4, step: 0.1}     # float with a step (grid-able)
    optim.epochs: {low: 2, high: 6, step: 2}            # int range (ints and an int step)
    budget:                                             # per-trial overrides, not searched and
      optim.epochs: 2                                   # not used by --train-best
      data.limit_per_folder: 200

`{values: [...]}` is the long form of a list, and `type: float|int` forces a range's type (a range
whose bounds are both integers is an int range). YAML 1.1 reads `1e-4` as a string; such values
are taken as numbers here.
"""

from __future__ import annotations

import json
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from deepshield.dotted import flatten, merge_dotted, parse_assignment
from deepshield.errors import DeepShieldError
from deepshield.plural import plural
from deepshield.strict import explain

BUDGET_KEY = "budget"
RANGE_KEYS = {"low", "high", "step", "log", "type"}
# Keys a search manages itself: searching them, or budgeting them, would break the search's bookkeeping.
MANAGED_KEYS = ("run_dir", "tracking.", "export.select")
# Keys that change the face bank (detection + crops): the bank cache is keyed by them.
BANK_KEYS = ("data.real_dirs", "data.group_pattern", "data.limit_per_folder", "model.input_size", "model.crop_scale")

_SCIENTIFIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _yaml_number(value: Any) -> Any:
    """`1e-4` in YAML 1.1 is a string: read it as the number it was meant to be."""
    if isinstance(value, str) and _SCIENTIFIC.match(value.strip()):
        return float(value)
    return value


def _number(value: Any, what: str) -> int | float:
    if isinstance(value, bool):
        raise DeepShieldError(f"{what} must be a number, not {value!r}")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        text = value.strip()
        return int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)
    raise DeepShieldError(f"{what} must be a number, not {value!r}")


def stepped(low: float, step: float, steps: int) -> float:
    """low + steps x step without float noise (0.1 x 3 is 0.30000000000000004): the value a grid point, a
    random or TPE draw, the results and best.yaml all hold."""
    return round(low + steps * step, 12)


def shown(value: Any) -> Any:
    """A searched value as a results row or trial line shows it: a null choice as YAML spells it, since an
    empty cell is a parameter the trial has not drawn (a failed trial's, or one outside the space)."""
    return "null" if value is None else value


def _same(a: Any, b: Any) -> bool:
    """One value: 0 and 0.0 are (a float setting of 0 is the choice 0), True and 1 are not."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


@dataclass(frozen=True)
class Param:
    """One searched key: a categorical list, or an int / float range."""

    name: str
    kind: Literal["categorical", "int", "float"]
    choices: tuple = ()
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False

    @property
    def bounds(self) -> tuple[float, float]:
        """low and high of an int or float range (parse_param sets both)."""
        if self.low is None or self.high is None:
            raise DeepShieldError(f"{self.name} is a {self.kind} parameter without low and high")
        return self.low, self.high

    def suggest(self, trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        low, high = self.bounds
        if self.kind == "int":
            return trial.suggest_int(self.name, int(low), int(high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(low), float(high), step=self.step, log=self.log)

    @property
    def listed(self) -> bool:
        """A list, or a range with a step: its grid values are spelt out. An int range without a step is a
        range to sample: `--sampler auto` took it for a grid of every integer in it (of 249 batch sizes, in
        linear steps where it said log: true), and ran them all by default."""
        return self.kind == "categorical" or self.step is not None

    def grid_values(self) -> list:
        if self.kind == "categorical":
            return list(self.choices)
        low, high = self.bounds
        if self.kind == "int":
            return list(range(int(low), int(high) + 1, int(self.step or 1)))
        if self.step is None:
            # A log range takes no step (it is refused with one): its hint is a list, evenly spaced in log.
            example = (
                f"[{low:.3g}, {math.sqrt(low * high):.3g}, {high:.3g}]"
                if self.log
                else f"{{low: {self.low}, high: {self.high}, step: ...}}"
            )
            raise DeepShieldError(
                f"grid search needs a finite list for {self.name}: give "
                + ("a list of values" if self.log else "a list of values or a step")
                + f" (e.g. {example}), or use --sampler random / tpe"
            )
        return [stepped(low, self.step, i) for i in range(self._steps() + 1)]

    def _steps(self) -> int:
        """How many steps past low a stepped range reaches: to high, or to the last step below it."""
        low, high = self.bounds
        return math.floor((high - low) / (self.step or 1) + 1e-9)

    def probe_values(self) -> list:
        """Values that must all make a valid training config: every choice, or both bounds and the first
        value after the low one (a step of 0.5 on an int setting passed with bounds 1 and 4, and so did TOML's
        `{low = 8.0, high = 32.0}` on one, whose every trial then failed on a fraction). A stepped range's top
        is the last step it reaches: `{low: 2, high: 7, step: 2}` never gives 7, and a space refused for it was
        refused for a value no trial draws."""
        if self.kind == "categorical":
            return list(self.choices)
        low, high = self.bounds
        if self.step is not None:
            after = [low + self.step]
            high = low + self._steps() * self.step if self.kind == "int" else stepped(low, self.step, self._steps())
        else:
            after = [math.nextafter(low, high)] if self.kind == "float" else []
        return [low, *(value for value in after if value < high), *([high] if high > low else [])]

    def holds(self, value: Any) -> bool:
        """Whether the search can give this parameter `value` (a configuration's own, for --baseline)."""
        if self.kind == "categorical":
            return any(_same(value, choice) for choice in self.choices)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        low, high = self.bounds
        if not low <= value <= high:
            return False
        steps = (value - low) / self.step if self.step is not None else 0
        return abs(steps - round(steps)) < 1e-6

    def describe(self) -> str:
        if self.kind == "categorical":
            return "{" + ", ".join(map(repr, self.choices)) + "}"
        text = f"[{self.low}, {self.high}]"
        if self.step is not None:
            text += f" step {self.step}"
        return text + (" log" if self.log else "") + f" ({self.kind})"

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"values": list(self.choices)}
        spec: dict[str, Any] = {"type": self.kind, "low": self.low, "high": self.high}
        if self.step is not None:
            spec["step"] = self.step
        if self.log:
            spec["log"] = True
        return spec


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]
    budget: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    @property
    def listed(self) -> bool:
        return all(p.listed for p in self.params)

    def grid(self) -> dict[str, list]:
        return {p.name: p.grid_values() for p in self.params}

    def grid_size(self) -> int:
        return math.prod(len(values) for values in self.grid().values())

    def grid_point(self, index: int) -> dict[str, Any]:
        """The grid's point number `index` (0 to grid_size() - 1), in itertools.product's order: the last
        parameter varies fastest. Computed, not listed: a grid of a few stepped ranges has millions of
        points, and listing them took minutes and gigabytes before a search of 20 trials began."""
        grid = self.grid()
        point: dict[str, Any] = {}
        for name in reversed(list(grid)):
            index, position = divmod(index, len(grid[name]))
            point[name] = grid[name][position]
        return {name: point[name] for name in grid}

    def on_grid(self, values: dict[str, Any]) -> bool:
        """Whether `values` (one per parameter) is a point of the grid."""
        return all(any(_same(values.get(name), v) for v in choices) for name, choices in self.grid().items())

    def suggest(self, trial) -> dict[str, Any]:
        return {p.name: p.suggest(trial) for p in self.params}

    def to_dict(self) -> dict[str, Any]:
        return {"params": {p.name: p.to_dict() for p in self.params}, BUDGET_KEY: dict(self.budget)}

    def fingerprint(self, include_budget: bool = True) -> str:
        """The space as a string a resumed study must match. The parameters keep their order: a grid
        point is stored by its index in the grid (grid_point), whose order follows theirs, and with the keys
        sorted a reordered space file resumed a grid whose stored points meant others."""
        data = self.to_dict()
        if not include_budget:
            data.pop(BUDGET_KEY)
        return json.dumps(
            {key: list(value.items()) if key == "params" else value for key, value in data.items()},
            sort_keys=True,
            default=str,
        )


def _is_spec(value: Any) -> bool:
    return isinstance(value, list) or (
        isinstance(value, dict) and ("values" in value or "choices" in value or "low" in value or "high" in value)
    )


def parse_param(name: str, spec: Any) -> Param:
    if isinstance(spec, dict) and ("values" in spec or "choices" in spec):
        if len(spec) != 1:  # {values: [...], low: 5, log: true}: the rest was dropped without a word
            raise DeepShieldError(
                f"search space: {name} lists its values with other fields ({', '.join(sorted(map(str, spec)))}): "
                "give values (or choices) alone, or a range"
            )
        spec = spec.get("values", spec.get("choices"))
    if isinstance(spec, list):
        return _categorical(name, spec)
    if not isinstance(spec, dict):
        raise DeepShieldError(
            f"search space: {name} must be a list of values or {{low, high[, log][, step]}}, not {spec!r}"
        )
    return _range(name, spec)


def _categorical(name: str, values: list[Any]) -> Param:
    if not values:
        raise DeepShieldError(f"search space: {name} has an empty list of values")
    choices = tuple(_yaml_number(v) for v in values)
    for value in choices:
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise DeepShieldError(f"search space: {name} values must be numbers, strings or booleans, not {value!r}")
    # By value, as Optuna stores a choice (by its index among equal ones): [0, 0.0] ran 0 twice on a grid.
    if any(_same(a, b) for i, a in enumerate(choices) for b in choices[i + 1 :]):
        raise DeepShieldError(f"search space: {name} lists a value twice")
    return Param(name, "categorical", choices=choices)


def _range(name: str, spec: dict[str, Any]) -> Param:
    unknown = set(spec) - RANGE_KEYS
    if unknown:
        raise DeepShieldError(
            f"search space: {name} has unknown {plural(len(unknown), 'field')} {', '.join(sorted(unknown))} (use low, high, step, log, type)"
        )
    if "low" not in spec or "high" not in spec:
        raise DeepShieldError(f"search space: {name} needs both low and high")
    low, high = _number(spec["low"], f"{name}.low"), _number(spec["high"], f"{name}.high")
    step = _number(spec["step"], f"{name}.step") if spec.get("step") is not None else None
    log = spec.get("log", False)
    if not isinstance(log, bool):  # bool("false") is True: a log scale was searched
        raise DeepShieldError(f"search space: {name}.log must be true or false, not {log!r}")
    kind = spec.get("type")
    if kind is None:
        kind = (
            "int"
            if all(isinstance(v, int) for v in (low, high)) and (step is None or isinstance(step, int))
            else "float"
        )
    if kind not in ("int", "float"):
        raise DeepShieldError(f"search space: {name}.type must be int or float, not {kind!r}")
    if kind == "int" and not all(float(v).is_integer() for v in (low, high, step or 1)):
        raise DeepShieldError(f"search space: {name} is an int range but low/high/step are not integers")
    if not low < high:
        raise DeepShieldError(f"search space: {name} needs low < high (got {low} and {high})")
    if log and low <= 0:
        raise DeepShieldError(f"search space: {name} is log-scaled, so low must be > 0")
    if log and step is not None:
        raise DeepShieldError(f"search space: {name} cannot have both log and step")
    if step is not None and step <= 0:
        raise DeepShieldError(f"search space: {name}.step must be > 0")
    if kind == "int":
        return Param(name, "int", low=int(low), high=int(high), step=int(step) if step is not None else None, log=log)
    return Param(
        name, "float", low=float(low), high=float(high), step=float(step) if step is not None else None, log=log
    )


def config_leaf_keys(model: type[BaseModel] | None = None, prefix: str = "") -> set[str]:
    """Every dotted key of the training configuration, e.g. optim.lr."""
    if model is None:
        from deepshield.training.config import TrainConfig

        model = TrainConfig
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        # An optional section (`SyntheticConfig | None`) is a section too: synthetic.mode was "not a key".
        sections = [
            a
            for a in (info.annotation, *typing.get_args(info.annotation))
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if sections:
            keys |= config_leaf_keys(sections[0], f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def check_keys(keys, what: str) -> None:
    known = config_leaf_keys()
    for key in keys:
        if key.startswith(MANAGED_KEYS) or key in MANAGED_KEYS:
            raise DeepShieldError(
                f"{what}: {key} is set by the search itself (each trial gets its own run_dir, a nested MLflow run, and export.select from the selector)"
            )
        if key not in known:
            hint = [k for k in sorted(known) if k.split(".")[-1] == key.split(".")[-1]]
            raise DeepShieldError(
                f"{what}: {key} is not a training-config key" + (f" (did you mean {', '.join(hint)}?)" if hint else "")
            )


def parse_space(mapping: dict[str, Any], extra_budget: dict[str, Any] | None = None) -> SearchSpace:
    if not isinstance(mapping, dict):
        raise DeepShieldError("search space: the file must hold a mapping of config keys")
    mapping = dict(mapping)
    try:
        budget = flatten(mapping.pop(BUDGET_KEY, None) or {}, leaf=_yaml_number)
    except DeepShieldError as exc:  # `optim.epochs: 2` beside `optim: {epochs: 3}`: the last one won
        raise DeepShieldError(f"trial budget: {exc}") from None
    body = mapping.pop("params") if set(mapping) == {"params"} else mapping
    try:
        searched = flatten(body, is_leaf=_is_spec)
    except DeepShieldError as exc:
        raise DeepShieldError(f"search space: {exc}") from None
    params = tuple(parse_param(name, spec) for name, spec in searched.items())
    if not params:
        raise DeepShieldError("search space: no parameter to search")
    check_keys([p.name for p in params], "search space")
    budget.update(extra_budget or {})
    check_keys(budget, "trial budget")
    both = sorted(set(budget) & {p.name for p in params})
    if both:
        raise DeepShieldError(
            f"{', '.join(both)} is both searched and fixed by the trial budget: remove it from one of them"
        )
    return SearchSpace(params, budget)


def read_mapping(path: Path) -> dict[str, Any]:
    from deepshield.training.config import read_mapping

    return read_mapping(Path(path), "space file")


def load_space(path: Path, extra_budget: dict[str, Any] | None = None) -> SearchSpace:
    return parse_space(read_mapping(path), extra_budget)


def parse_assignments(items) -> dict[str, Any]:
    """`KEY=VALUE` strings (values as JSON when they parse, e.g. 2, 1e-3, true, null; a string setting's
    value as typed) to a dict."""
    from deepshield.training.config import text_setting

    values: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise DeepShieldError(f"{item!r} must look like section.key=value")
        key, value = parse_assignment(item, text_setting)  # a string setting's 2.0 is its text, as --set's
        values[key] = value
    return values


def apply_values(config, values: dict[str, Any]):
    """A copy of a TrainConfig with dotted keys set (validated), as `load_config(params=...)` does."""
    from deepshield.training.config import TrainConfig

    mapping = config.model_dump(mode="json")
    for key, value in values.items():
        merge_dotted(mapping, key, value)  # a trial's synthetic.* key on a config without [synthetic] was a TypeError
    try:
        return TrainConfig.model_validate(mapping)
    except ValidationError as exc:
        raise DeepShieldError(f"invalid training configuration with {values}: {explain(exc, TrainConfig)}") from exc
    except ValueError as exc:
        raise DeepShieldError(f"invalid training configuration with {values}: {exc}") from exc


def check_against(space: SearchSpace, config) -> None:
    """Fail before any training if a searched value or the budget makes an invalid config."""
    apply_values(config, space.budget)
    for param in space.params:
        for value in param.probe_values():
            apply_values(config, {**space.budget, param.name: value})
