"""Training configuration: one TOML or YAML file, overridden by `--set section.key=value` and by a
`--params` file of dotted keys (what a hyperparameter search writes)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from deepshield.dotted import set_dotted
from deepshield.errors import DeepShieldError
from deepshield.synthesis.blend import SynthesisConfig

DEFAULT_CONFIG = Path(__file__).with_name("default.toml")


class DataConfig(BaseModel):
    real_dirs: list[Path] = Field(default_factory=list, description="folders of real face images (fakes are synthesised)")
    datasets: list[Path] = Field(default_factory=list, description="prepared datasets (deepshield prepare): their train/val splits are used")
    synthesize: bool = Field(True, description="synthesise fakes from the real faces (off: only the datasets' fakes)")
    group_pattern: str | None = Field(None, description="regex on file names; its first group is the identity (others: one identity per file)")
    limit_per_folder: int | None = None
    val_fraction: float = Field(0.1, gt=0, lt=1)
    cache_dir: Path = Path(".cache/deepshield")
    cross_blend_fraction: float = Field(0.3, ge=0, le=1, description="share of fakes made by cross-identity blending (rest: self-blending)")
    loader_workers: int = Field(1, ge=0)
    bank_workers: int = Field(2, ge=1)


class ModelConfig(BaseModel):
    backbone: str = "efficientnet_lite0"
    input_size: int = 224
    crop_scale: float = 1.5
    pretrained: bool = True
    dropout: float = 0.2


class OptimConfig(BaseModel):
    epochs: int = Field(6, ge=1)
    samples_per_epoch: int = Field(12000, ge=2)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(4e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    checkpoint_every_steps: int = Field(50, ge=1, description="mid-epoch checkpoints, so a kill loses little work")


class AugmentConfig(BaseModel):
    jpeg_probability: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 100)
    rescale_probability: float = 0.3
    rescale_range: tuple[float, float] = (0.35, 0.9)
    blur_probability: float = 0.15
    noise_probability: float = 0.15
    colour_probability: float = 0.5
    flip_probability: float = 0.5
    jitter_shift: float = 0.04
    jitter_scale: float = 0.06
    jitter_rotation_deg: float = 8.0


class TrackingConfig(BaseModel):
    enabled: bool = True
    uri: str = "sqlite:///mlruns.db"
    experiment: str = "deepshield-train"
    run_name: str | None = None


class ExportConfig(BaseModel):
    select: str = "max.val_auc"
    name: str = "deepshield-effnetlite0-sbi"
    version: str = "1.0.0"
    intended_use: str = ""
    license: str = ""


class TrainConfig(BaseModel):
    seed: int = 0
    run_dir: Path = Path("runs/default")
    threads: int | None = Field(None, description="torch intra-op threads (default: all cores)")
    max_steps: int | None = Field(None, description="stop after this many optimisation steps (smoke runs)")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    augment: AugmentConfig = AugmentConfig()
    synthesis: SynthesisConfig = SynthesisConfig()
    tracking: TrackingConfig = TrackingConfig()
    export: ExportConfig = ExportConfig()


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DeepShieldError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix == ".toml":
        return tomllib.loads(text)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text) or {}
    if path.suffix == ".json":
        return json.loads(text)
    raise DeepShieldError(f"config file {path} must be .toml, .yaml or .json")


def _parse_value(text: str) -> Any:
    """CLI values: JSON when it parses (numbers, booleans, lists, null), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_config(path: Path | None = None, overrides: list[str] = (), params: Path | None = None) -> TrainConfig:
    mapping = _read_mapping(path or DEFAULT_CONFIG)
    if params is not None:
        for key, value in _read_mapping(params).items():
            set_dotted(mapping, key, value)
    for item in overrides:
        if "=" not in item:
            raise DeepShieldError(f"override {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        set_dotted(mapping, key.strip(), _parse_value(value.strip()))
    try:
        return TrainConfig.model_validate(mapping)
    except ValueError as exc:
        raise DeepShieldError(f"invalid training configuration: {exc}") from exc
