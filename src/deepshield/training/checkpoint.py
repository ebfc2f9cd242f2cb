"""Checkpoints: written atomically, holding everything needed to continue exactly where a run stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

LAST, BEST = "last.pt", "best.pt"


def epoch_file(epoch: int) -> str:
    """The checkpoint of the 0-based `epoch`, as it stood when that epoch was scored."""
    return f"epoch_{epoch + 1:03d}.pt"


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # a kill during the write leaves the previous checkpoint intact


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)
