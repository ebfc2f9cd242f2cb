"""Media paths from users: only regular files are opened, and every other kind is named."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from deepshield.errors import DeepShieldError, MissingFileError

_SPECIAL_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def check_media_file(path: Path) -> int:
    """The size of `path`, a regular file (symbolic links followed). Raises DeepShieldError naming
    what is there instead: nothing, a link loop, a broken link, a FIFO, a device, a folder. Nothing
    is opened, so a FIFO can never block the caller."""
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DeepShieldError("symbolic link loop") from None
        if exc.errno == errno.ENOENT:
            raise MissingFileError("broken symbolic link" if os.path.islink(path) else "no such file") from None
        if exc.errno == errno.EACCES:
            raise DeepShieldError("permission denied") from None
        raise DeepShieldError(f"cannot read the file ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        try:
            with os.scandir(path):
                pass
        except OSError as exc:  # named by a scan that could not list it: its files are not in the results
            raise DeepShieldError(f"a folder that cannot be read ({exc.strerror}): its files were left out") from None
    for is_kind, name in _SPECIAL_KINDS:
        if is_kind(info.st_mode):
            raise DeepShieldError(f"not a regular file: {name}")
    return info.st_size


@contextlib.contextmanager
def _open_regular(path: Path) -> Iterator[BinaryIO]:
    """A regular file opened for reading. O_NONBLOCK: a FIFO swapped in after the check still cannot
    block the open."""
    check_media_file(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DeepShieldError("not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            yield handle
    finally:
        os.close(fd)


def read_head(path: Path, count: int) -> bytes:
    """The first `count` bytes of a regular file."""
    with _open_regular(path) as handle:
        return handle.read(count)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a regular file's bytes, hex: what names the file in a record of what was analysed."""
    digest = hashlib.sha256()
    try:
        with _open_regular(path) as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except PermissionError:
        raise DeepShieldError("permission denied") from None
    except OSError as exc:
        raise DeepShieldError(f"cannot read the file ({exc.strerror or exc})") from None
    return digest.hexdigest()


def source_key(path: Path) -> str:
    """A file's size and SHA-256, "<size>:<hex>": what names a training photo where the photo is not (a
    packed face bank's), the size sparing the hashing of files of other sizes (keyed_among)."""
    return f"{path.stat().st_size}:{file_sha256(path)}"


def keyed_among(paths: Iterable[Path], keys: Collection[str]) -> dict[Path, str]:
    """The source_key of each of `paths` that is one of `keys`: only files of a size some key has are
    hashed, and a file that cannot be read is none of them."""
    sizes = {int(key.split(":", 1)[0]) for key in keys}
    found = {}
    for path in paths:
        try:
            if os.stat(path).st_size in sizes and (key := source_key(path)) in keys:
                found[path] = key
        except (OSError, DeepShieldError):
            continue
    return found


Signature = tuple[int, int] | None  # a file's size and modification time; None: it cannot be stat'ed


def file_signature(path: Path) -> Signature:
    """A file's size and modification time (ns): what tells a file changed since it was last looked at."""
    try:
        stat = path.stat()
    except OSError:  # a broken link, say
        return None
    return (stat.st_size, stat.st_mtime_ns)


def real_path(path: Path | str) -> Path:
    """The path with its links followed, as Path.resolve gives it, but a symbolic-link loop does not raise:
    it stays an entry of its own, for check_media_file to name (Path.resolve's RuntimeError ended prepare)."""
    return Path(os.path.realpath(path))


def files_under(root: Path, unreadable: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Every file under `root`, hidden ones aside, through linked folders too, each real folder once.
    (Path.rglob follows no linked folder: a `real/` linked to where the photos live gave no file and no
    error, and the dataset became all fakes.) Entries that are no regular file (a broken link, a FIFO)
    come too, for the caller to say what each is (check_media_file): they vanished without a word. A
    folder that cannot be listed is given to `unreadable`; without one, it is an error: its files were
    left out without a word (an evaluation of a set whose fake/ was unreadable reported all files real)."""

    def cannot_list(exc: OSError) -> None:
        folder = Path(exc.filename)
        if unreadable is None:
            raise DeepShieldError(
                f"cannot read the folder {shown_name(str(folder))} ({exc.strerror}): its files would be left out"
            )
        unreadable(folder)

    seen: set[Path] = set()
    for folder, subfolders, names in os.walk(root, onerror=cannot_list, followlinks=True):
        real = Path(folder).resolve()
        if real in seen:  # a link back up the tree
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in names:
            path = Path(folder) / name
            if not name.startswith(".") and not path.is_dir():
                yield path


# How text files written for people keep a file name that is not UTF-8 (Python holds its bytes as
# surrogates, which strict UTF-8 cannot write): its own bytes, so that the name leads back to the file.
NAME_BYTES = "surrogateescape"


NAME_MAX_BYTES = 255  # a file name's bound on Linux, macOS and Windows file systems


def name_within(name: str, room: int) -> str:
    """`name` as part of a file name with `room` bytes for it: itself where its bytes (UTF-8, NAME_BYTES) fit,
    else its head and "~" with a digest of it whole, so that two long names stay two. A name made from a
    user's file name, which may be a file system's longest, with more beside it was refused: writing failed."""
    whole = name.encode("utf-8", NAME_BYTES)
    if len(whole) <= room:
        return name
    digest = "~" + hashlib.sha256(whole).hexdigest()[:12]
    kept = whole[: room - len(digest)].decode("utf-8", NAME_BYTES)
    while not name.startswith(kept):  # a character cut in two: its first bytes alone are left out
        kept = kept[:-1]
    return kept + digest


def shown_name(text: str) -> str:
    """A path as text any page can show: bytes of a name that were not UTF-8 appear as \\xe9 (writing the
    name itself failed, and left an empty page)."""
    try:
        return text.encode("utf-8", NAME_BYTES).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file name's bytes give
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
