"""`max.val_auc` / `min.val_loss` / `max.bench_auc`: which trial wins, in the original MLRun selector
syntax. A trial's value is its best epoch for that metric; the selectors themselves live with the
per-epoch records they read (`deepshield.training.records`)."""

from deepshield.training.records import (
    TRAINING_METRICS,
    VALIDATION_METRICS,
    Selector,
    direction_warning,
    metric_direction,
    parse_selector,
)

__all__ = [
    "TRAINING_METRICS",
    "VALIDATION_METRICS",
    "Selector",
    "direction_warning",
    "metric_direction",
    "parse_selector",
]
