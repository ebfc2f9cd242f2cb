"""Decode any still image we accept into an upright RGB uint8 array."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from deepshield.errors import CorruptMediaError, MediaTooLargeError, UnsupportedMediaError
from deepshield.media.sniff import image_format_name, unsupported_message

# What Pillow raises on damaged data, besides its documented OSError / SyntaxError: its parsers index,
# unpack and divide straight from header fields.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError, KeyError, ZeroDivisionError, zlib.error)


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 40_000_000


def _megabytes(count: float) -> str:
    return f"{count / 1e6:.3g} MB"


def _read_bytes(source: Path | str | bytes, limits: ImageLimits) -> bytes:
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise MediaTooLargeError(f"image file is {_megabytes(size)}, above the {_megabytes(limits.max_bytes)} limit")
        data = path.read_bytes()
    if len(data) > limits.max_bytes:
        raise MediaTooLargeError(f"image file is {_megabytes(len(data))}, above the {_megabytes(limits.max_bytes)} limit")
    if not data:
        raise UnsupportedMediaError("empty file: expected an image")
    return data


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert every Pillow mode we can meet to 8-bit RGB."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit / 32-bit greyscale: rescale to the value range its bit depth implies.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        if mode == "F":
            top = max(float(values.max(initial=1.0)), 1.0)
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Transparent pixels have arbitrary colours underneath: show them on white, as viewers do.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def load_image(source: Path | str | bytes, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Return an upright (EXIF-rotated) H x W x 3 uint8 RGB array.

    Animated images give their first frame. Raises MediaTooLargeError above the byte or pixel
    limit (checked from the header, before any pixel is decoded), UnsupportedMediaError for
    non-images and CorruptMediaError for truncated or broken files.
    """
    data = _read_bytes(source, limits)
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb warning is superseded by our explicit pixel limit below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise MediaTooLargeError(f"image is a decompression bomb: {exc}") from exc
    except (UnidentifiedImageError, *_DECODE_ERRORS) as exc:
        # Pillow reports a damaged header of a format it knows as "cannot identify": tell those apart
        # by the magic bytes, so that a broken JPEG is not called an unsupported type.
        claimed = image_format_name(data)
        if claimed is not None:
            raise CorruptMediaError(f"corrupt image: the file starts like a {claimed} but its header cannot be read") from exc
        raise UnsupportedMediaError(unsupported_message(data, expected="an image")) from exc
    width, height = image.size
    if width * height > limits.max_pixels:
        raise MediaTooLargeError(
            f"image is {width}x{height} = {width * height / 1e6:.3g} megapixels, "
            f"above the {limits.max_pixels / 1e6:.3g} megapixel limit"
        )
    if width == 0 or height == 0:
        raise CorruptMediaError("image has zero width or height")
    try:
        image.seek(0)
        image.load()
        image = ImageOps.exif_transpose(image)
        return np.ascontiguousarray(_to_rgb_array(image))
    except Image.DecompressionBombError as exc:  # a later frame or tile can still be oversized
        raise MediaTooLargeError(f"image is a decompression bomb: {exc}") from exc
    except _DECODE_ERRORS as exc:
        raise CorruptMediaError(f"corrupt or truncated image: {exc}") from exc
