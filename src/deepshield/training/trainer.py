"""The training loop: seeded, checkpointed, resumable, tracked."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm import tqdm

from deepshield.cpus import usable_cpus
from deepshield.errors import DeepShieldError
from deepshield.evaluation.metrics import detection_metrics, metric_key
from deepshield.evaluation.plots import (
    confusion_plot,
    curves_plot,
    example_grid,
    pr_plot,
    roc_plot,
)
from deepshield.evaluation.scoring import PREPARED_SYNTHETIC_CAUTION, is_prepared_dataset
from deepshield.faces.crop import CropPolicy
from deepshield.locks import folder_lock
from deepshield.models.card import sigmoid
from deepshield.models.network import DeepfakeNet
from deepshield.plural import numbered, plural
from deepshield.tracking.tracker import check_store, open_tracker
from deepshield.training.allocator import keep_freed_memory
from deepshield.training.benchmarks import (
    Benchmark,
    BenchmarkScores,
    benchmark_metrics,
    check_benchmark_layout,
    files_shared,
    load_benchmark,
)
from deepshield.training.checkpoint import (
    BEST,
    LAST,
    epoch_file,
    load_checkpoint,
    save_checkpoint,
    weights_fingerprint,
)
from deepshield.training.config import TrainConfig, changed_recipe, resume_command
from deepshield.training.dataset import (
    Donors,
    TrainingSamples,
    split_by_group,
    validation_samples,
)
from deepshield.training.export import (
    benchmark_faces,
    build_network,
    export_checkpoint,
    fit_calibration,
    fit_synthetic_calibration,
    manipulation_real_media,
    manipulation_split,
    real_file_faces,
    synthetic_flagged,
)
from deepshield.training.facebank import FaceBank, donor_files, facebank_for, facebank_of_files, packed_source_digests
from deepshield.training.interrupts import whole_step
from deepshield.training.loading import EpochLoader, Loaders
from deepshield.training.parent import ParentRun, check_init_path, initial_weights, load_parent, mixed_with_init
from deepshield.training.prepared import load_prepared, prepared_source_files
from deepshield.training.records import TRAINING_FIELDS, EpochRecord, parse_epoch_selector
from deepshield.training.step import Batch, HeadLogits, Step, placed_for_training, predict_heads, predict_logits
from deepshield.training.synthetic import ScoredChecks, SyntheticData, SyntheticFaceSamples, build_synthetic_data

MASK_HEAD = "mask_head."  # training-only head: no bundle has it
log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where the run is; saved in every checkpoint. `history` holds one `EpochRecord.flat()` per epoch."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_value: float | None = None  # of the export.select metric
    best_epoch: int = -1
    history: list[dict] = field(default_factory=list)
    run_id: str | None = None
    # The epoch under way, so that a resumed epoch's record covers all of it, not the steps after the stop.
    epoch_losses: list[float] = field(default_factory=list)
    epoch_images: int = 0
    epoch_seconds: float = 0.0


@dataclass(frozen=True)
class TrainingData:
    bank: FaceBank  # real training faces
    fake_pool: np.ndarray  # prepared fakes
    val_images: np.ndarray
    val_labels: np.ndarray
    benchmarks: list[Benchmark]
    donors: Donors | None  # cross-blend donors that are not real samples (data.donor_dirs)


@dataclass(frozen=True)
class EpochScores:
    """One head's scores at the end of an epoch: its logged metrics, what the best checkpoint keeps for the
    export's calibration, and the validation images, labels and probabilities its plots show."""

    metrics: dict[str, Any]
    kept: dict[str, Any]
    plotted: tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    bundle_dir: Path | None
    progress: Progress
    stopped_early: bool  # max_steps reached before the last epoch


def _lr_lambda(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))))

    return factor


def trained_lr(scheduler: torch.optim.lr_scheduler.LambdaLR) -> float:
    """The first group's rate in the step taken last: get_last_lr is already the next step's (0 after
    the last), and what a step or epoch logs is the rate it trained with."""
    return float(scheduler.base_lrs[0]) * scheduler.lr_lambdas[0](max(scheduler.last_epoch - 1, 0))


def training_data_line(reals: int, fakes: int, validation: int, benchmarks: int) -> str:
    """The line printed before training: what it trains on and is measured on, each count with its noun."""
    prepared = f" and {numbered(fakes, 'prepared fake')}" if fakes else ""
    return (
        f"training data: {numbered(reals, 'real face')}{prepared}, {numbered(validation, 'validation sample')}, "
        f"{numbered(benchmarks, 'benchmark')}"
    )


def without_padding_heavy(bank: FaceBank, max_padding_fraction: float | None) -> FaceBank:
    """Faces whose crop is at most `max_padding_fraction` padding (tight, low-resolution photos
    cropped at 1.5x their face are mostly black border)."""
    if max_padding_fraction is None or len(bank) == 0:
        return bank
    padding = 1 - bank.valid.reshape(len(bank), -1).mean(axis=1)
    kept = np.flatnonzero(padding <= max_padding_fraction)
    log.info(
        "padding filter: %d of %d real faces kept (at most %.0f%% padding)",
        len(kept),
        len(bank),
        100 * max_padding_fraction,
    )
    if not len(kept):
        raise DeepShieldError(f"data.max_padding_fraction={max_padding_fraction} leaves no real face")
    return bank.subset(kept)


def content_digest(*arrays: np.ndarray) -> str:
    """The first 16 hex digits of the SHA-256 of the arrays' shapes and bytes, in order."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()[:16]


def data_digests(
    data: TrainingData | None, synthetic_data: SyntheticData | None, benchmarks: list[Benchmark]
) -> dict[str, str]:
    """What the run trained, validated and chose on, as the crops it read: the parameters named only the
    folders, whose files can change under their names (a resume on other data is refused by them)."""
    digests = {}
    if data is not None:
        digests["train_faces"] = content_digest(data.bank.images, data.fake_pool)
        digests["val_samples"] = content_digest(data.val_images, data.val_labels)
    if synthetic_data is not None:
        digests["synthetic_train"] = content_digest(synthetic_data.train_fake, synthetic_data.train_real)
    return digests | {f"bench_{metric_key(b.name)}": content_digest(b.crops) for b in benchmarks}


class Trainer:
    """`epoch_callback(progress)` runs after each epoch's validation and checkpoints (progress.epoch =
    epochs done, progress.history[-1] = that epoch's metrics); an exception it raises (e.g. a
    search pruning the trial) ends the run like an interruption: last checkpoint kept, run KILLED.
    `parent_run_id` / `run_tags` nest the MLflow run (a search trial); `export_bundle=False` skips
    the final bundle (search trials)."""

    def __init__(
        self,
        config: TrainConfig,
        command: str = "",
        *,
        epoch_callback: Callable[[Progress], None] | None = None,
        parent_run_id: str | None = None,
        run_tags: dict[str, str] | None = None,
        export_bundle: bool = True,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.show_progress = progress  # the bars, on a terminal
        self.command = command
        self.epoch_callback = epoch_callback
        self.parent_run_id = parent_run_id
        self.run_tags = run_tags
        self.export_bundle = export_bundle
        self.run_dir = Path(config.run_dir)
        self.checkpoints = self.run_dir / "checkpoints"
        self.plots = self.run_dir / "plots"
        self.init_state: dict[str, torch.Tensor] | None = None  # model.init's weights, when mixed in (init_share)
        self.start_weights: str | None = None  # fingerprint of model.init's or a frozen parent's weights

    def _build_data(self, other_training_files: list[Path] | None = None) -> TrainingData:
        """Training faces, training fake pool, the fixed validation set, and the benchmarks (which may
        share no file with this data nor with `other_training_files`, the synthetic score's)."""
        config = self.config
        policy = CropPolicy(size=config.model.input_size, scale=config.model.crop_scale)
        train_reals, val_reals = [], []
        training_files: list[Path] = []
        training_digests: set[str] = set()
        if config.data.real_dirs:
            bank = without_padding_heavy(facebank_for(config, self.show_progress), config.data.max_padding_fraction)
            training_files += [Path(p) for p in bank.paths]
            training_digests |= set(packed_source_digests(config.data).values())
            train_idx, val_idx = split_by_group(bank, config.data.val_fraction, config.seed)
            train_reals.append(bank.subset(train_idx))
            val_reals.append(bank.subset(val_idx))
        train_pool = val_pool = np.zeros((0, policy.size, policy.size, 3), np.uint8)
        if config.data.datasets:
            datasets = [config.data.locate(p, "prepared dataset") for p in config.data.datasets]
            train_prepared = load_prepared(datasets, policy, "train")
            val_prepared = load_prepared(datasets, policy, "val")
            train_reals.append(train_prepared.reals)
            val_reals.append(val_prepared.reals)
            train_pool, val_pool = train_prepared.fakes, val_prepared.fakes
            prepared_files = prepared_source_files(datasets)
            # The bank and each dataset split their photos each their own way: one in both was trained on
            # through one and validated on through the other, the epoch and threshold chosen on it, unsaid.
            # One photo by path, or by its bytes under another name (a CSV listing a copy of a bank's photo),
            # as a benchmark's overlap is found.
            if both := files_shared(prepared_files, training_files, training_digests):
                source, held = next(iter(both.items()))
                copy = (
                    " (the same bytes as a face of a packed bank in data.real_dirs)"
                    if held is None
                    else ""
                    if held == source
                    else f" (the same bytes as {held})"
                )
                raise DeepShieldError(
                    f"{len(both)} photos are both real faces of data.real_dirs and sources of a prepared dataset "
                    f"(data.datasets), e.g. {source}{copy}: each splits them its own way, so a photo trained on "
                    "through one could be validated on through the other; leave their folder (or copies) out of "
                    "data.real_dirs (a prepared dataset's real faces are synthesised from too)"
                )
            training_files += prepared_files
        if not train_reals:
            raise DeepShieldError("no training data: set data.real_dirs and/or data.datasets")
        donors = None
        if config.data.donor_dirs:
            donor_bank = facebank_of_files(
                donor_files(config.data),
                policy,
                Path(config.data.cache_dir),
                workers=config.data.bank_workers,
                progress=self.show_progress,
            )
            if not len(donor_bank):
                raise DeepShieldError(f"no face found in the donor folders {config.data.donor_dirs}")
            donors = Donors(donor_bank, config.data.donor_fraction)
            training_files += [Path(p) for p in donor_bank.paths]
        train_bank, val_bank = FaceBank.concat(train_reals), FaceBank.concat(val_reals)
        # Said here, in one line: the samples' own checks ended the run in a ValueError's traceback.
        if not len(train_bank):
            # Each source's own cause: a prepared dataset's splits are prepare's, which data.val_fraction
            # does not touch (its empty train split was blamed on data.val_fraction all the same).
            causes = []
            if config.data.real_dirs:
                causes.append(
                    f"the validation split took every identity of the {len(val_reals[0])} real faces of "
                    f"data.real_dirs (data.val_fraction = {config.data.val_fraction:g}, and one identity at least): "
                    "lower it, or give faces of more people (data.group_pattern says which files are one person)"
                )
            if config.data.datasets:
                causes.append(
                    f"the train split of the prepared {plural(len(datasets), 'dataset')} "
                    f"{', '.join(map(str, datasets))} holds no real face (prepare fixed the splits): add some with "
                    "'deepshield dataset balance DATASET_DIR --add-real FOLDER', or prepare it again with a larger "
                    "train share (--split)"
                )
            raise DeepShieldError("no real face is left to train on: " + "; and ".join(causes))
        if not config.data.synthesize and not len(train_pool):
            raise DeepShieldError(
                "data.synthesize = false trains on the prepared datasets' fakes alone, and data.datasets gives none: "
                "leave synthesis on, or give a dataset with fake crops"
            )
        # Donors make training fakes only: the validation fakes stay the recipe's own, comparable across runs.
        val_images, val_labels = validation_samples(
            val_bank, val_pool, config.seed, config.synthesis, config.data.cross_blend_fraction, config.data.synthesize
        )
        benchmarks = self._load_benchmarks(training_files + (other_training_files or []), training_digests)
        # Printed as the epochs are: a run said nothing of its data before the first epoch's bar.
        print(training_data_line(len(train_bank), len(train_pool), len(val_labels), len(benchmarks)), flush=True)
        return TrainingData(train_bank, train_pool, val_images, val_labels, benchmarks, donors)

    def _load_benchmarks(self, training_files: list[Path], training_digests: set[str] | None = None) -> list[Benchmark]:
        config = self.config
        policy = CropPolicy(size=config.model.input_size, scale=config.model.crop_scale)
        folders = [config.data.locate(p, "benchmark") for p in config.data.benchmarks]
        if config.synthetic is not None and any(is_prepared_dataset(folder) for folder in folders):
            log.warning("synthetic-face benchmarks: %s", PREPARED_SYNTHETIC_CAUTION)
        return [
            load_benchmark(
                folder,
                policy,
                Path(config.data.cache_dir),
                training_files,
                config.data.benchmark_frames,
                training_digests=training_digests or (),
                progress=self.show_progress,
            )
            for folder in folders
        ]

    def run(self, resume: bool = False) -> TrainResult:
        """Train (or, `resume`, go on from the run folder's last checkpoint); one process at a time per run folder."""
        with folder_lock(self.run_dir, "this training run"):
            return self._run(resume)

    def _run(self, resume: bool) -> TrainResult:
        config = self.config
        torch.set_num_threads(config.threads or usable_cpus())
        torch.manual_seed(config.seed)
        device = torch.device(config.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise DeepShieldError("device cuda asked for, but torch sees no GPU")
        parent = self._frozen_parent()
        config = self.config
        # Checked before any data is built: a resume with other settings was refused only after minutes of
        # loading (and a face bank of the settings it was refused for).
        resumed = self._resume_state() if resume else None
        check_init_path(config)
        if parent is None:  # frozen mode trains on the synthetic section's folders alone
            config.data.check_paths()
        for benchmark in config.data.benchmarks:  # a layout it cannot tell was refused after the face bank
            check_benchmark_layout(config.data.locate(benchmark, "benchmark"))
        # Opened after the face bank, a store MLflow cannot use was refused only then; checked before the data's
        # folders, a run refused for those left the new store (a SQLite file, its folder) behind.
        if config.tracking.enabled:
            check_store(str(config.tracking.uri), config.tracking.experiment)
        synthetic_data = None
        if config.synthetic is not None:
            # The faces the trunk learns (joint) or learnt (frozen: the parent's) as blend donors.
            seen_by_trunk = donor_files((parent.config if parent is not None else config).data)
            synthetic_data = build_synthetic_data(config, seen_by_trunk, self.show_progress)
        synthetic_files = synthetic_data.training_files if synthetic_data is not None else []
        # Frozen mode leaves the manipulation score as the parent's: no manipulation data or validation,
        # but the benchmarks' real files still hold the synthetic score's false-positive target.
        data = None if parent is not None else self._build_data(synthetic_files)
        benchmarks = (
            data.benchmarks
            if data is not None
            else [b.real_files_only() for b in self._load_benchmarks(synthetic_files)]
        )
        digests = data_digests(data, synthetic_data, benchmarks)
        if resumed is not None:  # before any step, and before its MLflow run is opened again
            self._check_resumed_data(resumed, digests)

        net, optimizer = placed_for_training(self._initial_network(parent, device), config, device)
        steps_per_epoch = config.optim.samples_per_epoch // config.optim.batch_size
        total_steps = steps_per_epoch * config.optim.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _lr_lambda(total_steps, int(total_steps * config.optim.warmup_fraction))
        )
        last = self.checkpoints / LAST
        progress = self._resumed(resumed, net, optimizer, scheduler) if resumed is not None else Progress()
        if resumed is not None:  # its bar alone (from 0, the steps left) did not say it went on from a checkpoint
            print(
                f"resuming {self.run_dir} at step {progress.global_step}/{total_steps} "
                f"(epoch {min(progress.epoch + 1, config.optim.epochs)}/{config.optim.epochs})",
                flush=True,
            )
        del resumed  # its weights and optimiser state, loaded now, would stay held for the whole run

        tracker = open_tracker(
            config.tracking.enabled,
            config.tracking.uri,
            config.tracking.experiment,
            run_name=config.run_name(),  # MLflow's own was a random one, unlike the bundle's
            run_id=progress.run_id,
            parent_run_id=self.parent_run_id,
            tags=self.run_tags,
        )
        # A resume without tracking keeps the run's id for the next tracked one (it was erased: two runs).
        progress.run_id = tracker.run_id or progress.run_id

        def snapshot() -> dict:
            return {
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                # A GPU's dropout draws from its own generator: without it a resumed run's masks restarted.
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "progress": progress.__dict__,
                "start_weights": self.start_weights,
                "config": config.model_dump(mode="json"),
                "command": self.command,
                "digests": digests,
            }

        # From the run's start in MLflow: a failure before the epochs (the first checkpoint on a full disk, the
        # loaders' workers) left the run RUNNING for good, and no checkpoint naming it to resume.
        loaders: Loaders | None = None
        stopped_early = False
        try:
            sizes = {"train_faces": len(data.bank), "val_samples": len(data.val_labels)} if data is not None else {}
            if synthetic_data is not None:
                sizes |= {
                    "synthetic_train_generated": len(synthetic_data.train_fake),
                    "synthetic_train_real": len(synthetic_data.train_real),
                }
            tracker.log_params(
                config.recorded()
                | sizes
                | {"digests": digests}
                | ({"synthetic_parent": str(parent.path)} if parent else {})
            )
            step = Step(net, optimizer, config.optim.optimizer, config.optim.sam_rho, config.optim.mask_loss_weight)
            loaders = self._loaders(data, synthetic_data, steps_per_epoch * config.optim.batch_size)
            # Only now, with the data loaded and the loaders' workers forked: arrays of gigabytes (face banks,
            # their copies while loading) keep their own mappings, which go back to the kernel when freed; the
            # heap then holds what steps reuse, and no worker keeps a copy of it.
            keep_freed_memory()
            if not last.exists():  # the run exists in MLflow now: a stop before the first checkpoint resumes it
                save_checkpoint(snapshot(), last)  # (a fresh start left it RUNNING for good, and made another)
            while progress.epoch < config.optim.epochs:
                stopped_early = self._train_epoch(step, scheduler, loaders, progress, steps_per_epoch, snapshot)
                if stopped_early:
                    save_checkpoint(snapshot(), last)
                    break
                self._end_epoch(net, data, synthetic_data, benchmarks, parent, progress, snapshot, tracker)
                if self.epoch_callback is not None:
                    self.epoch_callback(progress)
        except BaseException:
            try:
                save_checkpoint(snapshot(), last)  # Ctrl-C or a crash: keep the work done so far
            finally:  # one that fails too (a full disk) leaves the last one kept, and the run still ended
                tracker.finish("KILLED")
            raise
        finally:
            if loaders is not None:
                loaders.close()

        bundle_dir = None
        if self.export_bundle and not stopped_early and not (self.checkpoints / BEST).exists():
            # No epoch had a value to choose by (a benchmark of real files only has no AUC): it ended as
            # finished, with no bundle and no word.
            tracker.finish("FAILED")
            raise DeepShieldError(
                f"no epoch had a value for export.select {config.export.select!r}, so none was chosen and no "
                f"bundle was exported (the epochs' checkpoints are in {self.checkpoints}): a benchmark needs real "
                "and fake files for an AUC"
            )
        if self.export_bundle and not stopped_early:
            try:
                bundle_dir = self._export_best(progress, tracker)
            except BaseException:  # a bundle that cannot be written (a full disk) left the run RUNNING
                tracker.finish("FAILED")
                raise
        tracker.finish("FINISHED")
        return TrainResult(self.run_dir, bundle_dir, progress, stopped_early)

    def _frozen_parent(self) -> ParentRun | None:
        """Frozen synthetic mode's parent run, whose model settings this run takes; None in other modes."""
        if not self.config.frozen_synthetic:
            return None
        parent = load_parent(self.config)
        # The kept trunk fixes the architecture, input size and crop policy; how the parent itself was
        # initialised (model.init, init_share) is its history, not this run's.
        model = parent.config.model.model_copy(update={"init": None, "init_share": 0.0})
        if model != self.config.model:
            log.info("frozen synthetic head: model settings from the parent run %s: %s", parent.path, model)
            self.config = self.config.model_copy(update={"model": model})
        return parent

    def _initial_network(self, parent: ParentRun | None, device: torch.device) -> DeepfakeNet:
        """The network before its first step: the frozen parent's trunk and head with only the synthetic
        head trainable, or the initial weights of a fine-tune (`model.init`), or the backbone's own."""
        config = self.config
        net = build_network(config, config.model.pretrained)
        if parent is not None:
            self.start_weights = weights_fingerprint(parent.checkpoint["model"])
            missing, unexpected = net.load_state_dict(parent.checkpoint["model"], strict=False)
            # The parent's training-only mask head, if it had one, has no use here.
            missing = [key for key in missing if not key.startswith(MASK_HEAD)]
            unexpected = [key for key in unexpected if not key.startswith(MASK_HEAD)]
            if unexpected or any(not key.startswith("synthetic_head.") for key in missing):
                raise DeepShieldError(
                    f"synthetic.init {parent.path} does not fit the network: missing {missing}, unexpected {unexpected}"
                )
            for name, parameter in net.named_parameters():
                parameter.requires_grad_(name.startswith("synthetic_head."))
        elif config.model.init is not None:
            # Fine-tuning (a resumed run then loads its own last weights over these): a head the initial
            # weights lack starts fresh; one the run lacks is dropped.
            initial = {k: v for k, v in initial_weights(config).items() if k in net.state_dict()}
            self.start_weights = weights_fingerprint(initial)
            missing, unexpected = net.load_state_dict(initial, strict=False)
            if any(not key.startswith(("synthetic_head.", MASK_HEAD)) for key in missing):
                raise DeepShieldError(f"model.init {config.model.init} does not fit the network: missing {missing}")
            if config.model.init_share:
                self.init_state = {k: v.detach().clone().to(device) for k, v in initial.items()}
        return net

    def _resume_state(self) -> dict | None:
        """The last checkpoint, refused if it was trained with other settings; None (a fresh start) when
        there is none."""
        last = self.checkpoints / LAST
        if not last.exists():
            log.warning("nothing to resume in %s: starting fresh", self.checkpoints)
            return None
        state = load_checkpoint(last)
        if changed := changed_recipe(state["config"], self.config):
            rerun = resume_command(state.get("command", ""))
            how = f": {rerun}" if rerun else " (they are in the checkpoint)"
            raise DeepShieldError(
                f"{last} was trained with other settings: {'; '.join(changed)}. Resume it with the settings it "
                f"started with{how}; or train a new run in another run_dir"
            )
        return state

    def _check_resumed_data(self, state: dict, digests: dict[str, str]) -> None:
        """Refuses a resume whose data differ from the checkpoint's under the same settings (a face bank packed
        again under its name, a folder's files changed): the run went on, unsaid, on other faces."""
        last = self.checkpoints / LAST
        started_on = state.get("digests")
        if started_on is None:
            log.warning("%s records no digests of its data (an older version's): resumed without comparing them", last)
            return
        changed = [f"digests.{k}: {v} -> {digests[k]}" for k, v in started_on.items() if digests.get(k, v) != v]
        if changed:
            raise DeepShieldError(
                f"{last} was trained on other data (the same settings, other files read): {'; '.join(changed)}. "
                "Resume it on the data it started with (the face bank, folders and datasets as they were); or "
                "train a new run on these in another run_dir"
            )

    def _resumed(self, state: dict, net: DeepfakeNet, optimizer: torch.optim.Optimizer, scheduler: Any) -> Progress:
        """Loads the last checkpoint's weights, optimiser, schedule and random state."""
        last = self.checkpoints / LAST
        # The same file name may hold other weights since: a fine-tune's mixing (init_share) and a frozen
        # head's trunk read them again, and a resumed run silently mixed in the new ones.
        started_from = state.get("start_weights")
        if started_from is not None and started_from != self.start_weights:
            synthetic = self.config.synthetic
            source = (
                synthetic.init if synthetic is not None and self.config.frozen_synthetic else self.config.model.init
            )
            raise DeepShieldError(
                f"{source} no longer holds the weights {last} started from (it was rewritten since): put those "
                "weights back to resume, or train a new run in another run_dir"
            )
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return Progress(**state["progress"])

    def _export_best(self, progress: Progress, tracker) -> Path:
        bundle_dir = self.run_dir / "bundle"
        card = export_checkpoint(self.checkpoints / BEST, bundle_dir)
        print(
            f"bundle {card.name} {card.version} (epoch {progress.best_epoch + 1}, "
            f"chosen by {self.config.export.select}) written to {bundle_dir}",
            flush=True,
        )
        tracker.log_artifact(bundle_dir, "bundle")
        tracker.log_metrics({f"final_{k}": v for k, v in card.metrics.items()}, step=progress.best_epoch + 1)
        tracker.set_tags({"bundle": str(bundle_dir.resolve())})
        return bundle_dir

    def _loaders(self, data: TrainingData | None, synthetic_data: SyntheticData | None, length: int) -> Loaders:
        config = self.config

        def loader(samples: Dataset) -> EpochLoader:
            return EpochLoader(samples, config.optim.batch_size, config.data.loader_workers, config.seed)

        manipulation = synthetic = None
        if data is not None:
            manipulation = loader(
                TrainingSamples(
                    data.bank,
                    data.fake_pool,
                    length,
                    config.seed,
                    config.synthesis,
                    config.augment,
                    config.data.cross_blend_fraction,
                    config.data.synthesize,
                    data.donors,
                    masks=config.optim.mask_loss_weight > 0,
                )
            )
        if synthetic_data is not None and config.synthetic is not None:
            synthetic = loader(
                SyntheticFaceSamples(
                    synthetic_data.train_fake,
                    synthetic_data.train_real,
                    synthetic_data.train_real_valid,
                    length,
                    config.seed,
                    config.synthetic.augment,
                    config.synthetic.fake_padding_share,
                )
            )
        return Loaders(manipulation, synthetic)

    def _train_epoch(
        self,
        step: Step,
        scheduler,
        loaders: Loaders,
        progress: Progress,
        steps_per_epoch: int,
        snapshot,
    ) -> bool:
        if progress.history and progress.history[-1]["epoch"] == progress.epoch:
            return False  # stopped during this epoch's validation: its steps are done, validate again
        config = self.config
        batch = config.optim.batch_size
        length = steps_per_epoch * batch
        remaining = range(progress.step_in_epoch * batch, length)
        step.net.train()
        # Frozen: the kept trunk and head stay in eval mode (batch-norm statistics and dropout untouched).
        if config.frozen_synthetic:
            for module in (step.net.backbone, step.net.dropout, step.net.head):
                module.eval()
        elif config.model.init is not None and Path(config.model.init).expanduser().is_dir():
            # A bundle's batch norms are folded into its convolutions (identities here): in training mode
            # they would normalise by batch statistics and change the function the weights compute.
            for norm in step.net.modules():
                if isinstance(norm, torch.nn.BatchNorm2d):
                    norm.eval()
        device = next(step.net.parameters()).device

        losses = progress.epoch_losses  # this epoch's so far: a resumed epoch's from before the stop too
        started, seconds_before = time.perf_counter(), progress.epoch_seconds
        bar = tqdm(
            loaders.epoch(progress.epoch, remaining),
            total=len(remaining) // batch,
            desc=f"epoch {progress.epoch + 1}/{config.optim.epochs}",
            unit="batch",
            # On a terminal only: CI logs, `2> file` and the journal got its every redraw.
            disable=None if self.show_progress else True,
        )
        reached_max_steps = False
        for manipulation, synthetic in bar:
            if config.max_steps is not None and progress.global_step >= config.max_steps:
                reached_max_steps = True  # a resumed run already there (it took a step past it each resume)
                break
            with whole_step():
                samples = Batch.on(device, manipulation, synthetic)
                losses.append(step(samples))
                scheduler.step()
                progress.epoch_images += len(samples)
                progress.epoch_seconds = seconds_before + time.perf_counter() - started
                progress.step_in_epoch += 1
                progress.global_step += 1
            # refresh=False: drawn at the bar's own pace, not on every step
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{trained_lr(scheduler):.2e}", refresh=False)
            if progress.global_step % config.optim.checkpoint_every_steps == 0:
                save_checkpoint(snapshot(), self.checkpoints / LAST)
            if config.max_steps is not None and progress.global_step >= config.max_steps:
                reached_max_steps = True
                break
        if progress.step_in_epoch < steps_per_epoch:
            return True  # stopped inside the epoch (max_steps): its record comes when it is finished
        progress.history.append(
            {
                "epoch": progress.epoch,
                "train_loss": float(np.mean(losses)) if losses else float("nan"),
                "images_per_s": progress.epoch_images / max(progress.epoch_seconds, 1e-9),
                "lr": trained_lr(scheduler),
            }
        )
        # Stopped by max_steps at the epoch's last step: its record is kept, and a resumed run validates it.
        return reached_max_steps

    def _end_epoch(
        self,
        net,
        data: TrainingData | None,
        synthetic_data: SyntheticData | None,
        benchmarks: list[Benchmark],
        parent: ParentRun | None,
        progress: Progress,
        snapshot,
        tracker,
    ) -> None:
        config = self.config
        kept: dict = {}  # what the best checkpoint keeps for the export's calibration
        if self.init_state is not None:
            net = mixed_with_init(net, self.init_state, config.model.init_share)
            kept["model"] = net.state_dict()  # best.pt holds the weights it was chosen by and exports
        # One pass over the benchmarks serves both heads: `benchmarks` are data.benchmarks when the run has
        # manipulation data, and only their real files in frozen mode (all the synthetic threshold reads).
        flip = config.export.test_time_flip  # scored as the bundle will serve
        bench_heads = [predict_heads(net, b.crops, flip=flip, synthetic_crops=b.synthetic_crops) for b in benchmarks]
        manipulation = synthetic = None
        if data is not None:
            manipulation = self._manipulation_scores(net, data, benchmarks, bench_heads)
            kept |= manipulation.kept
        if parent is not None:
            kept = parent.record()
        if synthetic_data is not None:
            synthetic = self._synthetic_scores(net, synthetic_data, benchmarks, bench_heads)
            kept |= synthetic.kept
        # The training figures alone: a run stopped after this epoch's record took its validation (as its
        # plots were written) resumes to validate the epoch again.
        trained = {name: progress.history[-1][name] for name in TRAINING_FIELDS}
        record = EpochRecord(
            **trained,
            **(manipulation.metrics if manipulation is not None else {}),
            synthetic=synthetic.metrics if synthetic is not None else {},
        )
        flat = record.flat()
        progress.history[-1] = flat
        # Step = the epoch as printed, the card and Optuna count it (from 1; 0-based steps put the card's
        # "epochs: 2" at MLflow's step 1).
        tracker.log_metrics({k: v for k, v in flat.items() if k != "epoch"}, step=progress.epoch + 1)
        log.info("epoch %d: %s", progress.epoch, {k: round(v, 4) for k, v in flat.items()})
        shown = {k: v for k, v in flat.items() if k != "epoch" and not k.endswith(("_lo", "_hi", "_ap"))}
        print(f"epoch {progress.epoch + 1}: " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items()), flush=True)
        has_benchmarks = data is not None and bool(data.benchmarks)
        selector = parse_epoch_selector(config.export.select, has_benchmarks, synthetic_data is not None)
        value = selector.value(flat)
        # An epoch validated again on resume may already be the best: its checkpoints are written again.
        improved = value is not None and (
            progress.best_value is None
            or selector.better(value, progress.best_value)
            or progress.best_epoch == progress.epoch
        )
        if improved:
            progress.best_value, progress.best_epoch = value, progress.epoch
            # frozen mode's only validation is the synthetic score's
            shown_scores = manipulation if manipulation is not None else synthetic
            assert shown_scores is not None  # a run trains at least one head
            self._plots(*shown_scores.plotted, tracker)
        self._save_epoch(progress, snapshot, kept, improved)
        for path in self._curve_plots(progress.history, data, synthetic_data):
            tracker.log_artifact(path, "plots")

    def _manipulation_scores(
        self, net, data: TrainingData, benchmarks: list[Benchmark], bench_heads: list[HeadLogits]
    ) -> EpochScores:
        """The manipulation head on the synthetic validation and the benchmarks, calibrated as the export
        would be at this epoch."""
        config = self.config
        logits = predict_logits(net, data.val_images, flip=config.export.test_time_flip)
        val_labels = data.val_labels
        probabilities = sigmoid(logits.astype(np.float64))
        metrics = detection_metrics(val_labels, probabilities)
        bench_scores = [BenchmarkScores(b, b.scored(h.manipulation, 1.0)) for b, h in zip(benchmarks, bench_heads)]
        reals = {b.benchmark.name: real_file_faces(b.scored) for b in bench_scores}
        faces = {b.benchmark.name: benchmark_faces(b.scored) for b in bench_scores}
        calibration = fit_calibration(
            val_labels,
            logits,
            reals,
            config.export.threshold_fpr,
            manipulation_split(config.data),
            real_media=manipulation_real_media(faces, config.export),
        )
        bench_scores = [
            replace(b, scored=replace(b.scored, temperature=calibration.temperature, offset=calibration.offset))
            for b in bench_scores
        ]
        return EpochScores(
            metrics={
                "val_loss": float(
                    F.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(val_labels).float())
                ),
                "val_auc": metrics.auc,
                "val_ap": metrics.ap,
                "val_eer": metrics.eer,
                "val_log_loss": metrics.log_loss,
                "val_balanced_accuracy": metrics.balanced_accuracy,
                "benchmarks": benchmark_metrics(bench_scores, calibration.threshold),
            },
            kept={"val_logits": logits, "val_labels": val_labels, "benchmark_reals": reals, "benchmark_faces": faces},
            plotted=(data.val_images, val_labels, probabilities),
        )

    def _synthetic_scores(
        self, net, synthetic_data: SyntheticData, benchmarks: list[Benchmark], bench_heads: list[HeadLogits]
    ) -> EpochScores:
        """The synthetic-face head on its checks, its threshold fitted, and its false positives on the
        benchmarks' real files."""
        assert self.config.synthetic is not None  # synthetic data is built only from synthetic settings
        settings = self.config.synthetic
        flip = self.config.export.test_time_flip
        scored = ScoredChecks.score(
            synthetic_data.checks, lambda images: predict_logits(net, images, synthetic=True, flip=flip)
        )
        bench_reals = {
            b.name: real_file_faces(b.scored(h.of(synthetic=True), 1.0)) for b, h in zip(benchmarks, bench_heads)
        }
        fitted = fit_synthetic_calibration(
            scored, settings.threshold_fpr, bench_reals, settings.calibrate_on == "benchmarks"
        )
        val = synthetic_data.checks.val
        return EpochScores(
            metrics=scored.metrics() | synthetic_flagged(scored, fitted, bench_reals),
            kept={
                "synthetic_checks": scored.stored(),
                "synthetic_sources": synthetic_data.sources,
                "synthetic_benchmark_reals": bench_reals,
            },
            plotted=(val.images, val.labels, sigmoid(scored.logits["val"].astype(np.float64))),
        )

    def _save_epoch(self, progress: Progress, snapshot, kept: dict, improved: bool) -> None:
        epoch_done = progress.epoch
        # The checkpoints hold the epoch as finished; `progress` says so only once they are written: a stop
        # among the writes (Ctrl-C after the epoch's line) saved last.pt as past an epoch whose epoch_NNN.pt
        # and best.pt never came, and the resumed run exported a stale epoch, or none.
        finished = {"epoch": epoch_done + 1, "step_in_epoch": 0, "epoch_losses": [], "epoch_images": 0}
        finished["epoch_seconds"] = 0.0
        state = snapshot() | {"progress": progress.__dict__ | finished}
        # Every epoch's checkpoint can be exported as the chosen one can: it keeps what its epoch was
        # scored by (the mixed weights, the validation and benchmark logits), so a rule that names an
        # epoch (the last, say) needs no other tool. last.pt alone resumes.
        judged = state | {"epoch": epoch_done} | kept
        save_checkpoint(
            judged | {"selected_by": f"named at export (epoch {epoch_done + 1})"},
            self.checkpoints / epoch_file(epoch_done),
        )
        if improved:
            save_checkpoint(judged | {"selected_by": self.config.export.select}, self.checkpoints / BEST)
        save_checkpoint(state, self.checkpoints / LAST)
        for name, value in finished.items():
            setattr(progress, name, value)

    def _curve_plots(
        self, history: list[dict], data: TrainingData | None, synthetic_data: SyntheticData | None
    ) -> list[Path]:
        paths = [curves_plot(history, ["train_loss", "val_loss"], self.plots / "loss.png", "loss")]
        if data is not None:
            paths.append(
                curves_plot(
                    history,
                    ["val_auc", "val_ap", "val_balanced_accuracy"],
                    self.plots / "val_metrics.png",
                    "validation",
                )
            )
        if synthetic_data is not None:
            names = [f"synthetic_{name}_auc" for name in synthetic_data.checks.named()]
            paths.append(curves_plot(history, names, self.plots / "synthetic.png", "synthetic-face score (AUC)"))
        if data is not None and data.benchmarks:
            names = ["bench_auc", "bench_face_auc", "bench_file_auc"] + [
                f"bench_{b.name}_face_auc" for b in data.benchmarks
            ]
            paths.append(curves_plot(history, names, self.plots / "benchmarks.png", "benchmarks (AUC)"))
        return paths

    def _plots(self, images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, tracker) -> None:
        paths = [
            roc_plot(labels, probabilities, self.plots / "roc.png", "validation ROC (best epoch)"),
            pr_plot(labels, probabilities, self.plots / "pr.png", "validation PR (best epoch)"),
            confusion_plot(labels, probabilities, 0.5, self.plots / "confusion.png"),
        ]
        losses = -(
            labels * np.log(np.clip(probabilities, 1e-7, 1))
            + (1 - labels) * np.log(np.clip(1 - probabilities, 1e-7, 1))
        )
        hardest = np.argsort(-losses)[:16]
        paths.append(
            example_grid(
                [images[i] for i in hardest],
                [f"{'fake' if labels[i] else 'real'} p={probabilities[i]:.2f}" for i in hardest],
                self.plots / "hardest.png",
                title="hardest validation examples",
            )
        )
        for path in paths:
            tracker.log_artifact(path, "plots")
