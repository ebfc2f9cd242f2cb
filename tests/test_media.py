"""Media decoding: every image mode we accept comes out upright RGB, every bad input gets its own
clear error, and videos are sampled as specified."""

from __future__ import annotations

import io
import random
import re
import struct
import threading
import time
import zlib
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile

import deepshield.media.video as video_module
from deepshield.errors import (
    CorruptMediaError,
    DeepShieldError,
    MediaTooLargeError,
    UnsupportedMediaError,
    VideoSpanError,
)
from deepshield.inference.results import AnalysedSpan
from deepshield.media import (
    ImageLimits,
    MediaKind,
    VideoLimits,
    load_image,
    probe_video,
    sample_frames,
    sniff_media_kind,
)
from deepshield.media.animation import is_animation
from deepshield.media.codecs import h264_roundtrip
from deepshield.media.frames import media_kind
from deepshield.media.images import decode_image, encode_png
from deepshield.media.sniff import HEADER_BYTES, IMAGE_FORMATS, image_format_name, sniff_path
from deepshield.media.units import clock_time, parse_clock_time, video_length
from deepshield.media.video import WHOLE_VIDEO, VideoInfo, VideoSpan, check_limits, rgb_pixels, uniform_indices
from tests.conftest import deny_listing, forked_child_exit, mux_silence, write_video


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes | None) -> bytes:
    """A PNG written by hand: IHDR, one IDAT with `rows` (filter bytes included) or none, IEND."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0))
    data = png_chunk(b"IDAT", zlib.compress(rows)) if rows is not None else b""
    return b"\x89PNG\r\n\x1a\n" + header + data + png_chunk(b"IEND", b"")


def pattern(height: int = 48, width: int = 64) -> np.ndarray:
    """Asymmetric blocks: red top-left, green top-right, blue bottom-left, white bottom-right."""
    image = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    image[:h, :w] = (255, 0, 0)
    image[:h, w:] = (0, 255, 0)
    image[h:, :w] = (0, 0, 255)
    image[h:, w:] = (255, 255, 255)
    return image


# --- sniffing --------------------------------------------------------------------------------


def test_sniff_tells_images_from_videos(astronaut, face_video):
    assert sniff_media_kind(encode(Image.fromarray(astronaut), "JPEG")[:HEADER_BYTES]) is MediaKind.IMAGE
    assert sniff_media_kind(encode(Image.fromarray(astronaut), "WEBP")[:HEADER_BYTES]) is MediaKind.IMAGE
    assert sniff_path(face_video) is MediaKind.VIDEO
    ts = bytes([0x47]) + bytes(187)
    assert sniff_media_kind(ts * 3) is MediaKind.VIDEO  # MPEG-TS: the sync byte every 188 bytes
    with pytest.raises(UnsupportedMediaError, match=r"unsupported file type: expected an image .* or a video"):
        sniff_media_kind(b"Good morning! A text file that starts with a G, like MPEG-TS\n" * 10)
    with pytest.raises(UnsupportedMediaError, match="empty file"):
        sniff_media_kind(b"")


def test_pdf_is_named_in_the_refusal():
    with pytest.raises(UnsupportedMediaError, match=r"unsupported file type \(PDF document\): expected an image"):
        load_image(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n")


# --- images: modes ---------------------------------------------------------------------------


def test_jpeg_and_png_decode_to_rgb(astronaut):
    decoded = load_image(encode(Image.fromarray(astronaut), "PNG"))
    assert decoded.dtype == np.uint8 and decoded.shape == (512, 512, 3) and decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, astronaut)
    jpeg = load_image(encode(Image.fromarray(astronaut), "JPEG", quality=95))
    assert np.abs(jpeg.astype(int) - astronaut).mean() < 3


def test_encode_png_is_lossless_and_smaller_than_the_default_strategy(astronaut):
    """Crops, heatmaps and datasets are written with zlib's run-length strategy: exact pixels back, and smaller
    than the level 3 they were written at before (it is chosen for speed). OpenCV's own defaults, which this
    compared with, are level 1 and run-length already: level 3 was no larger than them either."""
    grey = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    for image in (astronaut, grey):
        payload = encode_png(image)
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(payload))), image)
    before = cv2.imencode(".png", cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3])[1]
    assert len(encode_png(astronaut)) < len(before)


def test_path_and_bytes_give_the_same_pixels(tmp_path, astronaut):
    path = tmp_path / "a.png"
    Image.fromarray(astronaut).save(path)
    np.testing.assert_array_equal(load_image(path), load_image(path.read_bytes()))
    np.testing.assert_array_equal(load_image(str(path)), astronaut)


def test_greyscale_becomes_three_equal_channels():
    grey = np.arange(64 * 32, dtype=np.uint32).reshape(32, 64) % 256
    decoded = load_image(encode(Image.fromarray(grey.astype(np.uint8), "L"), "PNG"))
    assert decoded.shape == (32, 64, 3)
    for channel in range(3):
        np.testing.assert_array_equal(decoded[:, :, channel], grey)


def test_16_bit_greyscale_png_is_scaled_to_8_bits():
    values = np.array([[0, 257, 32896, 65535]], np.uint16).repeat(4, axis=0)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    decoded = load_image(encode(image, "PNG"))
    np.testing.assert_array_equal(decoded[0, :, 0], [0, 1, 128, 255])
    assert (decoded[..., 0] == decoded[..., 2]).all()


def test_16_bit_rgb_png_is_read():
    # Pillow cannot write 16-bit RGB, so the PNG is written by hand (big-endian samples).
    samples = np.zeros((2, 3, 3), np.uint16)
    samples[:, 0] = (65535, 0, 0)
    samples[:, 1] = (0, 32896, 0)
    samples[:, 2] = (257, 514, 65535)
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in samples)
    decoded = load_image(png(3, 2, 16, 2, rows))
    assert decoded.shape == (2, 3, 3)
    np.testing.assert_allclose(decoded[0].astype(int), [[255, 0, 0], [0, 128, 0], [1, 2, 255]], atol=1)


def test_cmyk_jpeg_comes_out_in_the_right_colours():
    rgb = pattern()
    cmyk = Image.fromarray(rgb).convert("CMYK")
    data = encode(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    decoded = load_image(data)
    assert np.abs(decoded.astype(int) - rgb)[4:20, 4:28].max() < 20  # away from block edges


def icc_profile(space: bytes, pcs: bytes, tags: dict[bytes, bytes]) -> bytes:
    """An ICC v2 profile written by hand (LittleCMS builds no Adobe RGB or CMYK one): a description and
    D50 white besides `tags`."""

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    white = s15(0.9642) + s15(1.0) + s15(0.8249)
    description = b"desc" + bytes(4) + struct.pack(">I", 5) + b"test\0" + bytes(78)
    tags = {b"desc": description, b"wtpt": b"XYZ " + bytes(4) + white, **tags}
    offset, table, body = 132 + 12 * len(tags), b"", b""
    for signature, payload in tags.items():
        table += signature + struct.pack(">II", offset + len(body), len(payload))
        body += payload + bytes(-len(payload) % 4)
    header = struct.pack(">I4sI4s4s4s", offset + len(body), b"none", 0x02100000, b"mntr", space, pcs)
    header += bytes(12) + b"acsp" + bytes(28) + white + bytes(48)
    return header + struct.pack(">I", len(tags)) + table + body


def rgb_profile(red: tuple[float, ...], green: tuple[float, ...], blue: tuple[float, ...], gamma: float) -> bytes:
    """A matrix profile: primaries' D50 XYZ, one gamma."""

    def xyz(values: tuple[float, ...]) -> bytes:
        return b"XYZ " + bytes(4) + b"".join(struct.pack(">i", round(v * 65536)) for v in values)

    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256))
    colorants = {b"rXYZ": xyz(red), b"gXYZ": xyz(green), b"bXYZ": xyz(blue)}
    return icc_profile(b"RGB ", b"XYZ ", {**colorants, b"rTRC": curve, b"gTRC": curve, b"bTRC": curve})


ADOBE_RGB = rgb_profile((0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446), 563 / 256)
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def saturation(pixels: np.ndarray) -> float:
    return float((pixels.max(axis=2).astype(int) - pixels.min(axis=2)).mean())


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "HEIF"])
def test_an_embedded_colour_profile_is_applied(astronaut, fmt):
    # A camera's Adobe RGB (or a phone's Display P3) read as if sRGB came out washed out: this face lost a
    # fifth of its saturation. Read through its profile it is as it was before it was converted.
    to_adobe = ImageCms.ImageCmsProfile(io.BytesIO(ADOBE_RGB))
    adobe = ImageCms.profileToProfile(Image.fromarray(astronaut), SRGB, to_adobe)
    data = encode(adobe, fmt, quality=95, icc_profile=ADOBE_RGB)
    decoded = load_image(data)
    assert np.abs(decoded.astype(int) - astronaut).mean() < 3
    assert saturation(decoded) > 0.97 * saturation(astronaut) > 1.15 * saturation(np.asarray(adobe))
    if fmt == "HEIF":  # above the pixel limit a HEIC is reduced by its own path: the profile too
        halved = decode_image(data, ImageLimits(max_pixels=70_000))
        assert halved.scale == 2 and saturation(halved.pixels) > 0.97 * saturation(astronaut)


def test_srgb_and_unreadable_profiles_leave_the_pixels_as_they_are():
    rgb = np.asarray(Image.fromarray(pattern()).resize((64, 48), Image.Resampling.BILINEAR, reducing_gap=None))
    damaged = ADOBE_RGB[:16] + b"\x90" + ADOBE_RGB[17:]  # its colour space no ASCII: the image was refused as corrupt
    for profile in (SRGB.tobytes(), b"not a profile" * 20, damaged):
        assert (load_image(encode(Image.fromarray(rgb), "PNG", icc_profile=profile)) == rgb).all()
    grey = rgb[:, :, 0]  # an RGB profile on a grey image fits none of its colours
    assert (load_image(encode(Image.fromarray(grey), "PNG", icc_profile=ADOBE_RGB)) == grey[:, :, None]).all()


def test_a_cmyk_jpegs_ink_is_read_through_its_profile():
    # A press profile's ink was turned into RGB by formula, as if no profile came with it: this one's paper is
    # a light grey, its full black ink a dark blue-grey, which only the profile says.
    lab = {0: (92.0, 0.0, -2.0), 15: (12.0, 2.0, -8.0)}  # corners of the CMYK cube (bits C M Y K) given here

    def corner(index: int) -> tuple[float, float, float]:
        if index in lab:
            return lab[index]
        c, m, y, k = (index >> 3) & 1, (index >> 2) & 1, (index >> 1) & 1, index & 1
        return 92.0 - 40 * k - 20 * (c + m + y), 40.0 * (m - c), 40.0 * (y - m)

    table = b"".join(
        struct.pack(">3H", round(lightness * 652.8), round((a + 128) * 256), round((b + 128) * 256))
        for lightness, a, b in map(corner, range(16))
    )
    identity = b"".join(struct.pack(">i", 65536 if row == col else 0) for row in range(3) for col in range(3))
    ramps = struct.pack(">2H", 0, 65535)
    lut = b"mft2" + bytes(4) + bytes([4, 3, 2, 0]) + identity + struct.pack(">2H", 2, 2) + ramps * 4 + table + ramps * 3
    press = icc_profile(b"CMYK", b"Lab ", {b"A2B0": lut})
    ink = Image.fromarray(pattern()).convert("CMYK")
    data = encode(ink, "JPEG", quality=95, icc_profile=press)
    decoded = load_image(data)
    from_press = ImageCms.ImageCmsProfile(io.BytesIO(press))
    expected = np.asarray(ImageCms.profileToProfile(Image.open(io.BytesIO(data)), from_press, SRGB, outputMode="RGB"))
    assert np.abs(decoded.astype(int) - expected).max() <= 1
    assert np.abs(decoded.astype(int) - load_image(encode(ink, "JPEG", quality=95))).mean() > 10


def test_transparency_is_shown_on_white():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, :4] = (255, 0, 0, 255)  # opaque red
    rgba[:, 4:] = (0, 0, 255, 0)  # fully transparent blue: shows white
    rgba[0, :4] = (255, 0, 0, 128)  # half-transparent red over white
    decoded = load_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (decoded[1:, :4] == (255, 0, 0)).all()
    assert (decoded[:, 4:] == 255).all()
    np.testing.assert_allclose(decoded[0, 0].astype(int), (255, 127, 127), atol=1)


def test_la_greyscale_with_alpha_is_shown_on_white():
    la = np.zeros((4, 4, 2), np.uint8)
    la[:, :2] = (40, 255)
    la[:, 2:] = (40, 0)
    decoded = load_image(encode(Image.fromarray(la, "LA"), "PNG"))
    assert (decoded[:, :2] == 40).all() and (decoded[:, 2:] == 255).all()


def test_palette_png_with_transparent_index_is_shown_on_white():
    image = Image.new("P", (6, 2))
    image.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    image.putdata([1, 1, 1, 0, 0, 0] * 2)
    data = encode(image, "PNG", transparency=0)
    assert "transparency" in Image.open(io.BytesIO(data)).info
    decoded = load_image(data)
    assert (decoded[:, :3] == (200, 30, 30)).all() and (decoded[:, 3:] == 255).all()


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(buffer.getvalue())).n_frames == 3
    decoded = load_image(buffer.getvalue())
    assert decoded.shape == (16, 16, 3)
    assert decoded[..., 0].min() > 200 and decoded[..., 1:].max() < 30


@pytest.mark.parametrize(("orientation", "stored_turns"), [(6, 1), (3, 2), (8, 3)])
def test_exif_orientation_is_applied(orientation, stored_turns):
    # The camera stored the upright picture turned; the EXIF orientation says how to turn it back.
    # Orientation 6 = "rotate 90 clockwise to display": the stored pixels are the upright ones
    # turned 90 counter-clockwise (np.rot90 k=1).
    upright = pattern(48, 64)
    stored = np.ascontiguousarray(np.rot90(upright, k=stored_turns))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes())
    decoded = load_image(data)
    assert decoded.shape == upright.shape
    assert np.abs(decoded.astype(int) - upright).mean() < 4


@pytest.mark.parametrize(("fmt", "name"), [("HEIF", "HEIC"), ("AVIF", "AVIF")])
def test_phone_formats_heic_and_avif_are_photos(astronaut, fmt, name):
    data = encode(Image.fromarray(astronaut), fmt, quality=90)
    assert sniff_media_kind(data[:HEADER_BYTES]) is MediaKind.IMAGE  # an 'ftyp' box, as MP4 has
    assert image_format_name(data) == name and name in IMAGE_FORMATS
    decoded = load_image(data)
    assert decoded.shape == astronaut.shape and np.abs(decoded.astype(int) - astronaut).mean() < 4
    with pytest.raises(CorruptMediaError, match="corrupt"):
        load_image(data[: len(data) // 2])


def test_avif_rotation_is_applied_and_heic_is_not_turned_twice():
    upright = pattern(48, 64)
    stored = np.ascontiguousarray(np.rot90(upright, k=1))
    exif = Image.Exif()
    exif[0x0112] = 6
    # AVIF: Pillow reads the file's rotation box back as the EXIF orientation, which load_image applies.
    decoded = load_image(encode(Image.fromarray(stored), "AVIF", quality=95, exif=exif.tobytes()))
    assert decoded.shape == upright.shape and np.abs(decoded.astype(int) - upright).mean() < 8
    # HEIC: libheif has already turned the pixels and reset the orientation; turning again would be wrong.
    heic = encode(Image.fromarray(stored), "HEIF", quality=95, exif=exif.tobytes())
    with Image.open(io.BytesIO(heic)) as shown:
        assert shown.getexif().get(0x0112, 1) == 1
        as_libheif_shows = np.asarray(shown.convert("RGB"))
    np.testing.assert_array_equal(load_image(heic), as_libheif_shows)


def test_a_heic_above_the_pixel_limit_is_read_at_a_reduced_scale_upright(astronaut):
    limits = ImageLimits(max_pixels=70_000)  # the astronaut's 512 x 512 goes to 1/2 (256 x 256)
    heic = encode(Image.fromarray(astronaut), "HEIF", quality=95)
    decoded = decode_image(heic, limits)
    assert decoded.scale == 2 and decoded.pixels.shape == (256, 256, 3) and decoded.pixels.dtype == np.uint8
    halved = cv2.resize(load_image(heic), (256, 256), interpolation=cv2.INTER_AREA)
    assert np.abs(decoded.pixels.astype(int) - halved).mean() < 1  # the full decode, area-averaged
    # Turned by its EXIF orientation (libheif applies it) and transparent (shown on white), as at full size.
    stored = np.ascontiguousarray(np.rot90(pattern(48, 64), k=1))
    exif = Image.Exif()
    exif[0x0112] = 6
    rgba = np.dstack([stored, np.full(stored.shape[:2], 255, np.uint8)])
    rgba[:10, :, 3] = 0
    turned = encode(Image.fromarray(rgba, "RGBA"), "HEIF", quality=95, exif=exif.tobytes())
    whole = load_image(turned)
    small = decode_image(turned, ImageLimits(max_pixels=1000))
    assert whole.shape == (48, 64, 3) and small.scale == 2 and small.pixels.shape == (24, 32, 3)
    assert np.abs(small.pixels.astype(int) - cv2.resize(whole, (32, 24), interpolation=cv2.INTER_AREA)).mean() < 3
    with pytest.raises(
        MediaTooLargeError,
        match=r"^image is 512x512 \(HEIC\): reading it at a reduced scale needs 983 KB, above the 500 KB working",
    ):
        decode_image(heic, ImageLimits(max_pixels=70_000, max_working_bytes=500_000))
    with pytest.raises(
        MediaTooLargeError,
        match=r"^image is 512x512 = 0\.262 megapixels, above the 0\.2 megapixel limit for a JPEG or HEIC$",
    ):
        decode_image(heic, ImageLimits(max_pixels=70_000, max_source_pixels=200_000))


# --- images: bad input -----------------------------------------------------------------------


def test_empty_file_is_refused(tmp_path):
    with pytest.raises(UnsupportedMediaError, match="empty file: expected an image"):
        load_image(b"")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(UnsupportedMediaError, match="empty file"):
        load_image(tmp_path / "empty.jpg")


def test_text_file_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"  # the name lies; the content decides
    path.write_text("these are my notes, not a picture\n")
    with pytest.raises(UnsupportedMediaError, match="unsupported file type: expected an image"):
        load_image(path)


def test_corrupt_bytes_after_a_jpeg_signature_are_corrupt_not_unsupported():
    data = b"\xff\xd8\xff\xe0" + bytes(random.Random(1).randrange(256) for _ in range(500))
    with pytest.raises(CorruptMediaError, match="corrupt image: the file starts like a JPEG"):
        load_image(data)


def test_truncated_jpeg_is_corrupt(astronaut):
    data = encode(Image.fromarray(astronaut), "JPEG")
    # In words: Pillow's "image file is truncated (47 bytes not processed)" counted its buffer, not what is gone.
    with pytest.raises(CorruptMediaError, match=r"corrupt or truncated image: the file ends early \(cut off"):
        load_image(data[: len(data) // 2])


@pytest.mark.parametrize(
    "options", [{}, {"progressive": True}, {"optimize": True, "subsampling": 0}], ids=["baseline", "progressive", "444"]
)
def test_a_jpeg_missing_only_its_end_marker_is_read_whole_and_one_cut_shorter_is_not(astronaut, options):
    # Browsers show a JPEG whose image data is whole but whose end marker (FF D9) is missing: it was refused as
    # truncated. Its pixels are those of the whole file; a byte less (the image data cut) is still refused.
    data = encode(Image.fromarray(astronaut[:200, :296]), "JPEG", quality=85, **options)
    assert data.endswith(b"\xff\xd9")
    np.testing.assert_array_equal(load_image(data[:-2]), load_image(data))
    np.testing.assert_array_equal(load_image(data[:-1]), load_image(data))
    for cut in (3 + 2, 40, 300, len(data) // 2):  # bytes of image data gone, from the last few on
        with pytest.raises(CorruptMediaError, match="corrupt or truncated image"):
            load_image(data[:-cut])


def test_a_cut_jpeg_is_refused_after_small_decodes_only(astronaut, monkeypatch):
    # The check closing a JPEG three ways decoded a cut file whole four times: 1.5 s of a worker for a 2 KB
    # upload of a 40-megapixel photo's first bytes. Small decodes tell most cuts first.
    import deepshield.media.images as images

    data = encode(Image.fromarray(astronaut), "JPEG", quality=85)
    sizes: list[int] = []
    decode = images._decode
    monkeypatch.setattr(images, "_decode", lambda data, limits: sizes.append(limits.max_pixels) or decode(data, limits))
    with pytest.raises(CorruptMediaError, match="truncated"):
        load_image(data[: len(data) // 2])
    assert sizes == [images.ImageLimits().max_pixels, images._QUICK_PIXELS, images._QUICK_PIXELS]
    # A whole one (its end marker alone gone) small enough to be read whole by the small decode: that decode is
    # the one returned, and the first padding's is not done twice (seven decodes, then five).
    sizes.clear()
    load_image(data[:-2])
    full, quick = images.ImageLimits().max_pixels, images._QUICK_PIXELS
    assert sizes == [full, quick, quick, full, full]


def test_a_jpeg_with_restart_markers_missing_its_end_marker_stays_refused(astronaut):
    # Image data cut just before a restart marker decodes alike however it is closed: not told from whole.
    data = encode(Image.fromarray(astronaut[:200, :296]), "JPEG", quality=85, restart_marker_blocks=4)
    assert b"\xff\xdd" in data
    with pytest.raises(CorruptMediaError, match="corrupt or truncated image"):
        load_image(data[:-2])


def test_a_folder_that_cannot_be_listed_stops_a_dataset_read_and_is_named(tmp_path, monkeypatch):
    # Its files were left out without a word: an evaluation whose fake/ could not be read said "all 2 files
    # are real". Refused by patching: the tests may run as root, whom chmod does not stop.
    from deepshield.data.sources import read_folders
    from deepshield.media.files import files_under

    for name in ("real/a.jpg", "fake/b.jpg"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    deny_listing(monkeypatch, tmp_path / "fake")
    said = rf"cannot read the folder {re.escape(str(tmp_path / 'fake'))} \(Permission denied\): its files would be left out"
    with pytest.raises(DeepShieldError, match=said):
        list(read_folders(tmp_path, "set"))
    left: list[Path] = []
    assert [p.name for p in files_under(tmp_path, left.append)] == ["a.jpg"] and left == [tmp_path / "fake"]


def test_truncated_png_is_corrupt(astronaut):
    data = encode(Image.fromarray(astronaut), "PNG")
    with pytest.raises(CorruptMediaError, match="corrupt or truncated image"):
        load_image(data[: len(data) // 3])


def test_a_png_whose_metadata_chunk_fails_its_checksum_is_read_as_browsers_show_it(astronaut):
    from PIL import PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_itxt("XML:com.adobe.xmp", "<x/>")
    good = encode(Image.fromarray(astronaut), "PNG", pnginfo=text)
    damaged = bytearray(good)
    damaged[good.find(b"iTXt") + 6] ^= 0xFF  # a byte of the text: its CRC no longer matches
    # Pillow refused it ("the file starts like a PNG but its header cannot be read"); libpng drops the chunk.
    assert np.array_equal(decode_image(bytes(damaged)).pixels, decode_image(good).pixels)
    broken_pixels = bytearray(good)
    broken_pixels[good.find(b"IDAT") + 6] ^= 0xFF  # a critical chunk: still refused
    with pytest.raises(CorruptMediaError):
        decode_image(bytes(broken_pixels))


def test_too_many_bytes(tmp_path, astronaut):
    data = encode(Image.fromarray(astronaut), "PNG")
    path = tmp_path / "big.png"
    path.write_bytes(data)
    limits = ImageLimits(max_bytes=100_000)
    for source in (data, path):
        with pytest.raises(MediaTooLargeError, match=r"image file is \d+ KB, above the 100 KB limit"):
            load_image(source, limits)


def test_too_many_pixels_is_refused_from_the_header():
    # 8000 x 6000 = 48 megapixels (Pillow itself would decode it), with no pixel data at all:
    # had anything tried to decode it, the error would be "truncated" instead.
    data = png(8000, 6000, 8, 2, rows=None)
    with pytest.raises(MediaTooLargeError, match=r"8000x6000 = 48 megapixels, above the 40 megapixel limit"):
        load_image(data)


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    """A real 32768 x 32768 1-bit PNG (one gigapixel, 3 GB as RGB) that compresses to ~130 kB."""
    side = 32768
    compressor = zlib.compressobj(9)
    row = bytes(1 + side // 8)
    block = row * 256
    body = b"".join(compressor.compress(block) for _ in range(side // 256)) + compressor.flush()
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


@pytest.mark.parametrize("pillow_limit", ["default", "disabled"])
def test_decompression_bomb_is_refused_without_decoding(monkeypatch, bomb_png, pillow_limit):
    assert len(bomb_png) < 5_000_000
    decoded = []
    monkeypatch.setattr(
        ImageFile.ImageFile, "load", lambda self: decoded.append(self) or pytest.fail("decoded the bomb")
    )
    if pillow_limit == "disabled":
        # Some library in the process turned Pillow's own guard off: our pixel limit still holds.
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
        match = r"32768x32768 = 1,074 megapixels, above the 40 megapixel limit"
    else:
        # Pillow's guard fires first, in Image.open: the message is still ours.
        match = r"image is 1,074 megapixels, above the 40 megapixel limit"
    started = time.perf_counter()
    with pytest.raises(MediaTooLargeError, match=match):
        load_image(bomb_png)
    assert time.perf_counter() - started < 1.0 and not decoded


def test_damaged_images_only_raise_our_errors(astronaut):
    # Truncations, byte flips and insertions in every format: whatever Pillow raises inside
    # (OSError, SyntaxError, struct.error, ...) must reach callers as a DeepShieldError.
    rng = random.Random(7)
    small = Image.fromarray(astronaut[200:264, 200:264])
    sources = [encode(small, fmt) for fmt in ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "HEIF", "AVIF")]
    sources.append(encode(small.convert("P"), "GIF"))
    for original in sources:
        for trial in range(60):
            data = bytearray(original)
            if trial % 3 == 0:
                data = data[: rng.randrange(1, len(data))]
            elif trial % 3 == 1:
                for _ in range(rng.randint(1, 8)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
            else:
                at = rng.randrange(len(data))
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
            try:
                image = load_image(bytes(data))
            except DeepShieldError:
                continue
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


# --- videos ----------------------------------------------------------------------------------


def test_uniform_indices_are_bin_centres():
    assert uniform_indices(20, 8) == [1, 3, 6, 8, 11, 13, 16, 18]
    assert uniform_indices(10, 5) == [1, 3, 5, 7, 9]
    assert uniform_indices(100, 1) == [50]
    assert uniform_indices(5, 8) == [0, 1, 2, 3, 4]
    assert uniform_indices(0, 8) == [] and uniform_indices(10, 0) == []


@pytest.fixture(scope="module")
def counting_video(tmp_path_factory) -> Path:
    """40 frames at 20 fps whose grey level tells the frame number (level = 6 x index)."""
    frames = [np.full((64, 96, 3), 6 * i, np.uint8) for i in range(40)]
    return write_video(tmp_path_factory.mktemp("video") / "count.mp4", frames, fps=20)


def frame_number(image: np.ndarray) -> int:
    return round(float(image.mean()) / 6)


def test_probe_reads_fps_count_duration(counting_video):
    info = probe_video(counting_video)
    assert (info.width, info.height, info.fps, info.frame_count) == (96, 64, 20.0, 40)
    assert info.duration_s == pytest.approx(2.0, abs=0.06)
    assert info.rotation == 0 and info.codec == "h264" and not info.has_audio


def test_a_sound_track_is_noticed_and_left_alone(tmp_path):
    frames = [np.full((64, 64, 3), 10 * i, np.uint8) for i in range(10)]
    talking = write_video(tmp_path / "talk.mp4", frames, sound=True)
    assert probe_video(talking).has_audio
    info, sampled = sample_frames(talking, 4)
    assert info.has_audio and len(sampled) == 4  # the picture is read as without sound


def test_frames_are_sampled_uniformly(counting_video):
    _info, frames = sample_frames(counting_video, 8)
    expected = uniform_indices(40, 8)
    assert expected == [2, 7, 12, 17, 22, 27, 32, 37]
    assert [f.index for f in frames] == expected
    assert [frame_number(f.image) for f in frames] == expected  # the pixels are those frames'
    assert [f.timestamp_s for f in frames] == pytest.approx([i / 20 for i in expected], abs=1e-3)
    assert all(f.image.shape == (64, 96, 3) and f.image.dtype == np.uint8 for f in frames)
    _, everything = sample_frames(counting_video, 100)
    assert [f.index for f in everything] == list(range(40))


def sound_first_video(path: Path, lead_ms: int, count: int) -> Path:
    """`count` frames at 10 fps (grey level 4 x index, modulo 60) whose first shows `lead_ms` into the file, after
    silence that starts at 0 (a camera whose picture starts after its sound)."""
    with av.open(str(path), "w") as container:
        picture = container.add_stream("libx264", rate=10)
        picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
        picture.codec_context.time_base = picture.time_base = Fraction(1, 1000)
        sound = container.add_stream("aac", rate=16000)
        for index in range(count):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 4 * (index % 60), np.uint8), format="rgb24")
            frame.pts, frame.time_base = lead_ms + 100 * index, Fraction(1, 1000)
            for packet in picture.encode(frame):
                container.mux(packet)
        for packet in picture.encode():
            container.mux(packet)
        mux_silence(container, sound, round(16 * (lead_ms + 100 * count) / 1024))
    return path


@pytest.mark.parametrize("count", [40, 200])  # decoded in one pass; reached by seeking (samples 100 frames apart)
def test_a_picture_starting_after_the_sound_is_timed_on_the_files_clock(tmp_path, count):
    # Players count from the file's start: the face of frame 20 shows at 3.5 s, and was reported at 2.0 s
    # (counted from the picture's first frame), so the person's times pointed 1.5 s early.
    path = sound_first_video(tmp_path / "late.mp4", 1500, count)
    info, sampled = sample_frames(path, 2)
    indices = uniform_indices(count, 2)
    assert [f.index for f in sampled] == indices
    assert [round(float(f.image.mean()) / 4) for f in sampled] == [i % 60 for i in indices]
    assert [f.timestamp_s for f in sampled] == pytest.approx([1.5 + i / 10 for i in indices], abs=1e-3)
    assert info.picture_start_s == pytest.approx(1.5) and info.duration_s == pytest.approx(1.5 + count / 10)
    # A span is on the same clock: 3.5 s to 4 s is frames 20 to 24, and before 1.5 s there is no picture.
    _, part = sample_frames(path, 8, span=VideoSpan(3.5, 4.0))
    assert [f.index for f in part] == [20, 21, 22, 23, 24]
    assert [f.timestamp_s for f in part] == pytest.approx([3.5, 3.6, 3.7, 3.8, 3.9], abs=1e-3)
    with pytest.raises(VideoSpanError):
        sample_frames(path, 8, span=VideoSpan(0.0, 1.0))


def test_a_video_decoded_from_its_start_is_opened_once(counting_video, monkeypatch):
    """The file was opened, its header read, closed, and opened again to decode it from the start (a video
    whose samples are close together): an open and header parse more per video, 6-30 ms on two busy cores.
    A span starting later still seeks, and its frames are those of that part."""
    opened = []
    real_open = video_module._open

    def counting_open(path, limits):
        opened.append(path)
        return real_open(path, limits)

    monkeypatch.setattr(video_module, "_open", counting_open)
    _info, frames = sample_frames(counting_video, 8)
    assert len(opened) == 1
    assert [frame_number(f.image) for f in frames] == [2, 7, 12, 17, 22, 27, 32, 37]
    _info, frames = sample_frames(counting_video, 4, span=VideoSpan(1.0, 2.0))
    assert [frame_number(f.image) for f in frames] == [f.index for f in frames] == [22, 27, 32, 37]


def test_stream_without_frame_count_is_still_sampled_uniformly(tmp_path):
    # A raw H.264 stream has no duration and no frame count: frames are thinned while decoding.
    frames = [np.full((32, 32, 3), 4 * i, np.uint8) for i in range(50)]
    path = write_video(tmp_path / "raw.h264", frames, fps=25)
    info, sampled = sample_frames(path, 5)
    assert info.frame_count == 0
    indices = [f.index for f in sampled]
    assert len(indices) == 5
    assert all(abs(got - want) <= 2 for got, want in zip(indices, uniform_indices(50, 5))), indices
    assert [round(float(f.image.mean()) / 4) for f in sampled] == indices


@pytest.mark.parametrize(("display_ccw", "quarter_turns"), [(-90, -1), (90, 1), (180, 2)])
def test_rotation_metadata_is_honoured(tmp_path, display_ccw, quarter_turns):
    # Phones store landscape frames plus a display matrix; -90 here (90 clockwise) is the common
    # portrait case, the legacy 'rotate=90' tag.
    stored = pattern(64, 96)
    path = tmp_path / "rotated.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.set_display_rotation(display_ccw)
        for _ in range(5):
            for packet in stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    expected = np.rot90(stored, k=quarter_turns)
    info, frames = sample_frames(path, 2)
    assert info.rotation == (-display_ccw) % 360
    assert probe_video(path).rotation == (-display_ccw) % 360
    assert frames[0].image.shape == expected.shape
    assert np.abs(frames[0].image.astype(int) - expected).mean() < 6
    # A frame read at a reduced scale is turned the same way.
    _info, halved = sample_frames(path, 2, VideoLimits(max_pixels_per_frame=48 * 32))
    assert halved[0].scale == 2 and halved[0].image.shape == expected[::2, ::2].shape


def test_a_matroska_rotate_tag_is_honoured_whatever_its_case(tmp_path):
    # A phone's MP4 remuxed to MKV by an FFmpeg of before display matrices in Matroska carries its 'rotate'
    # tag as Matroska writes tags, ROTATE=90: it was looked up as 'rotate' only, and the clip read sideways.
    stored = pattern(64, 96)
    tagged = tmp_path / "remuxed.mkv"
    with av.open(str(tagged), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.metadata["rotate"] = "90"
        for _ in range(5):
            for packet in stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(tagged)) as container:
        assert container.streams.video[0].metadata.get("ROTATE") == "90"
    info, frames = sample_frames(tagged, 2)
    assert info.rotation == 90 and probe_video(tagged).rotation == 90
    expected = np.rot90(stored, k=-1)  # turned 90 degrees clockwise, as the tag says
    assert frames[0].image.shape == expected.shape
    assert np.abs(frames[0].image.astype(int) - expected).mean() < 6


def test_a_reduced_reads_reason_names_the_limit_that_chose_its_scale():
    # 8K at 64 frames is read at 1/4 for the frames' memory: it was said to be for the megapixel limit, which
    # 1/2 meets, with no word on how many frames fit.
    from deepshield.media.video import VideoInfo, reduced_read_reason

    eight_k = VideoInfo(width=7680, height=4320, fps=30, frame_count=300, duration_s=10, rotation=0, codec="h264")
    four_k = VideoInfo(width=3840, height=2160, fps=30, frame_count=300, duration_s=10, rotation=0, codec="h264")
    assert reduced_read_reason(eight_k, VideoLimits(), 2) == "being above the 8.85 megapixel limit"
    assert reduced_read_reason(eight_k, VideoLimits(), 4).endswith("(40 frames or fewer are read at 1/2)")
    assert reduced_read_reason(four_k, VideoLimits(), 2).startswith("so that the frames sampled fit the 1 GB memory")
    assert reduced_read_reason(four_k, VideoLimits(), 2).endswith("(40 frames or fewer are read whole)")


def test_sampled_frames_are_not_kept_alive_by_their_side_data(tmp_path):
    # Reading every sampled frame's display matrix tied each decoded frame to PyAV's side-data container in
    # a reference cycle: their pictures stayed until a garbage collection (8K, 32 frames: 3.1 GB peak, 1.5 before).
    import gc

    path = tmp_path / "rotated.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.set_display_rotation(-90)
        for _ in range(24):
            for packet in stream.encode(av.VideoFrame.from_ndarray(pattern(64, 96), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    gc.collect()
    gc.disable()
    try:
        info, frames = sample_frames(path, 8)
        alive = sum(isinstance(thing, av.VideoFrame) for thing in gc.get_objects())
    finally:
        gc.enable()
    assert info.rotation == 90 and len(frames) == 8 and frames[0].image.shape == (96, 64, 3)
    assert alive <= 1  # the first frame, whose side data gave the file's orientation


@pytest.mark.parametrize(
    ("matrix", "shown", "rotation"),
    [
        ((-1, 0, 0, 1), lambda image: image[:, ::-1], 0),  # mirrored left to right: a front camera's recording
        ((1, 0, 0, -1), lambda image: image[::-1], 180),  # upside down mirrored: a mirror and a half turn
        ((0, 1, 1, 0), lambda image: image.transpose(1, 0, 2), 270),  # mirrored along the diagonal
    ],
)
def test_a_mirroring_display_matrix_is_shown_as_players_show_it(tmp_path, matrix, shown, rotation):
    # PyAV reads a mirror as a half turn: a mirrored recording was analysed upside down.
    stored = pattern(64, 96)
    path = write_video(tmp_path / "plain.mp4", [stored] * 5)
    data = bytearray(path.read_bytes())
    at = data.index(b"tkhd") + 44  # a version-0 track header's matrix: a b u c d v x y w
    assert struct.unpack(">9i", data[at : at + 36])[:5] == (0x10000, 0, 0, 0, 0x10000)
    a, b, c, d = (value * 0x10000 for value in matrix)
    data[at : at + 20] = struct.pack(">5i", a, b, 0, c, d)
    mirrored = tmp_path / "mirrored.mp4"
    mirrored.write_bytes(bytes(data))
    info, frames = sample_frames(mirrored, 2)
    assert (info.rotation, info.mirrored) == (rotation, True)
    expected = shown(stored)
    assert frames[0].image.shape == expected.shape
    assert np.abs(frames[0].image.astype(int) - expected).mean() < 6


@pytest.mark.parametrize(
    ("pixel_aspect", "stored", "shown"), [(Fraction(2, 1), (48, 64), (96, 64)), (Fraction(1, 2), (96, 32), (96, 64))]
)
def test_anamorphic_frames_are_stretched_to_square_pixels(tmp_path, pixel_aspect, stored, shown):
    # DV, HDV and some camera files store pixels wider (or higher) than square: a face read as stored was
    # squeezed (a 2:1 clip of a face scored 0.49 where its square-pixel twin scored 0.39).
    square = pattern(shown[1], shown[0])
    path = tmp_path / "anamorphic.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = *stored, "yuv420p"
        stream.codec_context.sample_aspect_ratio = pixel_aspect
        squeezed = cv2.resize(square, stored, interpolation=cv2.INTER_AREA)
        for _ in range(5):
            for packet in stream.encode(av.VideoFrame.from_ndarray(squeezed, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    info, frames = sample_frames(path, 2)
    assert (info.width, info.height, info.pixel_aspect, info.square_size) == (*stored, float(pixel_aspect), shown)
    assert probe_video(path).pixel_aspect == float(pixel_aspect)
    assert frames[0].image.shape == square.shape
    assert np.abs(frames[0].image.astype(int) - square).mean() < 12
    # Read at a reduced scale: the square-pixel size, halved.
    _info, halved = sample_frames(path, 2, VideoLimits(max_pixels_per_frame=shown[0] * shown[1] // 4))
    assert halved[0].scale == 2 and halved[0].image.shape == square[::2, ::2].shape


# Kr, Kb of the YUV matrices, by the number FFmpeg tags a stream with (AVCOL_SPC_*; 2: not said).
YUV_MATRICES = {"bt709": (1, 0.2126, 0.0722), "bt601": (6, 0.299, 0.114), "bt2020": (9, 0.2627, 0.0593)}


def yuv_video(
    path: Path,
    rgb: np.ndarray,
    matrix: str,
    tagged: bool,
    pix_fmt: str = "yuv444p",
    frames: int = 2,
    colour: dict[str, int] | None = None,
) -> Path:
    """Lossless H.264 (limited range; yuv420p: each chroma sample the mean of its 2 x 2 pixels) of `rgb` (uint8,
    or a float signal from 0 to 1) turned into YUV by `matrix` here, exactly; the stream names its matrix only
    if `tagged`, and `colour`'s other tags (color_trc, color_primaries)."""
    tag, kr, kb = YUV_MATRICES[matrix]
    x = rgb.astype(np.float64) / 255 if rgb.dtype == np.uint8 else rgb
    luma = kr * x[..., 0] + (1 - kr - kb) * x[..., 1] + kb * x[..., 2]
    planes = [16 + 219 * luma, 128 + 112 * (x[..., 2] - luma) / (1 - kb), 128 + 112 * (x[..., 0] - luma) / (1 - kr)]
    depth = 10 if "10" in pix_fmt else 8
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], pix_fmt
        if tagged:
            stream.codec_context.colorspace = tag
        for name, value in (colour or {}).items():
            setattr(stream.codec_context, name, value)
        for pts in range(frames):
            frame = av.VideoFrame(rgb.shape[1], rgb.shape[0], pix_fmt)
            for plane, values in zip(frame.planes, planes, strict=True):
                dtype = np.uint8 if depth == 8 else np.uint16
                rows = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // dtype().itemsize)
                sampled = cv2.resize(values, (plane.width, plane.height), interpolation=cv2.INTER_AREA)
                rows[:, : plane.width] = np.clip(np.rint(sampled * 2 ** (depth - 8)), 0, 2**depth - 1)
            frame.pts = pts
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize(
    ("size", "matrix", "tagged"),
    [
        ((1280, 720), "bt709", False),
        ((720, 1280), "bt709", False),
        ((640, 480), "bt601", False),
        ((1280, 720), "bt601", True),
        ((640, 480), "bt709", True),
    ],
)
def test_video_colours_follow_the_streams_matrix_and_players_guess_without_one(
    tmp_path, astronaut, size, matrix, tagged
):
    # A stream that names no matrix is BT.709 from HD up, BT.601 below, as players read it: untagged HD
    # (the DFDC videos, most re-encoded 1080p) was read as BT.601, reds and greens 3 levels dark.
    rgb = cv2.resize(astronaut, size, interpolation=cv2.INTER_AREA)
    _info, frames = sample_frames(yuv_video(tmp_path / "clip.mp4", rgb, matrix, tagged), 1)
    error = np.abs(frames[0].image.astype(int) - rgb).mean(axis=(0, 1))
    assert error.max() < 0.6, error


def test_4_2_0_video_is_read_without_a_colour_bias_and_with_smooth_chroma(tmp_path, astronaut):
    # swscale's quick 4:2:0 path gave each chroma sample to two pixels side by side and came out about a
    # level dark (mean error R, G, B -0.9, -1.3, -1.0 here; 10-bit -1.9, -1.4, -1.7).
    _info, frames = sample_frames(yuv_video(tmp_path / "clip.mp4", astronaut, "bt601", True, "yuv420p"), 1)
    error = frames[0].image.astype(int) - astronaut
    assert np.abs(error.mean(axis=(0, 1))).max() < 0.2, error.mean(axis=(0, 1))
    assert np.abs(error[..., 1]).mean() < 1  # green, mostly luma: 1.48 before, 0.74 now


@pytest.mark.parametrize("transfer", ["pq", "hlg"])
def test_an_hdr_video_is_tone_mapped_to_sdr_as_a_player_shows_it(tmp_path, astronaut, transfer):
    # Read as SDR, an HDR picture came out dim and grey (mean error 33 levels PQ, 19 HLG; now 1.4, 2.9).
    sdr = cv2.resize(astronaut, (64, 64), interpolation=cv2.INTER_AREA)
    bt709_to_bt2020 = np.array([[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]])
    light = ((sdr / 255) ** 2.4) @ bt709_to_bt2020.T  # as an SDR screen shows it, 1 its white
    if transfer == "pq":  # SDR white at 203 nits (ITU-R BT.2408)
        m1, m2, c1, c2, c3 = 0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875
        level = (light * 203 / 10000) ** m1
        signal, trc = ((c1 + c2 * level) / (1 + c3 * level)) ** m2, 16
    else:  # scene light, SDR white at 75% of the signal (BT.2408); the OOTF's gamma 1.2 undone
        scene = (light * 0.2647**1.2) ** (1 / 1.2)
        a, b, c = 0.17883277, 0.28466892, 0.55991073
        signal, trc = (
            np.where(scene <= 1 / 12, np.sqrt(3 * scene), a * np.log(np.maximum(12 * scene - b, 1e-9)) + c),
            18,
        )
    colour = {"color_trc": trc, "color_primaries": 9}
    path = yuv_video(tmp_path / "hdr.mp4", signal, "bt2020", True, "yuv444p10le", colour=colour)
    image = sample_frames(path, 1)[1][0].image
    assert np.abs(image.astype(int) - sdr).mean() < 4


@pytest.mark.parametrize("size", [(512, 512), (1280, 720)])
def test_an_h264_round_trip_reads_its_frame_as_a_video_files_are(astronaut, size):
    # The perturbation and training's augmentation decode as video files are read: without a colour bias
    # (before, about a level dark), and at HD by the matrix it encoded with (named: HD untagged is BT.709).
    image = cv2.resize(astronaut, size, interpolation=cv2.INTER_AREA)
    error = h264_roundtrip(image, 0, (0, 0)).astype(int) - image
    assert np.abs(error.mean(axis=(0, 1))).max() < 0.2, error.mean(axis=(0, 1))


def _convert_a_frame() -> None:
    rgb_pixels(av.VideoFrame(64, 48, "yuv420p"))


@pytest.mark.parametrize("holder", ["the forking thread", "another thread"])
def test_a_forked_child_converts_frames_after_its_parent_has(holder):
    # A thread's kept converter has swscale threads that a fork does not copy: a child forked after its parent
    # had read a frame (a training data loader's workers) hung on its first frame, or as it started where
    # another thread of the parent held a converter.
    converted, done = threading.Event(), threading.Event()

    def convert_and_wait() -> None:
        _convert_a_frame()
        converted.set()
        done.wait()

    holding = threading.Thread(target=convert_and_wait) if holder == "another thread" else None
    if holding is None:
        _convert_a_frame()
    else:
        holding.start()
        assert converted.wait(60)
    exit_code = forked_child_exit(_convert_a_frame)
    done.set()
    if holding is not None:
        holding.join()
    assert exit_code == 0  # None: it hung


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "suffix"), [("qtrle", "argb", "mov"), ("ffv1", "yuva420p", "mkv"), ("png", "rgba", "mov")]
)
def test_a_videos_transparent_pixels_are_shown_on_white_as_a_stills_are(tmp_path, astronaut, codec, pix_fmt, suffix):
    # Converted to RGB alone, a frame's transparent pixels showed the colour stored under them (red here).
    rgba = np.dstack([astronaut[:64, :64], np.full((64, 64), 255, np.uint8)])
    rgba[:, :32] = (200, 0, 0, 0)
    path = tmp_path / f"alpha.{suffix}"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, pix_fmt
        for pts in range(2):
            frame = av.VideoFrame.from_ndarray(rgba, format="rgba")
            frame.pts = pts
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    image = sample_frames(path, 1)[1][0].image
    assert (image[:, :30] == 255).all()
    assert np.abs(image[:, 34:].astype(int) - astronaut[:64, 34:64]).mean() < 3
    assert (load_image(encode(Image.fromarray(rgba), "PNG"))[:, :30] == 255).all()  # the still, alike


def test_a_video_summary_gives_the_size_face_boxes_are_in():
    from deepshield.inference.results import VideoSummary

    stored = {"width": 192, "height": 288, "fps": 25.0, "frame_count": 50, "duration_s": 2.0, "codec": "h264"}
    plain = VideoSummary(**stored, rotation=0)
    assert (plain.frame_width, plain.frame_height) == (192, 288)
    turned = VideoSummary(**stored, rotation=90, pixel_aspect=2.0, decoded_scale=2)
    assert (turned.frame_width, turned.frame_height) == (144, 192)  # 384 x 288 in square pixels, halved, turned
    assert turned.model_dump()["frame_width"] == 144


def test_broken_packets_in_the_middle_still_give_frames(tmp_path, astronaut):
    frames = [np.roll(astronaut[::2, ::2], 3 * i, axis=1) for i in range(60)]
    path = write_video(tmp_path / "good.mp4", frames, fps=30)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    middle = len(data) // 2
    data[middle : middle + 3000] = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data))
    info, sampled = sample_frames(broken, 8)
    assert info.frame_count == 60 and info.damaged
    # Frames 5 to 12 are lost: the second sample is the frame before them, held on screen. The frames after
    # the damage keep their own numbers (they lagged them by the frames lost: frame 18 said 9).
    assert [f.index for f in sampled] == [3, 4, *uniform_indices(60, 8)[2:]]
    assert [round(f.timestamp_s * 30, 6) for f in sampled] == [f.index for f in sampled]
    assert all(f.image.shape == (256, 256, 3) for f in sampled)


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "voice.mp4"
    with av.open(str(path), "w", format="mp4") as container:
        mux_silence(container, container.add_stream("aac", rate=16000), 10)
    assert sniff_path(path) is MediaKind.VIDEO
    with pytest.raises(CorruptMediaError, match="file has no video stream"):
        sample_frames(path, 8)


def with_cover(path: Path, astronaut: np.ndarray, video: bool) -> Path:
    """A file whose first stream is cover art (an attached JPEG), then sound and, if `video`, a 2 s picture."""
    with av.open(str(path), "w", format="mp4") as container:
        cover = container.add_stream("mjpeg")
        cover.width, cover.height, cover.pix_fmt = 512, 512, "yuvj420p"
        cover.codec_context.time_base = Fraction(1, 25)
        cover.disposition = av.stream.Disposition.attached_pic
        picture = container.add_stream("libx264", rate=10) if video else None
        sound = container.add_stream("aac", rate=16000)  # every stream before the first packet
        if picture is not None:
            picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
            for index in range(20):
                for packet in picture.encode(
                    av.VideoFrame.from_ndarray(pattern(48, 64) // (index + 1), format="rgb24")
                ):
                    container.mux(packet)
            for packet in picture.encode():
                container.mux(packet)
        mux_silence(container, sound, 30)
        jpeg = av.Packet(encode(Image.fromarray(astronaut), "JPEG"))
        jpeg.stream, jpeg.pts, jpeg.dts, jpeg.time_base = cover, 0, 0, Fraction(1, 90000)
        container.mux(jpeg)
    return path


def test_cover_art_is_not_the_video(tmp_path, astronaut):
    # a song or podcast with a cover is sound, not a one-frame video of the cover's face
    with pytest.raises(CorruptMediaError, match="file has no video stream"):
        sample_frames(with_cover(tmp_path / "song.m4a", astronaut, video=False), 8)
    info, sampled = sample_frames(with_cover(tmp_path / "episode.mp4", astronaut, video=True), 4)
    assert (info.width, info.height, info.codec) == (64, 48, "h264") and len(sampled) == 4


def test_header_only_truncated_and_garbage_videos_are_refused(tmp_path, face_video):
    data = face_video.read_bytes()
    cases = {
        "header.mp4": data[:32],  # just the ftyp box
        "truncated.mp4": data[: len(data) // 2],  # the index (moov) is at the end: gone
        "garbage.mp4": np.random.default_rng(3).integers(0, 256, 20_000, dtype=np.uint8).tobytes(),
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(
            CorruptMediaError, match=r"cannot open video \(.+\): the file is truncated, corrupt or not a video"
        ) as caught:
            sample_frames(path, 8)
        assert str(tmp_path) not in str(caught.value)  # no server paths in user-facing messages


def test_empty_and_oversized_videos_are_refused(tmp_path, face_video):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(UnsupportedMediaError, match="empty file: expected a video"):
        sample_frames(tmp_path / "empty.mp4", 8)
    with pytest.raises(MediaTooLargeError, match=r"video file is \d+(\.\d)? KB, above the 1 KB limit"):
        sample_frames(face_video, 8, VideoLimits(max_bytes=1000))


def test_over_long_video_is_refused(face_video):
    with pytest.raises(MediaTooLargeError, match=r"video is 2 s long, above the 1\.5 s limit"):
        sample_frames(face_video, 8, VideoLimits(max_duration_s=1.5))
    _info, frames = sample_frames(face_video, 4, VideoLimits(max_duration_s=2.5))
    assert len(frames) == 4


def test_oversized_frames_are_refused(face_video):
    with pytest.raises(
        MediaTooLargeError, match=r"video frames are 512x512 = 0\.262 megapixels, above the 0\.25 megapixel limit"
    ):
        sample_frames(face_video, 8, VideoLimits(max_pixels_per_frame=500 * 500, max_source_pixels_per_frame=500 * 500))


@pytest.mark.parametrize(("pixels_read", "scale"), [(512 * 512, 1), (300 * 300, 2), (200 * 200, 4)])
def test_frames_above_the_pixel_limit_are_read_at_the_first_scale_that_fits(face_video, pixels_read, scale):
    """As 8K video is read: the whole frame, area-averaged to 1/2 or 1/4 of its width and height."""
    _info, whole = sample_frames(face_video, 4)
    info, frames = sample_frames(face_video, 4, VideoLimits(max_pixels_per_frame=pixels_read))
    assert (info.width, info.height) == (512, 512)  # the file's own size
    assert [f.index for f in frames] == [f.index for f in whole]
    for reduced, full in zip(frames, whole):
        assert reduced.scale == scale and reduced.image.shape == (512 // scale, 512 // scale, 3)
        assert reduced.image.dtype == np.uint8 and reduced.image.flags.c_contiguous
        expected = cv2.resize(full.image, (512 // scale, 512 // scale), interpolation=cv2.INTER_AREA)
        # The same picture: area-averaged, not point-sampled (which would differ far more on the astronaut's texture).
        assert np.abs(reduced.image.astype(int) - expected).mean() < 3


def test_many_frames_of_a_large_video_are_read_at_a_reduced_scale_within_the_frames_memory(face_video):
    limits = VideoLimits(max_frames_bytes=8 * 300 * 300 * 3)  # 8 frames of 300 x 300
    _info, eight = sample_frames(face_video, 8, limits)
    assert len(eight) == 8 and {(f.scale, f.image.shape) for f in eight} == {(2, (256, 256, 3))}
    assert sum(f.image.nbytes for f in eight) <= limits.max_frames_bytes
    _info, two = sample_frames(face_video, 2, limits)  # two frames fit whole
    assert {(f.scale, f.image.shape) for f in two} == {(1, (512, 512, 3))}
    # Asking for more frames than the video has holds only the frames it has: 20 frames of 512 x 512 at 1/2.
    _info, every = sample_frames(face_video, 1000, VideoLimits(max_frames_bytes=20 * 256 * 256 * 3))
    assert len(every) == 20 and {f.scale for f in every} == {2}
    with pytest.raises(
        MediaTooLargeError,
        match=r"^8 frames of 512x512, even at 1/8 scale, are above the 2\.4 KB memory limit for a video's frames: "
        r"ask for fewer frames$",
    ):
        sample_frames(face_video, 8, VideoLimits(max_frames_bytes=2_400))


def test_a_frame_that_no_scale_brings_under_the_limit_is_refused(face_video):
    with pytest.raises(
        MediaTooLargeError,
        match=r"512x512: even at 1/8 scale they are above the 0\.001 megapixels a frame may be read at",
    ):
        sample_frames(face_video, 4, VideoLimits(max_pixels_per_frame=1_000))


# --- hostile media: sizes that lie, pixel formats that hide, memory ------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillows_own(orientation):
    from PIL import ImageOps

    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(pattern(48, 64)), "PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    np.testing.assert_array_equal(load_image(data), expected)


def test_sizes_are_said_in_the_unit_that_reads_best():
    from deepshield.media.units import format_bytes

    assert [format_bytes(n) for n in (999, 100_000, 2_500_000, 200_000_000, 1_000_000_000, 3_700_000_000)] == [
        "999 bytes",
        "100 KB",
        "2.5 MB",
        "200 MB",
        "1 GB",
        "3.7 GB",
    ]


def test_pillow_bomb_guard_speaks_our_limit():
    # 60000 x 60000 in the header: Pillow's own guard refuses it inside Image.open.
    with pytest.raises(
        MediaTooLargeError,
        match=r"^image is 3,600 megapixels, above the 40 megapixel limit \(a JPEG or HEIC up to 250 megapixels is read",
    ):
        load_image(png(60000, 60000, 8, 2, rows=None))
    # A JPEG past Pillow's guard is opened anyway, and refused by its own limit, from the header.
    jpeg = bytearray(encode(Image.new("RGB", (8, 8)), "JPEG"))
    frame = jpeg.index(b"\xff\xc0")  # SOF0: length, precision, then height and width
    jpeg[frame + 5 : frame + 9] = struct.pack(">HH", 60000, 60000)
    with pytest.raises(
        MediaTooLargeError,
        match=r"^image is 60000x60000 = 3,600 megapixels, above the 250 megapixel limit for a JPEG or HEIC$",
    ):
        load_image(bytes(jpeg))


def test_float_tiff_with_inf_and_nan_pixels_keeps_its_picture(astronaut):
    grey = astronaut.mean(axis=2).astype(np.float32) / 255.0
    grey[10, 10], grey[20, 20], grey[30, 30] = np.inf, np.nan, -np.inf
    image = Image.fromarray(grey, "F")
    decoded = load_image(encode(image, "TIFF"))
    expected = np.clip(grey * 255 + 0.5, 0, 255)
    finite = np.isfinite(grey)
    assert decoded.shape == (512, 512, 3) and (decoded[..., 0] == decoded[..., 2]).all()
    assert np.abs(decoded[..., 0].astype(float) - expected)[finite].max() <= 1
    assert decoded[20, 20, 0] == 0 and decoded[10, 10, 0] == 255


def test_float_tiff_outside_zero_one_is_stretched_by_percentiles(astronaut):
    grey = astronaut.mean(axis=2).astype(np.float32) * 1000.0 - 5e4  # offset, scaled: no conventional range
    decoded = load_image(encode(Image.fromarray(grey, "F"), "TIFF"))[..., 0].astype(float)
    assert np.corrcoef(decoded.ravel(), grey.ravel())[0, 1] > 0.99
    assert decoded.std() > 40  # a picture, not a black (or white) field


def test_32_bit_integer_tiff_shifted_negative_keeps_its_picture(astronaut):
    grey = astronaut.mean(axis=2).astype(np.int32) * 4096 - 2**30
    image = Image.fromarray(grey, "I")
    assert image.mode == "I"
    decoded = load_image(encode(image, "TIFF"))[..., 0].astype(float)
    assert np.corrcoef(decoded.ravel(), grey.ravel())[0, 1] > 0.99
    assert decoded.std() > 40


def test_32_bit_integer_image_in_the_8_bit_range_is_taken_as_is():
    values = np.array([[0, 100, 255]], np.int32).repeat(2, axis=0)
    decoded = load_image(encode(Image.fromarray(values, "I"), "TIFF"))
    np.testing.assert_array_equal(decoded[0, :, 1], [0, 100, 255])


def test_16_bit_image_is_converted_without_whole_image_temporaries():
    import tracemalloc

    side = 3000
    data = encode(Image.fromarray(np.full((side, side), 40000, np.uint16)), "PNG")
    tracemalloc.start()
    try:
        decoded = load_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded[0, 0, 0] == round(40000 / 257)
    # The RGB result (3 bytes a pixel) plus band-sized temporaries; float copies of the whole image
    # (the old conversion) took over 30 bytes a pixel.
    assert peak < 3 * side * side + 16_000_000, peak


def test_a_jpeg_above_the_pixel_limit_is_read_at_a_reduced_scale_and_other_formats_are_refused(monkeypatch):
    picture = Image.fromarray(np.full((2000, 2000, 3), 120, np.uint8))
    jpeg = encode(picture, "JPEG")
    for max_pixels, scale in ((4_000_000, 1), (1_100_000, 2), (300_000, 4), (200_000, 8)):
        decoded = decode_image(jpeg, ImageLimits(max_pixels=max_pixels))
        assert decoded.scale == scale and decoded.pixels.shape == (2000 // scale, 2000 // scale, 3)
        assert abs(int(decoded.pixels[100, 100, 0]) - 120) <= 2
    assert load_image(jpeg, ImageLimits(max_pixels=1_100_000)).shape == (1000, 1000, 3)
    with pytest.raises(
        MediaTooLargeError, match=r"^image is 2000x2000: even at 1/8 scale it is above the 0\.05 megapixel"
    ):
        decode_image(jpeg, ImageLimits(max_pixels=50_000))
    with pytest.raises(
        MediaTooLargeError,
        match=r"^image is 2000x2000 = 4 megapixels, above the 1\.1 megapixel limit "
        r"\(a JPEG or HEIC up to 250 megapixels is read at a reduced scale\)$",
    ):
        decode_image(encode(picture, "PNG"), ImageLimits(max_pixels=1_100_000))
    with pytest.raises(
        MediaTooLargeError, match=r"^image is 2000x2000 = 4 megapixels, above the 3 megapixel limit for a JPEG or HEIC$"
    ):
        decode_image(jpeg, ImageLimits(max_pixels=1_100_000, max_source_pixels=3_000_000))
    # Pillow's own guard (twice MAX_IMAGE_PIXELS; 179 megapixels by default) does not stop a JPEG read smaller.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    assert decode_image(jpeg, ImageLimits(max_pixels=1_100_000)).scale == 2
    with pytest.raises(MediaTooLargeError, match=r"^image is 4 megapixels, above the 1\.1 megapixel limit"):
        decode_image(encode(picture, "PNG"), ImageLimits(max_pixels=1_100_000))


def test_working_memory_budget_decodes_big_jpegs_smaller_and_refuses_other_formats():
    picture = Image.fromarray(np.full((2000, 2000, 3), 120, np.uint8))
    budget = ImageLimits(max_working_bytes=7_000_000)  # a 1000 x 1000 RGB decode
    reduced = load_image(encode(picture, "JPEG"), budget)
    assert reduced.shape == (1000, 1000, 3) and abs(int(reduced[500, 500, 0]) - 120) <= 2
    with pytest.raises(
        MediaTooLargeError, match=r"2000x2000 \(RGB\): decoding it needs 28 MB, above the 7 MB working-memory limit"
    ):
        load_image(encode(picture, "PNG"), budget)
    assert load_image(encode(picture, "PNG")).shape == (2000, 2000, 3)  # the default budget takes it


def mjpeg_with_lying_header(path: Path, frame_side: int, frames: int = 6) -> Path:
    """A .mov whose MJPEG stream says 64x64, as do its first two JPEG packets (FFmpeg probes those);
    every later packet is frame_side square."""

    def jpeg(side: int) -> bytes:
        return encode(Image.fromarray(np.full((side, side, 3), 90, np.uint8)), "JPEG", quality=50)

    small, big = jpeg(64), jpeg(frame_side)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=10)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuvj420p"
        for i in range(frames):
            packet = av.Packet(small if i < 2 else big)
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, Fraction(1, 10)
            container.mux(packet)
    return path


def test_frames_larger_than_the_header_says_are_refused_before_conversion(tmp_path, monkeypatch):
    import deepshield.media.video as video

    path = mjpeg_with_lying_header(tmp_path / "liar.mov", 1200)
    assert probe_video(path).width == 64
    convert = video._video_frame
    monkeypatch.setattr(
        video,
        "_video_frame",
        lambda frame, *args: (
            convert(frame, *args) if frame.width == 64 else pytest.fail("converted an oversized frame")
        ),
    )
    with pytest.raises(
        MediaTooLargeError, match=r"video frames are 1200x1200 = 1\.44 megapixels, above the 1 megapixel limit"
    ):
        sample_frames(path, 8, VideoLimits(max_pixels_per_frame=1_000_000, max_source_pixels_per_frame=1_000_000))
    # Within the source limit, a frame that lied can still be too large to read even at 1/8 scale.
    monkeypatch.undo()
    with pytest.raises(MediaTooLargeError, match=r"1200x1200: even at 1/8 scale they are above the 0\.01 megapixels"):
        sample_frames(path, 8, VideoLimits(max_pixels_per_frame=10_000))


@pytest.fixture(scope="module")
def long_fast_video(tmp_path_factory) -> Path:
    """3000 tiny frames at 1000 fps (keyframe every 250, x264's default); grey level ~ frame number."""
    frames = [np.full((16, 16, 3), i * 255 // 2999, np.uint8) for i in range(3000)]
    return write_video(tmp_path_factory.mktemp("fast") / "fast.mp4", frames, fps=1000)


def test_frame_rate_and_frame_count_limits(long_fast_video):
    with pytest.raises(MediaTooLargeError, match=r"video is 1000 frames per second, above the 240 fps limit"):
        sample_frames(long_fast_video, 8)
    with pytest.raises(MediaTooLargeError, match=r"video has 3000 frames, above the 1000 frame limit"):
        sample_frames(long_fast_video, 8, VideoLimits(max_fps=1000, max_frames=1000))


def test_far_apart_samples_are_reached_by_seeking(long_fast_video, monkeypatch):
    import deepshield.media.video as video

    decoded = []
    check = video._check_frame
    monkeypatch.setattr(video, "_check_frame", lambda frame, limits: decoded.append(1) or check(frame, limits))
    _info, frames = sample_frames(long_fast_video, 8, VideoLimits(max_fps=1000))
    expected = uniform_indices(3000, 8)
    assert [f.index for f in frames] == expected
    assert [f.timestamp_s for f in frames] == pytest.approx([i / 1000 for i in expected], abs=1e-3)
    assert all(abs(float(f.image.mean()) * 2999 / 255 - f.index) < 40 for f in frames)
    # Each sample costs at most one keyframe interval (250) of decoding, not the whole video.
    assert len(decoded) <= 8 * 250 < 3000, len(decoded)


# --- videos: a span of the video -------------------------------------------------------------


def test_a_span_is_sampled_uniformly_within_it(counting_video):
    # Frames 20 to 29 show from 1.0 s to 1.45 s; the only keyframe is frame 0, so the decoder seeks
    # back to it and each frame's index comes from its timestamp.
    _info, frames = sample_frames(counting_video, 4, span=VideoSpan(1.0, 1.5))
    expected = [20 + i for i in uniform_indices(10, 4)]
    assert [f.index for f in frames] == expected
    assert [frame_number(f.image) for f in frames] == expected
    assert all(1.0 <= f.timestamp_s < 1.5 for f in frames)
    _, rest = sample_frames(counting_video, 100, span=VideoSpan(1.5))  # no end: to the video's end
    assert [f.index for f in rest] == list(range(30, 40))
    # An end far past the video's (1e308 s: its frame number overflows a float) reads to the end.
    _, far = sample_frames(counting_video, 100, span=VideoSpan(1.5, 1e308))
    assert [f.index for f in far] == list(range(30, 40))


def write_timed_video(
    path: Path,
    frames: list[np.ndarray],
    times_s: list[float],
    fmt=None,
    options=None,
    rate: int = 30,
    keyframe_every: int | None = None,
) -> Path:
    """A video whose frames are stamped at `times_s`: starting late (an MPEG-TS from a broadcast, a clip
    cut without re-encoding), or at a variable rate. `options`: the muxer's; `rate`: the frame rate declared
    (Matroska gives it as the average); `keyframe_every`: frames (x264's default: 250)."""
    with av.open(str(path), "w", format=fmt, options=options or {}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        if keyframe_every is not None:
            stream.codec_context.gop_size = keyframe_every
        for image, time_s in zip(frames, times_s):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = round(time_s * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize(("suffix", "fmt"), [("mp4", None), ("ts", "mpegts"), ("mkv", "matroska")])
def test_frame_times_count_from_the_videos_start_whatever_its_timestamps_start_at(tmp_path, suffix, fmt):
    frames = [np.full((64, 96, 3), 6 * i, np.uint8) for i in range(40)]  # 2 s at 20 fps, stamped from 10 s
    path = write_timed_video(tmp_path / f"late.{suffix}", frames, [10.0 + i / 20 for i in range(40)], fmt, rate=20)
    info, sampled = sample_frames(path, 4)
    assert info.duration_s == pytest.approx(2.0, abs=0.06)
    assert [f.timestamp_s for f in sampled] == pytest.approx([f.index / 20 for f in sampled], abs=0.002)
    assert [frame_number(f.image) for f in sampled] == [f.index for f in sampled]
    _, part = sample_frames(path, 4, span=VideoSpan(1.0, 1.5))  # in the same terms as the times
    assert all(1.0 <= f.timestamp_s < 1.5 for f in part) and [frame_number(f.image) for f in part] == [
        f.index for f in part
    ]


@pytest.mark.parametrize(("suffix", "fmt"), [("mp4", None), ("ts", "mpegts")])
def test_a_part_between_two_keyframes_is_sampled_in_mpeg_ts_as_in_mp4(tmp_path, suffix, fmt):
    # 6 s at 20 fps, a keyframe each second. FFmpeg's seek in MPEG-TS lands on the keyframe after its
    # target: the part from 2.1 to 2.6 s (between keyframes) had no frames ("no decodable frames"), and
    # the whole video's samples were each taken at the keyframe after them.
    frames = [np.zeros((64, 96, 3), np.uint8) for _ in range(120)]
    for i, image in enumerate(frames):  # the frame number in two grey levels: left i % 40, right i // 40
        image[:, :48], image[:, 48:] = 6 * (i % 40), 6 * (i // 40)

    def numbers(sampled: list) -> list[int]:
        return [
            round(float(f.image[:, :40].mean()) / 6) + 40 * round(float(f.image[:, 56:].mean()) / 6) for f in sampled
        ]

    path = write_timed_video(tmp_path / f"keyframes.{suffix}", frames, [i / 20 for i in range(120)], fmt, rate=20,
                             keyframe_every=20)  # fmt: skip
    info, part = sample_frames(path, 4, span=VideoSpan(2.1, 2.6))
    assert [f.index for f in part] == numbers(part) == [42 + i for i in uniform_indices(10, 4)] and not info.damaged
    _, whole = sample_frames(path, 8)
    assert [f.index for f in whole] == numbers(whole) == uniform_indices(120, 8)


def bit_frames(count: int) -> list[np.ndarray]:
    """Frames showing their own number in 10 black or white bars (read back by bit_number)."""
    frames = []
    for i in range(count):
        image = np.zeros((64, 128, 3), np.uint8)
        for bit in range(10):
            if (i >> bit) & 1:
                image[:, bit * 12 : (bit + 1) * 12] = 255
        frames.append(image)
    return frames


def bit_number(image: np.ndarray) -> int:
    return sum(1 << bit for bit in range(10) if image[:, bit * 12 + 3 : (bit + 1) * 12 - 3].mean() > 128)


def test_a_ts_whose_first_keyframe_a_seek_skips_is_sampled_whole_and_not_called_damaged(tmp_path):
    # 700 frames at 30 fps, x264's keyframe every 250, the TS muxer's usual start (0.067 s): the seek for
    # the first sample (1.4 s) landed past it however far back it went, and the one for 21.9 s found no
    # frame: 7 of 8 samples, the first at frame 64, and the file called damaged.
    frames = bit_frames(700)
    path = tmp_path / "gop.ts"
    with av.open(str(path), "w", format="mpegts") as container:  # frame times as the muxer sets them
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 128, 64, "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    info, sampled = sample_frames(path, 8)
    assert [f.index for f in sampled] == [bit_number(f.image) for f in sampled] == uniform_indices(700, 8)
    assert not info.damaged
    # Stamped from 5 s, one keyframe: the seek for the part from 1 to 2 s landed past it, and the scan
    # failed ("no decodable frames at the sampled positions") rather than decode from the start.
    late = write_timed_video(tmp_path / "late.ts", frames[:90], [5 + i / 30 for i in range(90)], "mpegts")
    _, part = sample_frames(late, 6, span=VideoSpan(1.0, 2.0))
    assert len(part) == 6 and all(1.0 <= f.timestamp_s < 2.0 for f in part)
    assert [f.index for f in part] == [bit_number(f.image) for f in part]


def test_a_recording_without_a_duration_is_measured_and_held_to_the_limit(tmp_path):
    # A live Matroska / WebM (a browser's MediaRecorder, a live muxer) says no duration: it was 0 s long,
    # with no frame count, and got past the duration limit whatever its length.
    frames = [np.full((64, 96, 3), 6 * i, np.uint8) for i in range(40)]  # 4 s at 10 fps
    times = [i / 10 for i in range(40)]
    path = write_timed_video(tmp_path / "live.mkv", frames, times, "matroska", {"live": "1"}, rate=10)
    with av.open(str(path)) as container:
        assert container.duration is None and container.streams.video[0].duration is None
    info, sampled = sample_frames(path, 4)
    assert info.duration_s == pytest.approx(4.0, abs=0.002) and info.frame_count == 40
    assert [frame_number(f.image) for f in sampled] == [f.index for f in sampled] == uniform_indices(40, 4)
    with pytest.raises(MediaTooLargeError, match="video is 4 s long, above the 3 s limit"):
        sample_frames(path, 4, VideoLimits(max_duration_s=3))
    with pytest.raises(VideoSpanError, match="the video is 4 s long: nothing to analyse from 10 s on"):
        sample_frames(path, 4, span=VideoSpan(10.0))


def test_a_variable_frame_rate_gives_each_sample_once(tmp_path):
    # 10 frames at 2 fps, then 30 at 15 fps: indices read from timestamps at the average rate repeat in the
    # fast part, where each sample was kept twice (8 frames for 4).
    frames = [np.full((64, 96, 3), 6 * i, np.uint8) for i in range(40)]
    times = [i / 2 for i in range(10)] + [5 + i / 15 for i in range(30)]
    path = write_timed_video(tmp_path / "vfr.mp4", frames, times)
    _, part = sample_frames(path, 4, span=VideoSpan(5.0, 7.0))
    numbers = [frame_number(f.image) for f in part]
    assert len(part) == 4 and len(set(numbers)) == 4 and all(n >= 10 for n in numbers)
    # Where the rate runs below its average, indices read from timestamps skip some samples: fewer frames
    # come back, and that is not damage (the verdict says so only for damage).
    info, nearly_all = sample_frames(path, 39, span=VideoSpan(0.5))
    assert len(nearly_all) < 39 and not info.damaged


def test_a_frame_held_on_screen_is_sampled_where_it_shows(tmp_path, monkeypatch):
    # A face held still for 8 s of a 10 s recording (one frame, as screen recordings and slideshows store
    # it), then 2 s at 20 fps: each sample took the first frame starting at or after its time, and all 8
    # came from the last 2 s (the video had "no face").
    frames = [np.full((64, 96, 3), 6 * i, np.uint8) for i in range(41)]
    held = write_timed_video(tmp_path / "held.mp4", frames, [0.0] + [8 + i / 20 for i in range(40)], rate=20)
    _, sampled = sample_frames(held, 8)
    assert frame_number(sampled[0].image) == 0 and sampled[0].timestamp_s == 0.0
    assert len(sampled) == 3 and sampled[1].timestamp_s == 8.0  # the held frame once, then the fast part's
    # Samples far apart are reached by seeking: the one in the held frame is that frame too.
    monkeypatch.setattr(video_module, "SEEK_MIN_SPACING", 4)
    _, sought = sample_frames(held, 8)
    assert [round(f.timestamp_s, 2) for f in sought] == [round(f.timestamp_s, 2) for f in sampled]


def test_a_last_frame_held_to_the_end_is_sampled_and_no_damage(tmp_path, monkeypatch):
    # 2 s at 20 fps, its last picture on screen to 10 s (its own duration, as a screen recording that ends on a
    # still stores it): the samples after 2 s found no frame, and the file was said to be damaged or cut short.
    path = tmp_path / "tail.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=20)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.codec_context.time_base, stream.codec_context.max_b_frames = Fraction(1, 1000), 0
        packets = []
        for i in range(40):
            frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), 6 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i * 50, Fraction(1, 1000)
            packets += stream.encode(frame)
        packets += stream.encode()
        packets[-1].duration = 8050
        for packet in packets:
            container.mux(packet)
    for spacing in (video_module.SEEK_MIN_SPACING, 4):  # read in order, then by seeking
        monkeypatch.setattr(video_module, "SEEK_MIN_SPACING", spacing)
        info, sampled = sample_frames(path, 8)
        assert info.duration_s == pytest.approx(10.0) and not info.damaged
        assert frame_number(sampled[-1].image) == 39 and sampled[-1].timestamp_s == pytest.approx(1.95)


def test_a_part_of_a_variable_frame_rate_video_is_chosen_by_time(tmp_path):
    # 10 frames at 2 fps, then 30 at 15 fps (an average of 5.7): the part from 0 to 5 s is the slow part
    # alone. Chosen by frame count from the start, it ran to frame 22, at 5.8 s.
    frames = [np.full((64, 96, 3), 6 * i, np.uint8) for i in range(40)]
    times = [i / 2 for i in range(10)] + [5 + i / 15 for i in range(30)]
    path = write_timed_video(tmp_path / "vfr.mp4", frames, times)
    _, part = sample_frames(path, 4, span=VideoSpan(0.0, 5.0))
    assert [frame_number(f.image) for f in part] == [f.index for f in part] and all(f.timestamp_s < 5 for f in part)
    assert len(part) == 4 and part[-1].timestamp_s >= 3.5  # spread over the part


def test_a_span_of_a_stream_without_frame_count_is_told_by_timestamps(tmp_path):
    frames = [np.full((32, 32, 3), 4 * i, np.uint8) for i in range(50)]
    path = write_video(tmp_path / "raw.h264", frames, fps=25)
    _info, sampled = sample_frames(path, 5, span=VideoSpan(1.0, 1.6))  # frames 25 to 39
    indices = [f.index for f in sampled]
    assert len(indices) == 5 and all(25 <= i < 40 for i in indices), indices
    assert [round(float(f.image.mean()) / 4) for f in sampled] == indices


def test_far_apart_samples_of_a_span_are_reached_by_seeking(long_fast_video, monkeypatch):
    import deepshield.media.video as video

    decoded = []
    check = video._check_frame
    monkeypatch.setattr(video, "_check_frame", lambda frame, limits: decoded.append(1) or check(frame, limits))
    limits = VideoLimits(max_fps=1000)
    _info, frames = sample_frames(long_fast_video, 8, limits, span=VideoSpan(1.0, 3.0))  # frames 1000 to 2999
    assert [f.index for f in frames] == [1000 + i for i in uniform_indices(2000, 8)]
    assert all(abs(float(f.image.mean()) * 2999 / 255 - f.index) < 40 for f in frames)
    assert len(decoded) <= 8 * 250, len(decoded)
    # Samples close together late in the video: one decode from the keyframe before the span (frame
    # 2500 here), not from the video's start.
    decoded.clear()
    _info, frames = sample_frames(long_fast_video, 8, limits, span=VideoSpan(2.5, 2.6))
    assert [f.index for f in frames] == [2500 + i for i in uniform_indices(100, 8)]
    assert all(abs(float(f.image.mean()) * 2999 / 255 - f.index) < 40 for f in frames)
    assert len(decoded) <= 250, len(decoded)


def test_a_span_outside_the_video_or_malformed_is_refused(counting_video):
    with pytest.raises(VideoSpanError, match=r"the video is 2 s long: nothing to analyse from 5 s on"):
        sample_frames(counting_video, 4, span=VideoSpan(5.0, 6.0))
    with pytest.raises(VideoSpanError, match=r"lies in the span from 1\.99 s to the end$"):
        sample_frames(counting_video, 4, span=VideoSpan(1.99))  # after the last frame (1.95 s), before the end
    with pytest.raises(VideoSpanError, match="starts at 0 s or later"):
        VideoSpan(-1.0)
    for frames in (0, -3):  # not a ZeroDivisionError from deep inside
        with pytest.raises(ValueError, match=f"frames must be at least 1, got {frames}"):
            sample_frames(counting_video, frames)
    with pytest.raises(VideoSpanError, match="a video span's start is a number of seconds, not nan"):
        VideoSpan(float("nan"))
    with pytest.raises(VideoSpanError, match="a video span's end is a number of seconds, not inf"):
        VideoSpan(1.0, float("inf"))
    with pytest.raises(VideoSpanError, match=r"must end after it starts: 1 s is not after 2 s"):
        VideoSpan(2.0, 1.0)
    assert VideoSpan().whole and not VideoSpan(0.0, 1.0).whole


def test_duration_and_frame_limits_apply_to_the_span(counting_video, long_fast_video):
    short = VideoLimits(max_duration_s=1.0)
    with pytest.raises(MediaTooLargeError, match=r"video is 2 s long, above the 1 s limit \(a span of the video"):
        sample_frames(counting_video, 4, short)
    with pytest.raises(MediaTooLargeError, match=r"the span to analyse is 1.5 s long, above the 1 s limit"):
        sample_frames(counting_video, 4, short, span=VideoSpan(0.5))
    _info, frames = sample_frames(counting_video, 4, short, span=VideoSpan(0.5, 1.2))
    assert all(10 <= f.index < 24 for f in frames)
    few = VideoLimits(max_fps=1000, max_frames=1000)
    with pytest.raises(MediaTooLargeError, match=r"the span to analyse has 1500 frames, above the 1000 frame limit"):
        sample_frames(long_fast_video, 8, few, span=VideoSpan(1.5))
    _info, frames = sample_frames(long_fast_video, 8, few, span=VideoSpan(1.5, 2.5))
    assert [f.index for f in frames] == [1500 + i for i in uniform_indices(1000, 8)]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("95", 95.0), ("95.5", 95.5), (" 1:35 ", 95.0), ("0:01:35.5", 95.5), (".5", 0.5), ("2:00:00", 7200.0)],
)
def test_times_in_a_video_are_read_as_people_write_them(text, seconds):
    assert parse_clock_time(text) == seconds
    assert parse_clock_time(clock_time(seconds)) == seconds  # written back as it is read


def test_times_are_written_to_the_tenth():
    # halves round up (7.25 s is 0:07.3), as a person reads them
    assert [clock_time(s) for s in (0.5, 7.25, 95, 3723.04, 59.96)] == ["0:00.5", "0:07.3", "1:35", "1:02:03", "1:00"]
    assert [clock_time(s, 2) for s in (20.05, 20.1, 59.96)] == ["0:20.05", "0:20.1", "0:59.96"]


def test_a_short_parts_ends_never_read_alike():
    # A part under a tenth of a second read "0:20 to 0:20".
    parts = [(20.0, 20.04), (20.0, 20.3), (20.001, 20.004), (20.0, None)]
    assert [AnalysedSpan(start_s=start, end_s=end, whole=False).part for start, end in parts] == [
        "0:20 to 0:20.04",
        "0:20 to 0:20.3",
        "0:20.001 to 0:20.004",
        "0:20 to the end",
    ]


@pytest.mark.parametrize("text", ["", "-1", "1:60", "1:75:00", "1::2", "one", "1:2:3:4", "nan"])
def test_anything_else_is_not_a_time(text):
    with pytest.raises(ValueError, match="is not a time"):
        parse_clock_time(text)


# --- animated images, read as videos ---------------------------------------------------------


def animation(path: Path, fmt: str, count: int = 12, durations: list[int] | int = 100) -> Path:
    """An animated image whose frame i is grey level 20 x i."""
    frames = [Image.fromarray(np.full((48, 64, 3), 20 * i, np.uint8)) for i in range(count)]
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return path


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
@pytest.mark.parametrize("orientation", [2, 5, 6, 8])
def test_an_animations_exif_orientation_turns_its_frames_as_it_turns_the_still_read(tmp_path, fmt, orientation):
    # Read as a video (scan, the server, prepare, evaluate) an animated WebP's or APNG's frames kept their
    # stored side up, where the still read of its first frame (Detector.analyze_image) turned it.
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = [Image.fromarray(np.roll(pattern(), 8 * i, axis=1)) for i in range(3)]
    path = tmp_path / f"turned.{fmt.lower()}"
    stored[0].save(path, fmt, save_all=True, append_images=stored[1:], duration=100, exif=exif, lossless=True)
    info, frames = sample_frames(path, 3)
    still = load_image(path)
    assert (info.width, info.height) == (still.shape[1], still.shape[0])
    assert (frames[0].image == still).all()
    assert all(frame.image.shape == still.shape for frame in frames)


@pytest.mark.parametrize(("fmt", "codec"), [("GIF", "gif"), ("PNG", "apng"), ("WEBP", "webp")])
def test_an_animated_image_is_sampled_as_a_video(tmp_path, fmt, codec):
    path = animation(tmp_path / f"anim.{codec}", fmt)
    assert is_animation(path) and media_kind(path) is MediaKind.VIDEO and sniff_path(path) is MediaKind.IMAGE
    info, frames = sample_frames(path, 4)
    assert (info.codec, info.frame_count, info.width, info.height) == (codec, 12, 64, 48)
    assert info.duration_s == pytest.approx(1.2) and info.fps == pytest.approx(10)
    expected = uniform_indices(12, 4)
    assert [f.index for f in frames] == expected
    assert [f.timestamp_s for f in frames] == pytest.approx([i / 10 for i in expected])
    assert [round(float(f.image.mean()) / 20) for f in frames] == expected  # the pixels are those frames'
    _, part = sample_frames(path, 10, span=VideoSpan(0.5, 0.9))
    assert [f.index for f in part] == [5, 6, 7, 8]
    with pytest.raises(MediaTooLargeError, match="animation has more than 10 frames, the limit"):
        sample_frames(path, 4, VideoLimits(max_frames=10))
    # An animation's frames are not read at a reduced scale, as a video's are: above the pixel limit it is refused.
    with pytest.raises(
        MediaTooLargeError, match=r"video frames are 64x48 = 0\.00307 megapixels, above the 0\.003 megapixel"
    ):
        sample_frames(path, 4, VideoLimits(max_pixels_per_frame=3_000))
    with pytest.raises(VideoSpanError, match="nothing to analyse from 2 s on"):
        sample_frames(path, 4, span=VideoSpan(2.0))
    # Many frames are held within the frames' memory as a video's are: 4 frames of 64 x 48 fit at 1/2.
    limits = VideoLimits(max_frames_bytes=4 * 32 * 24 * 3)
    _, reduced = sample_frames(path, 4, limits)
    assert {(f.scale, f.image.shape) for f in reduced} == {(2, (24, 32, 3))}
    assert [round(float(f.image.mean()) / 20) for f in reduced] == expected
    with pytest.raises(
        MediaTooLargeError, match=r"^4 frames of 64x48, even at 1/8 scale, are above the 36 bytes memory"
    ):
        sample_frames(path, 4, VideoLimits(max_frames_bytes=36))


@pytest.mark.parametrize(("fmt", "suffix"), [("GIF", "gif"), ("PNG", "png"), ("WEBP", "webp")])
def test_frame_delays_are_kept_and_a_zero_delay_is_shown_as_browsers_show_it(tmp_path, fmt, suffix):
    # Not the 100 ms a frame without a delay gets: every format's own delays (WebP's were lost).
    path = animation(tmp_path / f"delays.{suffix}", fmt, count=3, durations=[500, 0, 200])
    info, frames = sample_frames(path, 3)
    assert [f.timestamp_s for f in frames] == pytest.approx([0.0, 0.5, 0.6])  # the 0 delay shows for 100 ms
    assert info.duration_s == pytest.approx(0.8)


@pytest.mark.parametrize(("fmt", "suffix"), [("GIF", "gif"), ("WEBP", "webp")])
def test_an_animations_frame_held_on_screen_is_sampled_where_it_shows(tmp_path, fmt, suffix):
    # Its first frame held 8 s, then 40 frames of 50 ms: sampled by count, all 8 samples came from the last
    # 2 s (a GIF holding a face, then frames without it, had "no face"). By time, as a video's are.
    path = animation(tmp_path / f"held.{suffix}", fmt, count=41, durations=[8000] + [50] * 40)
    info, frames = sample_frames(path, 8)
    assert info.duration_s == pytest.approx(10.0)
    assert [f.index for f in frames][:2] == [0, 1] and frames[0].timestamp_s == 0.0
    assert frames[-1].timestamp_s > 9  # the fast part's samples spread over it, as before


def test_a_still_gif_and_a_damaged_animation(tmp_path, astronaut):
    still = tmp_path / "still.gif"
    Image.fromarray(astronaut).convert("P").save(still)
    assert not is_animation(still) and media_kind(still) is MediaKind.IMAGE
    data = animation(tmp_path / "whole.gif", "GIF").read_bytes()
    broken = tmp_path / "broken.gif"
    broken.write_bytes(data[: len(data) // 2])
    assert media_kind(broken) is MediaKind.VIDEO  # its first frames are there
    info, frames = sample_frames(broken, 12)  # the damaged tail costs frames, not the file
    assert 0 < info.frame_count < 12 and [f.index for f in frames] == list(range(len(frames)))
    assert [round(float(f.image.mean()) / 20) for f in frames] == [f.index for f in frames]


def test_damaged_animations_only_raise_our_errors(tmp_path):
    rng = random.Random(11)
    for fmt, suffix in (("GIF", "gif"), ("PNG", "png"), ("WEBP", "webp")):
        original = animation(tmp_path / f"a.{suffix}", fmt, count=6).read_bytes()
        for trial in range(40):
            data = bytearray(original)
            if trial % 2:
                data = data[: rng.randrange(1, len(data))]
            else:
                for _ in range(rng.randint(1, 8)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
            path = tmp_path / f"damaged.{suffix}"
            path.write_bytes(bytes(data))
            try:
                if media_kind(path) is MediaKind.VIDEO:
                    _info, frames = sample_frames(path, 4)
                    assert frames and all(f.image.dtype == np.uint8 and f.image.shape[2] == 3 for f in frames)
            except DeepShieldError:
                continue


def test_reading_a_long_animation_reports_progress_all_along(tmp_path):
    # Pillow reads the frames in order: progress (and with it a job's time limit) runs while it does.
    path = animation(tmp_path / "long.gif", "GIF", count=300)
    seen: list[float] = []
    sample_frames(path, 4, on_frame=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert sum(0 < fraction < 0.5 for fraction in seen) >= 3  # while the frames are read, before sampling


# --- a review of the decoding code (2026-12-06) --------------------------------------------------


def test_a_jpeg_with_an_odd_side_is_read_within_the_limits(astronaut):
    # Drafted to its rounded-up size, Pillow took the next smaller scale: 151x101 above a 10,000 pixel
    # limit was read whole, 601x401 at 1/4 for 1/8 (and a 9001x6001 photo past the default 40 MP).
    for size, scale in (((151, 101), 2), ((601, 401), 8)):
        photo = io.BytesIO()
        Image.fromarray(astronaut).resize(size).save(photo, "JPEG")
        decoded = decode_image(photo.getvalue(), ImageLimits(max_pixels=10_000))
        assert decoded.scale == scale and decoded.pixels.shape[0] * decoded.pixels.shape[1] <= 10_000


def test_a_greyscale_heic_above_the_pixel_limit_is_read_reduced(astronaut):
    photo = io.BytesIO()
    Image.fromarray(astronaut).convert("L").save(photo, "HEIF", quality=90)  # it was "corrupt": one channel
    decoded = decode_image(photo.getvalue(), ImageLimits(max_pixels=100_000))
    assert decoded.pixels.shape == (256, 256, 3) and decoded.scale == 2


@pytest.mark.parametrize(("mode", "key"), [("RGB", (0, 0, 0)), ("L", 0)])
def test_a_pngs_transparent_colour_is_shown_on_white(mode, key):
    # A tRNS chunk of an RGB or grey PNG left its key colour (black) where viewers show white.
    pixels = np.full((8, 8, 3 if mode == "RGB" else 1), 120, np.uint8).squeeze()
    pixels[:4] = 0
    png = io.BytesIO()
    Image.fromarray(pixels, mode).save(png, "PNG", transparency=key)
    decoded = decode_image(png.getvalue()).pixels
    assert decoded[0, 0].tolist() == [255, 255, 255] and decoded[6, 6].tolist() == [120, 120, 120]


def test_a_16_bit_grey_pngs_transparent_value_is_shown_on_white():
    # The 16-bit grey PNG's transparent value was read as grey (the 8-bit PNG's above was white); only that
    # value is, not its 8-bit neighbours.
    values = np.array([[1000, 999, 1001, 30000]], np.uint16).repeat(2, axis=0)
    png = io.BytesIO()
    Image.fromarray(values).save(png, "PNG", transparency=1000)
    assert Image.open(png).mode == "I;16"
    np.testing.assert_array_equal(decode_image(png.getvalue()).pixels[0, :, 0], [255, 4, 4, 117])


def test_a_phone_jpegs_second_image_is_no_page_of_its_own(astronaut):
    # An HDR gain map, a depth map or a preview makes Pillow open a phone JPEG as MPO of 2 frames: the
    # analysis said "the file holds 2 images: only the first was analysed" of ordinary phone photos.
    photo, gain_map = Image.fromarray(astronaut), Image.fromarray(astronaut).convert("L").resize((128, 128))
    data = io.BytesIO()
    photo.save(data, "MPO", save_all=True, append_images=[gain_map])
    assert Image.open(io.BytesIO(data.getvalue())).n_frames == 2
    assert decode_image(data.getvalue()).pages == 1


def test_an_apngs_default_image_outside_its_animation_is_not_read(tmp_path):
    # An APNG may carry a default image for viewers without APNG that is no frame of its animation; Pillow
    # counts it as frame 0. A file showing one blue picture in browsers was read as a 2-frame video, its
    # hidden red image analysed first (a photo analysed alone showed that image instead of the blue one).
    from deepshield.media.frames import MediaKind, media_kind, read_frames

    red, blue, green = (Image.new("RGB", (64, 64), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0)))
    still = tmp_path / "still.png"
    red.save(still, save_all=True, append_images=[blue], default_image=True, duration=500)
    assert media_kind(still) == MediaKind.IMAGE
    decoded = decode_image(still)
    assert decoded.pixels[0, 0].tolist() == [0, 0, 255] and decoded.pages == 1
    moving = tmp_path / "moving.png"
    red.save(moving, save_all=True, append_images=[blue, green], default_image=True, duration=500)
    kind, frames, times = read_frames(moving, 8)
    assert kind == MediaKind.VIDEO
    assert [frame[0, 0].tolist() for _, frame in frames] == [[0, 0, 255], [0, 255, 0]] and times == [0.0, 0.5]


@pytest.mark.parametrize(("suffix", "fmt"), [("mp4", None), ("mkv", "matroska"), ("ts", "mpegts")])
def test_a_variable_frame_rate_videos_samples_cover_all_of_it(tmp_path, suffix, fmt):
    # 20 frames at 10 fps, then 20 at 2 fps, the rate stated as 30: the samples spread over its time.
    frames = [np.full((64, 96, 3), 6 * i, np.uint8) for i in range(40)]
    times = [i / 10 for i in range(20)] + [2 + i / 2 for i in range(20)]
    path = write_timed_video(tmp_path / f"vfr.{suffix}", frames, times, fmt, rate=30)
    info, sampled = sample_frames(path, 4)
    assert (
        len(sampled) == 4
        and sampled[0].timestamp_s < 0.25 * info.duration_s < 0.75 * info.duration_s < sampled[-1].timestamp_s
    )


def _gif_of_dots(path: Path, side: int, count: int) -> Path:
    """A valid GIF of `count` 1x1 frames on a side x side canvas: a few bytes a frame, each composited
    at the canvas's size when Pillow reads it."""
    data = bytearray(b"GIF89a" + struct.pack("<HH", side, side) + bytes([0xF0, 0, 0]) + bytes(3) + b"\xff" * 3)
    data += b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    for i in range(count):
        data += b"!\xf9\x04\x00" + struct.pack("<H", 2) + b"\x00\x00"
        data += b"," + struct.pack("<HHHH", i % side, 0, 1, 1) + b"\x00\x02\x02\x44\x01\x00"
    path.write_bytes(bytes(data + b";"))
    return path


def test_an_animations_size_and_its_frames_reading_are_refused_before_the_frames_are_read(tmp_path, monkeypatch):
    # Its canvas above the frame limit was refused only once every frame had been composited (a 7 KB GIF
    # of 300 dots on a 6000x6000 canvas took a minute; 2.5 MB, hours).
    from PIL import GifImagePlugin

    seeks: list[int] = []
    real_seek = GifImagePlugin.GifImageFile.seek
    monkeypatch.setattr(
        GifImagePlugin.GifImageFile, "seek", lambda self, frame: (seeks.append(frame), real_seek(self, frame))[1]
    )
    with pytest.raises(MediaTooLargeError, match=r"6000x6000 = 36 megapixels, above the 8\.85 megapixel limit"):
        sample_frames(_gif_of_dots(tmp_path / "canvas.gif", 6000, 50), 4)
    assert max(seeks) <= 1  # only is_animation's look for a second frame
    limits = VideoLimits(max_animation_pixels=400 * 400 * 20)
    with pytest.raises(
        MediaTooLargeError, match=r"more than 20 frames of 400x400: reading them all is above the limit of 3\.2"
    ):
        sample_frames(_gif_of_dots(tmp_path / "long.gif", 400, 50), 4, limits)
    assert max(seeks) <= 21
    info, _ = sample_frames(_gif_of_dots(tmp_path / "fits.gif", 400, 20), 4, limits)
    assert info.frame_count == 20


def test_a_progressive_jpeg_counts_its_full_size_coefficients_in_the_working_memory(astronaut):
    # Its decoder holds every coefficient at full size whatever the scale: a 3 MB progressive JPEG of
    # 20000x12000 took 1.5 GB read at 1/4, within a 280 MB limit.
    photos = {}
    for progressive in (False, True):
        data = io.BytesIO()
        Image.fromarray(astronaut).save(data, "JPEG", progressive=progressive, subsampling=0)
        photos[progressive] = data.getvalue()
    held = 3 * 64 * 64 * 64 * 2  # three full-size components of 64 x 64 blocks
    # Held beside the decoded pixels (4 bytes each), freed before the RGB result (3 bytes each) is made:
    # 2.62 MB at full size, where a baseline JPEG needs 1.84 MB.
    roomy = ImageLimits(max_working_bytes=2_400_000)
    assert decode_image(photos[False], roomy).scale == 1
    assert decode_image(photos[True], roomy).scale == 2
    tight = ImageLimits(max_working_bytes=held)
    assert decode_image(photos[False], tight).scale == 2
    with pytest.raises(
        MediaTooLargeError, match=r"image is 512x512, a progressive JPEG: its decoder holds 1\.57 MB at any scale"
    ):
        decode_image(photos[True], tight)


def test_a_spans_samples_show_within_it_and_a_gap_is_no_corruption(tmp_path):
    # Half a spacing early, as samples match frames: 1.05 to 1.15 s took the frame at 1.0 s, 1.05 to 1.3 s
    # took 1.0 and 1.2 (not 1.1 and 1.2), and a span in a varying frame rate's gap was "corrupt".
    frames = [np.full((64, 96, 3), 6 * i, np.uint8) for i in range(30)]
    steady = write_timed_video(tmp_path / "steady.mp4", frames, [i / 10 for i in range(30)], rate=10)
    spans = [((1.05, 1.15), [1.1]), ((1.05, 1.3), [1.1, 1.2]), ((1.0, 1.1), [1.0]), ((1.02, 1.32), [1.1, 1.2, 1.3])]
    for (start, end), expected in spans:  # (from the span's start, 1.1 s matched two samples and 1.3 s none)
        _, sampled = sample_frames(steady, 8, span=VideoSpan(start, end))
        assert [round(f.timestamp_s, 3) for f in sampled] == expected, (start, end)
    gap = write_timed_video(  # 0 to 0.9 s, nothing until 2 s, then on to 3.9 s
        tmp_path / "gap.mp4", frames, [i / 10 if i < 10 else 1.0 + i / 10 for i in range(30)], rate=10
    )
    with pytest.raises(VideoSpanError, match=r"no frame of the video shows from 1\.2 s to 1\.8 s"):
        sample_frames(gap, 8, span=VideoSpan(1.2, 1.8))
    _, after = sample_frames(gap, 8, span=VideoSpan(1.5, 2.05))
    assert [round(f.timestamp_s, 3) for f in after] == [2.0]
    # A file cut short before the span is corrupt, not a span with no frame
    whole = write_timed_video(
        tmp_path / "cut.mp4", frames, [i / 10 for i in range(30)], options={"movflags": "faststart"}, rate=10
    )
    whole.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CorruptMediaError):
        sample_frames(whole, 8, span=VideoSpan(2.2, 2.8))


def test_a_frame_rate_a_header_overstates_gives_way_to_the_timestamps(tmp_path):
    # A Matroska default duration of 1 ms read 1,000 fps for frames 100 ms apart: refused as above 240 fps.
    frames = [np.full((64, 96, 3), 6 * i, np.uint8) for i in range(30)]
    path = write_timed_video(tmp_path / "lie.mkv", frames, [i / 10 for i in range(30)], fmt="matroska", rate=1000)
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == 1000
    info, sampled = sample_frames(path, 8)
    assert info.fps == pytest.approx(10) and info.duration_s == pytest.approx(2.9, abs=0.11) and len(sampled) == 8


def test_a_long_videos_length_is_said_in_seconds_and_clock_time():
    # Three significant digits said a 20-minute video was "1.2e+03 s long, above the 900 s limit".
    def refusal(duration_s: float, span: VideoSpan = WHOLE_VIDEO) -> str:
        info = VideoInfo(640, 360, 25.0, round(duration_s * 25), duration_s, 0, "h264")
        with pytest.raises((MediaTooLargeError, VideoSpanError)) as refused:
            check_limits(info, VideoLimits(), span)
        return str(refused.value)

    assert refusal(1200.0).startswith("video is 1200 s (20:00) long, above the 900 s (15:00) limit")
    assert refusal(3725.4, VideoSpan(0, 3700)).startswith("the span to analyse is 3700 s (1:01:40) long")
    assert refusal(1200.0, VideoSpan(1300)) == "the video is 1200 s (20:00) long: nothing to analyse from 1300 s on"
    assert video_length(4) == "4 s" and video_length(0.6) == "0.6 s" and video_length(75.4) == "75.4 s (1:15.4)"


@pytest.mark.parametrize(("suffix", "fmt"), [("mkv", "matroska"), ("ts", "mpegts")])
def test_a_varying_frame_rates_frames_are_counted_where_the_container_does_not_say(tmp_path, suffix, fmt):
    """Matroska, WebM and MPEG-TS give no frame count: it was the duration times a rate guessed from the first
    timestamps or declared (a long varying-rate recording, 6 fps on average, read 2 fps and a third of its
    frames, and the page said so). Its frames are counted, and their average rate is its rate."""
    times = [(i // 6) + (0, 0.05, 0.1, 0.15, 0.2, 0.5)[i % 6] for i in range(300)]  # bursts: 6 frames a second
    frames = [np.full((32, 32, 3), i % 250, np.uint8) for i in range(300)]
    path = write_timed_video(tmp_path / f"vfr.{suffix}", frames, times, fmt, rate=30)
    info, sampled = sample_frames(path, 8)
    assert info.frame_count == 300 and info.fps == pytest.approx(300 / 49.5, rel=0.01)
    assert len(sampled) == 8 and not info.damaged
    assert sampled[-1].timestamp_s > 0.8 * info.duration_s
    steady = write_timed_video(tmp_path / f"steady.{suffix}", frames[:40], [i / 10 for i in range(40)], fmt, rate=10)
    assert (probe_video(steady).fps, probe_video(steady).frame_count) == (10.0, 40)  # a constant rate: as stated


def test_a_frame_count_that_could_not_be_counted_is_said_to_be_estimated(tmp_path):
    """A Matroska file with more frames than the limit is not counted to its end: its frames are its duration
    times a rate that may be a guess (a varying rate's 300 frames were refused as "1486 frames", and the API's
    frame_count said 1486 as if counted). The estimate is said so, in words and in the API's result."""
    from deepshield.inference.results import VideoSummary

    times = [(i // 6) + (0, 0.05, 0.1, 0.15, 0.2, 0.5)[i % 6] for i in range(300)]
    frames = [np.full((32, 32, 3), i % 250, np.uint8) for i in range(300)]
    path = write_timed_video(tmp_path / "vfr.mkv", frames, times, "matroska", rate=30)
    limits = VideoLimits(max_frames=200)
    with pytest.raises(MediaTooLargeError, match=r"^video has about 1486 frames \(estimated\), above the 200 frame"):
        sample_frames(path, 8, limits)
    estimated = probe_video(path, limits)
    assert (estimated.frame_count, estimated.frame_count_estimated) == (1486, True)
    assert VideoSummary(**estimated.__dict__).model_dump()["frame_count_estimated"] is True
    counted = probe_video(path)
    assert (counted.frame_count, counted.frame_count_estimated, counted.frames_said()) == (300, False, "300 frames")
    with pytest.raises(VideoSpanError, match=r"^no frame of the video \(300 frames at"):
        VideoSpan(49.6, 49.7).frames_in(counted)
    with pytest.raises(VideoSpanError, match=r"^no frame of the video \(about 1486 frames \(estimated\) at"):
        VideoSpan(49.6, 49.7).frames_in(estimated)


def test_a_video_longer_than_the_limit_is_refused_without_counting_its_frames(tmp_path, monkeypatch):
    """Counting a Matroska file's frames read it to its end (up to max_frames packets) before it was refused
    for its length: a third of a 3-hour recording's gigabytes, where the refusal took a moment."""
    import deepshield.media.video as video

    frames = [np.full((32, 32, 3), i % 250, np.uint8) for i in range(30)]
    path = write_timed_video(tmp_path / "long.mkv", frames, [i / 10 for i in range(30)], "matroska", rate=10)
    counted: list[str] = []
    monkeypatch.setattr(video, "_counted_frames", lambda name, most: counted.append(name) or 30)
    with pytest.raises(MediaTooLargeError, match="above the 2 s limit"):
        sample_frames(path, 4, VideoLimits(max_duration_s=2.0))
    assert counted == []
    sample_frames(path, 4, VideoLimits(max_duration_s=5.0))  # within it: counted, as before
    assert counted == [str(path)]
