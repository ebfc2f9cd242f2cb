"""Tell images from videos by their content (magic bytes), never by the file name."""

from __future__ import annotations

import enum
from pathlib import Path

from deepshield.errors import UnsupportedMediaError


class MediaKind(str, enum.Enum):
    IMAGE = "image"
    VIDEO = "video"


_IMAGE_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (0, b"\xff\xd8\xff"),  # JPEG
    (0, b"\x89PNG\r\n\x1a\n"),
    (0, b"GIF87a"),
    (0, b"GIF89a"),
    (0, b"BM"),
    (0, b"II*\x00"),  # TIFF little-endian
    (0, b"MM\x00*"),  # TIFF big-endian
    (8, b"WEBP"),
)
_VIDEO_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"),  # MP4 / MOV / M4V / 3GP
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (8, b"AVI "),
    (0, b"\x00\x00\x01\xba"),  # MPEG-PS
    (0, b"\x47"),  # MPEG-TS sync byte (checked last: one byte is weak evidence)
)
HEADER_BYTES = 16


def sniff_media_kind(head: bytes) -> MediaKind:
    """Classify the first bytes of a file. Raises UnsupportedMediaError for anything else."""
    for offset, magic in _IMAGE_SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return MediaKind.IMAGE
    for offset, magic in _VIDEO_SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            # HEIC/AVIF stills also use an ISO-BMFF 'ftyp' box; we do not decode them.
            if magic == b"ftyp" and head[8:12] in (b"heic", b"heix", b"avif", b"mif1"):
                break
            return MediaKind.VIDEO
    if not head:
        raise UnsupportedMediaError("empty file: expected an image or a video")
    raise UnsupportedMediaError(
        "unsupported file type: expected an image (JPEG, PNG, GIF, BMP, TIFF, WebP) "
        "or a video (MP4, MOV, MKV, WebM, AVI)"
    )


def sniff_path(path: Path) -> MediaKind:
    with open(path, "rb") as handle:
        return sniff_media_kind(handle.read(HEADER_BYTES))
