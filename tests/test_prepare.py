"""`deepshield prepare`: sources (DFDC, FF++, folders, CSV) -> face crops, manifest, errors, split.

Small datasets are built here from the astronaut photo (256 px, shifted / flipped / tinted variants
as different "people"); videos have 3 frames and 2 are sampled, crops are 64 px.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import stat
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepshield.cli.main import main
from deepshield.data.extract import NO_FACE, ExtractSettings
from deepshield.data.layout import TEMP_SUFFIX, DatasetLayout, atomic_write_text, write_output_text
from deepshield.data.manifest import CropRecord, load_crop, read_errors, read_info, read_manifest, write_manifest
from deepshield.data.prepare import prepare_dataset
from deepshield.data.sources import SourceFormatError, SourceItem, SourceProblem, detect_format, read_source
from deepshield.data.split import apply_split, parse_ratios
from deepshield.errors import DeepShieldError
from deepshield.faces.crop import CropPolicy
from deepshield.media.images import encode_png
from tests.conftest import deny_listing, file_size_limit, module_edited, write_video

SETTINGS = ExtractSettings(frames=2, policy=CropPolicy(size=64))


@pytest.fixture(scope="module")
def small(astronaut) -> np.ndarray:
    return cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)


def variant(image: np.ndarray, i: int) -> np.ndarray:
    """A distinct-looking copy per i: shifted, mirrored every other one, tinted."""
    out = np.roll(image, 9 * (i % 7) - 27, axis=1)
    if i % 2:
        out = out[:, ::-1]
    tint = np.array([(i * 7) % 25, (i * 11) % 25, (i * 13) % 25])
    return np.ascontiguousarray(np.clip(out.astype(np.int16) + tint - 12, 0, 255).astype(np.uint8))


def clip(image: np.ndarray, i: int, frames: int = 3) -> list[np.ndarray]:
    base = variant(image, i)
    return [np.ascontiguousarray(np.roll(base, 2 * k, axis=1)) for k in range(frames)]


def write_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(image))  # cv2.imwrite crashes on a name that is not UTF-8
    return path


def build_dfdc(root: Path, small: np.ndarray) -> Path:
    """Two parts; 6 reals, 7 fakes (one made from an original in the other part), plus a corrupt,
    a faceless, a missing and an unlisted video."""
    part0, part1 = root / "dfdc_train_part_0", root / "dfdc_train_part_1"
    part0.mkdir(parents=True)
    part1.mkdir(parents=True)
    meta0, meta1 = {}, {}
    for i in range(6):
        write_video(part0 / f"real{i}.mp4", clip(small, i))
        meta0[f"real{i}.mp4"] = {"label": "REAL", "split": "train"}
        write_video(part1 / f"fake{i}.mp4", clip(small, i + 20))
        meta1[f"fake{i}.mp4"] = {"label": "FAKE", "split": "train", "original": f"real{i}.mp4"}
    write_video(part0 / "fake0b.mp4", clip(small, 30))
    meta0["fake0b.mp4"] = {"label": "FAKE", "split": "train", "original": "real0.mp4"}
    write_video(part1 / "blank.mp4", [np.full((128, 128, 3), 90, np.uint8)] * 3)
    meta1["blank.mp4"] = {"label": "FAKE", "split": "train", "original": "real1.mp4"}
    (part1 / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    meta1["broken.mp4"] = {"label": "REAL", "split": "train"}
    meta1["missing.mp4"] = {"label": "FAKE", "split": "train", "original": "real2.mp4"}
    write_video(part1 / "unlisted.mp4", clip(small, 40))
    (part0 / "metadata.json").write_text(json.dumps(meta0))
    (part1 / "metadata.json").write_text(json.dumps(meta1))
    return root


@pytest.fixture(scope="module")
def dfdc_root(tmp_path_factory, small) -> Path:
    return build_dfdc(tmp_path_factory.mktemp("raw") / "dfdc", small)


@pytest.fixture(scope="module")
def dfdc_dataset(tmp_path_factory, dfdc_root) -> Path:
    """The reference: an uninterrupted single-worker run."""
    out = tmp_path_factory.mktemp("datasets") / "reference"
    prepare_dataset([dfdc_root], out, settings=SETTINGS, workers=1, seed=3, progress=False)
    return out


def _crop_bytes(dataset: Path) -> dict[str, bytes]:
    return {r.crop_path: (dataset / r.crop_path).read_bytes() for r in read_manifest(dataset)}


def assert_groups_within_one_split(records: list[CropRecord]) -> None:
    splits = defaultdict(set)
    for record in records:
        splits[record.group].add(record.split)
    assert all(len(s) == 1 for s in splits.values()), {g: s for g, s in splits.items() if len(s) > 1}


# ------------------------------------------------------------------------------------------- DFDC


def test_dfdc_manifest_rows_labels_and_groups(dfdc_dataset: Path, dfdc_root: Path):
    records = read_manifest(dfdc_dataset)
    # 13 videos with a face, 2 sampled frames each, one face per frame.
    assert len(records) == 26
    by_file = defaultdict(list)
    for record in records:
        by_file[Path(record.source_file).name].append(record)
    assert sorted(by_file) == sorted(
        [f"real{i}.mp4" for i in range(6)] + [f"fake{i}.mp4" for i in range(6)] + ["fake0b.mp4"]
    )
    for name, rows in by_file.items():
        assert [(r.frame_index, r.face_index) for r in rows] == [(0, 0), (2, 0)]
        assert {r.label for r in rows} == {"real" if name.startswith("real") else "fake"}
        assert {r.source for r in rows} == {"dfdc"}
    # The group of a fake is its original, wherever the original lives; a real is its own group.
    assert {r.group for r in by_file["real0.mp4"]} == {"dfdc:real0.mp4"}
    assert {r.group for r in by_file["fake0.mp4"]} == {"dfdc:real0.mp4"}
    assert {r.group for r in by_file["fake0b.mp4"]} == {"dfdc:real0.mp4"}
    assert {r.group for r in by_file["fake4.mp4"]} == {"dfdc:real4.mp4"}
    assert {r.method for r in by_file["fake1.mp4"]} == {"unknown"} and {r.method for r in by_file["real1.mp4"]} == {
        "none"
    }
    record = by_file["real3.mp4"][0]
    assert record.crop_path.startswith("crops/dfdc/dfdc_train_part_0/real3.mp4/") and record.crop_path.endswith(".png")
    assert Path(record.source_file) == (dfdc_root / "dfdc_train_part_0" / "real3.mp4").resolve()
    crop = load_crop(record, dfdc_dataset)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    # The 6 keypoints are in crop coordinates: eyes above the mouth, all inside the crop.
    points = record.landmarks_array
    assert points.shape == (6, 2) and (points[:4] > 0).all() and (points[:4] < 64).all()
    assert points[0, 1] < points[3, 1] and points[1, 1] < points[3, 1]
    info = read_info(dfdc_dataset)
    assert info.crop_policy.size == 64 and info.frames == 2 and info.sources[0].format == "dfdc"


def test_dfdc_errors_are_recorded_with_reasons(dfdc_dataset: Path):
    errors = {Path(e.source_file).name: e for e in read_errors(dfdc_dataset)}
    assert set(errors) == {"blank.mp4", "broken.mp4", "missing.mp4", "unlisted.mp4"}
    assert errors["blank.mp4"].reason == NO_FACE and errors["blank.mp4"].label == "fake"
    assert errors["blank.mp4"].group == "dfdc:real1.mp4"
    assert "video" in errors["broken.mp4"].reason and errors["broken.mp4"].label == "real"
    assert errors["missing.mp4"].reason == "file not found"
    assert "not listed in any metadata.json" in errors["unlisted.mp4"].reason
    with open(DatasetLayout(dfdc_dataset).errors, newline="") as handle:
        assert next(csv.reader(handle)) == ["source_file", "label", "group", "source", "method", "reason"]


def test_dfdc_videos_no_metadata_names_are_said_and_a_real_keyed_by_folder_is_grouped_with_its_fakes(tmp_path: Path):
    # Videos in a part without its metadata.json, in a sub-folder or at the root were dropped without a
    # word; a real listed as "sub/r3.mp4" was grouped apart from the fakes naming "r3.mp4" as original.
    part = tmp_path / "dfdc" / "part_a"
    (part / "sub").mkdir(parents=True)
    for name in ("sub/r3.mp4", "f3.mp4", "sub/stray.mp4"):
        (part / name).write_bytes(b"x")
    (part / "metadata.json").write_text(
        json.dumps({"sub/r3.mp4": {"label": "REAL"}, "f3.mp4": {"label": "FAKE", "original": "r3.mp4"}})
    )
    (tmp_path / "dfdc" / "part_c").mkdir()
    (tmp_path / "dfdc" / "part_c" / "c1.mp4").write_bytes(b"x")
    (tmp_path / "dfdc" / "root.mp4").write_bytes(b"x")
    entries = list(read_source(tmp_path / "dfdc", "dfdc"))
    items = {item.path.name: item for item in entries if isinstance(item, SourceItem)}
    assert items["r3.mp4"].group == items["f3.mp4"].group == "dfdc:r3.mp4"
    unlisted = sorted(e.path.name for e in entries if not isinstance(e, SourceItem))
    assert unlisted == ["c1.mp4", "root.mp4", "stray.mp4"]
    # A name outside the metadata's folder (an absolute path) gave a traceback.
    (tmp_path / "away.mp4").write_bytes(b"x")
    for name in (str(tmp_path / "away.mp4"), "../../away.mp4"):  # a name climbing out with .. was taken
        (part / "metadata.json").write_text(json.dumps({name: {"label": "FAKE"}}))
        (problem,) = [e for e in read_source(part, "dfdc") if e.path.name == "away.mp4"]
        assert isinstance(problem, SourceProblem), name
        assert problem.reason == "metadata.json names a file outside the dataset's folder"


def test_a_dfdc_video_listed_twice_is_a_problem_not_its_last_label(tmp_path: Path):
    part = tmp_path / "dfdc"
    part.mkdir()
    (part / "a.mp4").write_bytes(b"x")
    # Lists merged by hand: json kept the last entry, so a.mp4 was taken as REAL without a word.
    (part / "metadata.json").write_text('{"a.mp4": {"label": "FAKE"}, "a.mp4": {"label": "REAL"}}')
    assert detect_format(part) == "dfdc"  # the layout is DFDC's: what is wrong is said by the reading
    entries = list(read_source(part, "dfdc"))
    problems = [e for e in entries if isinstance(e, SourceProblem)]
    assert not [e for e in entries if isinstance(e, SourceItem)]
    assert [p.reason for p in problems if p.path.name == "metadata.json"] == [
        "unreadable metadata.json: key 'a.mp4' is given twice"
    ]


def test_a_name_in_another_script_keeps_its_crops_in_a_visible_folder():
    from deepshield.data.layout import safe_relpath

    for name in ("新闻 照片.jpg", "Пресса.v2/фото.png"):
        key = safe_relpath(f"real/{name}")
        assert not any(part.startswith(".") for part in key.split("/")), key  # it was real/.jpg=<hash>
    assert safe_relpath("real/.own.jpg") == "real/.own.jpg"  # a name hidden by its owner stays so
    assert safe_relpath("real/新闻.jpg") != safe_relpath("real/照片.jpg")


def test_a_linked_label_folder_is_read_through(tmp_path: Path, small):
    # Path.rglob follows no linked folder: a real/ linked to where the photos live gave no file and no
    # error, and the dataset was all fakes.
    write_png(tmp_path / "store" / "celebrities" / "a.png", variant(small, 1))
    write_png(tmp_path / "src" / "fake" / "x.png", variant(small, 2))
    (tmp_path / "src" / "real").symlink_to(tmp_path / "store" / "celebrities", target_is_directory=True)
    (tmp_path / "store" / "celebrities" / "loop").symlink_to(tmp_path / "store", target_is_directory=True)
    items = [e for e in read_source(tmp_path / "src", "folders") if isinstance(e, SourceItem)]
    assert sorted((item.label, item.path.name) for item in items) == [("fake", "x.png"), ("real", "a.png")]


def test_files_of_one_size_are_told_apart_by_digest_not_each_against_each(tmp_path: Path, monkeypatch):
    # Each file of a size was compared with every other of it: 8,000 photos of one size (BMP frames) took
    # over a minute at every prepare, the comparisons growing as the square of their number.
    import deepshield.data.prepare as prepare_module

    compared = 0

    class Digest(str):
        __hash__ = str.__hash__

        def __eq__(self, other: object) -> bool:
            nonlocal compared
            compared += 1
            return str.__eq__(self, other)

    sha256 = prepare_module.file_sha256
    monkeypatch.setattr(prepare_module, "file_sha256", lambda path: Digest(sha256(path)))
    files = []
    for i in range(300):
        files.append(tmp_path / f"{i:03d}.bmp")
        files[-1].write_bytes(i.to_bytes(2, "big") * 8)
    (tmp_path / "copy.bmp").write_bytes((7).to_bytes(2, "big") * 8)
    files.append(tmp_path / "copy.bmp")
    assert prepare_module.same_bytes(files, files) == {files[-1]: files[7], files[7]: files[-1]}
    assert compared < 1_000  # each against each: 45,000


def test_files_of_one_size_that_start_apart_are_not_read_whole(tmp_path: Path, monkeypatch):
    # Every file of a size another shared was read whole for its SHA-256: videos of one size among thousands
    # (a DFDC folder) were gigabytes read at every prepare, copies or not.
    import deepshield.data.prepare as prepare_module

    whole = []
    sha256 = prepare_module.file_sha256
    monkeypatch.setattr(prepare_module, "file_sha256", lambda path: whole.append(path.name) or sha256(path))
    files = []
    for i in range(20):
        files.append(tmp_path / f"{i:02d}.mp4")
        files[-1].write_bytes(bytes([i]) * 100_000 + bytes(100_000))
    (tmp_path / "copy.mp4").write_bytes(files[3].read_bytes())
    files.append(tmp_path / "copy.mp4")
    assert prepare_module.same_bytes(files, files) == {files[-1]: files[3], files[3]: files[-1]}
    assert sorted(whole) == ["03.mp4", "copy.mp4"]


def test_a_copy_of_a_file_under_another_name_is_read_once_and_two_labels_for_it_are_refused(tmp_path: Path, small):
    # A byte-for-byte copy under another name was its own group: with 10 copied reals, 4 copies in
    # another split than their twin (the same face in train and test).
    for i in range(10):
        write_png(tmp_path / "set" / "real" / f"r{i}.png", variant(small, i))
        write_png(tmp_path / "set" / "fake" / f"f{i}.png", variant(small, i + 20))
        shutil.copy(tmp_path / "set" / "real" / f"r{i}.png", tmp_path / "set" / "real" / f"r{i}_copy.png")
    prepare_dataset([tmp_path / "set"], tmp_path / "ds", settings=SETTINGS, progress=False, seed=1)
    assert len({Path(r.source_file).name for r in read_manifest(tmp_path / "ds")}) == 20
    reasons = sorted(e.reason for e in read_errors(tmp_path / "ds"))
    assert reasons == [f"listed twice (a copy of set/real/r{i}.png)" for i in range(10)]
    shutil.copy(tmp_path / "set" / "real" / "r0.png", tmp_path / "set" / "fake" / "r0.png")
    with pytest.raises(
        DeepShieldError,
        match=r"real/r0.png \(set/real/r0.png\) is labelled real and holds the same bytes as .*fake/r0.png",
    ):
        prepare_dataset([tmp_path / "set"], tmp_path / "ds2", settings=SETTINGS, progress=False)
    # Empty files hold no picture: each is its own error row, not a copy of the other, nor a contradiction.
    from deepshield.data.prepare import collect_items

    (tmp_path / "set" / "fake" / "r0.png").unlink()
    for label in ("real", "fake"):
        (tmp_path / "set" / label / "empty.png").write_bytes(b"")
    items, problems, _ = collect_items([tmp_path / "set"])
    assert sorted(i.label for i in items if i.path.name == "empty.png") == ["fake", "real"] and len(problems) == 10


def test_dfdc_split_keeps_groups_together(dfdc_dataset: Path):
    records = read_manifest(dfdc_dataset)
    assert_groups_within_one_split(records)
    assert {r.split for r in records} <= {"train", "val", "test"}
    assert Counter(r.split for r in records)["train"] > len(records) / 2


def test_two_workers_give_the_same_dataset(dfdc_dataset: Path, dfdc_root: Path, tmp_path: Path):
    out = tmp_path / "two"
    summary = prepare_dataset([dfdc_root], out, settings=SETTINGS, workers=2, seed=3, progress=False)
    assert summary.crops == 26 and summary.skipped == 0
    assert DatasetLayout(out).manifest.read_text() == DatasetLayout(dfdc_dataset).manifest.read_text()
    assert DatasetLayout(out).errors.read_text() == DatasetLayout(dfdc_dataset).errors.read_text()
    assert _crop_bytes(out) == _crop_bytes(dfdc_dataset)


def test_interrupted_run_resumes_to_the_same_manifest(dfdc_dataset: Path, dfdc_root: Path, tmp_path: Path):
    out = tmp_path / "interrupted"
    done = []

    def crash_after_three(outcome):
        done.append(outcome.key)
        if len(done) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_dataset([dfdc_root], out, settings=SETTINGS, seed=3, progress=False, on_file_done=crash_after_three)
    assert not DatasetLayout(out).manifest.exists()
    summary = prepare_dataset([dfdc_root], out, settings=SETTINGS, seed=3, progress=False)
    assert summary.skipped == 3
    assert DatasetLayout(out).manifest.read_text() == DatasetLayout(dfdc_dataset).manifest.read_text()
    assert DatasetLayout(out).errors.read_text() == DatasetLayout(dfdc_dataset).errors.read_text()
    assert _crop_bytes(out) == _crop_bytes(dfdc_dataset)


def test_half_written_file_is_redone_and_finished_ones_skipped(dfdc_dataset: Path, dfdc_root: Path, tmp_path: Path):
    out = tmp_path / "copy"
    shutil.copytree(dfdc_dataset, out)
    layout = DatasetLayout(out)
    key = "dfdc/dfdc_train_part_0/real2.mp4"
    layout.record_path(key).unlink()  # killed before its done record was written...
    crops = sorted(layout.crop_dir(key).glob("*.png"))
    crops[1].rename(crops[1].with_name(crops[1].name + f".123{TEMP_SUFFIX}"))  # ...while writing its 2nd crop
    (crops[1].with_name("garbage.png")).write_bytes(b"half a png")
    summary = prepare_dataset([dfdc_root], out, settings=SETTINGS, seed=3, progress=False)
    # 16 files listed: all but the redone one and the missing one (never recorded) are skipped.
    assert summary.files == 16 and summary.skipped == 16 - 2
    assert layout.manifest.read_text() == DatasetLayout(dfdc_dataset).manifest.read_text()
    assert _crop_bytes(out) == _crop_bytes(dfdc_dataset)
    assert not list(out.rglob(f"*{TEMP_SUFFIX}")) and not (layout.crop_dir(key) / "garbage.png").exists()


def test_changed_settings_redo_everything(dfdc_root: Path, tmp_path: Path):
    out = tmp_path / "resized"
    prepare_dataset([dfdc_root / "dfdc_train_part_0"], out, settings=SETTINGS, progress=False)
    bigger = ExtractSettings(frames=2, policy=CropPolicy(size=80))
    summary = prepare_dataset([dfdc_root / "dfdc_train_part_0"], out, settings=bigger, progress=False)
    assert summary.skipped == 0
    records = read_manifest(out)
    assert len(records) == 14 and all(load_crop(r, out).shape == (80, 80, 3) for r in records)


# ------------------------------------------------------------------------------------------- FF++


def test_ffpp_layout_groups_pairs_with_both_originals(tmp_path: Path, small):
    root = tmp_path / "FaceForensics"
    originals = root / "original_sequences" / "youtube" / "c23" / "videos"
    originals.mkdir(parents=True)
    for i in range(4):
        write_video(originals / f"{i:03d}.mp4", clip(small, i))
    for method, name, i in (("Deepfakes", "000_001", 10), ("Deepfakes", "001_000", 11), ("Face2Face", "002_003", 12)):
        folder = root / "manipulated_sequences" / method / "c23" / "videos"
        folder.mkdir(parents=True, exist_ok=True)
        write_video(folder / f"{name}.mp4", clip(small, i))
    (root / "manipulated_sequences" / "Deepfakes" / "masks" / "videos").mkdir(parents=True)  # not a compression level
    assert detect_format(root) == "ffpp"
    prepare_dataset(
        [root], tmp_path / "ds", settings=ExtractSettings(frames=1, policy=CropPolicy(size=64)), progress=False
    )
    records = read_manifest(tmp_path / "ds")
    by_file = {Path(r.source_file).name: r for r in records}
    assert len(records) == 7
    assert (
        by_file["000.mp4"].group
        == by_file["001.mp4"].group
        == by_file["000_001.mp4"].group
        == by_file["001_000.mp4"].group
        == "ffpp:000_001"
    )
    assert by_file["002.mp4"].group == by_file["002_003.mp4"].group == "ffpp:002_003"
    assert by_file["000_001.mp4"].method == "Deepfakes" and by_file["002_003.mp4"].method == "Face2Face"
    assert (
        by_file["003.mp4"].label == "real"
        and by_file["003.mp4"].method == "none"
        and by_file["003.mp4"].source == "ffpp"
    )
    assert_groups_within_one_split(records)


def test_ffpp_identities_join_across_source_folders(tmp_path: Path):
    # Originals in one folder and fakes in another were grouped apart (000, 003 and 000_003): identity 003
    # went to train and to val.
    from deepshield.data.prepare import collect_items

    for root, sub, names in (
        ("ff1", "original_sequences/youtube/c23/videos", ("000.mp4", "003.mp4", "007.mp4")),
        ("ff2", "manipulated_sequences/Deepfakes/c23/videos", ("000_003.mp4",)),
    ):
        folder = tmp_path / root / sub
        folder.mkdir(parents=True)
        for name in names:
            (folder / name).write_bytes(name.encode())  # each its own bytes: a copy is read once
    items, problems, described = collect_items([tmp_path / "ff1", tmp_path / "ff2"])
    groups = {item.path.name: item.group for item in items}
    assert groups["000.mp4"] == groups["003.mp4"] == groups["000_003.mp4"] == "ffpp:000_003"
    assert groups["007.mp4"] == "ffpp:007" and problems == []
    assert sorted(item.key.split("/")[0] for item in items) == ["ff1", "ff1", "ff1", "ff2"]
    assert [source.format for source in described] == ["ffpp", "ffpp"]


def test_an_ffpp_folder_without_the_compression_asked_for_names_the_levels_it_holds(tmp_path: Path, capsys):
    # "no videos under original_sequences/*/*/videos" was said of a folder full of c23 videos read for c99.
    for sub in ("original_sequences/youtube/c23/videos", "manipulated_sequences/Deepfakes/c23/videos"):
        (tmp_path / "ff" / sub).mkdir(parents=True)
    (tmp_path / "ff" / "original_sequences/youtube/c23/videos/000.mp4").write_bytes(b"x")
    (tmp_path / "ff" / "manipulated_sequences/Deepfakes/c23/videos/000_003.mp4").write_bytes(b"x")
    assert main(["prepare", str(tmp_path / "ff"), "--ffpp-compression", "c99", "--out", str(tmp_path / "ds")]) == 2
    assert (
        "no videos at compression level c99 (--ffpp-compression) under original_sequences/*/*/videos or "
        "manipulated_sequences/*/*/videos: it holds videos at c23 only" in capsys.readouterr().err
    )
    (problem,) = read_source(tmp_path / "ff", ffpp_compressions=["c40", "raw"])
    assert isinstance(problem, SourceProblem) and problem.reason.startswith("no videos at compression levels c40, raw ")
    (tmp_path / "empty" / "original_sequences").mkdir(parents=True)
    (problem,) = read_source(tmp_path / "empty", ffpp_compressions=["c23"])
    assert problem.reason.endswith(": it holds none at any level")
    (problem,) = read_source(tmp_path / "empty")
    assert problem.reason == "no videos under original_sequences/*/*/videos or manipulated_sequences/*/*/videos"


def test_a_group_named_anew_keeps_the_split_its_files_had():
    # Kept splits were found by group name: FF++ fakes added later joined 000 and 003 into group 000_003,
    # and 000.mp4 and 003.mp4 re-split (train -> val); now a group takes the split its files had.
    from deepshield.data.prepare import kept_group_splits

    def row(name: str, group: str, faces: int = 1) -> list[CropRecord]:
        return [
            CropRecord(
                f"crops/x/{name}/{face:06d}_00.png",
                "real",
                "",
                group,
                "ffpp",
                "none",
                f"/data/{name}",
                face,
                0,
                0.9,
                (0, 0, 1, 1),
                tuple((0.0, 0.0) for _ in range(6)),
            )
            for face in range(faces)
        ]

    records = [*row("000.mp4", "ffpp:000_003", 2), *row("003.mp4", "ffpp:000_003"), *row("000_003.mp4", "ffpp:000_003")]
    records += [*row("005.mp4", "ffpp:005"), *row("009.mp4", "ffpp:009")]
    before = {"/data/000.mp4": "val", "/data/003.mp4": "train", "/data/005.mp4": "test"}
    assert kept_group_splits(records, before) == {"ffpp:000_003": "val", "ffpp:005": "test"}
    assert kept_group_splits(row("a", "g") + row("b", "g"), {"/data/a": "test", "/data/b": "val"}) == {"g": "val"}


# ---------------------------------------------------------------------------------------- folders


def test_folders_labelled_by_folder_name(tmp_path: Path, small):
    root = tmp_path / "mixed"
    write_png(root / "Real" / "a.png", variant(small, 1))
    write_png(root / "FAKE" / "faceswap" / "b.png", variant(small, 2))
    write_png(root / "fake" / "c.png", variant(small, 3))
    write_png(root / "batch1" / "real" / "deeper" / "d.png", variant(small, 4))
    (root / "batch1" / "fake").mkdir()
    write_video(root / "batch1" / "fake" / "e.mp4", clip(small, 5))
    write_png(root / "unsorted" / "f.png", variant(small, 6))
    (root / "Real" / "notes.txt").write_text("not media")
    assert detect_format(root) == "folders"
    summary = prepare_dataset([root], tmp_path / "ds", settings=SETTINGS, progress=False)
    records = {Path(r.source_file).name: r for r in read_manifest(tmp_path / "ds")}
    assert summary.files == 5 and summary.errors == 1
    assert set(records) == {"a.png", "b.png", "c.png", "d.png", "e.mp4"}
    assert records["a.png"].label == "real" and records["d.png"].label == "real"
    assert records["b.png"].label == "fake" and records["b.png"].method == "faceswap"
    assert records["c.png"].method == "unknown" and records["e.mp4"].label == "fake"
    assert records["a.png"].frame_index == 0 and records["a.png"].source == "mixed"
    assert records["a.png"].group == "mixed:Real/a.png"
    (error,) = read_errors(tmp_path / "ds")
    assert Path(error.source_file).name == "f.png" and "real/ or fake/" in error.reason


def test_largest_face_only(tmp_path: Path, small):
    two = np.zeros((256, 512, 3), np.uint8)
    two[:, :256] = small
    two[38:218, 294:474] = cv2.resize(small, (180, 180))  # the same face, smaller, on the right
    write_png(tmp_path / "real" / "two.png", two)
    everything = prepare_dataset([tmp_path / "real"], tmp_path / "all", settings=SETTINGS, progress=False)
    largest = prepare_dataset(
        [tmp_path / "real"],
        tmp_path / "largest",
        settings=ExtractSettings(frames=2, faces="largest", policy=CropPolicy(size=64)),
        progress=False,
    )
    assert everything.crops == 2 and largest.crops == 1
    (record,) = read_manifest(tmp_path / "largest")
    assert record.face_index == 0 and record.box[0] < 256  # the left face is the bigger one


# -------------------------------------------------------------------------------------------- CSV


def test_csv_manifest_with_groups(tmp_path: Path, small):
    root = tmp_path / "labelled"
    for i in range(6):
        write_png(root / "images" / f"{i}.png", variant(small, i))
    rows = [
        "path,label,group",
        "images/0.png,real,alice",
        "images/1.png,FAKE,alice",
        "images/2.png,fake,",
        "images/3.png,maybe,bob",
        "images/404.png,real,carol",
        "images/4.png,0,dan",  # 0/1 labels, as most labelled-data files write them
        "images/5.png,1,dan",
    ]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    assert detect_format(root / "labels.csv") == "csv"
    prepare_dataset([root / "labels.csv"], tmp_path / "ds", settings=SETTINGS, progress=False)
    records = {Path(r.source_file).name: r for r in read_manifest(tmp_path / "ds")}
    assert set(records) == {"0.png", "1.png", "2.png", "4.png", "5.png"}
    assert (records["4.png"].label, records["5.png"].label) == ("real", "fake")
    assert records["0.png"].group == records["1.png"].group == "csv:alice"
    assert records["0.png"].split == records["1.png"].split
    assert records["1.png"].label == "fake" and records["2.png"].group == "labels:images/2.png"
    reasons = {Path(e.source_file).name: e.reason for e in read_errors(tmp_path / "ds")}
    assert "neither real nor fake" in reasons["3.png"] and reasons["404.png"] == "file not found"


def test_csv_groups_hold_across_sources_and_a_line_with_extra_fields_is_reported(tmp_path: Path, small):
    # A person's real and fake rows naming two sources were two groups (split apart: id2 in test and in
    # train); a line with more fields than the header (a comma in a note) stopped the whole prepare.
    root = tmp_path / "celeb"
    for i in range(5):
        write_png(root / f"{i}.png", variant(small, i))
    rows = [
        "path,label,group,source,note",
        "0.png,real,id1,Celeb-real,",
        "1.png,fake,id1,Celeb-synthesis,",
        "2.png,real,id2,Celeb-real,",
        "3.png,fake,id2,Celeb-synthesis,",
        "4.png,fake,id3,Celeb-synthesis,made with a tool, v2",
    ]
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    prepare_dataset([root / "list.csv"], tmp_path / "ds", settings=SETTINGS, progress=False)
    records = {Path(r.source_file).name: r for r in read_manifest(tmp_path / "ds")}
    assert set(records) == {"0.png", "1.png", "2.png", "3.png"}
    assert records["0.png"].group == records["1.png"].group != records["2.png"].group == records["3.png"].group
    assert (records["0.png"].source, records["1.png"].source) == ("Celeb-real", "Celeb-synthesis")
    (error,) = read_errors(tmp_path / "ds")
    assert error.reason == "line 6: more fields than the header has (a comma not in quotes?)"


def test_a_csv_written_on_windows_with_backslashes_in_its_paths_is_read(tmp_path: Path, small):
    # images\\0.png was "file not found" on every row; a name that holds a backslash is still taken as written.
    write_png(tmp_path / "set" / "images" / "0.png", variant(small, 0))
    write_png(tmp_path / "set" / "a\\b.png", variant(small, 1))
    (tmp_path / "set" / "list.csv").write_bytes(b"path,label\r\nimages\\0.png,real\r\na\\b.png,fake\r\n")
    items = [e for e in read_source(tmp_path / "set" / "list.csv") if isinstance(e, SourceItem)]
    assert [(item.path, item.label) for item in items] == [
        (tmp_path / "set" / "images" / "0.png", "real"),
        (tmp_path / "set" / "a\\b.png", "fake"),
    ]


def test_a_csv_naming_its_paths_filename_is_read(tmp_path: Path):
    # DFDC's test labels.csv (filename,label with 0/1) was refused: "CSV needs the columns path,label"
    listing = tmp_path / "labels.csv"
    listing.write_text("filename,label\naaa.mp4,1\nbbb.mp4,0\n")
    items = list(read_source(listing, "csv"))
    assert [(item.path.name, item.label) for item in items] == [("aaa.mp4", "fake"), ("bbb.mp4", "real")]
    listing.write_text("path,filename,label\na.png,b.png,real\n")  # both: path is read
    (item,) = list(read_source(listing, "csv"))
    assert item.path.name == "a.png"
    listing.write_text("name,label\na.png,real\n")
    (problem,) = list(read_source(listing, "csv"))
    assert problem.reason == "CSV needs the columns path (or filename),label (optional: group, method, source)"


def test_one_group_named_in_two_csvs_is_one_group(tmp_path: Path, small):
    # real.csv and fake.csv naming the same people: each CSV's groups were its own, and person4 and
    # person8 had faces in train and in test.
    real, fake = ["path,label,group"], ["path,label,group"]
    for i in range(10):
        write_png(tmp_path / "set" / f"r{i}.png", variant(small, i))
        write_png(tmp_path / "set" / f"f{i}.png", variant(small, i + 20))
        real.append(f"r{i}.png,real,person{i}")
        fake.append(f"f{i}.png,fake,person{i}")
    (tmp_path / "set" / "real.csv").write_text("\n".join(real) + "\n")
    (tmp_path / "set" / "fake.csv").write_text("\n".join(fake) + "\n")
    sources = [tmp_path / "set" / "real.csv", tmp_path / "set" / "fake.csv"]
    prepare_dataset(sources, tmp_path / "ds", settings=SETTINGS, progress=False, seed=1)
    records = read_manifest(tmp_path / "ds")
    assert_groups_within_one_split([replace(r, group=r.group.split(":")[1]) for r in records])
    assert {r.group for r in records} == {f"csv:person{i}" for i in range(10)}


def test_a_csv_naming_a_column_twice_is_refused(tmp_path: Path):
    # csv.DictReader kept the last of two label columns: `real,fake` read fake
    listing = tmp_path / "list.csv"
    listing.write_text("path,label,label\na.png,real,fake\n")
    (problem,) = list(read_source(listing, "csv"))
    assert problem.reason == "CSV names the column label twice: which to read?"


def test_a_csv_after_blank_lines_or_excels_separator_line_is_read(tmp_path: Path):
    # csv.DictReader took the first line for the header: "CSV needs the columns path,label", though it had them
    for first in ("\n\n", "sep=,\r\n"):
        listing = tmp_path / "list.csv"
        listing.write_text(first + "path,label\na.png,real\n")
        (item,) = list(read_source(listing, "csv"))
        assert (item.path.name, item.label) == ("a.png", "real")
    # and a problem names its line in the file, the skipped lines counted
    listing.write_text("sep=,\n\npath,label\na.png,real\nb.png,maybe\n")
    problem = list(read_source(listing, "csv"))[1]
    assert problem.reason.startswith("line 5: ")


def test_a_csv_saved_by_a_windows_spreadsheet_is_read(tmp_path: Path):
    # Windows-1252, as Excel saves "CSV (comma delimited)": café.jpg was a decoding error that left the listing out
    listing = tmp_path / "list.csv"
    listing.write_bytes("path,label\r\ncafé.jpg,real\r\n".encode("cp1252"))
    (item,) = list(read_source(listing, "csv"))
    assert (item.path.name, item.label) == ("café.jpg", "real")
    listing.write_bytes("path,label\ncafé.jpg,real\n".encode("utf-16"))  # UTF-16 is not guessed at
    (problem,) = list(read_source(listing, "csv"))
    assert problem.reason.startswith("unreadable CSV: 'utf-8' codec can't decode")


def test_one_name_not_utf8_leaves_the_other_names_of_a_utf8_csv_as_they_are(tmp_path: Path):
    # one stray byte sent the whole file to Windows-1252: café.jpg was read as cafÃ©.jpg and said missing
    os.makedirs(tmp_path / "weird")
    for name in ("café.jpg".encode(), b"\xff.jpg", b"caf\x81.jpg"):
        (tmp_path / "weird" / os.fsdecode(name)).write_bytes(b"")
    listing = tmp_path / "list.csv"
    listing.write_bytes(b"path,label\nweird/caf\xc3\xa9.jpg,real\nweird/\xff.jpg,fake\n")
    items = list(read_source(listing, "csv"))
    assert [os.fsencode(item.path.name) for item in items] == ["café.jpg".encode(), b"\xff.jpg"]
    assert all(item.path.is_file() for item in items)
    # bytes Windows-1252 does not define either are a name's own bytes, as Linux names the file
    listing.write_bytes(b"path,label\nweird/caf\x81.jpg,real\n")
    (item,) = list(read_source(listing, "csv"))
    assert item.path.is_file()


def test_several_sources_in_one_dataset(tmp_path: Path, small):
    write_png(tmp_path / "studio" / "real" / "a.png", variant(small, 1))
    write_png(tmp_path / "web" / "fake" / "a.png", variant(small, 2))
    prepare_dataset([tmp_path / "studio", tmp_path / "web"], tmp_path / "ds", settings=SETTINGS, progress=False)
    records = read_manifest(tmp_path / "ds")
    assert sorted((r.source, r.label, r.crop_path) for r in records) == [
        ("studio", "real", "crops/studio/real/a.png/000000_00.png"),
        ("web", "fake", "crops/web/fake/a.png/000000_00.png"),
    ]


def test_format_detection_errors_and_typed_items(tmp_path: Path, small):
    (tmp_path / "plain").mkdir()
    with pytest.raises(SourceFormatError, match="--format"):
        detect_format(tmp_path / "plain")
    with pytest.raises(SourceFormatError, match="no such"):
        detect_format(tmp_path / "absent")
    write_png(tmp_path / "plain" / "x.png", small)
    (item,) = read_source(tmp_path / "plain", "folders")  # a named format is not detected
    assert not isinstance(item, SourceItem)  # a problem: no real/ or fake/ folder
    write_png(tmp_path / "ds" / "real" / "x.png", small)
    (item,) = read_source(tmp_path / "ds")
    assert isinstance(item, SourceItem) and item.label == "real" and item.key == "ds/real/x.png"


# ------------------------------------------------------------------------------------------ split


def _fake_records(n_groups: int) -> list[CropRecord]:
    records = []
    for g in range(n_groups):
        labels = ["real"] * (1 + g % 3) + ["fake"] * (g % 4)  # groups of mixed sizes and mixes
        for k, label in enumerate(labels):
            records.append(
                CropRecord(
                    f"crops/{g}/{k}.png",
                    label,
                    "",
                    f"g{g}",
                    "s",
                    "m",
                    f"/src/{g}_{k}.mp4",
                    0,
                    0,
                    0.9,
                    (0, 0, 1, 1),
                    ((0.0, 0.0),) * 6,
                )
            )
    return records


def test_split_is_group_aware_stratified_and_seeded():
    records = _fake_records(300)
    split = apply_split(records, (0.8, 0.1, 0.1), seed=0)
    assert_groups_within_one_split(split)
    totals = Counter(r.label for r in split)
    for name, target in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        for label in ("real", "fake"):
            share = sum(1 for r in split if r.split == name and r.label == label) / totals[label]
            assert abs(share - target) < 0.03, (name, label, share)
    assert apply_split(records, (0.8, 0.1, 0.1), seed=0) == split
    assert apply_split(records, (0.8, 0.1, 0.1), seed=1) != split
    assert parse_ratios("0.7,0.3") == (0.7, 0.3, 0.0)
    for bad in ("0.5,0.1,0.1", "nan,1,1", "inf,0,0"):  # nan passed every comparison, to a crash after extraction
        with pytest.raises(DeepShieldError, match="expected train,val,test fractions"):
            parse_ratios(bad)


# -------------------------------------------------------------------------------------------- CLI


def test_cli_prepare(tmp_path: Path, small, capsys):
    write_png(tmp_path / "src" / "real" / "a.png", variant(small, 1))
    write_png(tmp_path / "src" / "fake" / "b.png", variant(small, 2))
    code = main(
        [
            "prepare",
            str(tmp_path / "src"),
            "--out",
            str(tmp_path / "ds"),
            "--crop-size",
            "48",
            "--crop-scale",
            "2",
            "--split",
            "1,0,0",
            "--no-progress",
        ]
    )
    assert code == 0
    assert "2 face crops" in capsys.readouterr().err
    records = read_manifest(tmp_path / "ds")
    assert {r.split for r in records} == {"train"} and load_crop(records[0], tmp_path / "ds").shape == (48, 48, 3)
    assert read_info(tmp_path / "ds").crop_policy == CropPolicy(size=48, scale=2.0)
    assert main(["prepare", str(tmp_path / "src"), "--out", str(tmp_path / "bad"), "--crop-size", "8"]) == 2
    assert capsys.readouterr().err == (
        "deepshield: error: invalid crop policy: size: Input should be greater than or equal to 16\n"
    )


def test_prepare_of_a_folder_it_cannot_read_says_so(tmp_path: Path, monkeypatch, capsys):
    # probing the folder for FaceForensics++'s original_sequences/ was a PermissionError traceback
    locked = tmp_path / "locked"
    (locked / "real").mkdir(parents=True)
    deny_listing(monkeypatch, locked)
    assert main(["prepare", str(locked), "--out", str(tmp_path / "ds")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.endswith(f"{locked}: cannot read the folder (Permission denied)")


def test_cli_prepare_lists_missing_apart_from_unreadable_and_warns_of_empty_splits(tmp_path: Path, small, capsys):
    write_png(tmp_path / "src" / "a.png", variant(small, 1))
    (tmp_path / "src" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    listing = tmp_path / "src" / "set.csv"
    listing.write_text("path,label\na.png,real\ngone.png,fake\nbroken.png,real\n")
    code = main(
        [
            "prepare",
            str(listing),
            "--out",
            str(tmp_path / "ds"),
            "--crop-size",
            "48",
            "--crop-scale",
            "2",
            "--no-progress",
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert f"warning: 1 file named by the sources' listings is missing: {tmp_path / 'src' / 'gone.png'}\n" in err
    assert re.search(r"warning: 1 file could not be read: \S*broken.png \(", err)
    # One crop, three splits asked for: val and test come out empty, and the user is told.
    assert (
        "warning: split val is empty" in err
        and "warning: split test is empty" in err
        and "warning: split train" not in err
    )
    assert "3 errors" not in err and "2 errors, of which 1 missing and 1 unreadable" in err


def test_files_whose_names_clean_alike_are_both_prepared(tmp_path: Path, small):
    # 'a é.png' and 'a_.png' both become 'a_.png' as portable names: each keeps its own crops.
    for i, (label, name) in enumerate(
        [("real", "a é.png"), ("real", "a_.png"), ("fake", "b ü.png"), ("fake", "b_.png")]
    ):
        write_png(tmp_path / "src" / label / name, variant(small, i))
    summary = prepare_dataset([tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False)
    assert (summary.files, summary.errors) == (4, 0)
    records = read_manifest(tmp_path / "ds")
    assert len({r.crop_path for r in records}) == len(records) == 4
    assert sorted(Path(r.source_file).name for r in records) == sorted(["a_.png", "a é.png", "b_.png", "b ü.png"])


def test_files_with_a_file_systems_longest_names_are_prepared(tmp_path: Path, small):
    # A 251-byte name is a file system's own; its done record "<name>.json.<pid>.part" was not, and the photo
    # was an error ("File name too long"). Two long names alike but for their end keep two sets of crops.
    names = ["L" * 246 + "a.png", "L" * 246 + "b.png", "a b" * 83 + ".png"]
    for i, (label, name) in enumerate(zip(("real", "real", "fake"), names)):
        write_png(tmp_path / "src" / label / name, variant(small, i))
    summary = prepare_dataset([tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False)
    assert (summary.files, summary.crops, summary.errors) == (3, 3, 0)
    records = read_manifest(tmp_path / "ds")
    assert sorted(Path(r.source_file).name for r in records) == sorted(names)
    assert len({Path(r.crop_path).parent for r in records}) == 3
    assert all(load_crop(r, tmp_path / "ds").shape[:2] == (64, 64) for r in records)
    again = prepare_dataset([tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False)
    assert again.skipped == 3 and again.crops == 3


def test_a_long_folder_name_that_fitted_keeps_its_key():
    # Only a file's own component names a done record (<name>.json.<pid>.part): a folder's was cut as short too,
    # and an earlier dataset's files in a 245-byte folder got new keys, every one of them extracted again.
    from deepshield.data.layout import safe_relpath

    folder = "D" * 245
    assert safe_relpath(f"real/{folder}/a.png") == f"real/{folder}/a.png"
    cleaned = safe_relpath(f"real/{'a b' * 84}/c.png").split("/")[1]  # cleaned, its digest added: 259 bytes
    assert len(cleaned.encode()) <= 255 and cleaned.startswith("a_b")
    assert len(safe_relpath(f"real/{'L' * 246}.png").split("/")[1].encode()) < 255 - len(".json.4194304.part") + 1


def test_a_file_name_holding_a_carriage_return_leaves_the_manifest_readable(tmp_path: Path, small):
    # manifest.csv ends its rows with "\n", and csv quoted only fields holding that: the name's bare "\r" split
    # its row, and the dataset could not be read again ("malformed manifest": dataset stats, train, evaluate).
    write_png(tmp_path / "src" / "real" / "cr\rname.png", variant(small, 1))
    write_png(tmp_path / "src" / "fake" / "b.png", variant(small, 2))
    (tmp_path / "src" / "fake" / "cr\rbroken.png").write_bytes(b"not a picture")
    summary = prepare_dataset([tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False)
    assert (summary.files, summary.crops, summary.errors) == (3, 2, 1)
    (record,) = [r for r in read_manifest(tmp_path / "ds") if r.label == "real"]
    assert Path(record.source_file) == tmp_path / "src" / "real" / "cr\rname.png"
    assert load_crop(record, tmp_path / "ds").shape[:2] == (64, 64)
    (error,) = read_errors(tmp_path / "ds")
    assert Path(error.source_file) == tmp_path / "src" / "fake" / "cr\rbroken.png"


def test_a_file_name_that_is_not_utf8_is_prepared_and_read_back(tmp_path: Path, small):
    # Before, every face was cut and recorded, then writing manifest.csv raised UnicodeEncodeError: no
    # manifest, and every rerun the same. The CSVs keep the name's own bytes, which lead back to the file.
    odd = os.fsdecode(b"caf\xe9.png")
    write_png(tmp_path / "src" / "real" / odd, variant(small, 1))
    write_png(tmp_path / "src" / "fake" / "b.png", variant(small, 2))
    write_png(tmp_path / "src" / "fake" / os.fsdecode(b"bl\xe9.png"), np.zeros((64, 64, 3), np.uint8))
    summary = prepare_dataset([tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False)
    assert (summary.files, summary.crops, summary.errors) == (3, 2, 1)
    (record,) = [r for r in read_manifest(tmp_path / "ds") if r.label == "real"]
    assert Path(record.source_file) == tmp_path / "src" / "real" / odd and Path(record.source_file).is_file()
    assert load_crop(record, tmp_path / "ds").shape[:2] == (SETTINGS.policy.size, SETTINGS.policy.size)
    (error,) = read_errors(tmp_path / "ds")
    assert Path(error.source_file).is_file() and os.fsencode(error.source_file).endswith(b"bl\xe9.png")
    again = prepare_dataset([tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False)
    assert again.skipped == 3 and again.crops == 2


def test_a_rerun_never_drops_what_the_dataset_holds(tmp_path: Path, small):
    from deepshield.data.manifest import ManifestError, write_info

    write_png(tmp_path / "src" / "real" / "face.png", variant(small, 1))
    prepare_dataset([tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False)
    manifest = (tmp_path / "ds" / "manifest.csv").read_text()
    # A format that finds nothing in the sources (no metadata.json) leaves the dataset as it was.
    with pytest.raises(ManifestError, match=r"no file to take faces from in .*, read as dfdc \(a DFDC folder holds"):
        prepare_dataset([tmp_path / "src"], tmp_path / "ds", fmt="dfdc", settings=SETTINGS, progress=False)
    assert (tmp_path / "ds" / "manifest.csv").read_text() == manifest
    # A balanced dataset is not rebuilt from its sources alone (its added and removed rows would go).
    info = read_info(tmp_path / "ds")
    write_info(tmp_path / "ds", info.model_copy(update={"history": ["synth-fakes 5 seed=0"]}))
    with pytest.raises(ManifestError, match=r"was balanced after it was prepared \(synth-fakes 5 seed=0\)"):
        prepare_dataset([tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False)
    assert (tmp_path / "ds" / "manifest.csv").read_text() == manifest
    write_info(tmp_path / "ds", info)
    # Other sources alone would drop the first one's rows (they went without a word, their crops kept);
    # named with it, the new source is added.
    write_png(tmp_path / "more" / "real" / "other.png", variant(small, 2))
    with pytest.raises(ManifestError, match=r"was prepared from .*src too: .* Name every source to add one \("):
        prepare_dataset([tmp_path / "more"], tmp_path / "ds", settings=SETTINGS, progress=False)
    assert (tmp_path / "ds" / "manifest.csv").read_text() == manifest
    both = prepare_dataset([tmp_path / "src", tmp_path / "more"], tmp_path / "ds", settings=SETTINGS, progress=False)
    assert (both.files, both.skipped, both.crops) == (2, 1, 2)


def test_a_source_added_leaves_the_files_already_split_where_they_were(tmp_path: Path, small):
    # Prepared again with a source added (the way to add one), every group was shuffled anew: of 200
    # groups, 41 changed split when 20 were added, 4 from train to test. A changed seed re-splits.
    for i in range(16):
        write_png(tmp_path / "src" / ("real", "fake")[i % 2] / f"{i}.png", variant(small, i))
    for i in range(16, 22):
        write_png(tmp_path / "more" / ("real", "fake")[i % 2] / f"{i}.png", variant(small, i))
    prepare_dataset([tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False, seed=4)
    first = {r.group: r.split for r in read_manifest(tmp_path / "ds")}
    prepare_dataset([tmp_path / "src", tmp_path / "more"], tmp_path / "ds", settings=SETTINGS, progress=False, seed=4)
    second = {r.group: r.split for r in read_manifest(tmp_path / "ds")}
    assert len(second) == 22 and {group: second[group] for group in first} == first
    assert len(set(first.values())) == 3  # the first split used all three parts


def test_a_re_split_stopped_before_its_record_is_not_taken_for_the_old_split(tmp_path: Path, small, monkeypatch):
    # dataset.json (seed, ratios) is written after the manifest: stopped in between, a run with the old seed
    # kept the new seed's splits as its own (11 of 20 rows), while dataset.json said the old seed.
    import deepshield.data.prepare as prepare_module

    for i in range(16):
        write_png(tmp_path / "src" / ("real", "fake")[i % 2] / f"{i}.png", variant(small, i))
    prepare_dataset([tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False, seed=0)
    seed_0 = {r.crop_path: r.split for r in read_manifest(tmp_path / "ds")}

    def killed_after(path, records):
        write_manifest(path, records)
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_module, "write_manifest", killed_after)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset([tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False, seed=7)
    monkeypatch.setattr(prepare_module, "write_manifest", write_manifest)
    prepare_dataset([tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False, seed=0)
    assert {r.crop_path: r.split for r in read_manifest(tmp_path / "ds")} == seed_0
    assert read_info(tmp_path / "ds").seed == 0


def test_sources_given_in_another_order_keep_their_keys_and_splits(tmp_path: Path, small):
    # Keys came from the argument order: two sources of one folder name swapped keys (faces, faces-2), and
    # with them groups, crops and splits (6 of 16 files moved; all 16 extracted again).
    for i in range(8):
        write_png(tmp_path / "A" / "faces" / ("real", "fake")[i % 2] / f"{i}.png", variant(small, i))
        write_png(tmp_path / "B" / "faces" / ("real", "fake")[i % 2] / f"{i}.png", variant(small, 10 + i))
    sources = [tmp_path / "A" / "faces", tmp_path / "B" / "faces"]
    prepare_dataset(sources, tmp_path / "ds", settings=SETTINGS, progress=False)
    first = {r.source_file: (r.split, r.crop_path) for r in read_manifest(tmp_path / "ds")}
    again = prepare_dataset(sources[::-1], tmp_path / "ds", settings=SETTINGS, progress=False)
    assert again.skipped == again.files == 16
    assert {r.source_file: (r.split, r.crop_path) for r in read_manifest(tmp_path / "ds")} == first


def test_dataset_inside_its_source_is_not_read_back(tmp_path: Path, small):
    write_png(tmp_path / "src" / "real" / "a.png", variant(small, 1))
    first = prepare_dataset([tmp_path / "src"], tmp_path / "src" / "real" / "ds", settings=SETTINGS, progress=False)
    second = prepare_dataset([tmp_path / "src"], tmp_path / "src" / "real" / "ds", settings=SETTINGS, progress=False)
    assert first.files == second.files == 1 and second.skipped == 1 and second.crops == 1
    # A source inside the dataset's folder (`prepare photos --out .`): only the dataset's own folders are
    # left out (every file was, and the error said there was none).
    write_png(tmp_path / "proj" / "photos" / "real" / "a.png", variant(small, 1))
    above = prepare_dataset([tmp_path / "proj" / "photos"], tmp_path / "proj", settings=SETTINGS, progress=False)
    again = prepare_dataset([tmp_path / "proj" / "photos"], tmp_path / "proj", settings=SETTINGS, progress=False)
    assert (above.files, above.crops, again.files, again.skipped) == (1, 1, 1, 1)


def test_a_dataset_prepared_inside_a_source_is_no_media_of_it_for_its_readers(tmp_path: Path, small, caplog):
    # `prepare fcopy --out fcopy/real/prep`, then `evaluate fcopy`: the crops were read as real media (24 files for 12).
    write_png(tmp_path / "src" / "real" / "a.png", variant(small, 1))
    write_png(tmp_path / "src" / "fake" / "b.png", variant(small, 2))
    (tmp_path / "src" / "real" / "manifest.csv").write_text("path,label\na.png,real\n")  # a listing alone: no dataset
    prepare_dataset([tmp_path / "src"], tmp_path / "src" / "real" / "prep", settings=SETTINGS, progress=False)
    assert list((tmp_path / "src" / "real" / "prep" / "crops").rglob("*.png"))
    with caplog.at_level(logging.WARNING, logger="deepshield.data.sources"):
        items = [e for e in read_source(tmp_path / "src") if isinstance(e, SourceItem)]
    assert sorted(item.path.name for item in items) == ["a.png", "b.png"]
    assert f"2 files of the prepared dataset {tmp_path / 'src' / 'real' / 'prep'} inside it passed over" in caplog.text


def test_a_prepare_interrupted_inside_a_source_is_no_media_of_it(tmp_path: Path, small, caplog):
    # Stopped (Ctrl-C) before its manifest and dataset.json were written, `prepare src --out src/real/prep` left
    # crops that `evaluate src` and the face bank read as real media of the folder.
    for i in range(3):
        write_png(tmp_path / "src" / ("real", "fake")[i % 2] / f"{i}.png", variant(small, i))
    out = tmp_path / "src" / "real" / "prep"

    def interrupted(outcome):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_dataset([tmp_path / "src"], out, settings=SETTINGS, progress=False, on_file_done=interrupted)
    assert list((out / "crops").rglob("*.png")) and not DatasetLayout(out).manifest.exists()
    with caplog.at_level(logging.WARNING, logger="deepshield.data.sources"):
        items = [e for e in read_source(tmp_path / "src") if isinstance(e, SourceItem)]
    assert sorted(item.path.name for item in items) == ["0.png", "1.png", "2.png"]
    assert f"of the prepared dataset {out} inside it passed over" in caplog.text
    resumed = prepare_dataset([tmp_path / "src"], out, settings=SETTINGS, progress=False)
    assert (resumed.files, resumed.skipped) == (3, 1)
    assert not DatasetLayout(out).preparing.exists()  # its mark of a prepare under way is gone once it is done


def test_prepare_again_into_a_folder_inside_its_source_says_nothing_of_its_own_output(tmp_path: Path, small, caplog):
    # `prepare src --out src/real/ds` run again was warned its own output was passed over ("give the dataset itself").
    write_png(tmp_path / "src" / "real" / "a.png", variant(small, 1))
    write_png(tmp_path / "src" / "fake" / "b.png", variant(small, 2))
    out = tmp_path / "src" / "real" / "ds"
    prepare_dataset([tmp_path / "src"], out, settings=SETTINGS, progress=False)
    with caplog.at_level(logging.WARNING, logger="deepshield.data.sources"):
        again = prepare_dataset([tmp_path / "src"], out, settings=SETTINGS, progress=False)
    assert (again.files, again.skipped) == (2, 2)
    assert "passed over" not in caplog.text


def test_a_users_own_listing_beside_a_crops_folder_is_no_prepared_dataset(tmp_path: Path, small, caplog):
    # A folder of one's own photos in crops/ beside one's own manifest.csv (or a dataset.json of another tool)
    # was taken for a prepared dataset by those names alone, and its photos passed over.
    write_png(tmp_path / "src" / "real" / "mine" / "crops" / "a.png", variant(small, 1))
    (tmp_path / "src" / "real" / "mine" / "manifest.csv").write_text("path,label\ncrops/a.png,real\n")
    write_png(tmp_path / "src" / "real" / "theirs" / "crops" / "b.png", variant(small, 2))
    (tmp_path / "src" / "real" / "theirs" / "dataset.json").write_text('{"name": "faces", "license": "cc-by"}\n')
    with caplog.at_level(logging.WARNING, logger="deepshield.data.sources"):
        items = [e for e in read_source(tmp_path / "src") if isinstance(e, SourceItem)]
    assert sorted(item.path.name for item in items) == ["a.png", "b.png"]
    assert "passed over" not in caplog.text


def test_a_broken_link_or_a_fifo_in_a_folder_is_said_not_dropped(tmp_path: Path, small):
    write_png(tmp_path / "src" / "real" / "a.png", variant(small, 1))
    (tmp_path / "src" / "real" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "src" / "real" / "gone2.png").symlink_to(tmp_path / "nowhere.png")  # not "listed twice"
    os.mkfifo(tmp_path / "src" / "real" / "pipe.png")
    (tmp_path / "src" / "real" / "self.png").symlink_to("self.png")  # a loop: Path.resolve's RuntimeError
    os.mkfifo(tmp_path / "src" / "real" / "metadata.json")  # read as a DFDC listing, it blocked for good
    summary = prepare_dataset([tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False)
    reasons = {Path(e.source_file).name: e.reason for e in read_errors(tmp_path / "ds")}
    assert reasons == {
        "gone.png": "broken symbolic link",
        "gone2.png": "broken symbolic link",
        "pipe.png": "not a regular file: a FIFO (named pipe)",
        "self.png": "symbolic link loop",
    }
    assert (summary.files, summary.crops, len(summary.missing), len(summary.unreadable)) == (5, 1, 0, 4)


def test_a_dataset_description_cut_short_or_with_an_unknown_key_is_refused_by_name(tmp_path: Path, small):
    write_png(tmp_path / "src" / "real" / "a.png", variant(small, 1))
    prepare_dataset([tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False)
    info = DatasetLayout(tmp_path / "ds").info
    text = info.read_text()
    info.write_text(text.replace('"seed"', '"sead"'))  # read as seed 0 without a word
    with pytest.raises(DeepShieldError, match=r"dataset.json: .*unknown key sead; did you mean seed\?"):
        read_info(tmp_path / "ds")
    info.write_text(text[:100])  # a pydantic traceback
    with pytest.raises(
        DeepShieldError, match=r"dataset.json: not a dataset description this version reads: Invalid JSON"
    ):
        read_info(tmp_path / "ds")


def test_a_prepare_that_stops_before_writing_leaves_no_folder(tmp_path: Path):
    from deepshield.data.sources import SourceFormatError

    with pytest.raises(SourceFormatError, match="no such file or folder"):
        prepare_dataset([tmp_path / "nosuch"], tmp_path / "ds", settings=SETTINGS, progress=False)
    assert not (tmp_path / "ds").exists()  # it was left holding only its lock


def test_a_prepare_stopped_before_its_first_crop_leaves_no_folder(tmp_path: Path, small, monkeypatch):
    # Its mark of a prepare under way (preparing.json) kept a folder holding nothing else.
    import deepshield.data.prepare as prepare_module

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    write_png(tmp_path / "src" / "real" / "a.png", variant(small, 1))
    monkeypatch.setattr(prepare_module, "run_extraction", stopped)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset([tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False)
    assert not (tmp_path / "ds").exists()


def test_a_manifest_that_cannot_be_written_keeps_the_one_before_and_no_temporary_file(tmp_path: Path):
    # A full disk while the manifest was rewritten left manifest.csv.<pid>.part in the dataset's folder for good.
    manifest = tmp_path / "manifest.csv"
    atomic_write_text(manifest, "crop_path,label\n", durable=True)
    with file_size_limit(64), pytest.raises(OSError) as raised:
        atomic_write_text(manifest, "crop_path,label\n" + "crops/a.png,real\n" * 100, durable=True)
    assert str(raised.value) == f"[Errno 27] File too large: '{manifest}'"  # the file meant: a failed write names none
    assert manifest.read_text() == "crop_path,label\n" and os.listdir(tmp_path) == ["manifest.csv"]


def test_a_full_disk_stops_prepare_at_the_first_crop_it_cannot_write_and_a_rerun_goes_on(tmp_path: Path, small):
    # Every file after the disk filled was still read and its faces found, its crops then refused: hours of work
    # for a large set, each file counted "could not be read" (its source was fine), and all redone by the rerun.
    for i in range(3):
        write_png(tmp_path / "src" / "real" / f"{i}.png", variant(small, i))
    calls = []
    with file_size_limit(1024), pytest.raises(OSError, match=r"File too large: .*/000000_00\.png'"):
        prepare_dataset(
            [tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False, on_file_done=calls.append
        )
    assert calls == []  # the first file stopped it
    summary = prepare_dataset([tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False)
    assert summary.crops == 3 and summary.errors == 0


def test_one_writer_per_dataset(tmp_path: Path, small):
    from deepshield.data.layout import dataset_lock

    write_png(tmp_path / "src" / "real" / "a.png", variant(small, 1))
    with dataset_lock(tmp_path / "ds"), pytest.raises(DeepShieldError, match="another deepshield process"):
        prepare_dataset([tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False)


@pytest.mark.parametrize("name", ["video", "animation", "images"])
def test_a_change_to_the_code_reading_frames_or_pixels_redoes_a_resumed_prepare(tmp_path: Path, monkeypatch, name):
    # Which frames of a video are read shapes the crops as much as the detector: a prepare resumed across
    # such a change mixed crops of both. So does how an image's pixels are read (its colour profile was
    # ignored until December 2026) and an animation's frames: those changes went unnoticed.
    import importlib

    before = ExtractSettings().fingerprint()
    with module_edited(monkeypatch, tmp_path, importlib.import_module(f"deepshield.media.{name}")):
        assert ExtractSettings().fingerprint() != before


def test_files_cropped_again_for_changed_code_are_said_before_the_work(tmp_path: Path, small, monkeypatch, caplog):
    # A dataset resumed after an upgrade whose image reading changed was cropped again whole, silently: hours
    # for a large one, its bar starting from nothing as a new dataset's does.
    import deepshield.data.extract as extract

    for i in range(2):
        write_png(tmp_path / "src" / "real" / f"{i}.png", variant(small, i))
    prepare_dataset([tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False)
    with caplog.at_level(logging.WARNING, logger="deepshield.data.extract"):
        prepare_dataset([tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False)
        assert not caplog.records  # nothing changed: nothing said
        monkeypatch.setattr(extract, "code_fingerprint", lambda: "0" * 16)
        summary = prepare_dataset([tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False)
    assert summary.skipped == 0
    assert [r.getMessage() for r in caplog.records] == [
        "2 files done before are cropped again: the settings, or the code that reads pixels or frames, finds or "
        "crops faces, changed since"
    ]


def test_a_dataset_description_that_is_not_utf8_is_refused_by_name(tmp_path: Path, small, capsys):
    # evaluate, train on the dataset and a prepare into it ended in a UnicodeDecodeError traceback.
    write_png(tmp_path / "src" / "real" / "a.png", variant(small, 1))
    prepare_dataset([tmp_path / "src"], tmp_path / "ds", settings=SETTINGS, progress=False)
    info = DatasetLayout(tmp_path / "ds").info
    info.write_bytes(b"\x89PNG\x00\xff")
    with pytest.raises(DeepShieldError, match=rf"dataset description {info} is not UTF-8 text \(byte 0x89 on line 1\)"):
        read_info(tmp_path / "ds")
    assert main(["prepare", str(tmp_path / "src"), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{info} is not UTF-8 text" in err, err


def test_a_source_that_is_no_regular_file_is_said_as_what_it_is(tmp_path, capsys):
    # A FIFO named list.csv was taken for a folder: "cannot read the folder (Not a directory)".
    fifo = tmp_path / "list.csv"
    os.mkfifo(fifo)
    with pytest.raises(SourceFormatError, match=r"list\.csv: not a regular file: a FIFO \(named pipe\)"):
        detect_format(fifo)
    assert main(["prepare", str(fifo), "--out", str(tmp_path / "ds"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not a regular file: a FIFO (named pipe)" in err and "Not a directory" not in err, err


def test_a_source_given_through_a_link_is_named_as_given(tmp_path, capsys, monkeypatch):
    # prepare null.csv, a link to /dev/null, said '/dev/null: ...': a name the user never gave.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "null.csv").symlink_to(os.devnull)
    for fmt, said in (("auto", "not a regular file: a character device"), ("csv", "--format csv needs a CSV file")):
        assert main(["prepare", "null.csv", "--format", fmt, "--out", "ds", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert (
            err == f"deepshield: error: null.csv (a link to {os.devnull}): {said}" + err[err.index(said) + len(said) :]
        )
        assert err.count("\n") == 1, err
    assert main(["prepare", "./gone", "--out", "ds", "--no-progress"]) == 2
    assert capsys.readouterr().err == "deepshield: error: gone: no such file or folder\n"


def test_an_output_named_as_a_pipe_is_written_into_the_pipe(tmp_path: Path):
    # compare --out /dev/stdout into a pipe ended, once every bundle was scored, in a FileNotFoundError traceback:
    # the whole-or-nothing write made its temporary file beside /proc/<pid>/fd/pipe:[n], no folder.
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    read: list[bytes] = []
    reader = threading.Thread(target=lambda: read.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_output_text(fifo, '[{"bundle": "b"}]\n')
    reader.join(10)
    assert read == [b'[{"bundle": "b"}]\n'] and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert os.listdir(tmp_path) == ["pipe"]
    write_output_text(tmp_path / "new.json", "[]\n")  # a file it makes: whole or not at all
    assert (tmp_path / "new.json").read_text() == "[]\n"
