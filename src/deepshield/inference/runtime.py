"""Load a model bundle and run it with ONNX Runtime (no torch needed at serving time)."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from pydantic import ValidationError

from deepshield.cpus import usable_cpus
from deepshield.errors import BundleError
from deepshield.faces.crop import SyntheticCrops
from deepshield.forks import kept_if_inherited
from deepshield.media.files import file_sha256
from deepshield.models.card import BUNDLE_FORMAT, CARD_FILE, ONNX_FILE, SYNTHETIC_OUTPUT, Calibration, ModelCard
from deepshield.strict import explain
from deepshield.text_files import read_text, unique_keys

# The dimensions of each output the runtime reads (MANIPULATION_OUTPUTS, SYNTHETIC_OUTPUT).
OUTPUT_RANKS = {"logit": 1, "cam": 3, SYNTHETIC_OUTPUT: 1}

DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "models" / "default"


def bundle_dir(bundle: Path | str | None) -> Path:
    """The folder of a bundle as named by a caller (--model, Detector.from_bundle): None or "default" is the shipped model."""
    return DEFAULT_BUNDLE if bundle is None or bundle == "default" else Path(bundle)


def is_shipped(card: ModelCard) -> bool:
    """Whether `card` is the shipped model's (wherever its bundle was copied): the figures measured on that
    model (the cautions') are its own, not another's."""
    return card == _shipped_card(DEFAULT_BUNDLE)


@functools.cache
def _shipped_card(folder: Path) -> ModelCard | None:
    try:
        return read_card(folder)
    except BundleError:  # an installation without it: no model is the shipped one
        return None


@dataclass(frozen=True)
class FaceScores:
    logits: NDArray[Any]  # N, uncalibrated
    probabilities: NDArray[Any]  # N, calibrated P(fake)
    cams: NDArray[Any]  # N x h x w, per-location logits
    synthetic_logits: NDArray[Any] | None = None  # N, uncalibrated; None: the bundle has no synthetic score
    synthetic_probabilities: NDArray[Any] | None = None  # N, calibrated P(fully AI-generated face)


def with_synthetic_crops(
    scores: FaceScores,
    synthetic_crops: SyntheticCrops | None,
    score: Callable[[NDArray[Any]], FaceScores],
    synthetic_probability: Callable[[NDArray[Any]], NDArray[Any]],
) -> FaceScores:
    """`scores` with the synthetic-face score read from `synthetic_crops` where given: those rows' crops run
    again through `score`, their logits calibrated by `synthetic_probability`. Any scorer of a bundle (the
    ONNX one, bench_latency's torch baseline) merges them so."""
    if synthetic_crops is None or scores.synthetic_logits is None:
        return scores
    synthetic = scores.synthetic_logits.copy()
    synthetic[synthetic_crops.rows] = score(synthetic_crops.pixels).synthetic_logits
    return replace(scores, synthetic_logits=synthetic, synthetic_probabilities=synthetic_probability(synthetic))


def _with_default_band(calibration: Calibration) -> Calibration:
    # a card from before bands were fitted: the documented default
    if calibration.inconclusive:
        return calibration
    return calibration.model_copy(update={"inconclusive": calibration.band})


def _what_to_give(path: Path) -> str:
    """What a training run's outputs, named where a bundle is asked for, are instead (a first run's
    `--model runs/x` or `--model runs/x/checkpoints/best.pt` was told only that no bundle was there)."""
    if path.suffix == ".pt" and path.is_file():
        return f": a training checkpoint; make a bundle of it with `deepshield export {path} --out BUNDLE`"
    if (path / "bundle" / CARD_FILE).is_file():
        return f": a training run's folder; its bundle is {path / 'bundle'}"
    checkpoints = path / "checkpoints"
    if (checkpoints / "best.pt").is_file():
        return f": a training run's folder without a bundle; make one with `deepshield export {checkpoints / 'best.pt'} --out BUNDLE`"
    # No best.pt, which the export named whether or not there was one: no epoch chosen, or none finished.
    if epochs := sorted(checkpoints.glob("epoch_*.pt")):
        return (
            f": a training run's folder without a bundle or a chosen epoch; make one of an epoch's checkpoint with "
            f"`deepshield export {epochs[-1]} --out BUNDLE`"
        )
    if checkpoints.is_dir():
        return ": a training run's folder that has finished no epoch: continue it with its command and --resume"
    return ""


def read_card(bundle_dir: Path) -> ModelCard:
    card_path = bundle_dir / CARD_FILE
    if not bundle_dir.is_dir():
        what = "is not a directory" if bundle_dir.exists() else "does not exist"
        raise BundleError(f"model bundle {bundle_dir} {what}{_what_to_give(bundle_dir)}")
    if not card_path.is_file():
        raise BundleError(f"model bundle {bundle_dir} has no {CARD_FILE}{_what_to_give(bundle_dir)}")
    text = read_text(card_path, "model card", BundleError)
    try:
        raw = json.loads(text, object_pairs_hook=unique_keys)  # json keeps the last of a key given twice, silently
    except ValueError as exc:
        raise BundleError(f"model card {card_path} is invalid: {exc}") from exc
    # Before the card's keys are checked: a newer format's card has keys this version does not know, and was
    # refused as "invalid: unknown key preprocessing; did you mean version?", an edited card's misspelling.
    found = raw.get("format") if isinstance(raw, dict) else None
    if isinstance(found, int) and not isinstance(found, bool) and found != BUNDLE_FORMAT:
        newer = " (a newer deepshield's: upgrade deepshield to use it)" if found > BUNDLE_FORMAT else ""
        raise BundleError(f"model bundle format {found} is not supported (expected {BUNDLE_FORMAT}){newer}")
    try:
        card = ModelCard.model_validate_json(text)
    except ValidationError as exc:  # one line per problem (pydantic's own ran to four, with a web address)
        raise BundleError(f"model card {card_path} is invalid: {explain(exc, ModelCard)}") from None
    card = card.model_copy(update={"calibration": _with_default_band(card.calibration)})
    if card.synthetic is not None:
        synthetic = card.synthetic.model_copy(update={"calibration": _with_default_band(card.synthetic.calibration)})
        card = card.model_copy(update={"synthetic": synthetic})
    return card


def checked_graph(bundle_dir: Path, card: ModelCard) -> Path:
    """The bundle's ONNX file, refused when missing, when the card gives no checksum, or when it is not the
    one its card was written for. Called before a command writes anything too: a corrupt bundle is found
    before an output file is emptied."""
    onnx_path = bundle_dir / ONNX_FILE
    if not onnx_path.is_file():
        raise BundleError(f"model bundle {bundle_dir} has no {ONNX_FILE}")
    # Required: a card whose checksum was emptied turned this check off.
    if not card.onnx_sha256:
        raise BundleError(f"model card {bundle_dir / CARD_FILE} gives no onnx_sha256 to check {ONNX_FILE} against")
    if file_sha256(onnx_path) != card.onnx_sha256:
        raise BundleError(f"{onnx_path} does not match the checksum in its model card (corrupt or replaced)")
    return onnx_path


class OnnxClassifier:
    """The bundle's network on ONNX Runtime. Checks the bundle on load and refuses a broken one."""

    def __init__(self, bundle_dir: Path | str, threads: int | None = None) -> None:
        bundle_dir = Path(bundle_dir)
        self.card = read_card(bundle_dir)
        onnx_path = checked_graph(bundle_dir, self.card)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(4, usable_cpus())
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads sleep instead of spinning: the classifier shares a few cores with the
        # video decoder, MediaPipe and request threads, which spinning starves (measured on 2 busy
        # cores: 1 crop 5.0 ms instead of 5.7-11 ms, and a torch model in the same process ran
        # ~60x slower between spinning ORT calls).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._pid = os.getpid()
        try:
            self._session: ort.InferenceSession | None = ort.InferenceSession(
                str(onnx_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
            raise BundleError(f"{onnx_path} is not a loadable ONNX model: {exc}") from exc
        inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        size = self.card.input_size
        if (
            len(inputs) != 1
            or inputs[0].name != "image"
            or list(inputs[0].shape[1:]) != [size, size, 3]
            or inputs[0].type != "tensor(uint8)"  # crops are fed as uint8: another type failed every file
        ):
            raise BundleError(
                f"{onnx_path} input {[(i.name, i.shape, i.type) for i in inputs]} does not match the card's "
                f"{size}x{size}x3 uint8 'image'"
            )
        if isinstance(inputs[0].shape[0], int):  # a graph traced without a dynamic batch axis
            raise BundleError(
                f"{onnx_path} takes a batch of {inputs[0].shape[0]} faces only, where a bundle's graph takes "
                "any number (its first axis dynamic): a file with another number of faces would fail"
            )
        self.outputs = self.card.output_names()
        if outputs != self.outputs:
            raise BundleError(f"{onnx_path} outputs {outputs}, but its model card says {self.outputs}")
        # A score per face, a map per face: another shape loaded, and every file with a face failed ("only
        # length-1 arrays can be converted to Python scalars"). An output of unknown shape ([]) is let be.
        misshapen = [
            f"{o.name} {o.shape}"
            for o in self.session.get_outputs()
            if o.shape and len(o.shape) != OUTPUT_RANKS[o.name]
        ]
        if misshapen:
            raise BundleError(
                f"{onnx_path} outputs {', '.join(misshapen)}, where a model gives logit and synthetic_logit as "
                "N (a score per face) and cam as N x h x w"
            )

    @property
    def input_size(self) -> int:
        return self.card.input_size

    @property
    def has_synthetic(self) -> bool:
        return self.card.synthetic is not None

    def probability(self, logits: NDArray[Any]) -> NDArray[Any]:
        return self.card.calibration.probability(logits)

    def synthetic_probability(self, synthetic_logits: NDArray[Any]) -> NDArray[Any]:
        if self.card.synthetic is None:
            raise ValueError("this model has no synthetic-face score")
        return self.card.synthetic.calibration.probability(synthetic_logits)

    def close(self) -> None:
        """Free the ONNX Runtime session (its thread pool and weights); scoring afterwards is an error. In a
        forked child the inherited session is left unfreed: freeing it waited for ever on its thread pool,
        whose threads a fork does not copy."""
        if self._session is not None:
            kept_if_inherited(self._session, self._pid)
        self._session = None

    def __del__(self, kept: Callable[[object, int], bool] = kept_if_inherited) -> None:
        session = getattr(self, "_session", None)  # (None too where __init__ failed before making one)
        if session is not None:
            kept(session, self._pid)  # (bound now: this also runs as Python exits)

    @property
    def session(self) -> ort.InferenceSession:
        if self._session is None:
            raise RuntimeError("this classifier was closed")
        return self._session

    def _run(self, batch: NDArray[Any]) -> list[NDArray[Any]]:
        """Every output of the graph for one batch, in the card's order (one pass)."""
        outputs: list[NDArray[Any]] = self.session.run(self.outputs, {"image": batch})
        if self.card.test_time_flip:  # the mirror image's evidence too; its CAM flipped back onto the face
            mirrored = self.session.run(self.outputs, {"image": np.ascontiguousarray(batch[:, :, ::-1])})
            mirrored[1] = mirrored[1][:, :, ::-1]
            outputs = [(a + b) / 2 for a, b in zip(outputs, mirrored)]
        return outputs

    def score(
        self, crops: NDArray[Any], batch_size: int = 16, synthetic_crops: SyntheticCrops | None = None
    ) -> FaceScores:
        """crops: N x size x size x 3 uint8 RGB, cropped with the card's crop policy. `synthetic_crops`: what
        the synthetic-face score reads in place of some rows' crops (only those are run again)."""
        return with_synthetic_crops(
            self._score(crops, batch_size),
            synthetic_crops,
            lambda pixels: self._score(pixels, batch_size),
            self.synthetic_probability,
        )

    def _score(self, crops: NDArray[Any], batch_size: int) -> FaceScores:
        if crops.ndim != 4 or crops.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"expected N x {self.input_size} x {self.input_size} x 3 crops, got {crops.shape}")
        batches = [
            self._run(np.ascontiguousarray(crops[start : start + batch_size], dtype=np.uint8))
            for start in range(0, len(crops), batch_size)
        ]
        if not batches:
            empty = np.zeros((0,), np.float32)
            synthetic_empty = empty if self.has_synthetic else None
            return FaceScores(
                empty,
                empty.astype(np.float64),
                np.zeros((0, 1, 1), np.float32),
                synthetic_empty,
                None if synthetic_empty is None else empty.astype(np.float64),
            )
        logits, cams, *rest = (np.concatenate(parts) for parts in zip(*batches))
        synthetic = rest[0] if rest else None
        if not np.isfinite(logits).all() or (synthetic is not None and not np.isfinite(synthetic).all()):
            # A fault of the model, not of the file; downstream a NaN score reads as "no face".
            raise RuntimeError(f"the model {self.card.name} {self.card.version} gave a score that is not a number")
        return FaceScores(
            logits,
            self.probability(logits),
            cams,
            synthetic,
            None if synthetic is None else self.synthetic_probability(synthetic),
        )
