"""Hyperparameter search over training-config keys, every trial trained by the project's trainer.

- `space`: the search-space file (dotted config keys -> value lists or ranges, plus a per-trial budget)
- `selector`: `max.<metric>` / `min.<metric>` on the per-epoch validation history
- `samplers`: grid / random / TPE samplers and median / successive-halving pruners
- `objective`: one trial: config, training, per-epoch reporting and pruning, MLflow child run
- `study`: the search: SQLite/RDB study, resume, parallel worker processes, MLflow parent run
- `report`: results table, plots, best.yaml, report.md

Nothing heavy is imported here: `deepshield tune --help` stays instant.
"""
