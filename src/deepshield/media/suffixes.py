"""File-name suffixes of the media we read: the one list folders are filtered by (scan, dataset
sources, the face bank) and the web page's guess of which uploads are videos. What a file is, is
still judged by its content (sniff.py); a suffix only decides which folder entries are looked at."""

from __future__ import annotations

# With the names cameras and systems give them: .jfif and .jpe (JPEG), .hif (Canon's and Fujifilm's HEIF),
# .mts and .m2ts (AVCHD camcorders' MPEG-TS): a folder's such files were passed over without a word.
IMAGE_SUFFIXES = frozenset(
    [
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".gif",
        ".bmp",
        ".tif",
        ".tiff",
        ".webp",
        ".heic",
        ".heif",
        ".hif",
        ".avif",
    ]
)
VIDEO_SUFFIXES = frozenset(
    [".mp4", ".mov", ".m4v", ".3gp", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts"]
)
MEDIA_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES
