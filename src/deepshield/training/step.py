"""One optimisation step and the network's passes over crops: a batch on its device, the loss of both
heads (and the blend-mask head), AdamW or SAM, and the logits of crops for scoring."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from deepshield.errors import DeepShieldError
from deepshield.faces.crop import SyntheticCrops
from deepshield.models.card import Normalization
from deepshield.models.network import DeepfakeNet, normalize_batch
from deepshield.training.config import TrainConfig

NORMALIZATION = Normalization()


@dataclass(frozen=True)
class Batch:
    """One step's samples: manipulation (real vs fake, with where each was blended) and synthetic-face
    (real vs generated); either may be absent."""

    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    synthetic_images: torch.Tensor | None = None
    synthetic_labels: torch.Tensor | None = None
    masks: torch.Tensor | None = None  # N x H x W uint8 blend masks of the manipulation samples (N x 0 x 0: none made)
    mask_known: torch.Tensor | None = None  # N bool: False where a mask is not known (a prepared fake)

    @classmethod
    def on(cls, device: torch.device, manipulation: Any, synthetic: Any) -> Batch:
        """A loader step's batches (a `TrainingSample` of tensors and an (images, labels) pair, either None) on `device`."""

        def moved(part: torch.Tensor) -> torch.Tensor:
            return part.to(device, non_blocking=True)

        parts: dict[str, torch.Tensor] = {}
        if manipulation is not None:
            parts |= {"images": manipulation.image, "labels": manipulation.label}
            parts |= {"masks": manipulation.mask, "mask_known": manipulation.mask_known}
        if synthetic is not None:
            parts |= {"synthetic_images": synthetic[0], "synthetic_labels": synthetic[1]}
        return cls(**{name: moved(part) for name, part in parts.items()})

    def __len__(self) -> int:
        return sum(len(t) for t in (self.labels, self.synthetic_labels) if t is not None)


def autocast_for(device: torch.device):
    """bfloat16 mixed precision on a GPU; full precision on the CPU (where bfloat16 is slower here)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


@dataclass(frozen=True)
class HeadLogits:
    """One pass of the network over crops: the manipulation logits, and the synthetic-face logits when
    it has that head (both heads read the same features, so one pass gives both)."""

    manipulation: np.ndarray
    synthetic: np.ndarray | None

    def of(self, synthetic: bool) -> np.ndarray:
        chosen = self.synthetic if synthetic else self.manipulation
        if chosen is None:
            raise DeepShieldError("synthetic-face logits asked of a network without a synthetic head")
        return chosen


def predict_heads(
    net: DeepfakeNet,
    images: np.ndarray,
    batch_size: int = 64,
    flip: bool = False,
    synthetic_crops: SyntheticCrops | None = None,
) -> HeadLogits:
    """Both heads' logits of uint8 crops; with `flip`, each averaged with its mirror image's, as a bundle
    with test_time_flip serves them (a card's calibration and figures must be of the function it serves).
    `synthetic_crops`: what the synthetic head reads in place of some rows' crops, as `OnnxClassifier.score`
    takes them."""
    heads = _predict_heads(net, images, batch_size, flip)
    if synthetic_crops is None or heads.synthetic is None:
        return heads
    synthetic = heads.synthetic.copy()
    synthetic[synthetic_crops.rows] = _predict_heads(net, synthetic_crops.pixels, batch_size, flip).of(synthetic=True)
    return HeadLogits(heads.manipulation, synthetic)


def _predict_heads(net: DeepfakeNet, images: np.ndarray, batch_size: int, flip: bool) -> HeadLogits:
    net.eval()
    device = next(net.parameters()).device
    manipulation, synthetic = [], []
    # Full precision on a GPU too: a card's calibration is fitted to these logits, and the bundle serves the
    # float32 graph (bfloat16 moved a logit by up to 0.13).
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start : start + batch_size]).to(device)
            output = net.forward_all(normalize_batch(batch, NORMALIZATION))
            logit, synthetic_logit = output.logit.float(), output.synthetic_logit
            if flip:  # N x H x W x 3: the width is dimension 2
                mirrored = net.forward_all(normalize_batch(batch.flip(2), NORMALIZATION))
                logit = (logit + mirrored.logit.float()) / 2
                if synthetic_logit is not None and mirrored.synthetic_logit is not None:
                    synthetic_logit = (synthetic_logit.float() + mirrored.synthetic_logit.float()) / 2
            manipulation.append(logit.cpu().numpy())
            if synthetic_logit is not None:
                synthetic.append(synthetic_logit.float().cpu().numpy())
    empty = np.zeros(0, np.float32)
    return HeadLogits(
        np.concatenate(manipulation) if manipulation else empty,
        np.concatenate(synthetic) if synthetic else (empty if net.has_synthetic_head else None),
    )


def predict_logits(
    net: DeepfakeNet, images: np.ndarray, batch_size: int = 64, synthetic: bool = False, flip: bool = False
) -> np.ndarray:
    """The manipulation logits of uint8 crops, or (`synthetic`) the synthetic-face logits (`flip`: see
    predict_heads)."""
    return predict_heads(net, images, batch_size, flip).of(synthetic)


def placed_for_training(
    net: DeepfakeNet, config: TrainConfig, device: torch.device
) -> tuple[DeepfakeNet, torch.optim.Optimizer]:
    """The network on its device in the layout it trains in, and the optimiser over its trainable weights."""
    # channels_last: the layout an NHWC batch already has after normalize_batch's permute, and the one
    # oneDNN's depthwise convolutions are fast in (measured 2-3x the training throughput on 2 CPU cores).
    net = net.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to takes it; the stubs omit it
    optim = config.optim
    if optim.backbone_lr_scale == 1:
        groups: list[dict[str, Any]] = [{"params": [p for p in net.parameters() if p.requires_grad]}]
    else:  # the heads first: the logged lr is the first group's
        trunk = {id(p) for p in net.backbone.parameters()}
        groups = [
            {"params": [p for p in net.parameters() if p.requires_grad and id(p) not in trunk]},
            {
                "params": [p for p in net.backbone.parameters() if p.requires_grad],
                "lr": optim.lr * optim.backbone_lr_scale,
            },
        ]
    groups = [group for group in groups if group["params"]]  # a frozen trunk has none
    return net, torch.optim.AdamW(groups, lr=optim.lr, weight_decay=optim.weight_decay)


def mask_loss(logits: torch.Tensor, masks: torch.Tensor, known: torch.Tensor | None) -> torch.Tensor:
    """BCE of the mask head's N x h x w logits against each blend mask's share of every cell (a soft
    target: 0 for a real face, up to 1 inside a blend), over the samples whose mask is known."""
    cells = (int(logits.shape[-2]), int(logits.shape[-1]))
    targets = F.adaptive_avg_pool2d(masks[:, None].float() / 255.0, cells)[:, 0]
    if known is not None:
        logits, targets = logits[known], targets[known]
    if not len(logits):
        return logits.sum()  # 0, still part of the graph
    return F.binary_cross_entropy_with_logits(logits.float(), targets)


class Step:
    """One optimisation step: AdamW, or SAM around it (Foret et al., 2021: the weights are moved to the
    worst point within `rho` of the gradient's direction, the gradient is taken there, and the base
    optimiser steps from the original weights; what SBI trains with)."""

    def __init__(
        self, net: DeepfakeNet, optimizer: torch.optim.Optimizer, kind: str, rho: float, mask_weight: float = 0.0
    ) -> None:
        self.net, self.optimizer, self.kind, self.rho, self.mask_weight = net, optimizer, kind, rho, mask_weight

    def _loss(self, batch: Batch) -> torch.Tensor:
        """Manipulation BCE on its samples plus synthetic-face BCE on its samples, from one pass over both,
        plus `mask_weight` x the blend-mask head's BCE where the masks are known."""
        parts = [t for t in (batch.images, batch.synthetic_images) if t is not None]
        images = torch.cat(parts) if len(parts) > 1 else parts[0]
        with autocast_for(images.device):
            output = self.net.forward_all(normalize_batch(images, NORMALIZATION))
        split = 0 if batch.images is None else len(batch.images)
        loss = torch.zeros((), device=images.device)
        if batch.labels is not None:
            loss = loss + F.binary_cross_entropy_with_logits(output.logit[:split].float(), batch.labels.float())
            if self.mask_weight and output.mask_logits is not None and batch.masks is not None:
                loss = loss + self.mask_weight * mask_loss(output.mask_logits[:split], batch.masks, batch.mask_known)
        if batch.synthetic_labels is not None:
            if output.synthetic_logit is None:
                raise DeepShieldError("synthetic-face samples given to a network without a synthetic head")
            loss = loss + F.binary_cross_entropy_with_logits(
                output.synthetic_logit[split:].float(), batch.synthetic_labels.float()
            )
        return loss

    def __call__(self, batch: Batch) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(batch)
        loss.backward()
        if self.kind == "sam":
            params = [p for p in self.net.parameters() if p.grad is not None]
            norm = torch.norm(torch.stack([grad.norm(2) for p in params if (grad := p.grad) is not None]), 2)
            with torch.no_grad():
                moves = [p.grad * (self.rho / (norm + 1e-12)) for p in params]
                for p, move in zip(params, moves):
                    p.add_(move)
            self.optimizer.zero_grad(set_to_none=True)
            self._loss(batch).backward()
            with torch.no_grad():
                for p, move in zip(params, moves):
                    p.sub_(move)
        self.optimizer.step()
        return loss.item()
