"""Checkpoints: written atomically, holding everything needed to continue exactly where a run stopped."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import torch

from deepshield.data.layout import atomic_file
from deepshield.errors import DeepShieldError, storage_failed

LAST, BEST = "last.pt", "best.pt"
_NOT_A_CHECKPOINT = (
    pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError, ImportError, TypeError,
    KeyError, IndexError,
)  # fmt: skip


def epoch_file(epoch: int) -> str:
    """The checkpoint of the 0-based `epoch`, as it stood when that epoch was scored."""
    return f"epoch_{epoch + 1:03d}.pt"


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Written whole or not at all (atomic_file): a kill or a full disk during the write leaves the previous
    checkpoint intact, and no partial one beside it. A folder that is a file, or that cannot be written in, is
    one line naming it (it was a traceback: "File exists")."""
    try:
        with atomic_file(path, clear_left=True) as handle:
            try:
                torch.save(state, handle)
            except RuntimeError as exc:  # torch's word for a write that failed; the OSError behind it says why
                if isinstance(exc.__context__, OSError):
                    raise exc.__context__ from None
                raise
    except OSError as exc:
        if storage_failed(exc):  # said as every full disk is (errors.exit_status), naming the file
            raise
        folder = Path(path).parent
        why = f"{folder} is a file, not a folder" if folder.exists() and not folder.is_dir() else exc.strerror or exc
        raise DeepShieldError(f"cannot write the checkpoint {path}: {why}") from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not Path(path).is_file():
        raise DeepShieldError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except _NOT_A_CHECKPOINT as exc:  # what torch.load's unpickler or zip reader meets in another file
        raise DeepShieldError(f"{path} is not a training checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise DeepShieldError(f"{path} is not a training checkpoint (it holds a {type(state).__name__})")
    return state


def weights_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """A hash of a state dict's names and values: which weights a run started from, checked at resume."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
