"""Text a file wrote about itself (EXIF strings, Content Credentials fields), made safe to show: one line,
printable characters only. A forged file's escape codes and line breaks otherwise reached the terminal,
where they could overwrite a line such as the verdict on its signature."""

from __future__ import annotations

import contextlib


def file_text(value: object, limit: int = 200) -> str | None:
    """`value` as clean text, None when blank. EXIF strings are often NUL-padded; UTF-16 with its byte-order
    mark (some cameras and editors write it where EXIF says ASCII) is read as UTF-16: Pillow's Latin-1
    reading of it showed a camera as "ÿþCanon"."""
    if isinstance(value, str) and value[:2] in ("\xff\xfe", "\xfe\xff"):
        value = value.encode("latin-1", "replace")
    elif isinstance(value, str) and not value.isascii() and max(value) <= "\xff":
        # UTF-8, as phones and generators write EXIF text, read by Pillow as Latin-1: "DALL·E" showed as
        # "DALLÂ·E". Latin-1 text is seldom also valid UTF-8, and is kept as it is when not.
        with contextlib.suppress(UnicodeDecodeError):
            value = value.encode("latin-1").decode("utf-8")
    if isinstance(value, bytes):
        value = value.decode("utf-16" if value[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8", "replace")
    text = str(value).replace("\x00", "").strip() if value is not None else ""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())[:limit] or None
