"""The training augmentations that are applied to real and fake faces alike."""

from __future__ import annotations

import cv2
import numpy as np
from skimage import data as skdata

from deepshield.training import augment
from deepshield.training.augment import degrade, retouch
from deepshield.training.config import AugmentConfig


def _face() -> np.ndarray:
    return cv2.resize(skdata.astronaut()[30:250, 140:340], (96, 96), interpolation=cv2.INTER_AREA)


def test_retouch_is_deterministic_keeps_shape_and_changes_pixels():
    face = _face()
    once, again = retouch(face, np.random.default_rng(7)), retouch(face, np.random.default_rng(7))
    assert once.shape == face.shape and once.dtype == np.uint8
    assert np.array_equal(once, again)
    assert np.abs(once.astype(int) - face).mean() > 1.0
    assert not np.array_equal(once, retouch(face, np.random.default_rng(8)))


def test_retouch_smooths_skin_like_noise_and_keeps_edges():
    """Over many draws: the noise of a flat patch is cut, a hard edge keeps most of its contrast."""
    noise = np.random.default_rng(0).normal(0, 8, (96, 96, 3))
    image = np.full((96, 96, 3), 70.0) + noise
    image[:, 48:] += 120
    image = np.clip(image, 0, 255).astype(np.uint8)
    flat_noise, edge_steps = [], []
    for seed in range(20):
        out = retouch(image, np.random.default_rng(seed)).astype(float)
        flat_noise.append(out[10:86, 5:40].std())
        edge_steps.append(out[:, 56:90].mean() - out[:, 5:40].mean())
    assert np.mean(flat_noise) < 0.7 * image[10:86, 5:40].std()
    assert np.mean(edge_steps) > 0.85 * (image[:, 56:90].mean() - image[:, 5:40].mean())


def test_retouching_off_is_never_drawn_and_on_is_part_of_degrade(monkeypatch):
    face = _face()
    calls = []
    monkeypatch.setattr(augment, "retouch", lambda image, rng: calls.append(1) or image)
    off = AugmentConfig()
    first = degrade(face, np.random.default_rng(4), off)
    assert calls == [] and np.array_equal(first, degrade(face, np.random.default_rng(4), off))
    degrade(face, np.random.default_rng(4), AugmentConfig(retouch_probability=1.0))
    assert calls == [1]


def test_a_framing_moves_the_blend_mask_with_the_face():
    """The mask is reframed by the same draw as the face, so it still covers the blended pixels."""
    face = _face()
    mask = np.zeros(face.shape[:2], np.uint8)
    mask[20:50, 30:70] = 255  # left of centre: a mirror moves it
    config = AugmentConfig(flip_probability=1.0, jitter_shift=0.1, jitter_rotation_deg=10.0)
    framing = augment.draw_framing(96, np.random.default_rng(3), config)
    assert framing.flip
    marked = face.copy()
    marked[mask > 0] = 255
    framed_face, framed_mask = framing.apply(marked), framing.apply(mask)
    assert framed_mask.shape == mask.shape and framed_mask.dtype == np.uint8
    inside = framed_mask > 250
    assert inside.sum() > 0.8 * (mask > 0).sum()
    assert (framed_face[inside] > 245).all()  # where the mask went, the marked pixels went
    assert not np.array_equal(framed_mask, mask)
    # `degrade` is this framing followed by the pixel degradations, from the same random draws.
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    framed = augment.draw_framing(96, rng_b, config).apply(face)
    np.testing.assert_array_equal(degrade(face, rng_a, config), augment.degrade_framed(framed, rng_b, config))
