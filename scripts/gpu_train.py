"""One training run on a GPU lease, sized to the time it has (docs/model-study.md, "Training on a GPU lease").

Run from the repository root on the lent machine, with `.kit` (scripts/gpu_kit.py) carried:

    python3 scripts/gpu_train.py --seconds 400 --margin 0.85 --rate 1350 [--config docs/study/gpu.toml] [-- --set ...]

(--rate 1350: samples/s the lease recipe should train at on one H200: 1,600 measured there before the recipe
retouched 30% of its crops, less retouching's cost measured on a CPU, about 18%. Without it the probe below
sizes the run, and on the last lease used about 90 s of its 420.)

1. a probe: the configuration for --probe-steps steps, to read the training rate (samples/s) there
   (it reads the loader workers' warm-up: pass --rate, measured on an earlier lease, where one is known);
2. the run: the configuration's epochs, each of (rate x --seconds x --margin / epochs) samples, so the
   whole learning-rate schedule fits the time; stopped at --seconds all the same, keeping finished epochs.
   Each finished epoch's checkpoint is slimmed into $OUT as eNNN.pt while the run goes on (the newest
   three), so a run the call's own time limit kills still brings its epochs back;
3. the bundles of its last three epochs written to $OUT as eNNN.onnx + eNNN.json in place of their .pt,
   with train.log and probe.log: eight files, the lease's most (the last epoch first; an epoch whose export
   fails or finds no time left stays eNNN.pt, for `deepshield export` here). Score them with
   scripts/benchmark_bundle.py.

Everything ends by --deadline seconds after the script starts (under the call's 600 s): the training's time
is cut to leave the exports theirs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


RUN_DIRS = ("runs/gpu-probe", "runs/gpu-lease")  # relative to the repository: the card records the command
EXPORT_RESERVE_S = 60  # kept from the training's time for the three exports (about 4 s each on a CPU here)
STOP_GRACE_S = 15  # after Ctrl-C at the time limit, for the trainer's loader workers to end


def deepshield(args: list[str], log: Path, timeout: float, while_waiting: Callable[[], None] | None = None) -> int:
    """`deepshield ARGS` with the kit on the path (before any the caller set), its output appended to `log`;
    `while_waiting` called every few seconds as it runs. 124 when stopped at `timeout`: by Ctrl-C first, so
    that its loader workers end with it, then killed."""
    path = os.pathsep.join(filter(None, [str(REPO / ".kit" / "site"), str(REPO / "src"), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1")
    deadline = time.monotonic() + max(0.0, timeout)
    with log.open("a") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "deepshield.cli.main", *args], cwd=REPO, env=env, stdout=sink, stderr=sink
        )
        while True:
            try:
                return process.wait(timeout=max(0.0, min(5.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                if while_waiting is not None:
                    while_waiting()
                if time.monotonic() < deadline:
                    continue
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            return 124


def returned_name(checkpoint: Path) -> str:
    """What an epoch's checkpoint comes back to $OUT as: epoch_006.pt -> e006 (.pt, or .onnx and .json)."""
    return "e" + checkpoint.stem.removeprefix("epoch_")


class EpochMirror:
    """Each finished epoch's checkpoint slimmed into `out` as eNNN.pt as soon as it is written, the newest
    `keep` kept: $OUT is all that comes back, and the call's own limit may kill the run before its exports."""

    def __init__(self, checkpoints: Path, out: Path, keep: int = 3) -> None:
        self.checkpoints, self.out, self.keep = checkpoints, out, keep
        self.mirrored: list[str] = []

    def __call__(self) -> None:
        for checkpoint in sorted(self.checkpoints.glob("epoch_*.pt")):  # written whole (tmp, then renamed)
            name = returned_name(checkpoint)
            if name not in self.mirrored:
                partial = self.out / f"{name}.pt.part"
                slim_checkpoint(checkpoint, partial)
                partial.replace(self.out / f"{name}.pt")
                self.mirrored.append(name)
        for old in self.mirrored[: -self.keep]:
            (self.out / f"{old}.pt").unlink(missing_ok=True)


def probe_rate(checkpoint: Path) -> float:
    """Training samples/s of the probe, from the checkpoint it keeps when it stops (at max_steps, or by
    Ctrl-C at its time limit): the images of the epoch under way over its seconds, warm-up included, else
    the last finished epoch's. (Read from the bar's log before, which is drawn on a terminal only: a probe
    writing to a file printed no rate, and the lease ended there.)"""
    import torch

    try:
        progress = torch.load(checkpoint, map_location="cpu", weights_only=False)["progress"]
    except (OSError, KeyError) as exc:
        raise SystemExit(f"the probe left no checkpoint to read its rate from ({checkpoint}: {exc})") from None
    if progress["epoch_images"] and progress["epoch_seconds"] > 0:
        return progress["epoch_images"] / progress["epoch_seconds"]
    if progress["history"]:
        return progress["history"][-1]["images_per_s"]
    raise SystemExit(f"the probe trained no step: see {checkpoint.parent.parent}")


def samples_per_epoch(rate: float, seconds: float, margin: float, epochs: int, batch_size: int) -> int:
    """Whole batches an epoch, so that `epochs` of them take `margin` of `seconds` at `rate` samples/s."""
    batches = int(rate * seconds * margin / epochs) // batch_size
    if batches < 1:
        raise SystemExit(f"at {rate:.1f} samples/s, {seconds:g} s give no batch of {batch_size} an epoch")
    return batches * batch_size


def slim_checkpoint(checkpoint: Path, target: Path) -> None:
    """The checkpoint without what only resuming needs (optimiser, scheduler, random state): under the
    lease's 16 MiB a file, and `deepshield export` reads it back here."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    for resume_only in ("optimizer", "scheduler", "torch_rng"):
        state.pop(resume_only, None)
    torch.save(state, target)


def clear_earlier_runs(repo: Path) -> list[Path]:
    """Remove the probe's and the lease run's folders an earlier call left on a warm machine (runs/ is
    git-ignored, so it stays between calls): train refuses a folder that holds a run, and the mirror and
    exports would send that run's checkpoints back as this one's. Returns the folders removed."""
    removed = [repo / name for name in RUN_DIRS if (repo / name).exists()]
    for folder in removed:
        shutil.rmtree(folder)
    return removed


def ensure_shared_memory(wanted_gib: float = 4) -> None:
    """Loader workers hand their batches over through /dev/shm (10 MB a batch of 64 at 224 px, a few in
    flight per worker): a VM's default can be too small, so grow it (as root) where it is."""
    try:
        stats = os.statvfs("/dev/shm")
    except OSError:
        print("no /dev/shm: loader workers may fail")
        return
    free = stats.f_bavail * stats.f_frsize / 2**30
    print(f"/dev/shm: {free:.1f} GiB free")
    if free < wanted_gib:
        try:  # a machine without `mount` trains on as it is, never losing the lease to it
            grown = subprocess.run(["mount", "-o", f"remount,size={int(wanted_gib * 4)}G", "/dev/shm"], check=False)
        except OSError as exc:
            print(f"/dev/shm not remounted: {exc}")
            return
        print(f"/dev/shm remounted larger: {'yes' if grown.returncode == 0 else 'no'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="docs/study/gpu.toml")
    parser.add_argument(
        "--seconds", type=float, default=420, help="the run's wall-time limit (the probe's comes on top)"
    )
    parser.add_argument("--probe-steps", type=int, default=80)
    parser.add_argument(
        "--rate",
        type=float,
        help="training samples/s measured by an earlier lease run: skips the probe, which reads the loader "
        "workers' warm-up (271 samples/s read there against 1,640-1,965 trained per epoch)",
    )
    parser.add_argument("--margin", type=float, default=0.8, help="share of --seconds planned for training")
    parser.add_argument(
        "--deadline",
        type=float,
        default=560,
        help="seconds from the start by which everything has ended, exports included (the call's limit is 600)",
    )
    parser.add_argument("train_args", nargs="*", help="more `deepshield train` arguments, after --")
    args = parser.parse_args()
    sys.path[:0] = [str(REPO / ".kit" / "site"), str(REPO / "src")]
    from deepshield.training.checkpoint import LAST
    from deepshield.training.config import load_config

    out = Path(os.environ.get("OUT", "/tmp/gpu-out"))
    out.mkdir(parents=True, exist_ok=True)
    overrides = [value for flag, value in pairwise(args.train_args) if flag == "--set"]
    config = load_config(Path(args.config), overrides, None)
    train = ["-v", "train", "--config", args.config, "--data-dir", ".kit", *args.train_args]

    ensure_shared_memory()
    for folder in clear_earlier_runs(REPO):
        print(f"removed {folder.relative_to(REPO)}, an earlier call's run on this machine")
    began = started = time.monotonic()

    def left() -> float:
        return args.deadline - (time.monotonic() - began)

    if args.rate is None:
        probe_log = out / "probe.log"
        probe = [*train, "--run-dir", RUN_DIRS[0], "--set", f"max_steps={args.probe_steps}"]
        # Stopped at its time limit, the probe still keeps its checkpoint, and the rate so far in it.
        if deepshield(probe, probe_log, timeout=min(180, left() - EXPORT_RESERVE_S)) not in (0, 124):
            print(probe_log.read_text()[-3000:])
            raise SystemExit("the probe failed")
    rate = args.rate or probe_rate(REPO / RUN_DIRS[0] / "checkpoints" / LAST)
    epochs = config.optim.epochs
    per_epoch = samples_per_epoch(rate, args.seconds, args.margin, epochs, config.optim.batch_size)
    print(
        f"probe: {rate:.0f} samples/s after {time.monotonic() - started:.0f} s; {epochs} epochs of {per_epoch} samples"
    )

    # Relative to the repository (the cwd of every command): the card records the command, and a
    # path of the lent machine would be a machine path in a shipped card.
    run_dir = Path(RUN_DIRS[1])
    started = time.monotonic()
    mirror = EpochMirror(REPO / run_dir / "checkpoints", out)
    status = deepshield(
        [*train, "--run-dir", str(run_dir), "--set", f"optim.samples_per_epoch={per_epoch}"],
        out / "train.log",
        timeout=min(args.seconds, left() - EXPORT_RESERVE_S),
        while_waiting=mirror,
    )
    mirror()
    print(f"training exited {status} after {time.monotonic() - started:.0f} s (124: stopped at the time limit)")
    for line in (out / "train.log").read_text(errors="replace").splitlines():
        if re.match(r"^epoch \d+:|.*(Error|error)", line):
            print(line[:300])
    # The last epoch first: it is the one judged, and the call's time limit may cut the rest short.
    finished = sorted((REPO / run_dir / "checkpoints").glob("epoch_*.pt"))[-3:][::-1]
    for checkpoint in finished:
        name = returned_name(checkpoint)
        bundle = REPO / run_dir / "bundles" / name
        exported = (
            left() > 5
            and deepshield(
                ["export", str(checkpoint), "--out", str(bundle)], out / "train.log", timeout=min(120, left())
            )
            == 0
        )
        if exported:
            shutil.copy(bundle / "model.onnx", out / f"{name}.onnx")
            shutil.copy(bundle / "model_card.json", out / f"{name}.json")
            (out / f"{name}.pt").unlink(missing_ok=True)  # the bundle stands for it: eight files at most
            print(f"exported {checkpoint.name}")
        else:
            print(f"{checkpoint.name} not exported (failed or no time left; see train.log): it came back as {name}.pt")
    if not finished:
        print("no epoch finished: nothing to bring back but the logs")
        return 1
    return 0 if status in (0, 124) else 1


if __name__ == "__main__":
    sys.exit(main())
