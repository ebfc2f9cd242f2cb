"""Training throughput per input size, and where a training step's time goes: sample synthesis or the
network. Prints a table; not part of the test suite.

    DEEPSHIELD_DATA_ROOT=../shared/data .venv/bin/python bench/bench_train_throughput.py --sizes 160 224 288
    ... --sizes 224 --set augment.retouch_probability=0.3    # a recipe's synthesis cost

For each input size, measured in the same run on the same machine:
- **synthesis**: training samples per second made by one process with the trainer's dataset
  (`TrainingSamples`: self- and cross-identity blends, part masks, degradations; half real, half fake)
  from a face bank of the shared real faces cut at that size (`--faces-per-folder` of each folder);
- **network**: images per second through the trainer's optimisation step (`Step`: forward, backward,
  AdamW) on batches of `--batch`, EfficientNet-Lite0 with its ImageNet weights in channels_last, as
  `deepshield train` builds it (`build_network`), on torch's threads; in a fresh process per size, once
  with the allocator setting the trainer makes (`keep_freed_memory`) and once without it (the baseline).

A run's speed is bounded by the slower of the two where they run side by side (synthesis on
`data.loader_workers` processes, the network on the remaining cores); on a GPU the network share
shrinks and synthesis per core sizes the run: samples/s x the cores given to loader workers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch

from deepshield.errors import exit_status
from deepshield.training.allocator import keep_freed_memory
from deepshield.training.config import TrainConfig, load_config
from deepshield.training.dataset import TrainingSamples
from deepshield.training.export import build_network
from deepshield.training.facebank import facebank_for
from deepshield.training.step import Batch, Step, placed_for_training


def synthesis_rate(samples: TrainingSamples, count: int) -> float:
    """Samples per second made by this process."""
    started = time.perf_counter()
    for index in range(count):
        samples[(0, index)]
    return count / (time.perf_counter() - started)


def network_rate(config: TrainConfig, images: np.ndarray, batch: int, steps: int) -> float:
    """Images per second through the trainer's step, after one warm-up step."""
    net, optimizer = placed_for_training(build_network(config, pretrained=True), config, torch.device("cpu"))
    step = Step(net.train(), optimizer, config.optim.optimizer, config.optim.sam_rho)
    batches = [
        Batch(torch.from_numpy(images[i : i + batch]), torch.arange(i, i + batch) % 2)
        for i in range(0, len(images) - batch + 1, batch)
    ]
    step(batches[0])
    started = time.perf_counter()
    for index in range(steps):
        step(batches[index % len(batches)])
    return steps * batch / (time.perf_counter() - started)


def size_config(
    size: int, crop_scale: float, faces_per_folder: int | None = None, overrides: list[str] | None = None
) -> TrainConfig:
    """The default training configuration at one input size (faces_per_folder: the face bank's share),
    with `overrides` (`key=value`, as `deepshield train --set`) on top."""
    return load_config(
        None,
        [
            f"model.input_size={size}",
            f"model.crop_scale={crop_scale}",
            f"data.limit_per_folder={'null' if faces_per_folder is None else faces_per_folder}",
            "data.benchmarks=[]",
            "tracking.enabled=false",
            *(overrides or []),
        ],
    )


def network_in_fresh_process(size: int, keep: bool, args: argparse.Namespace) -> float:
    """network_rate in a new process: the allocator setting holds for a process's life."""
    command = [sys.executable, __file__, "--network-child", str(size), "keep" if keep else "default"]
    command += ["--batch", str(args.batch), "--steps", str(args.steps), "--crop-scale", str(args.crop_scale)]
    return float(subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()[-1])


def network_child(size: int, mode: str, args: argparse.Namespace) -> None:
    if mode == "keep" and not keep_freed_memory():
        raise SystemExit("this allocator does not take the setting")
    images = np.random.default_rng(0).integers(0, 256, (2 * args.batch, size, size, 3), dtype=np.uint8)
    print(network_rate(size_config(size, args.crop_scale), images, args.batch, args.steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--network-child", nargs=2, metavar=("SIZE", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 224, 288])
    parser.add_argument("--crop-scale", type=float, default=1.3)
    parser.add_argument("--faces-per-folder", type=int, default=100)
    parser.add_argument("--samples", type=int, default=128, help="samples synthesised per size")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4, help="timed optimisation steps per size")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training setting for synthesis, e.g. augment.retouch_probability=0.3 (repeatable)",
    )
    args = parser.parse_args()

    if args.network_child:
        network_child(int(args.network_child[0]), args.network_child[1], args)
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    rows = []
    for size in args.sizes:
        config = size_config(size, args.crop_scale, args.faces_per_folder, args.overrides)
        bank = facebank_for(config)
        samples = TrainingSamples(
            bank,
            np.zeros((0, size, size, 3), np.uint8),
            args.samples,
            config.seed,
            config.synthesis,
            config.augment,
            config.data.cross_blend_fraction,
        )
        made = synthesis_rate(samples, args.samples)
        default = network_in_fresh_process(size, False, args)
        kept = network_in_fresh_process(size, True, args)
        rows.append((size, len(bank), made, default, kept))
        print(f"{size} px: synthesis {made:.1f} samples/s, network {default:.1f} -> {kept:.1f} images/s", flush=True)

    base = rows[0]
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    print(
        "| input | pixels | bank faces | synthesis samples/s (1 process) "
        "| network images/s, default allocator | network images/s, freed memory kept (as trained) | kept / default |"
    )
    print("|---|---|---|---|---|---|---|")
    for size, faces, made, default, kept in rows:
        print(
            f"| {size} px | {(size / base[0]) ** 2:.2f}x | {faces} | {made:.1f} | {default:.1f} | {kept:.1f} "
            f"| {kept / default:.2f}x |"
        )


if __name__ == "__main__":
    sys.exit(exit_status(main, "bench_train_throughput"))
