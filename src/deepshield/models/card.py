"""The model bundle's layout and its card: everything needed to use model.onnx correctly, stored
beside it as JSON. Torch-free: the serving side imports this."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel, Field

from deepshield.faces.crop import CropPolicy

BUNDLE_FORMAT = 1
ONNX_FILE = "model.onnx"
CARD_FILE = "model_card.json"


class Normalization(BaseModel):
    # Applied inside the ONNX graph (which takes uint8 RGB NHWC), recorded here for people and ports.
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


class Calibration(BaseModel):
    temperature: float = Field(1.0, gt=0, description="probability = sigmoid(logit / temperature)")
    threshold: float = Field(0.5, ge=0, le=1, description="probability at or above which a face is labelled fake")
    fitted_on: str = "not fitted"


class TrainingInfo(BaseModel):
    data: list[str] = []
    benchmarks: list[str] = Field([], description="labelled sets that chose the epoch and threshold (never trained on)")
    command: str = ""
    config: dict = {}
    epochs: int = 0
    selected_by: str = Field("max.val_auc", description="the per-epoch metric that picked the exported epoch")
    seed: int | None = None


class ModelCard(BaseModel):
    format: int = BUNDLE_FORMAT
    name: str
    version: str
    architecture: str = Field(description="backbone name (deepshield.models.network.BACKBONES); the head is a 1x1-conv CAM")
    input_size: int
    input_format: str = "uint8 RGB, N x H x W x 3; normalisation is inside the graph"
    outputs: dict[str, str] = {
        "logit": "N: fake logit per face (uncalibrated; divide by temperature)",
        "cam": "N x h x w: class-activation map, per-location logits whose mean is the logit",
    }
    normalization: Normalization = Normalization()
    crop_policy: CropPolicy
    test_time_flip: bool = Field(False, description="a face's logit and CAM are averaged with its mirror image's")
    calibration: Calibration = Calibration()
    training: TrainingInfo = TrainingInfo()
    metrics: dict[str, float] = {}
    intended_use: str = ""
    license: str = ""
    onnx_sha256: str = ""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
