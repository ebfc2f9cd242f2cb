"""Decode any still image we accept into an upright RGB uint8 array, within a memory budget."""

from __future__ import annotations

import hashlib
import io
import math
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageCms, PngImagePlugin, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile
from PIL.MpoImagePlugin import MpoImageFile
from pillow_heif import HeifImageFile, open_heif, register_heif_opener

from deepshield.errors import CorruptMediaError, MediaTooLargeError, UnsupportedMediaError
from deepshield.media.files import check_media_file
from deepshield.media.scaling import REDUCED_SCALES, first_scale, reduced_size
from deepshield.media.sniff import image_format_name, unsupported_message
from deepshield.media.units import format_bytes, megapixels

# HEIC/HEIF (phones' default photo format) through libheif; Pillow reads AVIF itself. Only the primary
# image is wanted: no thumbnails, depth maps or auxiliary images are decoded. libheif applies the
# file's rotation and mirroring and resets the EXIF orientation to 1, so load_image never turns twice.
# An opener the host process registered stands, with its options (the primary image reads the same).
if HeifImageFile.format not in Image.OPEN:
    register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
# Pillow refuses a PNG whose one text chunk inflates past 1 MB (its bomb guard), but an image generator's
# workflow (ComfyUI's "workflow" chunk) can be larger: such a photo was called corrupt. Each chunk may
# reach 16 MB; all of them together stay within Pillow's own 64 MB (MAX_TEXT_MEMORY).
PngImagePlugin.MAX_TEXT_CHUNK = 16 * 1024 * 1024

# zlib's run-length strategy at level 1 (lossless, like every setting): on face crops and heatmap overlays
# 1.8x faster than level 3's default strategy and 6% smaller (2.4 against 4.4 ms a 224 px crop, 2026-12-07):
# the server encodes two a face, a third of its time on a one-face photo at level 3.
PNG_OPTIONS = (cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE)


def encode_png(image_rgb: NDArray[Any]) -> bytes:
    """An RGB (or one-channel) uint8 image as PNG bytes. Written with Path.write_bytes, never cv2.imwrite,
    which crashes the process on a file name that is not UTF-8."""
    pixels = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR) if image_rgb.ndim == 3 else image_rgb
    ok, buffer = cv2.imencode(".png", pixels, list(PNG_OPTIONS))
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()


# What Pillow raises on damaged data, besides its documented OSError / SyntaxError: its parsers index,
# unpack and divide straight from header fields; libavif and libheif report failures as RuntimeError.
DECODE_ERRORS = (
    OSError,
    RuntimeError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    TypeError,
    KeyError,
    ZeroDivisionError,
    zlib.error,
)
# Pillow keeps 1-byte modes in 1 byte a pixel, 16-bit grey in 2 and every other mode in 4.
_ONE_BYTE_MODES = frozenset({"1", "L", "P"})
_HIGH_BIT_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_RGB_BYTES = 3
# Modes are converted a band of rows at a time, so that no whole-image temporary is ever made.
_BAND_PIXELS = 1 << 20
# Scale for float and 32-bit images is estimated from about this many pixels.
_SCALE_SAMPLE_SIDE = 1024


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 50_000_000  # decimal, as the README and every message say (50 MiB read "52.4 MB")
    max_pixels: int = 40_000_000  # of the pixels read
    # A JPEG's or HEIC's own size: above max_pixels it is read at 1/2, 1/4 or 1/8 scale, so that 48 to 200
    # megapixel phone photos can be read. A JPEG by its decoder's DCT scaling (the full size is never
    # decoded); a HEIC, which libheif cannot decode smaller, whole and then area-averaged, within
    # max_working_bytes (about 70 megapixels).
    max_source_pixels: int = 250_000_000
    # Decoded pixels plus the RGB result, at the peak of decode_image. Above it a JPEG is decoded at
    # 1/2, 1/4 or 1/8 scale, any other image is refused. The default fits any image under
    # max_pixels (Pillow stores at most 4 bytes a pixel, the result takes 3).
    max_working_bytes: int = 280_000_000


@dataclass(frozen=True)
class DecodedImage:
    """An upright H x W x 3 uint8 RGB image and the scale it was read at: 1 (full size), or 2, 4 or 8 for a
    JPEG or HEIC above the pixel limit (a JPEG also above the working-memory limit), read at 1/scale of its
    width and height."""

    pixels: NDArray[Any]
    scale: int = 1
    # Images the file holds (the pages of a TIFF, the frames of an animation read as a photo): the first is read.
    pages: int = 1


def _read_bytes(source: Path | str | bytes, limits: ImageLimits) -> bytes:
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        size = check_media_file(path)
        if size > limits.max_bytes:
            raise MediaTooLargeError(
                f"image file is {format_bytes(size)}, above the {format_bytes(limits.max_bytes)} limit"
            )
        data = path.read_bytes()
    if len(data) > limits.max_bytes:
        raise MediaTooLargeError(
            f"image file is {format_bytes(len(data))}, above the {format_bytes(limits.max_bytes)} limit"
        )
    if not data:
        raise UnsupportedMediaError("empty file: expected an image")
    return data


def _too_many_pixels(
    pixels: int, limits: ImageLimits, size: tuple[int, int] | None = None, reducible: bool = False
) -> MediaTooLargeError:
    """`reducible`: a JPEG or HEIC, refused only above max_source_pixels."""
    what = f"{size[0]}x{size[1]} = {megapixels(pixels)} megapixels" if size else f"{megapixels(pixels)} megapixels"
    if reducible:
        return MediaTooLargeError(
            f"image is {what}, above the {megapixels(limits.max_source_pixels)} megapixel limit for a JPEG or HEIC"
        )
    return MediaTooLargeError(
        f"image is {what}, above the {megapixels(limits.max_pixels)} megapixel limit "
        f"(a JPEG or HEIC up to {megapixels(limits.max_source_pixels)} megapixels is read at a reduced scale)"
    )


def _bomb_error(exc: Image.DecompressionBombError, limits: ImageLimits) -> MediaTooLargeError:
    """Pillow's own guard fired (far above our limit): say it in our words, with the size it found."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    if found is None:
        return MediaTooLargeError(f"image has far more pixels than the {megapixels(limits.max_pixels)} megapixel limit")
    return _too_many_pixels(int(found.group(1)), limits)


def _decoded_bytes_per_pixel(mode: str) -> int:
    return 1 if mode in _ONE_BYTE_MODES else 2 if mode.startswith("I;16") else 4


def working_bytes(size: tuple[int, int], mode: str) -> int:
    """Peak bytes decode_image needs for an image of this size and Pillow mode: decoded + RGB result
    (or two RGB copies while an EXIF rotation is applied, whichever is larger)."""
    return size[0] * size[1] * max(_decoded_bytes_per_pixel(mode) + _RGB_BYTES, 2 * _RGB_BYTES)


def _reducible(image: Image.Image) -> bool:
    return isinstance(image, (JpegImageFile, HeifImageFile))


def _check_pixels(image: Image.Image, limits: ImageLimits) -> None:
    """Refuse, from the header, an image with more pixels than can be read (a JPEG or HEIC: even reduced)."""
    pixels = image.width * image.height
    if pixels > (limits.max_source_pixels if _reducible(image) else limits.max_pixels):
        raise _too_many_pixels(pixels, limits, image.size, _reducible(image))


def _heif_reduced(data: bytes, image: Image.Image, limits: ImageLimits) -> DecodedImage:
    """A HEIC above max_pixels: decoded whole at 8 bits a channel (libheif has no reduced-scale decode; it
    applies the file's rotation), then area-averaged to the first scale under max_pixels."""
    width, height = image.size
    scale = first_scale(image.size, REDUCED_SCALES, lambda size: size[0] * size[1] <= limits.max_pixels)
    channels = 4 if "A" in image.mode else _RGB_BYTES
    needed = width * height * channels + width * height * _RGB_BYTES // 4  # the whole decode + the result
    if scale is None or needed > limits.max_working_bytes:
        raise MediaTooLargeError(
            f"image is {width}x{height} (HEIC): reading it at a reduced scale needs {format_bytes(needed)}, "
            f"above the {format_bytes(limits.max_working_bytes)} working-memory limit"
        )
    whole = np.asarray(open_heif(io.BytesIO(data), convert_hdr_to_8bit=True))
    reduced = cv2.resize(whole, reduced_size((whole.shape[1], whole.shape[0]), scale), interpolation=cv2.INTER_AREA)
    del whole
    # A greyscale HEIC decodes to one channel (cv2.resize drops it), one with alpha to two, colour to 3 or 4.
    channels = 1 if reduced.ndim == 2 else reduced.shape[2]
    if channels in (2, 4):
        reduced = on_white(Image.fromarray(reduced, "LA" if channels == 2 else "RGBA"))
    elif channels == 1:
        reduced = cv2.cvtColor(reduced.reshape(reduced.shape[:2]), cv2.COLOR_GRAY2RGB)
    return DecodedImage(np.ascontiguousarray(_in_srgb(image, np.asarray)(Image.fromarray(reduced))), scale)


def _peak_bytes(size: tuple[int, int], mode: str, held: int) -> int:
    """working_bytes, with `held` bytes (_held_coefficients) beside the decoded pixels until the decoder
    ends, before the RGB result is made."""
    return max(held + size[0] * size[1] * _decoded_bytes_per_pixel(mode), working_bytes(size, mode))


def _held_coefficients(image: Image.Image) -> int:
    """Bytes a progressive JPEG's decoder holds at any scale while it decodes: every component's DCT
    coefficients at full size, 2 bytes each, until its last scan (a 3 MB progressive JPEG of 20000x12000
    took 1.5 GB read at 1/4). 0 for any other image."""
    if not isinstance(image, JpegImageFile) or not image.info.get("progressive") or not image.layer:
        return 0
    widest = max(horizontal for _, horizontal, _, _ in image.layer)
    tallest = max(vertical for _, _, vertical, _ in image.layer)
    return sum(
        math.ceil(math.ceil(image.width * horizontal / widest) / 8)
        * math.ceil(math.ceil(image.height * vertical / tallest) / 8)
        * 64
        * 2
        for _, horizontal, vertical, _ in image.layer
    )


def _fit_budget(image: Image.Image, limits: ImageLimits) -> None:
    """Make the decode fit max_pixels and max_working_bytes: a JPEG above either is drafted to the first of
    1/2, 1/4 and 1/8 scale that fits both; any other image above them is refused."""
    width, height = image.size
    held = _held_coefficients(image)
    scale = first_scale(
        image.size,
        (1, *REDUCED_SCALES) if isinstance(image, JpegImageFile) else (1,),
        lambda size: (
            size[0] * size[1] <= limits.max_pixels and _peak_bytes(size, image.mode, held) <= limits.max_working_bytes
        ),
    )
    if scale is not None:
        if scale > 1:
            # Pillow drafts at min(width // asked, height // asked): asked the rounded-up size, an odd side
            # got the next smaller scale (a 9001x6001 JPEG was read whole, past both limits).
            image.draft(image.mode, (width // scale, height // scale))
        return
    smallest = reduced_size(image.size, REDUCED_SCALES[-1])
    if held and _peak_bytes(smallest, image.mode, held) > limits.max_working_bytes:
        raise MediaTooLargeError(
            f"image is {width}x{height}, a progressive JPEG: its decoder holds {format_bytes(held)} at any scale, "
            f"above the {format_bytes(limits.max_working_bytes)} working-memory limit (a baseline JPEG of it is read)"
        )
    if width * height > limits.max_pixels:  # a JPEG only (others were refused from the header)
        raise MediaTooLargeError(
            f"image is {width}x{height}: even at 1/{REDUCED_SCALES[-1]} scale it is above the "
            f"{megapixels(limits.max_pixels)} megapixel limit"
        )
    raise MediaTooLargeError(
        f"image is {width}x{height} ({image.mode}): decoding it needs "
        f"{format_bytes(working_bytes(image.size, image.mode))}, "
        f"above the {format_bytes(limits.max_working_bytes)} working-memory limit"
    )


def _grey_range(image: Image.Image) -> tuple[float, float]:
    """The values mapped to black and white for a 16-bit, 32-bit integer or float image.

    16-bit images span their full range. 32-bit and float images use the conventional range their
    values fit (0-255, 0-65535, 0-1 for floats); otherwise the 0.5th and 99.5th percentiles of the
    finite values, so that one inf, NaN or outlier pixel, or an offset, cannot turn the picture black."""
    if image.mode.startswith("I;16"):
        return 0.0, 65535.0
    scale = min(1.0, _SCALE_SAMPLE_SIDE / max(image.size))
    sample_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    sample = np.asarray(image.resize(sample_size, Image.Resampling.NEAREST), dtype=np.float64)
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    conventional = ((0.0, 1.0), (0.0, 255.0), (0.0, 65535.0)) if image.mode == "F" else ((0.0, 255.0), (0.0, 65535.0))
    for bottom, top in conventional:
        if low >= bottom and high <= top:
            return bottom, top
    low, high = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
    return low, high if high > low else low + 1.0


def _grey_band(low: float, high: float, transparent: int | None = None) -> Callable[[Image.Image], NDArray[Any]]:
    """`transparent`: a 16-bit grey PNG's transparent value (its tRNS chunk), shown white as 8-bit ones are."""
    gain = 255.0 / (high - low)

    def convert(band: Image.Image) -> NDArray[Any]:
        values = np.asarray(band, dtype=np.float32)
        scaled = (values - np.float32(low)) * np.float32(gain) + np.float32(0.5)
        scaled[np.isnan(scaled)] = 0.0
        if transparent is not None:
            scaled[values == transparent] = 255.0
        np.clip(scaled, 0.0, 255.0, out=scaled)
        return scaled.astype(np.uint8)[:, :, None]  # broadcast to the three channels

    return convert


def on_white(band: Image.Image) -> NDArray[Any]:
    """RGB of an image with alpha: transparent pixels have arbitrary colours underneath, shown on white as
    viewers show them (a still's, and a video's frames with alpha)."""
    rgba = band.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))


def _band_converter(image: Image.Image) -> Callable[[Image.Image], NDArray[Any]]:
    """How one band of rows of this image's mode becomes RGB uint8, in sRGB."""
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        return _in_srgb(image, _grey_band(*_grey_range(image), image.info.get("transparency")))
    # A transparent colour (a tRNS chunk) of a palette, RGB or grey PNG counts as an alpha channel does.
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        return _in_srgb(image, on_white)
    return _in_srgb(image, lambda band: np.asarray(band.convert("RGB")))


# The ICC colour spaces whose profiles are applied, as the Pillow mode a transform takes.
_PROFILE_MODES = {"RGB ": "RGB", "GRAY": "L", "CMYK": "CMYK"}
# Colours a profile must leave within one level for it to count as sRGB's (not applied): 16 levels of each
# channel, every combination; and every grey level.
_PROBE_LEVELS = np.arange(0, 256, 17, dtype=np.uint8)
_PROBES = {
    "RGB": np.stack(np.meshgrid(_PROBE_LEVELS, _PROBE_LEVELS, _PROBE_LEVELS, indexing="ij"), -1).reshape(64, 64, 3),
    "L": np.arange(256, dtype=np.uint8).reshape(16, 16),
}


def _srgb_transform(image: Image.Image) -> ImageCms.ImageCmsTransform | None:
    """The conversion of the image's embedded ICC profile to sRGB; None with no profile, one that does
    nothing an 8-bit image shows (sRGB's own, under any name), or one that cannot be read or does not fit
    the image's colours (an RGB profile on a grey image): those are ignored, as browsers ignore them."""
    icc = image.info.get("icc_profile")
    if not icc:
        return None
    try:
        family = "CMYK" if image.mode == "CMYK" else "L" if Image.getmodebase(image.mode) == "L" else "RGB"
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if _PROFILE_MODES.get(profile.profile.xcolor_space) != family:
            return None
        # sRGB's profile made for each image (0.2 ms): LittleCMS profiles are not to be shared between threads.
        transform = ImageCms.buildTransform(profile, ImageCms.createProfile("sRGB"), family, "RGB")
        if family in _PROBES:
            probe = _PROBES[family]
            shown = np.asarray(ImageCms.applyTransform(Image.fromarray(probe), transform), np.int16)
            if np.abs(shown - (probe if probe.ndim == 3 else probe[:, :, None])).max() <= 1:
                return None
    # Whatever a damaged profile raises (a colour space signature that is no ASCII: UnicodeDecodeError) is the
    # profile's, never the picture's: it failed the whole image as corrupt.
    except (OSError, ValueError, TypeError, KeyError, ImageCms.PyCMSError):
        return None
    return transform


def _in_srgb(
    image: Image.Image, convert: Callable[[Image.Image], NDArray[Any]]
) -> Callable[[Image.Image], NDArray[Any]]:
    """`convert` (a band to RGB uint8 in the file's own colours), then through the image's embedded colour
    profile into sRGB, as viewers show it: a phone's Display P3 or a camera's Adobe RGB read as sRGB came
    out less saturated (an Adobe RGB photo by a fifth), a CMYK press profile's ink read by formula off-colour.
    Transparent pixels are put on white first, which the profile keeps white."""
    transform = _srgb_transform(image)
    if transform is None:
        return convert
    if transform.input_mode == "CMYK":  # from the ink itself: converted to RGB first, its profile cannot apply
        return lambda band: np.asarray(ImageCms.applyTransform(band, transform))
    if transform.input_mode == "L":
        return lambda band: np.asarray(ImageCms.applyTransform(Image.fromarray(convert(band)[:, :, 0]), transform))
    return lambda band: np.asarray(ImageCms.applyTransform(Image.fromarray(convert(band)), transform))


def to_rgb_array(image: Image.Image) -> NDArray[Any]:
    """Convert every Pillow mode we can meet to 8-bit RGB, band by band into one preallocated array."""
    width, height = image.size
    convert = _band_converter(image)
    rgb = np.empty((height, width, _RGB_BYTES), np.uint8)
    rows = max(1, _BAND_PIXELS // width)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        rgb[top:bottom] = convert(image.crop((0, top, width, bottom)))
    return rgb


# EXIF orientation -> how the stored pixels become upright (as Pillow's ImageOps.exif_transpose).
_ORIENTATIONS: dict[int, Callable[[NDArray[Any]], NDArray[Any]]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}
# Turns the width and height round.
_TRANSPOSING = frozenset({5, 6, 7, 8})


def exif_orientation(image: Image.Image) -> int:
    """The image's EXIF orientation: 1 (as stored) to 8; a damaged tag's value, shown as stored."""
    value = image.getexif().get(0x0112, 1)
    return value if isinstance(value, int) else 1


def upright(pixels: NDArray[Any], orientation: int) -> NDArray[Any]:
    """The pixels as their EXIF orientation says they are shown (as stored for 1 or a value out of range)."""
    turn = _ORIENTATIONS.get(orientation)
    return np.ascontiguousarray(turn(pixels)) if turn else pixels


def upright_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """(width, height) of the image as shown."""
    return (size[1], size[0]) if orientation in _TRANSPOSING else size


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_without_damaged_metadata(data: bytes) -> bytes | None:
    """A PNG whose ancillary chunks (text, time, colour hints: a lowercase first letter) fail their checksum,
    with those chunks dropped, as libpng and browsers show it; Pillow refused the whole file ("its header
    cannot be read"). None for anything else: not a PNG, or no such chunk (the damage is elsewhere)."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    kept, at, dropped = [data[:8]], 8, False
    while at + 12 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        end = at + 12 + length
        if end > len(data):
            break
        kind = data[at + 4 : at + 8]
        damaged = zlib.crc32(data[at + 4 : end - 4]) != int.from_bytes(data[end - 4 : end], "big")
        if damaged and kind[:1].islower():
            dropped = True
        else:
            kept.append(data[at:end])
        at = end
    return b"".join([*kept, data[at:]]) if dropped else None


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        if image_format_name(data) != "JPEG":
            raise
        # Pillow's guard (179 megapixels) would refuse a 200 megapixel phone photo that a reduced-scale
        # decode reads in a fraction of the memory: a JPEG has its own limit (max_source_pixels).
        return JpegImageFile(io.BytesIO(data))


def decode_image(source: Path | str | bytes, limits: ImageLimits = ImageLimits()) -> DecodedImage:
    """Decode an image upright (EXIF-rotated), at the largest scale the limits allow (see DecodedImage).

    Animated images give their first frame. Raises MediaTooLargeError above the byte, pixel or
    working-memory limit (checked from the header, before any pixel is decoded), UnsupportedMediaError
    for non-images and CorruptMediaError for truncated or broken files.
    """
    data = _read_bytes(source, limits)
    try:
        return _decode(data, limits)
    except CorruptMediaError as exc:
        # Pillow's word for data that ends early: other damage is not tried again.
        if ENDS_EARLY not in str(exc) or (completed := _jpeg_completed(data, limits)) is None:
            raise
        return completed


ENDS_EARLY = "the file ends early (cut off, or not completely copied)"


# Bytes a JPEG cut short before its end marker is closed with, to tell whether its image data is whole (no 0xFF:
# that would start a marker). Zeros decode as each Huffman table's first code, so they never stop a decoder
# early as a code in no table would; the two alternating patterns differ from each other in every bit, so the
# first code read past a cut differs. Measured on 1,000 cuts of five kinds of JPEG (baseline, progressive,
# optimised tables, chroma 4:4:4 to 4:1:1): none passed as whole but one between two scans of a progressive
# JPEG, which is a JPEG of fewer scans (coarser), as a browser shows it too. A progressive JPEG may also pass
# with only its last refinement bits gone (a review found 55 of 76,800 pixels off by up to 5 levels).
_PADDINGS = (bytes(512), b"\xaa" * 512, b"\x55" * 512)
_EOI = b"\xff\xd9"


def _jpeg_completed(data: bytes, limits: ImageLimits) -> DecodedImage | None:
    """A JPEG whose only damage is a missing end marker (browsers show it whole), decoded with the marker
    added; None when its image data is cut short as well. The marker is added after each padding and at
    once: whole image data decodes alike every time (the decoder reads past the padding to the marker), image
    data cut short decodes the paddings as image, each its own way."""
    # With restart markers (DRI), image data cut just before one is skipped like junk ahead of a marker, and
    # decodes alike every way: such a file stays refused.
    if not data.startswith(b"\xff\xd8\xff") or data.endswith(_EOI) or b"\xff\xdd" in data:
        return None
    # A last 0xFF is a marker's first byte (the end marker's, half there): image data never ends with one.
    body = data.removesuffix(b"\xff")

    def digest(padding: bytes, within: ImageLimits) -> bytes:
        return _pixels_digest(_decode(body + padding + _EOI, within))

    try:
        # Most cuts show in a small decode already (each block's mean is in its first bits): a file cut
        # short, the common case, costs two small decodes, not four whole ones (1.5 s for 40 megapixels).
        quick = replace(limits, max_pixels=min(limits.max_pixels, _QUICK_PIXELS))
        small = _decode(body + _EOI, quick)
        if digest(_PADDINGS[0], quick) != _pixels_digest(small):
            return None
        if small.scale == 1:  # the small decode was the whole picture, its first padding checked
            expected = _pixels_digest(small)
            return None if any(digest(padding, limits) != expected for padding in _PADDINGS[1:]) else small
        del small  # then whole, one picture held at a time (the working-memory limit holds for each)
        expected = digest(_PADDINGS[0], limits)
        if any(digest(padding, limits) != expected for padding in _PADDINGS[1:]):  # the first that differs ends it
            return None
        closed = _decode(body + _EOI, limits)
        return closed if _pixels_digest(closed) == expected else None
    except (CorruptMediaError, MediaTooLargeError, UnsupportedMediaError):
        return None


# The quick check's decode: a 250-megapixel JPEG at 1/8 scale fits, and a 12-megapixel one reads at 1/2.
_QUICK_PIXELS = 4_000_000


def _pixels_digest(image: DecodedImage) -> bytes:
    return hashlib.sha256(image.pixels.tobytes()).digest()


def _decode(data: bytes, limits: ImageLimits) -> DecodedImage:
    try:
        try:
            image = _open(data)
        except (UnidentifiedImageError, *DECODE_ERRORS):
            if (repaired := png_without_damaged_metadata(data)) is None:
                raise
            image = _open(repaired)
    except Image.DecompressionBombError as exc:
        raise _bomb_error(exc, limits) from exc
    except (UnidentifiedImageError, *DECODE_ERRORS) as exc:
        # Pillow reports a damaged header of a format it knows as "cannot identify": tell those apart
        # by the magic bytes, so that a broken JPEG is not called an unsupported type.
        claimed = image_format_name(data)
        if claimed is not None:
            raise CorruptMediaError(
                f"corrupt image: the file starts like a {claimed} but its header cannot be read"
            ) from exc
        raise UnsupportedMediaError(unsupported_message(data, expected="an image")) from exc
    _check_pixels(image, limits)
    if image.width == 0 or image.height == 0:
        raise CorruptMediaError("image has zero width or height")
    try:
        if isinstance(image, HeifImageFile) and image.width * image.height > limits.max_pixels:
            return _heif_reduced(data, image, limits)
        # A phone JPEG's second image (an HDR gain map, a depth map, a preview: Pillow opens it as MPO) is
        # no picture of its own: counted as a page, ordinary phone photos said one was left out.
        pages = 1 if isinstance(image, MpoImageFile) else shown_frames(image)
        image.seek(first_shown_frame(image))
        full_width = image.width
        _fit_budget(image, limits)
        image.load()
        scale = round(full_width / image.width)
        orientation = exif_orientation(image)
        rgb = to_rgb_array(image)
    except Image.DecompressionBombError as exc:  # a later frame or tile can still be oversized
        raise _bomb_error(exc, limits) from exc
    except DECODE_ERRORS as exc:
        # Pillow's "image file is truncated (47 bytes not processed)" of a file missing most of its bytes
        # counts its buffer, not what is gone: said in words instead.
        said = ENDS_EARLY if str(exc).startswith("image file is truncated") else str(exc)
        raise CorruptMediaError(f"corrupt or truncated image: {said}") from exc
    del image  # the decoded pixels go before an orientation copy is made
    return DecodedImage(upright(rgb, orientation), scale, pages)


def first_shown_frame(image: Image.Image) -> int:
    """The index of the first frame a viewer shows: 1 for an APNG whose default image is no frame of its
    animation (a fallback for viewers without APNG, which Pillow counts as frame 0), else 0. Read as a
    frame, a file showing one still picture was a two-frame video, and its hidden image analysed."""
    return 1 if image.format == "PNG" and image.info.get("default_image") else 0


def shown_frames(image: Image.Image) -> int:
    """How many frames a viewer shows of the image (1 for a still)."""
    return int(getattr(image, "n_frames", 1)) - first_shown_frame(image)


def load_image(source: Path | str | bytes, limits: ImageLimits = ImageLimits()) -> NDArray[Any]:
    """decode_image's pixels, for callers that need not say at what scale they were read."""
    return decode_image(source, limits).pixels
