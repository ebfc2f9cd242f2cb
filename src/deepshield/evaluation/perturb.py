"""Perturbations a photo or video meets on its way through social networks, as typed objects.

Parsed from the command line's syntax, one argument per kind with comma-separated values::

    jpeg:90,70,50   re-encode as JPEG at quality 90, then 70, then 50 (three perturbations)
    h264:23,35      re-encode with H.264 at CRF 23, then 35 (as the second frame of a two-frame clip)
    resize:0.5      shrink to half width and height (area averaging), then back up (bilinear)
    blur:1.5        Gaussian blur with sigma 1.5 pixels
    noise:5         additive Gaussian noise, standard deviation 5 grey levels (of 255), clipped
    smooth:4        a beauty filter: edge-preserving (bilateral) smoothing, spatial sigma 4 pixels (within
                    1.5 sigma, 6 px), colour sigma 40 on the three channels' differences summed (a grey step of
                    13 levels is one sigma, one of 40 kept whole), as portrait apps and phone beauty modes smooth skin
    sharpen:1       a phone camera's sharpening: unsharp mask of amount 1 (the detail a 1.5 px Gaussian
                    blur removes, added back once more), which draws halos along every edge
    palette:256     an animated GIF's frame: an adaptive palette of that many colours (median cut), dithered
                    (Floyd-Steinberg), as GIF encoders and meme makers store a still or a clip
    cut:0.6         keep the centre, 0.6 of the width and height: a portrait cut close to the face (a profile
                    picture, a thumbnail), so that the face's crop runs past the picture's edge into padding

Each is applied to the full frame before face detection, the way a platform re-encodes the whole
upload. Video frames are perturbed one by one (an H.264 or JPEG round trip of each frame stands in for
re-encoding the whole video). Noise is seeded by the file's path, the frame and the perturbation (not by their places in a listing or in --perturb), so a rerun gives the same pixels.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

from deepshield.errors import DeepShieldError
from deepshield.media.codecs import h264_roundtrip, jpeg_roundtrip
from deepshield.synthesis.blend import unsharp

SYNTAX = "KIND:VALUE[,VALUE...] with KIND one of jpeg (quality 1-100), h264 (CRF 0-51), resize (factor in (0, 1)), blur (sigma in (0, 50] px), noise (std in (0, 128] grey levels), smooth (sigma in (0, 20] px), sharpen (amount in (0, 5]), palette (colours 2-256), cut (share in (0, 1))"


class PerturbationError(DeepShieldError):
    """A --perturb spec that cannot be parsed."""


class Perturbation(ABC):
    kind: str

    @property
    @abstractmethod
    def value(self) -> float: ...

    @property
    def name(self) -> str:
        # 15 digits, not :g's 6: resize:0.1234564 was named and refused as resize:0.123456 "given twice" beside
        # resize:0.1234565, and synthetic.downscale_check 0.9999999 was applied by that name, as resize:1.
        return f"{self.kind}:{self.value:.15g}"

    @abstractmethod
    def apply(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """H x W x 3 uint8 RGB in, same dtype out (never modified in place); same shape, except a cut's."""

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Jpeg(Perturbation):
    quality: int
    kind = "jpeg"

    def __post_init__(self) -> None:
        if not 1 <= self.quality <= 100:
            raise PerturbationError(f"jpeg quality must be an integer from 1 to 100, got {self.quality}")

    @property
    def value(self) -> float:
        return self.quality

    def apply(self, image, rng=None):
        return jpeg_roundtrip(image, self.quality)


@dataclass(frozen=True)
class H264(Perturbation):
    crf: int
    kind = "h264"

    def __post_init__(self) -> None:
        if not 0 <= self.crf <= 51:
            raise PerturbationError(f"h264 CRF must be an integer from 0 to 51, got {self.crf}")

    @property
    def value(self) -> float:
        return self.crf

    def apply(self, image, rng=None):
        # A 2-pixel pan from the first frame: the frame is coded by inter prediction, as most video frames are.
        return h264_roundtrip(image, self.crf, (2, 2))


@dataclass(frozen=True)
class Resize(Perturbation):
    factor: float
    kind = "resize"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.factor) and 0 < self.factor < 1):
            raise PerturbationError(f"resize factor must be between 0 and 1 (exclusive), got {self.factor:.15g}")

    @property
    def value(self) -> float:
        return self.factor

    def apply(self, image, rng=None):
        height, width = image.shape[:2]
        small = (max(1, round(width * self.factor)), max(1, round(height * self.factor)))
        shrunk = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
        return cv2.resize(shrunk, (width, height), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class Blur(Perturbation):
    sigma: float
    kind = "blur"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sigma) and 0 < self.sigma <= 50):
            raise PerturbationError(f"blur sigma must be above 0 and at most 50 pixels, got {self.sigma:.15g}")

    @property
    def value(self) -> float:
        return self.sigma

    def apply(self, image, rng=None):
        return cv2.GaussianBlur(image, (0, 0), sigmaX=self.sigma, sigmaY=self.sigma, borderType=cv2.BORDER_REFLECT_101)


@dataclass(frozen=True)
class Noise(Perturbation):
    std: float
    kind = "noise"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.std) and 0 < self.std <= 128):
            raise PerturbationError(f"noise std must be above 0 and at most 128 grey levels, got {self.std:.15g}")

    @property
    def value(self) -> float:
        return self.std

    def apply(self, image, rng=None):
        rng = rng if rng is not None else np.random.default_rng(0)
        noisy = image.astype(np.float32) + rng.normal(0.0, self.std, image.shape).astype(np.float32)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Smooth(Perturbation):
    sigma: float
    kind = "smooth"
    # How different two pixels' colours may be and still be averaged, on |dR| + |dG| + |dB| (OpenCV's
    # distance): skin's texture and grain (a few grey levels) go, the edges of eyes, lips and hair (steps of
    # 40 grey levels and more, 120 summed) stay.
    colour_sigma = 40.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sigma) and 0 < self.sigma <= 20):
            raise PerturbationError(f"smooth sigma must be above 0 and at most 20 pixels, got {self.sigma:.15g}")

    @property
    def value(self) -> float:
        return self.sigma

    def apply(self, image, rng=None):
        return cv2.bilateralFilter(np.ascontiguousarray(image), 0, self.colour_sigma, self.sigma)


@dataclass(frozen=True)
class Sharpen(Perturbation):
    amount: float
    kind = "sharpen"
    # A phone's sharpening works at the scale of a few pixels: halos of about this radius at every edge.
    sigma = 1.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.amount) and 0 < self.amount <= 5):
            raise PerturbationError(f"sharpen amount must be above 0 and at most 5, got {self.amount:.15g}")

    @property
    def value(self) -> float:
        return self.amount

    def apply(self, image, rng=None):
        return unsharp(np.ascontiguousarray(image), self.sigma, self.amount)


@dataclass(frozen=True)
class Palette(Perturbation):
    colours: int
    kind = "palette"

    def __post_init__(self) -> None:
        if not 2 <= self.colours <= 256:
            raise PerturbationError(f"palette colours must be 2 to 256 (a GIF's limit), got {self.colours}")

    @property
    def value(self) -> float:
        return self.colours

    def apply(self, image, rng=None):
        rgb = Image.fromarray(np.ascontiguousarray(image))
        # Pillow dithers only when mapping onto a given palette: choose the palette, then map onto it.
        palette = rgb.quantize(self.colours, method=Image.Quantize.MEDIANCUT)
        indexed = rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
        return np.asarray(indexed.convert("RGB"))


@dataclass(frozen=True)
class Cut(Perturbation):
    share: float
    kind = "cut"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.share) and 0 < self.share < 1):
            raise PerturbationError(f"cut share must be between 0 and 1 (exclusive), got {self.share:.15g}")

    @property
    def value(self) -> float:
        return self.share

    def apply(self, image, rng=None):
        height, width = image.shape[:2]
        kept_h, kept_w = max(1, round(height * self.share)), max(1, round(width * self.share))
        top, left = (height - kept_h) // 2, (width - kept_w) // 2
        return image[top : top + kept_h, left : left + kept_w].copy()


KINDS: dict[str, tuple[Callable[[Any], Perturbation], type]] = {
    "jpeg": (Jpeg, int),
    "h264": (H264, int),
    "resize": (Resize, float),
    "blur": (Blur, float),
    "noise": (Noise, float),
    "smooth": (Smooth, float),
    "sharpen": (Sharpen, float),
    "palette": (Palette, int),
    "cut": (Cut, float),
}


def parse_spec(spec: str) -> list[Perturbation]:
    """'jpeg:90,70' -> [Jpeg(90), Jpeg(70)]. PerturbationError with the expected syntax otherwise."""
    text = spec.strip()
    kind, sep, values = text.partition(":")
    kind = kind.strip().lower()
    if not sep:
        raise PerturbationError(f"perturbation {spec!r} has no values: expected {SYNTAX}")
    if kind not in KINDS:
        raise PerturbationError(f"unknown perturbation {kind!r} in {spec!r}: expected {SYNTAX}")
    cls, number = KINDS[kind]
    parts = [v.strip() for v in values.split(",")]
    if not parts or any(not v for v in parts):
        raise PerturbationError(f"perturbation {spec!r} has an empty value: expected {SYNTAX}")
    out = []
    for part in parts:
        try:
            parsed = number(part)
        except ValueError:
            wanted = "an integer" if number is int else "a number"
            raise PerturbationError(f"{kind} value {part!r} in {spec!r} is not {wanted}") from None
        out.append(cls(parsed))
    return out


def parse_perturbations(specs: Iterable[str]) -> list[Perturbation]:
    """Every spec parsed, in order, duplicates refused."""
    out: list[Perturbation] = []
    for spec in specs:
        for perturbation in parse_spec(spec):
            if any(p.name == perturbation.name for p in out):
                raise PerturbationError(f"perturbation {perturbation.name} is given twice")
            out.append(perturbation)
    return out
