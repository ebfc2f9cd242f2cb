"""Hyperparameter search over training-config keys, every trial trained by the project's trainer.

- `space`: the search-space file (dotted config keys -> value lists or ranges, plus a per-trial budget)
- `selector`: `max.<metric>` / `min.<metric>` on the per-epoch validation history
- `samplers`: grid / random / TPE samplers and median / successive-halving pruners
- `objective`: one trial: config, training, per-epoch reporting and pruning, MLflow child run
- `workers`: a study worker's loop (the engine runs n_jobs of them: processes or Ray tasks)
- `storage`: the study in SQLite/RDB: opening, its attributes, lost-trial recovery, counts
- `parent_run`: the search's MLflow parent run
- `study`: the search: plan and validate, open (or resume) the study, run the workers, report, --train-best
- `report`: results table, plots, best.yaml, report.md
- `optuna_api`: every use of Optuna's private API (checked against the pinned Optuna)

Nothing heavy is imported here: `deepshield tune --help` stays instant.
"""
