"""Where things live inside a dataset folder. Every other module asks this one for paths.

DATASET_DIR/
  manifest.csv     one row per face crop (see deepshield.data.manifest)
  errors.csv       one row per source file that gave no crop, with the reason
  dataset.json     how the dataset was built: sources, crop policy, frames, seed, split ratios
  preparing.json   there while a prepare is under way (see deepshield.data.manifest.PREPARING)
  removed.csv      rows taken out by `dataset balance --downsample` (kept, not deleted)
  crops/<root>/<file path inside the source>/<frame>_<face>.png
  records/<root>/<file path inside the source>.json    per-file done record (resume)
  stats/*.png, stats/stats.json
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import time
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, TextIO

from deepshield.locks import folder_lock, process_running
from deepshield.media.files import NAME_BYTES, NAME_MAX_BYTES, name_within

MANIFEST_NAME = "manifest.csv"
ERRORS_NAME = "errors.csv"
INFO_NAME = "dataset.json"
REMOVED_NAME = "removed.csv"
PREPARING_NAME = "preparing.json"
TEMP_SUFFIX = ".part"
# A temporary file of atomic_file this long untouched, of a process no longer running here, a killed writer left.
LEFT_TEMP_S = 600
SYNTH_DIR = "crops/_synth"  # where `dataset balance --synth-fakes` writes the fakes it makes from real crops

_UNSAFE = re.compile(r"[^A-Za-z0-9._+=@-]+")


def safe_name(text: str) -> str:
    """A single path component made of portable characters (never empty, never '.' or '..', and hidden only
    where `text` is)."""
    cleaned = _UNSAFE.sub("_", text).strip("_") or "_"
    # A name in another script lost all but its extension: 新闻 照片.jpg became .jpg=<hash>, a folder that file
    # managers and `scan -r` pass over.
    hidden_by_cleaning = cleaned.startswith(".") and not text.startswith(".")
    return "_" + cleaned if cleaned in (".", "..") or hidden_by_cleaning else cleaned


# The most a key's component may take: its done record's temporary name (<component>.json.<pid>.part, a pid
# up to 2**22) must still be a file name. A photo named with a file system's longest names was an error.
_KEY_PART_BYTES = NAME_MAX_BYTES - len(f".json.{2**22}{TEMP_SUFFIX}")


def safe_relpath(relative: str) -> str:
    """A POSIX relative path made of safe components ('..' becomes '_up_', so it never escapes). A component
    that had to be cleaned keeps a short hash of its own name, so that two names cleaned alike ('a é.png'
    and 'a_.png') stay two paths. A component too long to be a file name is cut (name_within), the last one
    to what its done record's name leaves room for: a folder's name is no record's, and a folder that fitted keeps
    its key (cut as the last one's, an earlier dataset's files in a 240-byte folder were all extracted again)."""
    parts = [
        "_up_" if part == ".." else _distinct_safe_name(part)
        for part in Path(relative).as_posix().split("/")
        if part not in ("", ".")
    ]
    cut = [name_within(part, NAME_MAX_BYTES) for part in parts[:-1]] + [
        name_within(part, _KEY_PART_BYTES) for part in parts[-1:]
    ]
    return "/".join(cut) or "_"


def _distinct_safe_name(part: str) -> str:
    cleaned = safe_name(part)
    if cleaned == part:
        return part
    return f"{cleaned}={hashlib.sha1(part.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


class DatasetLayout:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def errors(self) -> Path:
        return self.root / ERRORS_NAME

    @property
    def info(self) -> Path:
        return self.root / INFO_NAME

    @property
    def removed(self) -> Path:
        return self.root / REMOVED_NAME

    @property
    def preparing(self) -> Path:
        return self.root / PREPARING_NAME

    @property
    def crops(self) -> Path:
        return self.root / "crops"

    @property
    def records(self) -> Path:
        return self.root / "records"

    @property
    def stats(self) -> Path:
        return self.root / "stats"

    @property
    def own_media(self) -> tuple[Path, ...]:
        """The folders holding the images the dataset itself writes (crops, fakes made from them, charts):
        never read back as sources when the dataset lies inside a source or a source inside it."""
        return (self.crops, self.records, self.stats)

    def crop_dir(self, key: str) -> Path:
        """Folder holding the crops of one source file; `key` is '<root>/<path inside the source>'."""
        return self.crops / key

    def crop_relpath(self, key: str, frame_index: int, face_index: int) -> str:
        return f"crops/{key}/{frame_index:06d}_{face_index:02d}.png"

    def record_path(self, key: str) -> Path:
        return self.records / f"{key}.json"


@contextlib.contextmanager
def atomic_file(path: Path, durable: bool = False, clear_left: bool = False) -> Iterator[BinaryIO]:
    """A file to write, made under a temporary name in the same folder and renamed to `path` once whole:
    readers see all or nothing. A write that fails (a full disk) leaves the file there before as it was and
    no temporary file (one, a manifest's, stayed in the dataset's folder for good), and its OSError names
    `path` (a failed write names no file).

    `durable` also flushes to disk before the rename (survives a power cut, not only a killed process).
    `clear_left` first removes the temporary files of `path` that killed writers left (_remove_left_temps): for
    a file rewritten now and then in a small folder (a checkpoint, a cache, a command's report), not a dataset's
    crops or records (a folder's scan per file written).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if clear_left:
        _remove_left_temps(path)
    temp = path.with_name(f"{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        with open(temp, "wb") as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None:  # named as the file meant, not the temporary one
            raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None
        raise


def _remove_left_temps(path: Path) -> None:
    """Delete `path`'s temporary files (<name>.<pid>.part) of processes no longer running here, untouched for
    LEFT_TEMP_S: a writer killed (SIGKILL, the OOM killer, a pre-empted machine) leaves one, of its own pid, that
    no later write took the place of, where a checkpoint's or a face bank's one fixed temporary name was written
    over by the next (a face bank's: gigabytes, on the disk that may be short of them)."""
    prefix = f"{path.name}."
    with contextlib.suppress(OSError), os.scandir(path.parent) as entries:
        for entry in entries:
            pid = entry.name[len(prefix) : -len(TEMP_SUFFIX)]
            if not (entry.name.startswith(prefix) and entry.name.endswith(TEMP_SUFFIX) and pid.isdigit()):
                continue
            with contextlib.suppress(OSError):
                if not process_running(int(pid)) and time.time() - entry.stat().st_mtime > LEFT_TEMP_S:
                    os.unlink(entry.path)


def atomic_write_npz(
    path: Path, arrays: Mapping[str, object], *, compressed: bool = False, clear_left: bool = False
) -> None:
    """np.savez (np.savez_compressed with `compressed`) of `arrays` to `path` through atomic_file. Its zip is
    closed whatever happens: one that np.savez left open when a write failed (a full disk) was closed as it was
    collected, after the file under it, and printed "Exception ignored in: <function ZipFile.__del__> ...
    ValueError: seek of closed file" below the line that said what went wrong."""
    import numpy as np

    compression = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with (
        atomic_file(path, clear_left=clear_left) as handle,
        zipfile.ZipFile(handle, mode="w", compression=compression, allowZip64=True) as archive,
    ):
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:  # as np.savez writes them
                np.lib.format.write_array(member, np.asanyarray(value))


def atomic_write_bytes(path: Path, data: bytes, durable: bool = False, *, clear_left: bool = False) -> None:
    """`data` written to `path` through atomic_file."""
    with atomic_file(path, durable, clear_left) as handle:
        handle.write(data)


def write_output_text(path: Path, text: str) -> None:
    """A command's output file named by the user (scan's json --out, compare --out) written whole or not at all
    (atomic_write_text, where a link points, a killed writer's temporary file swept), or in place where its
    folder may not be written in though the file may (a shared folder: check_output_file lets it through, and
    the temporary file beside it was refused once the work was done). A pipe or a device (--out /dev/stdout)
    is written as it is: a file renamed over it would replace it, and a pipe's /proc name is no folder."""
    target = Path(os.path.realpath(path))
    if path.exists() and not path.is_file():
        path.write_text(text, encoding="utf-8", errors=NAME_BYTES)
        return
    try:
        atomic_write_text(target, text, clear_left=True)
    except PermissionError:
        target.write_text(text, encoding="utf-8", errors=NAME_BYTES)


@contextlib.contextmanager
def atomic_text_file(path: Path, *, clear_left: bool = False) -> Iterator[TextIO]:
    """atomic_file as text (a CSV's rows written as they come): UTF-8, a file name that is not UTF-8 written as
    its own bytes (NAME_BYTES), newlines as written (the csv module writes its own)."""
    with atomic_file(path, clear_left=clear_left) as handle:
        text = io.TextIOWrapper(handle, encoding="utf-8", errors=NAME_BYTES, newline="")
        try:
            yield text
        except BaseException:
            with contextlib.suppress(Exception):  # the write failed: what it had buffered is not wanted
                text.detach()
            raise
        text.detach()  # flushed into the file, which atomic_file closes and renames


def atomic_write_text(path: Path, text: str, durable: bool = False, *, clear_left: bool = False) -> None:
    """UTF-8, with a file name that is not UTF-8 written as its own bytes (NAME_BYTES), so that it leads
    back to its file when read with the same errors handler."""
    atomic_write_bytes(path, text.encode("utf-8", NAME_BYTES), durable, clear_left=clear_left)


@contextlib.contextmanager
def dataset_lock(root: Path) -> Iterator[None]:
    """Exclusive write access to a dataset folder for the duration of a prepare or balance step."""
    with folder_lock(root, "this dataset"):
        yield
