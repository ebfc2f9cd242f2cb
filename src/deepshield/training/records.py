"""What training logs per epoch, typed, and `max.<metric>` / `min.<metric>` selectors over it.

The selectable metric names come from `EpochRecord`'s fields (each declares whether higher or lower
is better) and from the benchmark metric names `deepshield.training.benchmarks` writes. Only
held-out metrics can select: training loss rewards memorisation (and, summed over an epoch, large
batches) and says nothing about faces the model has not seen.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, cast

from pydantic import BaseModel, Field

from deepshield.errors import DeepShieldError

Mode = Literal["max", "min"]


def _better(mode: Mode):
    return Field(None, json_schema_extra={"better": mode})


class EpochRecord(BaseModel):
    """One epoch: training figures, the synthetic validation split, and every benchmark."""

    epoch: int = Field(description="0-based")
    train_loss: float
    images_per_s: float
    lr: float
    val_loss: float | None = _better("min")
    val_auc: float | None = _better("max")
    val_ap: float | None = _better("max")
    val_eer: float | None = _better("min")
    val_log_loss: float | None = _better("min")
    val_balanced_accuracy: float | None = _better("max")
    benchmarks: dict[str, float] = Field(default_factory=dict, description="bench_* metrics (see training.benchmarks)")
    synthetic: dict[str, float] = Field(
        default_factory=dict, description="synthetic_* metrics (see training.synthetic)"
    )

    def flat(self) -> dict[str, float]:
        """epoch and every metric under one name each: what the tracker logs and selectors read."""
        values = self.model_dump(exclude={"benchmarks", "synthetic"}, exclude_none=True)
        return values | self.benchmarks | self.synthetic


# What the training loop records of an epoch before it is validated (EpochRecord's first fields).
TRAINING_FIELDS = ("epoch", "train_loss", "images_per_s", "lr")
VALIDATION_METRICS: dict[str, Mode] = {
    name: cast(Mode, field.json_schema_extra["better"])
    for name, field in EpochRecord.model_fields.items()
    if isinstance(field.json_schema_extra, dict)
}
TRAINING_METRICS = ("train_loss", "loss", "lr", "images_per_s")
# bench_<set>_<metric>[_lo|_hi] and the pooled bench_<metric>: the metric's first word says its direction
# (tpr_at_2pct_fpr, the fakes caught at a false-alarm rate, is a tpr: it ends in _fpr, and was read as one).
BENCH_DIRECTIONS: dict[str, Mode] = {"auc": "max", "ap": "max", "fpr": "min", "tpr": "max"}
_BENCH_NAME = re.compile(r"^bench(_[a-z0-9_]+?)??_(tpr_at_[0-9]+pct_fpr|auc|ap|fpr|tpr)(_lo|_hi)?$")
# synthetic_<set>_<metric>: the synthetic-face score's checks (val, holdout, holdout_downscaled, ...).
_SYNTHETIC_NAME = re.compile(r"^synthetic_[a-z0-9_]+_(auc|ap|fpr|tpr)(_lo|_hi)?$")


def metric_direction(metric: str) -> Mode | None:
    """Whether higher ("max") or lower ("min") is better; None for a name no epoch record holds."""
    if metric in VALIDATION_METRICS:
        return VALIDATION_METRICS[metric]
    match = _BENCH_NAME.match(metric)
    if match:
        return BENCH_DIRECTIONS[match.group(2).split("_")[0]]
    match = _SYNTHETIC_NAME.match(metric)
    return BENCH_DIRECTIONS[match.group(1)] if match else None


@dataclass(frozen=True)
class Selector:
    mode: Mode
    metric: str

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "maximize" if self.mode == "max" else "minimize"

    def __str__(self) -> str:
        return f"{self.mode}.{self.metric}"

    def better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def value(self, record: dict) -> float | None:
        value = record.get(self.metric)
        return float(value) if value is not None and math.isfinite(float(value)) else None

    def missing_hint(self) -> str:
        """Why no epoch may have a finite value of this metric, to follow a message saying so."""
        if self.metric.startswith("bench_"):
            return (
                "(is the benchmark set in data.benchmarks, and does it give scored faces of both real and fake files?)"
            )
        if self.metric.startswith("synthetic_"):
            return "(is the synthetic check's set too small to hold both real and fake faces?)"
        return "(is the validation split too small?)"

    def best_epoch(self, history: list[dict]) -> tuple[float, int] | None:
        """(value, 0-based epoch) of the best epoch for this metric; None when no epoch has a finite value."""
        best: tuple[float, int] | None = None
        for record in history:
            value = self.value(record)
            if value is not None and (best is None or self.better(value, best[0])):
                best = (value, int(record.get("epoch", len(history) - 1)))
        return best


def parse_selector(text: str) -> Selector:
    mode, dot, metric = (text or "").strip().partition(".")
    if not dot or mode not in ("max", "min") or not metric:
        raise DeepShieldError(
            f"selector {text!r} must look like max.<metric> or min.<metric>, e.g. max.val_auc, min.val_loss or max.bench_auc"
        )
    if metric in TRAINING_METRICS or metric.startswith("train_"):
        raise DeepShieldError(
            f"selector {text!r} selects on a training metric. Training loss measures how well a trial fits the "
            "faces it trains on (and summed over an epoch it favours large batches, which take fewer steps); "
            "it says nothing about generalisation. Select on a held-out metric instead, a validation metric of the "
            "identity-disjoint split or a benchmark's: "
            f"{', '.join(f'{d}.{m}' for m, d in VALIDATION_METRICS.items())}, or a benchmark's (max.bench_auc, ...)"
        )
    if metric_direction(metric) is None:
        raise DeepShieldError(
            f"unknown metric {metric!r} in selector {text!r}; choose one of {', '.join(VALIDATION_METRICS)} "
            "or a benchmark metric (bench_auc, bench_face_auc, bench_file_auc, bench_fpr, bench_<set>_face_auc, ...)"
        )
    return Selector(mode, metric)  # type: ignore[arg-type]


def parse_epoch_selector(text: str, has_benchmarks: bool, has_synthetic: bool = False) -> Selector:
    """A selector for a training configuration: a benchmark metric needs benchmarks to be configured,
    a synthetic-score metric a [synthetic] section."""
    selector = parse_selector(text)
    if selector.metric.startswith("bench_") and not has_benchmarks:
        raise DeepShieldError(f"export.select {text!r} needs benchmarks: set data.benchmarks")
    if selector.metric.startswith("synthetic_") and not has_synthetic:
        raise DeepShieldError(f"export.select {text!r} needs the synthetic-face score: add a [synthetic] section")
    return selector


def direction_warning(selector: Selector) -> str | None:
    natural = metric_direction(selector.metric)
    if natural != selector.mode:
        return (
            f"note: {selector} picks the {'lowest' if selector.mode == 'min' else 'highest'} {selector.metric}, but higher is "
            f"{'better' if natural == 'max' else 'worse'} for it; did you mean {natural}.{selector.metric}?"
        )
    return None
