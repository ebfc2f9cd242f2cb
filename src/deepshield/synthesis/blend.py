"""Blend a source face into a target face inside a deformed mask.

Self-blending (SBI): source and target are two differently augmented copies of the same real
face, so the only evidence of manipulation is the blending itself (boundary, colour and
frequency mismatch) rather than identity cues that do not generalise across generators.
Cross-identity blending: the source is another real person's face aligned by landmarks, as in
a face swap, with its colour matched to the target (Face X-ray); optionally warped onto the target's
face mesh, so it takes the target's face shape as swap tools render it, and optionally left with a
colour seam (the self-blends' colour jitter after the colour transfer).
Part pasting: one part of another person's face (an eye, the eyes, the nose or the mouth) pasted
inside a hand-drawn-like selection, at a slightly different scale and often not colour matched, as
hand edits in a photo editor make them.
Restoration-like smoothing (optional): the source's texture is flattened by an edge-preserving
filter, as the face restorers that swap tools run (GFPGAN, CodeFormer) and face generators leave it:
skin without grain inside a face whose surroundings keep theirs.
Gradient-domain compositing (optional): the blend is a Poisson composite (seamless cloning, as DeepFaceLab's
seamless merge and a photo editor's healing brush make them), so no colour seam is left at the mask's
edge, only the texture mismatch inside it.
Source compression (optional): the source is JPEG-compressed on its own before it is blended, so the
face carries other blocking than its surroundings (and, once misaligned, off their 8 x 8 grid): the
compression inconsistency a pasted or regenerated region leaves, which splicing forensics reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from deepshield.media.codecs import jpeg_roundtrip
from deepshield.strict import JpegQualityRange, StrictModel
from deepshield.synthesis.masks import PASTE_PARTS, deform, feather, lasso_mask, region_mask


@dataclass(frozen=True)
class FaceSample:
    image: NDArray[Any]  # H x W x 3 uint8 RGB face crop
    keypoints: NDArray[Any]  # 6 x 2 detector keypoints in crop pixels
    landmarks: NDArray[Any] | None = None  # 468 x 2 face-mesh points in crop pixels, when found
    valid: NDArray[Any] | None = None  # H x W bool: pixels from inside the photo (False: crop padding); None = all


@dataclass(frozen=True)
class SynthesisResult:
    image: NDArray[Any]  # the fake, H x W x 3 uint8
    mask: NDArray[Any]  # H x W float32 in [0, 1]: how much of the source each pixel holds
    method: str  # "self_blend", "cross_blend" or "part_paste"

    def mask_levels(self) -> NDArray[np.uint8]:
        """The mask in 0-255, rounded as the blend rounds its pixels: 0 only where no pixel changed (truncated,
        a pixel the blend changed read 0)."""
        levels: NDArray[np.uint8] = np.round(self.mask * 255).astype(np.uint8)
        return levels


class SynthesisConfig(StrictModel):
    part_probability: float = Field(
        0.25, ge=0, le=1, description="chance the mask covers one facial part, not the whole face"
    )
    full_blend_probability: float = Field(
        0.5, ge=0, le=1, description="chance the mask's peak is 1 rather than a random ratio"
    )
    min_blend_ratio: float = Field(0.5, gt=0, le=1, description="lowest random peak of a mask that is not full")
    max_shift: float = Field(0.03, ge=0, description="source misalignment, fraction of the crop side")
    max_scale_change: float = Field(0.05, ge=0, description="largest source rescaling before blending (share)")
    paste_probability: float = Field(
        0.0, ge=0, le=1, description="chance a fake is one part of another face pasted on (hand-edit-like), not a blend"
    )
    smooth_probability: float = Field(
        0.0,
        ge=0,
        le=1,
        description="chance a blend's source is smoothed like a face restorer's output instead of resampled",
    )
    source_jpeg_probability: float = Field(
        0.0, ge=0, le=1, description="chance a blend's source is JPEG-compressed on its own before blending"
    )
    source_jpeg_quality: JpegQualityRange = Field(
        (30, 85), description="JPEG quality range (inclusive) of the source's own compression"
    )
    mesh_warp_probability: float = Field(
        0.0,
        ge=0,
        le=1,
        description=(
            "chance a cross blend's donor is warped onto the target's face mesh (piecewise affine) rather than "
            "aligned by a similarity: the target's face shape, as swap tools render it, with no doubled contours"
        ),
    )
    cross_colour_probability: float = Field(
        0.0,
        ge=0,
        le=1,
        description=(
            "chance a cross blend's colour-matched source also gets the self-blends' colour jitter: the "
            "residual colour seam real swaps leave, which an exact colour transfer removes"
        ),
    )
    seamless_probability: float = Field(
        0.0,
        ge=0,
        le=1,
        description=(
            "chance a blend is composited in the gradient domain (Poisson, as seamless cloning and healing "
            "brushes do) instead of alpha-blended: no colour seam, only the texture mismatch"
        ),
    )


def optional_draw(probability: float, rng: np.random.Generator) -> bool:
    """True with `probability`, for an optional step of a recipe. Nothing is drawn when the step is off,
    so a recipe without it keeps the random stream, and the samples, it had before the step existed."""
    return probability > 0 and bool(rng.random() < probability)


def _colour_jitter(image: NDArray[Any], rng: np.random.Generator) -> NDArray[Any]:
    """Each change applied with probability 1/2 and moderate strength: a colour mismatch that is
    too strong would teach the model colour alone."""
    out = image.astype(np.float32)
    if rng.random() < 0.5:
        out += rng.uniform(-15, 15, size=3)  # per-channel shift
    if rng.random() < 0.5:
        out = (out - 128) * rng.uniform(0.9, 1.1) + 128 + rng.uniform(-12, 12)  # contrast, brightness
    jittered: NDArray[np.uint8] = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        hsv = cv2.cvtColor(jittered, cv2.COLOR_RGB2HSV).astype(np.int16)
        hsv[..., 0] = (hsv[..., 0] + rng.integers(-4, 5)) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] + rng.integers(-15, 16), 0, 255)
        jittered = np.asarray(cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB), dtype=np.uint8)
    return jittered


def _frequency_jitter(image: NDArray[Any], rng: np.random.Generator) -> NDArray[Any]:
    """Make the source softer or sharper than the target: the resampling mismatch of real swaps."""
    choice = rng.integers(3)
    if choice == 0:
        height, width = image.shape[:2]
        factor = rng.uniform(0.4, 0.85)
        small = cv2.resize(
            image, (max(1, int(width * factor)), max(1, int(height * factor))), interpolation=cv2.INTER_AREA
        )
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    if choice == 1:
        return unsharp(image, rng.uniform(0.6, 1.5), rng.uniform(0.3, 1.0))
    return image


def unsharp(image: NDArray[Any], sigma: float, amount: float) -> NDArray[Any]:
    """Unsharp mask: the image plus `amount` times what a Gaussian blur of `sigma` takes away, in the
    image's own dtype (uint8 saturates; float keeps the overshoot for later steps to clip)."""
    blurred = cv2.GaussianBlur(image, (0, 0), sigma)
    return np.asarray(cv2.addWeighted(image, 1 + amount, blurred, -amount, 0), dtype=image.dtype)


def _restoration_smooth(image: NDArray[Any], rng: np.random.Generator) -> NDArray[Any]:
    """Edge-preserving smoothing: grain and fine skin texture go, edges stay (then are sometimes
    crispened), the look of a restored or generated face rather than of a resampled one."""
    smoothed = np.asarray(cv2.bilateralFilter(image, 0, rng.uniform(20, 60), rng.uniform(2.0, 5.0)), dtype=np.uint8)
    if rng.random() < 0.5:
        return unsharp(smoothed, 1.0, rng.uniform(0.2, 0.6))
    return smoothed


def _texture_jitter(image: NDArray[Any], rng: np.random.Generator, config: SynthesisConfig) -> NDArray[Any]:
    """The source's texture mismatch: restoration-like smoothing (when configured) or a resampling one,
    then its own compression (when configured). No random draw is spent on an option that is off, so
    the default recipe's fakes stay as they were."""
    if optional_draw(config.smooth_probability, rng):
        textured = _restoration_smooth(image, rng)
    else:
        textured = _frequency_jitter(image, rng)
    if optional_draw(config.source_jpeg_probability, rng):
        low, high = config.source_jpeg_quality
        return jpeg_roundtrip(textured, int(rng.integers(low, high + 1)))
    return textured


def _misalign(image: NDArray[Any], rng: np.random.Generator, config: SynthesisConfig) -> NDArray[Any]:
    height, width = image.shape[:2]
    scale = 1 + rng.uniform(-config.max_scale_change, config.max_scale_change)
    matrix = np.asarray(cv2.getRotationMatrix2D((width / 2, height / 2), 0, scale), dtype=np.float64)
    matrix[:, 2] += rng.uniform(-config.max_shift, config.max_shift, size=2) * (width, height)
    return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)


def _inside(valid: NDArray[Any] | None, margin: int) -> NDArray[Any] | float:
    """Soft map that is 0 within `margin` pixels of the crop's padding. Without it a misaligned
    source drags the black padding into the blend, and the model learns padding edges as a fake cue."""
    if valid is None or valid.all():
        return 1.0
    # Erode by 2 x margin, then blur with a kernel of radius margin: exactly 0 within margin of the padding.
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (4 * margin + 1, 4 * margin + 1))
    return feather(cv2.erode(valid.astype(np.uint8), kernel), margin / 3)


def _soft_mask(
    target: FaceSample, rng: np.random.Generator, config: SynthesisConfig, valid: NDArray[Any] | None = None
) -> NDArray[Any]:
    height, width = target.image.shape[:2]
    mask = deform(region_mask((height, width), target.landmarks, target.keypoints, rng, config.part_probability), rng)
    if rng.random() >= config.full_blend_probability:
        mask *= rng.uniform(config.min_blend_ratio, 1.0)
    margin = int(np.ceil(config.max_shift * max(height, width))) + 3
    return (mask * _inside(target.valid if valid is None else valid, margin)).astype(np.float32)


# The most a monochrome photo's (greyscale, sepia-toned) channels differ on average: those of the shared real
# faces differ by 0 to 3.2, the least colourful colour photo's by 14.
MONOCHROME_SPREAD = 4.0


def _monochrome_kept(source: NDArray[Any], target: NDArray[Any]) -> NDArray[Any]:
    """The source with the target's colour where the target is monochrome (its brightness, the target's tint
    over it): a self-blend's colour jitter, or a pasted part left unmatched, put colour into a grey photo,
    a cue no swap of one leaves. A colour target's source is returned as it is."""
    spread = target.max(axis=2).astype(np.float32) - target.min(axis=2)
    if spread.mean() > MONOCHROME_SPREAD:
        return source
    luma = cv2.cvtColor(source, cv2.COLOR_RGB2GRAY).astype(np.float32)
    tint = target.astype(np.float32) - cv2.cvtColor(target, cv2.COLOR_RGB2GRAY).astype(np.float32)[..., None]
    return np.clip(luma[..., None] + tint + 0.5, 0, 255).astype(np.uint8)


def _blend(source: NDArray[Any], target: NDArray[Any], mask: NDArray[Any]) -> NDArray[Any]:
    source = _monochrome_kept(source, target)
    alpha = mask[..., None]
    blended: NDArray[np.uint8] = np.clip(
        source.astype(np.float32) * alpha + target.astype(np.float32) * (1 - alpha) + 0.5, 0, 255
    ).astype(np.uint8)
    return blended


def _seamless(
    source: NDArray[Any], target: NDArray[Any], mask: NDArray[Any]
) -> tuple[NDArray[Any], NDArray[Any]] | None:
    """Poisson compositing: the source's gradients inside the mask's core, the target's colours on its edge,
    so a colour or brightness offset between them leaves no seam. The core is placed where it was cut
    from (OpenCV centres the source's bounding box on the point given). Returns the composite, which equals
    the target outside the core, and the core (bool); None where the core is too small to solve."""
    core = (mask >= 0.5 * mask.max()).astype(np.uint8)
    core[:2], core[-2:], core[:, :2], core[:, -2:] = 0, 0, 0, 0  # the solver needs the target's pixels around the core
    if core.sum() < 64:
        return None
    left, top, width, height = cv2.boundingRect(core)
    centre = (left + width // 2, top + height // 2)
    cloned = np.asarray(cv2.seamlessClone(source, target, core * 255, centre, cv2.NORMAL_CLONE), dtype=np.uint8)
    return cloned, core.astype(bool)


def _composite(
    source: NDArray[Any], target: NDArray[Any], mask: NDArray[Any], rng: np.random.Generator, config: SynthesisConfig
) -> tuple[NDArray[Any], NDArray[Any]]:
    """The blend itself and where it mixed: alpha blending, or (seamless_probability of the time) alpha
    blending of a Poisson composite, which equals the target outside its core, so the mask returned is the
    soft mask within the core alone (the whole soft mask marked unchanged real pixels as blended, and so
    did the soft mask over half its peak on the crop's outer 2 pixels, which the core leaves out). No
    random draw is spent when the option is off."""
    if optional_draw(config.seamless_probability, rng) and (seamless := _seamless(source, target, mask)) is not None:
        source, core = seamless
        mask = np.where(core, mask, 0).astype(mask.dtype)
    return _blend(source, target, mask), mask


def self_blend(target: FaceSample, rng: np.random.Generator, config: SynthesisConfig | None = None) -> SynthesisResult:
    """SBI: blend an augmented, slightly misaligned copy of the face back into itself (config None: the defaults)."""
    config = SynthesisConfig() if config is None else config
    source = _misalign(_texture_jitter(_colour_jitter(target.image, rng), rng, config), rng, config)
    mask = _soft_mask(target, rng, config)
    image, mask = _composite(source, target.image, mask, rng, config)
    return SynthesisResult(image=image, mask=mask, method="self_blend")


def _match_colour(source: NDArray[Any], target: NDArray[Any], region: NDArray[Any]) -> NDArray[Any]:
    """Reinhard colour transfer in Lab, statistics taken inside the blend region (where the mask is over half
    its peak: over 0.5 itself, a mask scaled by a blend ratio of 0.5 or less, or lowered near padding, had
    no inside, and the donor kept its own colour)."""
    inside = region > 0.5 * region.max()
    if inside.sum() < 16:
        return source
    src = cv2.cvtColor(source, cv2.COLOR_RGB2LAB).astype(np.float32)
    tgt = cv2.cvtColor(target, cv2.COLOR_RGB2LAB).astype(np.float32)
    src_mean, src_std = src[inside].mean(0), src[inside].std(0) + 1e-3
    tgt_mean, tgt_std = tgt[inside].mean(0), tgt[inside].std(0) + 1e-3
    matched = (src - src_mean) / src_std * tgt_std + tgt_mean
    rgb: NDArray[np.uint8] = cv2.cvtColor(np.clip(matched, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    return rgb


def _align_donor(
    donor: FaceSample, target: FaceSample, matrix: NDArray[Any], maps: tuple[NDArray[Any], NDArray[Any]] | None = None
) -> tuple[NDArray[Any], NDArray[Any] | None]:
    """The donor warped onto the target's crop (by `matrix`, or sampled at the target-to-donor `maps`), and
    the pixels that are photo (not padding) in both."""
    height, width = target.image.shape[:2]

    def warp(image: NDArray[Any], interpolation: int, border: int) -> NDArray[Any]:
        if maps is None:
            return np.asarray(cv2.warpAffine(image, matrix, (width, height), flags=interpolation, borderMode=border))
        return np.asarray(cv2.remap(image, maps[0], maps[1], interpolation, borderMode=border))

    aligned = warp(donor.image, cv2.INTER_LINEAR, cv2.BORDER_REFLECT)
    valid = target.valid
    if donor.valid is not None:
        donor_valid = warp(donor.valid.astype(np.uint8), cv2.INTER_NEAREST, cv2.BORDER_CONSTANT) > 0
        valid = donor_valid if valid is None else valid & donor_valid
    return aligned, valid


def _mesh_maps(
    donor_points: NDArray[Any], target_points: NDArray[Any], matrix: NDArray[Any], shape: tuple[int, int]
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Where each target pixel samples the donor: inside the target's face mesh, the matching point of the
    donor's triangle (a piecewise-affine warp over the Delaunay triangles of the target's landmarks);
    outside, the similarity `matrix` (donor to target). The two meet through a feather a few pixels
    inside the mesh's edge, so the warp does not tear where a blend mask crosses it."""
    height, width = shape
    target_points = target_points.astype(np.float32)
    low, high = np.floor(target_points.min(axis=0)) - 1, np.ceil(target_points.max(axis=0)) + 1
    subdivision = cv2.Subdiv2D((int(low[0]), int(low[1]), int(high[0] - low[0]) + 1, int(high[1] - low[1]) + 1))
    subdivision.insert([(float(x), float(y)) for x, y in target_points])
    index = {(float(x), float(y)): k for k, (x, y) in reversed(list(enumerate(target_points)))}
    # The triangle list holds corner coordinates; those not among the landmarks are the subdivision's outer ones.
    found = (
        [index.get((float(row[k]), float(row[k + 1]))) for k in (0, 2, 4)] for row in subdivision.getTriangleList()
    )
    triangles = [corners for corners in found if None not in corners]
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    inverse = cv2.invertAffineTransform(matrix)
    similarity = np.stack(
        [inverse[i, 0] * cols + inverse[i, 1] * rows + inverse[i, 2] for i in range(2)], axis=-1
    ).astype(np.float32)
    if not triangles:
        return similarity[..., 0], similarity[..., 1]
    corners = np.asarray(triangles)
    # Per triangle, the affine map from target to donor: [x, y, 1] @ affine = donor point.
    homogeneous = np.concatenate([target_points[corners], np.ones((*corners.shape, 1), np.float32)], axis=-1)
    affine = np.linalg.pinv(homogeneous) @ donor_points.astype(np.float32)[corners]
    label = np.full((height, width), -1, np.int32)
    for k, triangle in enumerate(target_points[corners]):
        cv2.fillConvexPoly(label, np.round(triangle).astype(np.int32), (k,))
    inside = label >= 0
    mesh = similarity.copy()
    pixels = np.stack([cols[inside], rows[inside], np.ones(int(inside.sum()), np.float32)], axis=-1)
    mesh[inside] = np.einsum("ni,nij->nj", pixels, affine[label[inside]])
    feather = cv2.GaussianBlur(cv2.erode(inside.astype(np.float32), np.ones((7, 7), np.uint8)), (0, 0), 2.0)
    maps = similarity + feather[..., None] * (mesh - similarity)
    return maps[..., 0], maps[..., 1]


def cross_blend(
    target: FaceSample, donor: FaceSample, rng: np.random.Generator, config: SynthesisConfig | None = None
) -> SynthesisResult:
    """Face-swap-like fake: the donor's face aligned onto the target by landmarks, colour-matched, blended (config None: the defaults)."""
    config = SynthesisConfig() if config is None else config
    if (
        target.landmarks is not None and donor.landmarks is not None
    ):  # the face meshes, else the 4 eye/nose/mouth keypoints
        src_points, dst_points = donor.landmarks, target.landmarks
    else:
        src_points, dst_points = donor.keypoints[:4], target.keypoints[:4]
    matrix, _ = cv2.estimateAffinePartial2D(src_points.astype(np.float32), dst_points.astype(np.float32))
    if matrix is None:
        return self_blend(target, rng, config)
    maps = None
    if (
        target.landmarks is not None
        and donor.landmarks is not None
        and optional_draw(config.mesh_warp_probability, rng)
    ):
        maps = _mesh_maps(donor.landmarks, target.landmarks, matrix, (target.image.shape[0], target.image.shape[1]))
    aligned, valid = _align_donor(donor, target, matrix, maps)
    mask = _soft_mask(target, rng, config, valid)
    source = _match_colour(aligned, target.image, mask)
    if optional_draw(config.cross_colour_probability, rng):
        source = _colour_jitter(source, rng)
    source = _texture_jitter(source, rng, config)
    image, mask = _composite(source, target.image, mask, rng, config)
    return SynthesisResult(image=image, mask=mask, method="cross_blend")


def part_paste(
    target: FaceSample, donor: FaceSample, rng: np.random.Generator, config: SynthesisConfig | None = None
) -> SynthesisResult:
    """Hand-edit-like fake: one part of the donor, aligned by that part's landmarks at up to 15% another
    scale, pasted inside a lasso or box selection; colour matched half the time, as editors often skip
    it. Without face meshes there are no parts to align: a cross blend instead (config None: the defaults)."""
    config = SynthesisConfig() if config is None else config
    if target.landmarks is None or donor.landmarks is None:
        return cross_blend(target, donor, rng, config)
    indices = list(PASTE_PARTS.values())[rng.integers(len(PASTE_PARTS))]
    dst_points = target.landmarks[indices].astype(np.float32)
    matrix, _ = cv2.estimateAffinePartial2D(donor.landmarks[indices].astype(np.float32), dst_points)
    if matrix is None:
        return cross_blend(target, donor, rng, config)
    scale = rng.uniform(0.9, 1.15)  # about the part's centre in the target
    centre = dst_points.mean(axis=0)
    matrix = scale * matrix
    matrix[:, 2] += (1 - scale) * centre
    aligned, valid = _align_donor(donor, target, matrix)
    height, width = target.image.shape[:2]
    mask = lasso_mask((height, width), dst_points, rng) * _inside(valid, 2)
    source = _match_colour(aligned, target.image, mask) if rng.random() < 0.5 else aligned
    return SynthesisResult(image=_blend(source, target.image, mask), mask=mask.astype(np.float32), method="part_paste")
