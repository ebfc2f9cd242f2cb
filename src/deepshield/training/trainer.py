"""The training loop: seeded, checkpointed, resumable, tracked."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from deepshield.errors import DeepShieldError
from deepshield.evaluation.calibration import sigmoid
from deepshield.evaluation.metrics import detection_metrics
from deepshield.evaluation.plots import (
    confusion_plot,
    curves_plot,
    example_grid,
    pr_plot,
    roc_plot,
)
from deepshield.faces.crop import CropPolicy
from deepshield.models.card import Normalization
from deepshield.models.network import DeepfakeNet, normalize_batch
from deepshield.tracking.tracker import open_tracker
from deepshield.training.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from deepshield.training.config import TrainConfig
from deepshield.training.dataset import (
    TrainingSamples,
    split_by_group,
    validation_samples,
)
from deepshield.training.export import export_checkpoint
from deepshield.training.facebank import FaceBank, facebank_for
from deepshield.training.prepared import load_prepared
from deepshield.tuning.selector import parse_selector

log = logging.getLogger(__name__)
NORMALIZATION = Normalization()


@dataclass
class Progress:
    """Where the run is; saved in every checkpoint."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_auc: float = -1.0  # the best epoch's value of export.select's metric (val_auc by default)
    best_epoch: int = -1
    history: list[dict] = field(default_factory=list)
    run_id: str | None = None


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


def predict_logits(net: DeepfakeNet, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    net.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start : start + batch_size])
            outputs.append(net(normalize_batch(batch, NORMALIZATION))[0].numpy())
    return np.concatenate(outputs) if outputs else np.zeros(0, np.float32)


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
    ) -> None:
        self.config = config
        self.command = command
        self.epoch_callback = epoch_callback
        self.parent_run_id = parent_run_id
        self.run_tags = run_tags
        self.export_bundle = export_bundle
        self.export_selector = parse_selector(config.export.select)  # which epoch best.pt (and the bundle) keeps
        self.run_dir = Path(config.run_dir)
        self.checkpoints = self.run_dir / "checkpoints"
        self.plots = self.run_dir / "plots"

    def _build_data(self):
        """Training faces, training fake pool, and the fixed validation set."""
        config = self.config
        policy = CropPolicy(size=config.model.input_size, scale=config.model.crop_scale)
        train_reals, val_reals = [], []
        if config.data.real_dirs:
            bank = facebank_for(config)
            train_idx, val_idx = split_by_group(bank, config.data.val_fraction, config.seed)
            train_reals.append(bank.subset(train_idx))
            val_reals.append(bank.subset(val_idx))
        train_pool = val_pool = np.zeros((0, policy.size, policy.size, 3), np.uint8)
        if config.data.datasets:
            datasets = [Path(p) for p in config.data.datasets]
            train_prepared = load_prepared(datasets, policy, "train")
            val_prepared = load_prepared(datasets, policy, "val")
            train_reals.append(train_prepared.reals)
            val_reals.append(val_prepared.reals)
            train_pool, val_pool = train_prepared.fakes, val_prepared.fakes
        if not train_reals:
            raise DeepShieldError("no training data: set data.real_dirs and/or data.datasets")
        train_bank, val_bank = FaceBank.concat(train_reals), FaceBank.concat(val_reals)
        val_images, val_labels = validation_samples(
            val_bank, val_pool, config.seed, config.synthesis, config.data.cross_blend_fraction, config.data.synthesize
        )
        log.info("faces: %d train (+%d prepared fakes), %d validation samples", len(train_bank), len(train_pool), len(val_labels))
        return train_bank, train_pool, val_images, val_labels

    def run(self, resume: bool = False) -> TrainResult:
        config = self.config
        torch.set_num_threads(config.threads or os.cpu_count() or 1)
        torch.manual_seed(config.seed)
        train_bank, train_pool, val_images, val_labels = self._build_data()

        net = DeepfakeNet(config.model.backbone, config.model.input_size, config.model.pretrained, config.model.dropout)
        optimizer = torch.optim.AdamW(net.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay)
        steps_per_epoch = config.optim.samples_per_epoch // config.optim.batch_size
        total_steps = steps_per_epoch * config.optim.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total_steps, int(total_steps * config.optim.warmup_fraction)))
        progress = Progress()

        last = self.checkpoints / LAST
        if resume and last.exists():
            state = load_checkpoint(last)
            net.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            progress = Progress(**state["progress"])
            log.info("resumed at epoch %d step %d", progress.epoch, progress.step_in_epoch)
        elif resume:
            log.warning("nothing to resume in %s: starting fresh", self.checkpoints)

        tracker = open_tracker(
            config.tracking.enabled,
            config.tracking.uri,
            config.tracking.experiment,
            run_name=config.tracking.run_name,
            run_id=progress.run_id,
            parent_run_id=self.parent_run_id,
            tags=self.run_tags,
        )
        progress.run_id = tracker.run_id
        tracker.log_params(config.model_dump(mode="json") | {"train_faces": len(train_bank), "val_samples": len(val_labels)})

        def snapshot() -> dict:
            return {
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "progress": progress.__dict__,
                "config": config.model_dump(mode="json"),
                "command": self.command,
            }

        stopped_early = False
        try:
            while progress.epoch < config.optim.epochs:
                stopped_early = self._train_epoch(net, optimizer, scheduler, train_bank, train_pool, progress, steps_per_epoch, snapshot, tracker)
                if stopped_early:
                    save_checkpoint(snapshot(), last)
                    break
                self._end_epoch(net, val_images, val_labels, progress, snapshot, tracker)
                if self.epoch_callback is not None:
                    self.epoch_callback(progress)
        except BaseException:
            save_checkpoint(snapshot(), last)  # Ctrl-C or a crash: keep the work done so far
            tracker.finish("KILLED")
            raise

        bundle_dir = None
        if self.export_bundle and not stopped_early and (self.checkpoints / BEST).exists():
            bundle_dir = self.run_dir / "bundle"
            card = export_checkpoint(self.checkpoints / BEST, bundle_dir)
            tracker.log_artifact(bundle_dir, "bundle")
            tracker.log_metrics({f"final_{k}": v for k, v in card.metrics.items()})
            tracker.set_tags({"bundle": str(bundle_dir.resolve())})
        tracker.finish("FINISHED")
        return TrainResult(self.run_dir, bundle_dir, progress, stopped_early)

    def _train_epoch(self, net, optimizer, scheduler, bank, fake_pool, progress: Progress, steps_per_epoch: int, snapshot, tracker) -> bool:
        if progress.history and progress.history[-1]["epoch"] == progress.epoch:
            return False  # stopped during this epoch's validation: its steps are done, validate again
        config = self.config
        batch = config.optim.batch_size
        samples = TrainingSamples(
            bank,
            fake_pool,
            steps_per_epoch * batch,
            config.seed,
            progress.epoch,
            config.synthesis,
            config.augment,
            config.data.cross_blend_fraction,
            config.data.synthesize,
        )
        remaining = list(range(progress.step_in_epoch * batch, len(samples)))
        # Its own generator: a DataLoader otherwise draws its base seed from the global torch RNG,
        # which would shift the dropout masks of a resumed run away from an uninterrupted one.
        loader = DataLoader(
            samples,
            batch_size=batch,
            sampler=remaining,
            num_workers=config.data.loader_workers,
            drop_last=True,
            generator=torch.Generator().manual_seed(config.seed),
        )
        net.train()
        losses: list[float] = []
        started = time.perf_counter()
        seen = 0
        bar = tqdm(loader, total=len(remaining) // batch, desc=f"epoch {progress.epoch + 1}/{config.optim.epochs}", unit="batch")
        for images, labels in bar:
            logits, _ = net(normalize_batch(images, NORMALIZATION))
            loss = F.binary_cross_entropy_with_logits(logits, labels.float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            seen += len(labels)
            progress.step_in_epoch += 1
            progress.global_step += 1
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if progress.global_step % config.optim.checkpoint_every_steps == 0:
                save_checkpoint(snapshot(), self.checkpoints / LAST)
            if config.max_steps is not None and progress.global_step >= config.max_steps:
                return True
        elapsed = time.perf_counter() - started
        progress.history.append({"epoch": progress.epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"), "images_per_s": seen / max(elapsed, 1e-9), "lr": scheduler.get_last_lr()[0]})
        return False

    def _end_epoch(self, net, val_images, val_labels, progress: Progress, snapshot, tracker) -> None:
        logits = predict_logits(net, val_images)
        probabilities = sigmoid(logits.astype(np.float64))
        metrics = detection_metrics(val_labels, probabilities)
        record = progress.history[-1]
        record.update(
            val_loss=float(F.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(val_labels).float())),
            val_auc=metrics.auc,
            val_ap=metrics.ap,
            val_eer=metrics.eer,
            val_log_loss=metrics.log_loss,
            val_balanced_accuracy=metrics.balanced_accuracy,
        )
        tracker.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=progress.epoch)
        log.info("epoch %d: %s", progress.epoch, {k: round(v, 4) for k, v in record.items()})
        print(f"epoch {progress.epoch + 1}: " + ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"), flush=True)
        value = record.get(self.export_selector.metric, math.nan)
        improved = math.isfinite(value) and (progress.best_epoch < 0 or self.export_selector.better(value, progress.best_auc))
        if improved:
            progress.best_auc, progress.best_epoch = value, progress.epoch
            self._plots(val_images, val_labels, probabilities, tracker)
        epoch_done = progress.epoch
        progress.epoch += 1
        progress.step_in_epoch = 0
        state = snapshot()
        save_checkpoint(state, self.checkpoints / f"epoch_{epoch_done + 1:03d}.pt")
        if improved:
            save_checkpoint(state | {"epoch": epoch_done, "val_logits": logits, "val_labels": val_labels}, self.checkpoints / BEST)
        save_checkpoint(state, self.checkpoints / LAST)
        curves = curves_plot(progress.history, ["train_loss", "val_loss"], self.plots / "loss.png", "loss")
        auc_curve = curves_plot(progress.history, ["val_auc", "val_ap", "val_balanced_accuracy"], self.plots / "val_metrics.png", "validation")
        for path in (curves, auc_curve):
            tracker.log_artifact(path, "plots")

    def _plots(self, images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, tracker) -> None:
        paths = [
            roc_plot(labels, probabilities, self.plots / "roc.png", "validation ROC (best epoch)"),
            pr_plot(labels, probabilities, self.plots / "pr.png", "validation PR (best epoch)"),
            confusion_plot(labels, probabilities, 0.5, self.plots / "confusion.png"),
        ]
        losses = -(labels * np.log(np.clip(probabilities, 1e-7, 1)) + (1 - labels) * np.log(np.clip(1 - probabilities, 1e-7, 1)))
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
