"""`max.val_auc` / `min.val_loss`: which trial wins, in the original's selector syntax.

The metric comes from a trial's per-epoch validation history (the trainer's `progress.history`);
a trial's value is its best epoch for that metric. Only validation metrics of the
identity-disjoint split can select: training loss rewards memorisation (and, summed over an
epoch as the original did, large batches), and says nothing about faces the model has not seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from deepshield.errors import DeepShieldError

# Written by Trainer._end_epoch for every epoch, with the direction in which each one is better.
VALIDATION_METRICS = {
    "val_auc": "max",
    "val_ap": "max",
    "val_balanced_accuracy": "max",
    "val_loss": "min",
    "val_log_loss": "min",
    "val_eer": "min",
}
TRAINING_METRICS = ("train_loss", "loss", "lr", "images_per_s")


@dataclass(frozen=True)
class Selector:
    mode: Literal["max", "min"]
    metric: str

    @property
    def direction(self) -> str:
        return "maximize" if self.mode == "max" else "minimize"

    def __str__(self) -> str:
        return f"{self.mode}.{self.metric}"

    def better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def best_epoch(self, history: list[dict]) -> tuple[float, int] | None:
        """(value, 0-based epoch index as in the history) of the best epoch for this metric; None when
        no epoch has a finite value."""
        best: tuple[float, int] | None = None
        for record in history:
            value = record.get(self.metric)
            if value is None or not math.isfinite(float(value)):
                continue
            if best is None or self.better(float(value), best[0]):
                best = (float(value), int(record.get("epoch", len(history) - 1)))
        return best


def parse_selector(text: str) -> Selector:
    mode, dot, metric = (text or "").strip().partition(".")
    if not dot or mode not in ("max", "min") or not metric:
        raise DeepShieldError(f"selector {text!r} must look like max.<metric> or min.<metric>, e.g. max.val_auc or min.val_loss")
    if metric in TRAINING_METRICS or metric.startswith("train_"):
        raise DeepShieldError(
            f"selector {text!r} selects on a training metric. Training loss measures how well a trial fits the "
            "faces it trains on (and summed over an epoch it favours large batches, which take fewer steps); "
            "it says nothing about generalisation. Select on a validation metric of the identity-disjoint split "
            f"instead: {', '.join(f'{d}.{m}' for m, d in VALIDATION_METRICS.items())}"
        )
    if metric not in VALIDATION_METRICS:
        raise DeepShieldError(f"unknown metric {metric!r} in selector {text!r}; choose one of {', '.join(VALIDATION_METRICS)}")
    return Selector(mode, metric)


def direction_warning(selector: Selector) -> str | None:
    natural = VALIDATION_METRICS[selector.metric]
    if natural != selector.mode:
        return f"note: {selector} picks the {'lowest' if selector.mode == 'min' else 'highest'} {selector.metric}, but higher is {'better' if natural == 'max' else 'worse'} for it; did you mean {natural}.{selector.metric}?"
    return None
