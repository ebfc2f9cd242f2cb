"""Peak memory of a training run with its loader worker, against the same run trained by one process.
Prints both and their ratio; not part of the test suite.

    DEEPSHIELD_DATA_ROOT=../shared/data .venv/bin/python bench/bench_train_memory.py --size 288

Each run is `deepshield train` on `--faces` real faces (the first by name in real-faces/utkface), `--epochs`
short epochs at `--size` px (EfficientNet-Lite0, batch 32), in a fresh process; memory is the peak of the
proportional set size (PSS) summed over the trainer and its workers, sampled twice a second, so pages the
processes share count once. The baseline is `data.loader_workers = 0` (samples made in the training
process); the ratio is what the worker costs. A worker forked at each epoch held a copy-on-write view of the
trainer's heap as it stood then: the ratio was about 2 at 288 px before the workers were forked once, at the
start (`deepshield.training.loading`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deepshield.errors import exit_status
from deepshield.training.config import DataConfig


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(") ", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == pid:
                found.append(int(entry.name))
    return found


def pss_gb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            return next(int(line.split()[1]) for line in rollup if line.startswith("Pss:")) / 1e6
    except (OSError, StopIteration):
        return 0.0  # the process ended between listing and reading


def peak_memory(settings: list[str], log: Path) -> tuple[float, float]:
    """(peak summed PSS, the trainer's PSS at that moment), in GB."""
    # This interpreter's deepshield (`.venv/bin/deepshield` was looked up in the working folder).
    command = [sys.executable, "-m", "deepshield.cli.main", "train"] + [arg for s in settings for arg in ("--set", s)]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        peak = (0.0, 0.0)
        while process.poll() is None:
            trainer = pss_gb(process.pid)
            total = trainer + sum(pss_gb(child) for child in children(process.pid))
            peak = max(peak, (total, trainer))
            time.sleep(0.5)
    if process.returncode:  # the log is in a folder removed on the way out: its end is shown here
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise SystemExit(f"training failed (rc {process.returncode}); the end of its log:\n{tail}")
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=288)
    parser.add_argument("--faces", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples-per-epoch", type=int, default=480)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    source = DataConfig().locate(Path("real-faces/utkface"), "the UTKFace crops")
    with tempfile.TemporaryDirectory() as work:
        faces = Path(work) / "faces"
        faces.mkdir()
        for path in sorted(source.iterdir())[: args.faces]:
            (faces / path.name).symlink_to(path.resolve())
        common = [
            f'data.real_dirs=["{faces}"]',
            "data.benchmarks=[]",
            f"model.input_size={args.size}",
            f"optim.epochs={args.epochs}",
            f"optim.samples_per_epoch={args.samples_per_epoch}",
            "optim.batch_size=32",
            "export.select=max.val_auc",
            "export.threshold_fpr=null",
            "tracking.enabled=false",
        ]
        rows = []
        for workers in (0, 1):
            run = Path(work) / f"workers-{workers}"
            total, trainer = peak_memory(
                # Each run builds its own face bank: with a shared cache only the first run built it, and
                # the second (with a worker) was measured without that work.
                [*common, f"run_dir={run}", f"data.cache_dir={run}-cache", f"data.loader_workers={workers}"],
                Path(f"{run}.log"),
            )
            rows.append((workers, total, trainer))
            print(f"loader_workers={workers}: peak {total:.2f} GB (trainer {trainer:.2f} GB)", flush=True)
    print(f"\n{args.size} px, {args.faces} faces, {args.epochs} x {args.samples_per_epoch} samples")
    print("| loader workers | peak memory, all processes (GB) | trainer (GB) |\n|---|---|---|")
    for workers, total, trainer in rows:
        print(f"| {workers} | {total:.2f} | {trainer:.2f} |")
    print(f"\nratio with a worker / without: {rows[1][1] / rows[0][1]:.2f}")


if __name__ == "__main__":
    sys.exit(exit_status(main, "bench_train_memory"))
