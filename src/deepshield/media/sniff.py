"""Tell images from videos by their content (magic bytes), never by the file name."""

from __future__ import annotations

import enum
from pathlib import Path

from deepshield.errors import UnsupportedMediaError
from deepshield.media.files import read_head


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
_IMAGE_NAMES = ("JPEG", "PNG", "GIF", "GIF", "BMP", "TIFF", "TIFF", "WebP")
# Stills (and still sequences) in an ISO-BMFF 'ftyp' box, as MP4 is: told apart by the major brand.
_HEIF_BRANDS: dict[bytes, str] = {
    b"heic": "HEIC",
    b"heix": "HEIC",
    b"hevc": "HEIC",
    b"hevx": "HEIC",
    b"heim": "HEIC",
    b"heis": "HEIC",
    b"mif1": "HEIC",
    b"msf1": "HEIC",
    b"avif": "AVIF",
    b"avis": "AVIF",
}
# The formats named to people (refusals, the web page): the signatures above and below.
IMAGE_FORMATS = tuple(dict.fromkeys((*_IMAGE_NAMES, *_HEIF_BRANDS.values())))
VIDEO_FORMATS = ("MP4", "MOV", "MKV", "WebM", "AVI", "MPEG-TS")
TS_PACKET = 188
_VIDEO_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"),  # MP4 / MOV / M4V / 3GP
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (8, b"AVI "),
    (0, b"\x00\x00\x01\xba"),  # MPEG-PS
    (0, b"\x47"),  # MPEG-TS sync byte, which must repeat every 188 bytes (checked below)
)
# Bytes to read for sniffing: enough for two MPEG-TS packets (a lone 0x47 byte is any text
# starting with "G"). With fewer bytes MPEG-TS is accepted on its first sync byte alone.
HEADER_BYTES = 2 * TS_PACKET + 1


def sniff_media_kind(head: bytes) -> MediaKind:
    """Classify the first bytes of a file. Raises UnsupportedMediaError for anything else."""
    if image_format_name(head) is not None:
        return MediaKind.IMAGE
    for offset, magic in _VIDEO_SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            if magic == b"\x47" and not _looks_like_ts(head):
                continue
            return MediaKind.VIDEO
    raise UnsupportedMediaError(unsupported_message(head))


def _looks_like_ts(head: bytes) -> bool:
    """Sync byte at every packet start within the first HEADER_BYTES (just the first when head is short)."""
    return all(head[i] == 0x47 for i in range(0, min(len(head), HEADER_BYTES), TS_PACKET))


def image_format_name(head: bytes) -> str | None:
    """The image format the magic bytes claim (e.g. "JPEG"), or None."""
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return _HEIF_BRANDS[head[8:12]]
    for (offset, magic), name in zip(_IMAGE_SIGNATURES, _IMAGE_NAMES):
        if head[offset : offset + len(magic)] == magic and (name != "WebP" or head[:4] == b"RIFF"):
            return name
    return None


def unsupported_message(head: bytes, expected: str = "an image or a video") -> str:
    """The message for bytes we do not read, naming what was expected and, where known, what was found."""
    if not head:
        return f"empty file: expected {expected}"
    found = " (PDF document)" if head.startswith(b"%PDF") else ""
    images = f"an image ({', '.join(IMAGE_FORMATS)})"
    videos = f"a video ({', '.join(VIDEO_FORMATS)})"
    wanted = {"an image": images, "a video": videos}.get(expected, f"{images} or {videos}")
    return f"unsupported file type{found}: expected {wanted}"


def sniff_path(path: Path) -> MediaKind:
    return sniff_media_kind(read_head(path, HEADER_BYTES))
