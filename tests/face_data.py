"""Small real-face image sets made from the scikit-image astronaut (no ../shared needed)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage import data as skdata


def write_real_faces(folder: Path, count: int = 8) -> Path:
    """`count` distinct views of the one real face: crops at several zooms, flips, colour casts."""
    folder.mkdir(parents=True, exist_ok=True)
    image = skdata.astronaut()
    for k in range(count):
        margin = 40 + 12 * (k % 4)
        view = image[max(0, 85 - margin) : 180 + margin, max(0, 178 - margin) : 273 + margin]
        if k % 2:
            view = view[:, ::-1]
        view = np.clip(view.astype(np.int16) + (k * 7 % 30) - 15, 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"person{k % 4}_{k}.png"), cv2.cvtColor(np.ascontiguousarray(view), cv2.COLOR_RGB2BGR))
    return folder


def write_generated_faces(folder: Path, count: int = 12) -> Path:
    """Stand-ins for a generator's faces: views of the same face as `write_real_faces`, each carrying a
    faint periodic pattern (a fingerprint only the synthetic head can learn, as GAN upsampling leaves)."""
    folder.mkdir(parents=True, exist_ok=True)
    image = skdata.astronaut()
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    pattern = (12 * np.sign(np.sin(xx * np.pi / 2) * np.sin(yy * np.pi / 2)))[..., None]
    for k in range(count):
        margin = 36 + 10 * (k % 5)
        marked = np.clip(image.astype(np.float32) + pattern + (k * 5 % 20) - 10, 0, 255).astype(np.uint8)
        view = marked[max(0, 85 - margin) : 180 + margin, max(0, 178 - margin) : 273 + margin]
        if k % 2:
            view = view[:, ::-1]
        cv2.imwrite(str(folder / f"generated_{k}.png"), cv2.cvtColor(np.ascontiguousarray(view), cv2.COLOR_RGB2BGR))
    return folder


def write_benchmark(root: Path) -> Path:
    """A folder benchmark: two real photos of the astronaut and two with a pasted, recoloured face."""
    image = skdata.astronaut()
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True)
    for k in range(2):
        real = np.clip(image.astype(np.int16) + 10 * k, 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / "real" / f"r{k}.png"), cv2.cvtColor(real, cv2.COLOR_RGB2BGR))
        fake = real.copy()
        fake[90:180, 180:270] = np.clip(
            fake[90:180, 180:270].astype(np.int16) * [1.0, 0.8, 0.7] + 20 * k, 0, 255
        ).astype(np.uint8)
        cv2.imwrite(str(root / "fake" / f"f{k}.png"), cv2.cvtColor(fake, cv2.COLOR_RGB2BGR))
    return root
