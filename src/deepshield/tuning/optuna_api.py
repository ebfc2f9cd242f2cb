"""Every use of Optuna's private API, in one place (checked against optuna 5.0.0, the pinned version).

Optuna's public API cannot set a user attribute on a trial outside its objective (a FrozenTrial
that a sampler hook or the start-up recovery sees), and a sampler hook gets a FrozenTrial whose
storage id is private. tests/test_tuning_optuna_api.py exercises each function against real Optuna
and fails on another Optuna version: re-check these functions, then raise CHECKED_VERSION.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial

CHECKED_VERSION = "5.0.0"


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The trial's storage id (unique across studies; `trial.number` counts within one study)."""
    return trial._trial_id


def set_trial_attr(study: optuna.Study, trial: optuna.Trial | FrozenTrial, key: str, value: Any) -> None:
    """`trial.set_user_attr` for a trial that is not the running objective's (a FrozenTrial), straight
    in the study's storage, so every process sees it at once."""
    study._storage.set_trial_user_attr(trial_id(trial), key, value)
