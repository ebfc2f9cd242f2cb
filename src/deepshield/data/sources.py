"""Source readers: turn a raw dataset on disk into typed items (one per media file), never dicts.

Four layouts are read:

* ``dfdc``: folders holding ``metadata.json`` (file name -> {"label": "REAL"/"FAKE", "original": ...})
  next to the mp4 files; a root holding many ``dfdc_train_part_*`` folders is one source.
  Group = the ``original`` video for fakes, the video itself for reals.
* ``ffpp``: FaceForensics++ (``original_sequences/<youtube|actors>/<compression>/videos/*.mp4``,
  ``manipulated_sequences/<method>/<compression>/videos/<target>_<source>.mp4``). Ids linked by a
  fake are joined into one group (for YouTube pairs: the sorted pair, e.g. ``000_003``), so a fake
  and both its originals stay on one side of the split.
* ``folders``: images or videos under folders named ``real`` / ``fake`` (any case, any depth); a
  sub-folder right under ``fake/`` names the method. Group = the file itself.
* ``csv``: ``path,label[,group][,method][,source]``, paths relative to the CSV file (Windows' backslashes too). A group named is one
  across every CSV read together (real.csv and fake.csv naming one person); a row without one is its own.

Anything that cannot become an item (a label that is neither real nor fake, a video missing from
metadata.json, a file outside any real/fake folder) comes out as a SourceProblem, never dropped.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from deepshield.data.layout import safe_name, safe_relpath
from deepshield.data.manifest import holds_dataset
from deepshield.errors import DeepShieldError
from deepshield.media.files import NAME_BYTES, check_media_file, files_under, real_path
from deepshield.media.suffixes import MEDIA_SUFFIXES, VIDEO_SUFFIXES
from deepshield.plural import numbered, plural
from deepshield.text_files import unique_keys

# The reason recorded for a file a listing names (metadata.json, a CSV) that is not on disk: kept
# apart from files that exist but cannot be read, in `prepare`'s and `evaluate`'s listings.
MISSING_FILE = "file not found"

Label = Literal["real", "fake"]
REAL: Label = "real"
FAKE: Label = "fake"
LABELS: tuple[Label, ...] = (REAL, FAKE)
_NUMERIC_LABELS: dict[str, Label] = {"0": REAL, "1": FAKE}
NO_METHOD = "none"  # method of real items
UNKNOWN_METHOD = "unknown"  # fakes whose manipulation the source does not name

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("dfdc", "ffpp", "folders", "csv")
CSV_GROUP = "csv"  # the prefix of a group a CSV's group column names, in every CSV alike


class SourceFormatError(DeepShieldError):
    """A SOURCE argument is not a layout we read, or not the one named."""


@dataclass(frozen=True)
class SourceItem:
    path: Path  # the media file (image or video)
    label: Label
    group: str  # items of one group never straddle train/val/test
    source: str  # dataset it comes from ("dfdc", "ffpp", a folder's name...)
    method: str  # manipulation method for fakes ("Deepfakes", "unknown"), "none" for reals
    key: str  # "<root key>/<path inside the source>": names its crops and its done record
    listed_at: str = ""  # the CSV line that gives its label ("list.csv line 3"); "" where a folder or file does


@dataclass(frozen=True)
class SourceProblem:
    path: Path  # the file (or metadata/CSV) concerned
    reason: str
    source: str
    label: str = ""
    group: str = ""
    method: str = ""


SourceEntry = SourceItem | SourceProblem


def normalise_label(text: str) -> Label | None:
    value = str(text).strip().lower()
    return value if value in LABELS else None


def media_files(root: Path, writing: Path | None = None) -> list[Path]:
    """The images and videos under `root`, but a prepared dataset's inside it (`prepare SRC --out SRC/real/prep`):
    its crops were read as media of the folder they lie in (12 files evaluated as 24), said in a note. `writing`:
    the dataset the reading command writes (prepare's --out, balance's dataset), passed over unsaid: its rerun
    was warned of its own output, told to give that dataset itself."""
    files = sorted(p for p in files_under(root) if p.suffix.lower() in MEDIA_SUFFIXES)
    held: dict[Path, bool] = {}  # folder -> whether it is a prepared dataset's, looked at once

    def in_dataset(path: Path) -> Path | None:
        for folder in path.relative_to(root).parents:
            if folder != Path("."):
                at = root / folder
                if at not in held:
                    held[at] = holds_dataset(at)
                if held[at]:
                    return at
        return None

    datasets = {path: dataset for path in files if (dataset := in_dataset(path)) is not None}
    own = real_path(writing) if writing is not None else None
    if said := {path: dataset for path, dataset in datasets.items() if real_path(dataset) != own}:
        held_in = sorted(set(said.values()))
        log.warning(
            "%s: %s of the prepared %s %s inside it passed over (a dataset's crops are no media of the folder holding it; give the "
            "dataset itself to read them)",
            root,
            numbered(len(said), "file"),
            plural(len(held_in), "dataset"),
            ", ".join(map(str, held_in)),
        )
    return [path for path in files if path not in datasets]


# --------------------------------------------------------------------------------------------- DFDC


def _dfdc_metadata_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    # Regular files only: a FIFO of that name blocked the reading of it for good.
    return sorted(p for p in files_under(root) if p.name == "metadata.json" and p.is_file())


def _looks_like_dfdc_metadata(path: Path) -> bool:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))  # the layout only: read_dfdc names a key given twice
    except (OSError, ValueError):
        return False
    return isinstance(entries, dict) and any(isinstance(v, dict) and "label" in v for v in entries.values())


def read_dfdc(root: Path, root_key: str, source: str = "dfdc", writing: Path | None = None) -> Iterator[SourceEntry]:
    base = root.parent if root.is_file() else root
    listed: set[Path] = set()  # every video a metadata.json names, wherever it is
    for meta in _dfdc_metadata_files(root):
        try:
            # A video listed twice (lists merged by hand) kept its last label without a word.
            entries = json.loads(meta.read_text(encoding="utf-8"), object_pairs_hook=unique_keys)
        except (OSError, ValueError) as exc:
            yield SourceProblem(meta, f"unreadable metadata.json: {exc}", source)
            continue
        if not isinstance(entries, dict):
            yield SourceProblem(meta, "metadata.json is not an object mapping file names to entries", source)
            continue
        for name in sorted(entries):
            entry = entries[name]
            path = meta.parent / name
            listed.add(real_path(path))
            label = normalise_label(entry.get("label", "")) if isinstance(entry, dict) else None
            if label is None:
                yield SourceProblem(path, f"metadata.json entry has no REAL/FAKE label: {entry!r}", source)
                continue
            # An absolute name gave a traceback; a name climbing out with .. was taken, keyed _up_/_up_/...
            if not Path(os.path.normpath(path)).is_relative_to(os.path.normpath(base)):
                yield SourceProblem(path, "metadata.json names a file outside the dataset's folder", source, label)
                continue
            original = entry.get("original") if label == FAKE else None
            # A real and the fakes made from it share a group by the real's file name (a key "part/r3.mp4"
            # put the real apart from the fakes naming "r3.mp4" as their original).
            group = f"{source}:{Path(str(original) if original else name).name}"
            yield SourceItem(
                path=path,
                label=label,
                group=group,
                source=source,
                method=UNKNOWN_METHOD if label == FAKE else NO_METHOD,
                key=f"{root_key}/{safe_relpath(path.relative_to(base).as_posix())}",
            )
    # A video no metadata.json names has no label: said, wherever it is (a part folder without its
    # metadata.json, a video in a sub-folder or at the root were dropped without a word).
    for path in media_files(base, writing) if root.is_dir() else []:
        if path.suffix.lower() in VIDEO_SUFFIXES and real_path(path) not in listed:
            yield SourceProblem(path, "video not listed in any metadata.json (label unknown)", source)


# -------------------------------------------------------------------------------------------- FF++

_FFPP_FAKE = re.compile(r"^(\d+)_(\d+)(?:__.*)?$")  # 000_003 (YouTube) or 01_02__scene__ID (DeepFakeDetection)
_FFPP_REAL = re.compile(r"^(\d+)(?:__.*)?$")  # 000 (YouTube) or 01__scene (actors)
_FFPP_NOT_COMPRESSION = {"masks"}


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def components(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for x in self.parent:
            out.setdefault(self.find(x), []).append(x)
        return out


def _ffpp_videos(folder: Path, compressions: Sequence[str] | None) -> Iterator[tuple[str, str, Path]]:
    """(sub-folder name, compression, video) under <folder>/<name>/<compression>/videos/."""
    if not folder.is_dir():
        return
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for comp in sorted(p for p in sub.iterdir() if p.is_dir() and p.name not in _FFPP_NOT_COMPRESSION):
            if compressions and comp.name not in compressions:
                continue
            videos = comp / "videos"
            for video in sorted(videos.iterdir()) if videos.is_dir() else []:
                if video.is_file() and video.suffix.lower() in VIDEO_SUFFIXES:
                    yield sub.name, comp.name, video


def read_ffpp(
    root: Path, root_key: str, source: str = "ffpp", compressions: Sequence[str] | None = None
) -> Iterator[SourceEntry]:
    return read_ffpp_roots([(root, root_key)], source, compressions)


def read_ffpp_roots(
    roots: Sequence[tuple[Path, str]], source: str = "ffpp", compressions: Sequence[str] | None = None
) -> Iterator[SourceEntry]:
    """The FaceForensics++ folders `roots` ((folder, key) each) read together: a fake joins its two
    identities into one group whichever folder holds them (read apart, originals in one folder and fakes
    in another put identity 003 in train and in val)."""
    reals = [
        (kind, comp, video, root, key)
        for root, key in roots
        for kind, comp, video in _ffpp_videos(root / "original_sequences", compressions)
    ]
    fakes = [
        (kind, comp, video, root, key)
        for root, key in roots
        for kind, comp, video in _ffpp_videos(root / "manipulated_sequences", compressions)
    ]
    ids = _UnionFind()

    def namespace(kind: str) -> str:
        return "actors" if kind in ("actors", "DeepFakeDetection") else "youtube"

    real_ids: list[str] = []
    for kind, _, video, _, _ in reals:
        match = _FFPP_REAL.match(video.stem)
        node = f"{namespace(kind)}/{match.group(1) if match else video.stem}"
        ids.find(node)
        real_ids.append(node)
    fake_ids: list[str] = []
    for method, _, video, _, _ in fakes:
        match = _FFPP_FAKE.match(video.stem)
        if match:
            a, b = (f"{namespace(method)}/{match.group(i)}" for i in (1, 2))
            ids.union(a, b)
            fake_ids.append(a)
        else:
            node = f"{namespace(method)}/{method}/{video.stem}"
            ids.find(node)
            fake_ids.append(node)
    names = {}
    for members in ids.components().values():
        prefixes = {m.split("/", 1)[0] for m in members}
        tails = sorted(m.split("/", 1)[1] for m in members)
        name = "_".join(tails) if prefixes == {"youtube"} else "+".join(sorted(members))
        for m in members:
            names[m] = f"{source}:{name}"
    for (_, _, video, root, key), node in zip(reals, real_ids):
        yield SourceItem(
            video, REAL, names[node], source, NO_METHOD, f"{key}/{safe_relpath(video.relative_to(root).as_posix())}"
        )
    for (method, _, video, root, key), node in zip(fakes, fake_ids):
        yield SourceItem(
            video, FAKE, names[node], source, method, f"{key}/{safe_relpath(video.relative_to(root).as_posix())}"
        )
    for root, _ in roots:
        if not any(entry[3] == root for entry in (*reals, *fakes)):
            yield SourceProblem(root, _no_ffpp_videos(root, compressions), source)


def _no_ffpp_videos(root: Path, compressions: Sequence[str] | None) -> str:
    """Why a FaceForensics++ folder gave no video: none at all, or none at the compression levels asked for
    (said as none at all, though the folder held c23 videos for a --ffpp-compression c99)."""
    where = "under original_sequences/*/*/videos or manipulated_sequences/*/*/videos"
    if not compressions:
        return f"no videos {where}"
    found = sorted(
        {
            comp
            for sequences in ("original_sequences", "manipulated_sequences")
            for _, comp, _ in _ffpp_videos(root / sequences, None)
        }
    )
    asked = ", ".join(compressions)
    held = f"it holds videos at {', '.join(found)} only" if found else "it holds none at any level"
    return f"no videos at compression {plural(len(compressions), 'level')} {asked} (--ffpp-compression) {where}: {held}"


def ffpp_levels_of_one_video(roots: Sequence[Path], compressions: Sequence[str] | None = None) -> dict[str, list[str]]:
    """The FaceForensics++ videos that `roots` hold at more than one compression level (those read with
    `compressions`), each with its levels: every copy is an item, and a file of its own to whatever counts files."""
    levels: dict[str, set[str]] = {}
    for root in roots:
        for sequences in ("original_sequences", "manipulated_sequences"):
            for sub, comp, video in _ffpp_videos(root / sequences, compressions):
                levels.setdefault(f"{sequences}/{sub}/{video.name}", set()).add(comp)
    return {video: sorted(comps) for video, comps in levels.items() if len(comps) > 1}


# ----------------------------------------------------------------------------------------- folders


def folder_source_name(root: Path) -> str:
    """The dataset name of a folder source: its own name, or its parent's when it is itself real/ or fake/."""
    root = root.resolve()
    while normalise_label(root.name) is not None and root.parent != root:
        root = root.parent
    return root.name or "folders"


def read_folders(
    root: Path, root_key: str, source: str | None = None, writing: Path | None = None
) -> Iterator[SourceEntry]:
    source = source or folder_source_name(root)
    for path in media_files(root, writing):
        relative = path.relative_to(root)
        folders = (root.resolve().name, *relative.parts[:-1])
        labelled = [(i, label) for i, name in enumerate(folders) if (label := normalise_label(name)) is not None]
        if not labelled:
            yield SourceProblem(path, "not inside a folder named real/ or fake/ (label unknown)", source)
            continue
        at, label = labelled[-1]  # the innermost real/ or fake/ decides
        method = NO_METHOD if label == REAL else (folders[at + 1] if at + 1 < len(folders) else UNKNOWN_METHOD)
        rel = relative.as_posix()
        yield SourceItem(path, label, f"{root_key}:{rel}", source, method, f"{root_key}/{safe_relpath(rel)}")


def read_as_label(
    root: Path, root_key: str, label: Label, source: str | None = None, writing: Path | None = None
) -> Iterator[SourceEntry]:
    """Every image or video under `root`, all with one label (a folder of extra real faces)."""
    source = source or folder_source_name(root)
    files = media_files(root, writing) if root.is_dir() else [root]
    base = root if root.is_dir() else root.parent
    for path in files:
        rel = path.relative_to(base).as_posix()
        method = NO_METHOD if label == REAL else UNKNOWN_METHOD
        yield SourceItem(path, label, f"{root_key}:{rel}", source, method, f"{root_key}/{safe_relpath(rel)}")
    if not files:
        yield SourceProblem(root, "no image or video files found", source, label, f"{root_key}:")


# --------------------------------------------------------------------------------------------- CSV


def _header_line(lines: Sequence[str]) -> int:
    """Where a CSV's header is: past blank lines and the `sep=,` line Excel writes first (csv.DictReader took
    either for the header: "CSV needs the columns path,label")."""
    return next((i for i, line in enumerate(lines) if line.strip() and line.strip().lower() != "sep=,"), len(lines))


def _csv_text(path: Path) -> str:
    """A CSV's text: UTF-8 (with or without a BOM), a name that is not UTF-8 kept as its bytes (NAME_BYTES,
    as Linux names the file and `scan` writes it); Windows-1252 only for a file with no UTF-8 beyond ASCII
    that decodes as it, as spreadsheets on Windows save a CSV (café.jpg there was a decoding error that left
    the whole listing out). One stray byte sent the whole file to Windows-1252, every other name with it
    mis-read and said missing. A UTF-16 file (NUL bytes) is not guessed at: its decoding error is the reason."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        if b"\x00" in data:
            raise
    text = data.decode("utf-8-sig", NAME_BYTES)
    # a valid UTF-8 sequence beyond ASCII (not a kept byte, U+DC80-U+DCFF) says the file is UTF-8
    if data.startswith(codecs.BOM_UTF8) or any(c > "\x7f" and not "\udc80" <= c <= "\udcff" for c in text):
        return text
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:  # bytes Windows-1252 does not define either: a name's own bytes
        return text


def read_csv_manifest(csv_path: Path, root_key: str, source: str | None = None) -> Iterator[SourceEntry]:
    base = csv_path.parent
    default_source = source or safe_name(base.resolve().name or csv_path.stem)
    try:
        lines = io.StringIO(_csv_text(csv_path), newline="").readlines()
        skipped = _header_line(lines)
        reader = csv.DictReader(lines[skipped:])
        rows = [(reader.line_num + skipped, row) for row in reader]  # each row's (last) line in the file
        header = [(name or "").strip().lower() for name in reader.fieldnames or []]
        fields = set(header)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        yield SourceProblem(csv_path, f"unreadable CSV: {exc}", default_source)
        return
    if twice := sorted({name for name in header if name and header.count(name) > 1}):
        # csv.DictReader keeps a repeated column's last value: `path,label,label` with `real,fake` read fake
        yield SourceProblem(csv_path, f"CSV names the column {', '.join(twice)} twice: which to read?", default_source)
        return
    if not rows:
        yield SourceProblem(csv_path, "CSV has no rows", default_source)
        return
    # DFDC's test labels.csv (and many labelled-data files) name the path column `filename`: it was refused
    # for want of `path`. A CSV with both reads `path`.
    path_column = "path" if "path" in fields else "filename"
    if not {path_column, "label"} <= fields:
        yield SourceProblem(
            csv_path,
            "CSV needs the columns path (or filename),label (optional: group, method, source)",
            default_source,
        )
        return
    for number, raw in rows:
        if None in raw:  # csv.DictReader keeps fields past the header's as a list under None
            yield SourceProblem(
                csv_path, f"line {number}: more fields than the header has (a comma not in quotes?)", default_source
            )
            continue
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
        written = row.get(path_column, "")
        slashed = written.replace("\\", "/")
        if slashed != written and not os.path.lexists(base / written) and os.path.lexists(base / slashed):
            # A CSV written on Windows separates folders with backslashes (images\0.png): every such row was
            # "file not found". A name holding a backslash (legal here, and rare) is still taken as written.
            written = slashed
        row_source = row.get("source") or default_source
        where = csv_path if not written else (base / written)
        # A CSV's label may also be the 0/1 of most labelled-data files (folders named 0 or 1 are not labels).
        label = normalise_label(row.get("label", "")) or _NUMERIC_LABELS.get(row.get("label", ""))
        if not written:
            yield SourceProblem(csv_path, f"line {number}: empty path", row_source)
            continue
        if label is None:
            yield SourceProblem(
                where,
                f"line {number}: label {row.get('label', '')!r} is neither real nor fake (nor 0 nor 1)",
                row_source,
            )
            continue
        # A named group is one whatever each row's source or CSV: a person's real and fake rows often name two
        # sources (Celeb-real, Celeb-synthesis) or sit in two CSVs (real.csv, fake.csv), and namespaced by
        # either one identity was two groups, in train and in test.
        group = f"{CSV_GROUP}:{row['group']}" if row.get("group") else f"{root_key}:{written}"
        method = row.get("method") or (NO_METHOD if label == REAL else UNKNOWN_METHOD)
        # A path given twice is left to distinct_entries, which also knows './a.png' and a link for 'a.png'.
        key = f"{root_key}/{safe_relpath(written)}"
        yield SourceItem(where, label, group, row_source, method, key, f"{csv_path.name} line {number}")


# ------------------------------------------------------------------------------------------ detect


FORMAT_ADVICE = "name it with --format"  # the commands with --format: prepare, evaluate


def detect_format(path: Path, advice: str = FORMAT_ADVICE) -> str:
    """Guess a SOURCE's layout. Raises SourceFormatError with `advice` when it cannot."""
    if not path.exists():
        raise SourceFormatError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "csv"
        if path.name == "metadata.json":
            return "dfdc"
        raise SourceFormatError(
            f"{path}: a SOURCE file must be a CSV manifest (path,label[,group][,method][,source]) or a DFDC metadata.json"
        )
    if not path.is_dir():  # a FIFO, a device, a socket (whatever its name): listed as a folder, "Not a directory"
        try:
            check_media_file(path)
        except DeepShieldError as exc:
            raise SourceFormatError(
                f"{path}: {exc}: a SOURCE is a folder, a CSV manifest or a DFDC metadata.json"
            ) from None
    try:
        with os.scandir(path):
            pass
        ffpp = (path / "original_sequences").is_dir() or (path / "manipulated_sequences").is_dir()
    except OSError as exc:  # a folder without read permission: probing original_sequences/ was a traceback
        raise SourceFormatError(f"{path}: cannot read the folder ({exc.strerror or exc})") from None
    if ffpp:
        return "ffpp"
    if any(_looks_like_dfdc_metadata(meta) for meta in _dfdc_metadata_files(path)):
        return "dfdc"
    if normalise_label(path.name) is not None or any(
        p.is_dir() and normalise_label(p.name) is not None for p in path.rglob("*")
    ):
        return "folders"
    raise SourceFormatError(
        f"{path}: cannot tell the dataset layout (no metadata.json, no FaceForensics++ folders, no real/ or fake/ "
        f"folder); {advice}"
    )


def labelled_fake(root: Path, writing: Path | None = None) -> SourceItem | None:
    """A file that `root`'s own labels call fake (a fake/ folder, a DFDC metadata.json, FaceForensics++'s
    manipulated sequences), or that the FaceForensics++ tree `root` lies in does (a method's videos folder
    has no labels of its own, and was taken as real; any file under manipulated_sequences, its masks too, is
    no real face); None when none does or `root` has no labels of its own (a plain folder of faces)."""
    try:
        found = next(
            (e for e in read_source(root, writing=writing) if isinstance(e, SourceItem) and e.label == FAKE), None
        )
    except SourceFormatError:
        found = None
    if found is not None:
        return found
    inside = root.resolve()
    for folder in (inside, *inside.parents):
        if folder.name == "manipulated_sequences":
            entries = read_ffpp(folder.parent, folder.parent.name)
            if found := next((e for e in entries if isinstance(e, SourceItem) and e.path.is_relative_to(inside)), None):
                return found
            # Not a method's videos (its masks/videos, say), and no real face either: nothing in this tree is one.
            method = (inside.relative_to(folder).parts or ("unknown",))[0]
            return next(
                (
                    SourceItem(
                        path, FAKE, path.stem, "ffpp", method, f"{folder.parent.name}/{path.relative_to(folder.parent)}"
                    )
                    for path in media_files(inside, writing)
                ),
                None,
            )
    return None


def root_keys(paths: Sequence[Path], taken: Sequence[str] = (), known: Mapping[str, str] | None = None) -> list[str]:
    """One short, unique folder name per SOURCE argument (its own name; '-2', '-3' appended on
    clashes with each other or with `taken`, the keys a dataset already uses). A source the dataset
    already holds keeps its key (`known`: resolved path -> key): given in another order, two sources of one
    folder name swapped keys, and with them groups and splits."""
    known = known or {}
    keys: list[str | None] = [known.get(str(path.resolve())) for path in paths]
    used = set(taken) | {key for key in keys if key is not None}
    for index, path in enumerate(paths):
        if keys[index] is not None:
            continue
        resolved = path.resolve()
        base = safe_name(
            resolved.stem
            if resolved.is_file() and resolved.suffix.lower() == ".csv" and resolved.stem not in ("", "metadata")
            else resolved.name
        )
        if resolved.is_file() and resolved.name == "metadata.json":
            base = safe_name(resolved.parent.name)
        key, n = base, 1
        while key in used:
            n += 1
            key = f"{base}-{n}"
        keys[index] = key
        used.add(key)
    return [key for key in keys if key is not None]


def read_source(
    path: Path,
    fmt: str = "auto",
    root_key: str | None = None,
    ffpp_compressions: Sequence[str] | None = None,
    writing: Path | None = None,
) -> Iterator[SourceEntry]:
    """All entries of one SOURCE, in a deterministic order; `writing`: as media_files'."""
    path = Path(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise SourceFormatError(f"unknown format {fmt!r}: expected one of auto, {', '.join(FORMATS)}")
    if not path.exists():
        raise SourceFormatError(f"{path}: no such file or folder")
    key = root_key or root_keys([path])[0]
    if fmt == "csv":
        if not path.is_file():
            raise SourceFormatError(f"{path}: --format csv needs a CSV file")
        return read_csv_manifest(path, key)
    if fmt == "dfdc":
        return read_dfdc(path, key, writing=writing)
    if not path.is_dir():
        raise SourceFormatError(f"{path}: --format {fmt} needs a folder")
    if fmt == "ffpp":
        return read_ffpp(path, key, compressions=ffpp_compressions)
    return read_folders(path, key, writing=writing)
