"""Benchmark `deepshield tune`: a real search on the real-face folders with a laptop budget, and what
it gains over the default configuration under the same budget.

    python bench/bench_tune.py                       # 6 TPE trials, 300 images per folder, 2 x 1000 samples, 112 px
    python bench/bench_tune.py --trials 4 --size 96 --n-jobs 2
    python bench/bench_tune.py --smoke               # 1 trial, tiny budget: checks that it starts and finishes

What it does:

- **Data**: `--data` (default $DEEPSHIELD_DATA_ROOT/real-faces: utkface, portraits, ffhq), the first
  `--limit` images of each folder, identity-disjoint validation split as in training (portraits
  grouped by person). The face bank (detection + crops) is built once into `--cache-dir` and
  timed separately: it is shared by every trial and by later runs.
- **Model and budget**: efficientnet_lite0 (ImageNet weights) at `--size` px, `--epochs` epochs of
  `--samples` samples per trial; these are the per-trial budget (`--trial-set`), everything else is
  the shipped training configuration (training/default.toml).
- **Search**: `--sampler` (TPE) over learning rate (log 1e-4..3e-3), weight decay (log
  1e-4..5e-2), batch size {16, 32, 64} and dropout (0..0.4), `--pruner` (median) on the per-epoch
  validation AUC, selector max.val_auc. The first trial is the **baseline**: the default
  configuration's own values (lr 4e-4, weight decay 1e-2, batch 32, dropout 0.2) under the same
  budget, so "best vs default" compares like with like (same data, split, seed and budget).
- **Tracking**: MLflow in <out>/mlruns.db (parent run + one nested run per trial).

Every run makes a fresh study in <out>/<study> (`--study` to resume one). Wall time includes the
trials' start-up (model build, validation-set synthesis), excludes the face bank. The host's load
average is printed: other jobs on the machine (a training run) slow every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from deepshield.cpus import usable_cpus
from deepshield.errors import exit_status
from deepshield.training.config import DataConfig

REPO = Path(__file__).resolve().parents[1]
SPACE = """\
optim.lr: {low: 1.0e-4, high: 3.0e-3, log: true}
optim.weight_decay: {low: 1.0e-4, high: 5.0e-2, log: true}
optim.batch_size: [16, 32, 64]
model.dropout: {low: 0.0, high: 0.4}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder of real-face folders (default: $DEEPSHIELD_DATA_ROOT/real-faces)",
    )
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--limit", type=int, default=300, help="images per folder")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=1000, help="samples per epoch")
    parser.add_argument("--size", type=int, default=112, help="input size (px)")
    parser.add_argument("--sampler", default="tpe", choices=("tpe", "random"))
    parser.add_argument("--pruner", default="median", choices=("median", "halving", "none"))
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_tune")
    parser.add_argument("--cache-dir", type=Path, default=None, help="face-bank cache (default: <out>/cache)")
    parser.add_argument("--study", help="study name (default: a new one per run)")
    parser.add_argument(
        "--smoke", action="store_true", help="1 trial, 8 images per folder, 1 epoch of 64 samples at 96 px"
    )
    args = parser.parse_args()
    if args.smoke:
        args.trials, args.limit, args.epochs, args.samples, args.size = 1, 8, 1, 64, 96
    data = args.data or DataConfig().locate(Path("real-faces"), "the real-face folders")
    folders = sorted(p for p in data.iterdir() if p.is_dir()) if data.is_dir() else []
    if not folders:
        print(f"bench_tune: no face folders in {data}", file=sys.stderr)
        return 2

    from deepshield.training.config import load_config
    from deepshield.tuning.space import apply_values, load_space
    from deepshield.tuning.study import SearchSettings, prewarm_facebanks, run_search

    out = args.out.resolve()
    study = args.study or time.strftime("bench-%Y%m%d-%H%M%S") + ("-smoke" if args.smoke else "")
    search_dir = out / study
    search_dir.mkdir(parents=True, exist_ok=True)
    space_path = search_dir / "space.yaml"
    space_path.write_text(SPACE)
    cache = (args.cache_dir or out / "cache").resolve()
    overrides = [
        "data.real_dirs=" + json.dumps([str(f.resolve()) for f in folders]),
        f"data.cache_dir={cache}",
        f"tracking.uri=sqlite:///{out / 'mlruns.db'}",
        "tracking.experiment=bench-tune",
    ]
    budget = [
        f"optim.epochs={args.epochs}",
        f"optim.samples_per_epoch={args.samples}",
        f"data.limit_per_folder={args.limit}",
        f"model.input_size={args.size}",
    ]

    base = load_config(None, overrides)
    space = load_space(space_path, {k: json.loads(v) for k, v in (b.split("=", 1) for b in budget)})
    started = time.perf_counter()
    prewarm_facebanks(space, apply_values(base, space.budget), print)
    bank_s = time.perf_counter() - started

    settings = SearchSettings(
        space=space_path, overrides=overrides, trial_overrides=budget, sampler=args.sampler, trials=args.trials, pruner=args.pruner,
        n_jobs=args.n_jobs, out=search_dir, study=study, baseline=True, seed=0,
    )  # fmt: skip
    started = time.perf_counter()
    result = run_search(settings, echo=print)
    wall = time.perf_counter() - started

    report = result.report
    durations = [
        r["duration_s"] for r in report.rows if r["duration_s"] is not None and r["state"] in ("COMPLETE", "PRUNED")
    ]
    summary = {
        "study": study,
        "trials": result.counts,
        "wall_s": round(wall, 1),
        "mean_trial_s": round(sum(durations) / len(durations), 1) if durations else None,
        "facebank_s": round(bank_s, 1),
        "best_trial": report.best.number if report.best else None,
        "best_val_auc": round(report.best.value, 4) if report.best else None,
        "best_params": report.best.params if report.best else None,
        "default_val_auc": round(report.baseline.value, 4) if report.baseline else None,
        "gain_over_default": round(report.best.value - report.baseline.value, 4)
        if report.best and report.baseline
        else None,
        "budget": {
            "trials": args.trials,
            "images_per_folder": args.limit,
            "epochs": args.epochs,
            "samples_per_epoch": args.samples,
            "input_size": args.size,
            "n_jobs": args.n_jobs,
        },
        "cpus": usable_cpus(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "out": str(search_dir),
    }
    print(json.dumps(summary), flush=True)
    print(
        f"\n{sum(result.counts[k] for k in ('complete', 'pruned', 'failed'))} trials ({result.counts['complete']} complete, {result.counts['pruned']} pruned, "
        f"{result.counts['failed']} failed) in {wall:.0f} s (+{bank_s:.0f} s face bank), load {summary['load_avg_1m']}"
    )
    if report.best and report.baseline:
        print(
            f"best val_auc {report.best.value:.4f} (trial {report.best.number}) vs default configuration {report.baseline.value:.4f}: {summary['gain_over_default']:+.4f}"
        )
    return 0 if report.best else 1


if __name__ == "__main__":
    sys.exit(exit_status(main, "bench_tune"))
