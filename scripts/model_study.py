"""The recipe study (docs/model-study.md): train every recipe of docs/study/runs.yaml from
docs/study/base.toml at the same budget, each scored every epoch on the benchmarks, then table and plot
them. Resumable: finished runs are skipped, an interrupted one continues from its checkpoint.

    export DEEPSHIELD_DATA_ROOT=../shared/data
    .venv/bin/python scripts/model_study.py                      # every run, then the table and plots
    .venv/bin/python scripts/model_study.py --only sbi-only --seed 1
    .venv/bin/python scripts/model_study.py --report-only   # results.md/.csv, learning_curves.png, factor_effects.png
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from deepshield.errors import DeepShieldError, exit_status
from deepshield.training.config import load_config, read_mapping

ROOT = Path(__file__).resolve().parent.parent
BENCH = {"dfdc_sample": "face", "modern_swaps": "file", "face_edits": "file"}  # the level each set is reported at
COLUMNS = [
    "val_auc",
    *(f"bench_{name}_{level}_auc" for name, level in BENCH.items()),
    "bench_auc",
    "bench_dfdc_sample_face_fpr",
    "bench_modern_swaps_fpr",
    "images_per_s",
]
PLOTTED = ["bench_auc", *(f"bench_{name}_{level}_auc" for name, level in BENCH.items())]
# The first from-scratch study's seed-0 runs trained beside the first baseline; every later seed-0 run beside
# its rerun, `--also runs/study-extra/baseline-rerun` (docs/model-study.md, "The rest of the one-factor list").
BESIDE_FIRST_BASELINE = {"sbi-only", "crop-1.3"}


def run_name(name: str, seed: int) -> str:
    return name if seed == 0 else f"{name}-seed{seed}"


def recipe_and_seed(name: str) -> tuple[str, int]:
    """The inverse of run_name: ("crop-1.3", 1) for "crop-1.3-seed1"."""
    recipe, _, seed = name.rpartition("-seed")
    return (recipe, int(seed)) if recipe and seed.isdigit() else (name, 0)


def read_runs(path: Path) -> dict[str, dict]:
    """The recipes of a runs file, name -> dotted overrides (none: {}); a file or entry that is not so is
    refused in one line naming it (each was a traceback: a missing file, bad YAML, a name given twice,
    `a: 5`, an empty file), by the reader of every settings file."""
    runs = read_mapping(path, "--runs")
    recipes: dict[str, dict] = {}
    for name, overrides in runs.items():
        if not isinstance(name, str):
            raise DeepShieldError(f"--runs {path}: recipe {name!r}: a recipe's name must be text")
        if overrides is not None and not isinstance(overrides, dict):
            raise DeepShieldError(
                f"--runs {path}: recipe {name}: {overrides!r} is no mapping of training-config keys to values "
                f"(e.g. {name}: {{optim.lr: 0.001}}, or {{}} for the base settings)"
            )
        recipes[name] = overrides or {}
    return recipes


def assignments(name: str, overrides: dict, seed: int, args: argparse.Namespace) -> list[str]:
    """The recipe's `--set` assignments for `deepshield train`, each value as JSON: a string typed bare
    that reads as JSON (a recipe's "2.0", "true", "null") became a number, a boolean or nothing."""
    settings = {
        "run_dir": str(args.out / run_name(name, seed)),
        "tracking.run_name": f"study-{run_name(name, seed)}",
        "seed": seed,
        **overrides,
    }
    return [f"{key}={json.dumps(value)}" for key, value in settings.items()]


def train(name: str, overrides: dict, seed: int, args: argparse.Namespace) -> None:
    run_dir = args.out / run_name(name, seed)
    if (run_dir / "bundle" / "model_card.json").is_file():
        print(f"study: {run_name(name, seed)} done", flush=True)
        return
    command = [str(Path(sys.executable).with_name("deepshield")), "train", "--config", str(args.base), "--resume"]
    for assignment in assignments(name, overrides, seed, args):
        command += ["--set", assignment]
    print("study: " + " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def history(run_dir: Path) -> list[dict]:
    """The run's epoch records, each with the samples seen by its end."""
    import torch

    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        return []
    state = torch.load(last, map_location="cpu", weights_only=False)
    per_epoch = state["config"]["optim"]["samples_per_epoch"]
    return [record | {"samples": (record["epoch"] + 1) * per_epoch} for record in state["progress"]["history"]]


def committed_histories(results_csv: Path) -> dict[str, list[dict]]:
    """The epoch records of an earlier report's results.csv, by run (numbers as numbers)."""
    if not results_csv.is_file():
        return {}
    histories: dict[str, list[dict]] = {}
    with open(results_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            record = {key: float(value) for key, value in row.items() if key != "run" and value != ""}
            record["epoch"], record["samples"] = int(record["epoch"]), int(record["samples"])
            histories.setdefault(row["run"], []).append(record)
    return histories


def cell(record: dict, key: str) -> str:
    value = record.get(key)
    if value is None:
        return "–"
    if key == "images_per_s":
        return f"{value:.0f}"
    low, high = record.get(f"{key}_lo"), record.get(f"{key}_hi")
    return f"{value:.3f} [{low:.2f}, {high:.2f}]" if low is not None else f"{value:.3f}"


def baseline_of(recipe: str, seed: int, histories: dict[str, list[dict]]) -> str:
    """The run a recipe's seed was trained beside, which its differences are taken from."""
    if seed:
        return run_name("baseline", seed)
    return "baseline" if recipe in BESIDE_FIRST_BASELINE or "baseline-rerun" not in histories else "baseline-rerun"


def factor_effects(histories: dict[str, list[dict]]) -> dict[str, list[tuple[int, dict[str, float]]]]:
    """Every factor's last epoch minus its seed's baseline's, by recipe: (seed, differences) per seed. Runs
    at another budget than their baseline, and runs without their baseline, are left out."""
    effects: dict[str, list[tuple[int, dict[str, float]]]] = {}
    for name, records in histories.items():
        recipe, seed = recipe_and_seed(name)
        baseline = histories.get(baseline_of(recipe, seed, histories))
        if recipe.startswith("baseline") or not baseline or baseline[-1]["samples"] != records[-1]["samples"]:
            continue
        last, reference = records[-1], baseline[-1]
        differences = {key: last[key] - reference[key] for key in PLOTTED if key in last and key in reference}
        effects.setdefault(recipe, []).append((seed, differences))
    return effects


def plot_factor_effects(histories: dict[str, list[dict]], path: Path) -> None:
    """The factors' effects, one dot per seed and a bar at their mean: the study at a glance."""
    import matplotlib.pyplot as plt

    effects = factor_effects(histories)
    if not effects:
        return
    recipes = sorted(effects, key=lambda r: np.mean([d.get("bench_auc", 0.0) for _, d in effects[r]]))
    figure, axes = plt.subplots(1, len(PLOTTED), figsize=(16, 0.32 * len(recipes) + 1.6), sharey=True)
    markers = ["o", "s", "^", "D"]
    for axis, key in zip(axes, PLOTTED):
        axis.axvline(0, color="black", linewidth=0.8)
        for row, recipe in enumerate(recipes):
            values = [(seed, d[key]) for seed, d in effects[recipe] if key in d]
            for seed, value in values:
                axis.plot(value, row, markers[seed % len(markers)], color=f"C{seed}", markersize=5)
            if values:
                axis.plot([np.mean([v for _, v in values])] * 2, [row - 0.3, row + 0.3], color="black", linewidth=2)
        axis.set(title=f"{key}\nminus its seed's baseline", yticks=range(len(recipes)), yticklabels=recipes)
        axis.grid(axis="x", alpha=0.3)
    handles = [plt.Line2D([], [], marker=markers[s], color=f"C{s}", linestyle="", label=f"seed {s}") for s in range(3)]
    handles.append(plt.Line2D([], [], color="black", linewidth=2, label="mean over seeds"))
    figure.legend(handles=handles, loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.02))
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def report(args: argparse.Namespace, runs: dict[str, Path]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = args.report_dir
    # runs/ does not travel with the repository: a run whose folder is gone keeps its committed rows.
    histories = committed_histories(out / "results.csv")
    for name, run_dir in runs.items():
        if records := history(run_dir):
            histories[name] = records
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        keys = sorted({k for h in histories.values() for r in h for k in r if k not in ("epoch", "samples")})
        writer.writerow(["run", "epoch", "samples", *keys])
        for name, records in histories.items():
            for record in records:
                writer.writerow([name, record["epoch"], record["samples"], *(record.get(k, "") for k in keys)])
    lines = [
        "| run | samples | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    for name, records in histories.items():
        lines.append(
            f"| {name} | {records[-1]['samples']:,} | " + " | ".join(cell(records[-1], key) for key in COLUMNS) + " |"
        )
    (out / "results.md").write_text(
        "Last epoch of each run; AUC with 95% bootstrap intervals over files; every epoch is in results.csv. "
        "Written by scripts/model_study.py.\n\n" + "\n".join(lines) + "\n"
    )
    figure, axes = plt.subplots(1, 4, figsize=(16, 3.6), sharex=True)
    colours = plt.get_cmap("tab20").colors  # the default cycle repeats after ten runs
    # One colour per recipe, one line style per seed: a recipe's seeds read as one family.
    recipes = list(dict.fromkeys(recipe_and_seed(name)[0] for name in histories))
    styles = ["-", "--", ":", "-."]
    for name, records in histories.items():
        recipe, seed = recipe_and_seed(name)
        samples = [r["samples"] for r in records]
        for axis, key in zip(axes, PLOTTED):
            axis.plot(
                samples,
                [r.get(key) for r in records],
                marker="o",
                label=name,
                color=colours[recipes.index(recipe) % 20],
                linestyle=styles[seed % len(styles)],
            )
            axis.set(title=key, xlabel="samples seen")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "learning_curves.png", dpi=110, bbox_inches="tight")
    plot_factor_effects(histories, out / "factor_effects.png")
    print((out / "results.md").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=ROOT / "docs/study/base.toml")
    parser.add_argument("--runs", type=Path, default=ROOT / "docs/study/runs.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "runs/study")
    parser.add_argument("--report-dir", type=Path, default=ROOT / "docs/study")
    parser.add_argument("--only", nargs="*", help="run only these recipes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--also",
        nargs="*",
        type=Path,
        default=[],
        help="other run folders to table and plot beside the study's (e.g. a longer run)",
    )
    args = parser.parse_args()
    runs = read_runs(args.runs)
    chosen = args.only or list(runs)
    unknown = [n for n in chosen if n not in runs]
    if unknown:
        raise DeepShieldError(
            f"--runs {args.runs} holds no recipe {', '.join(unknown)}; it holds {', '.join(runs) or 'none'}"
        )
    if not args.report_only:
        # Every recipe's settings checked before any trains: a misspelt key failed only when its recipe's
        # turn came, after hours of the recipes before it.
        for name in chosen:
            try:
                load_config(args.base, assignments(name, runs[name], args.seed, args))
            except DeepShieldError as exc:
                raise DeepShieldError(f"recipe {name} in {args.runs}: {exc}") from None
        for name in chosen:
            train(name, runs[name], args.seed, args)
    names = [run_name(n, s) for n in runs for s in range(0, 4)]
    report(args, {n: args.out / n for n in names if (args.out / n).is_dir()} | {p.name: p for p in args.also})
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main, "model_study"))
