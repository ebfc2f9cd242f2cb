"""Packed face banks: a configuration's real faces in one portable file that training reads in place of folders."""

from pathlib import Path

import numpy as np
import pytest

from deepshield.cli.main import EXIT_USAGE, main
from deepshield.data.manifest import MANIFEST_COLUMNS
from deepshield.errors import DeepShieldError
from deepshield.faces.crop import CropPolicy
from deepshield.training.facebank import (
    FaceBank,
    build_facebank,
    facebank_for,
    facebank_of_files,
    list_images,
    unpack_facebank,
)
from deepshield.training.trainer import Trainer
from tests.conftest import file_size_limit
from tests.face_data import write_real_faces
from tests.test_training import tiny_config


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory) -> Path:
    return write_real_faces(tmp_path_factory.mktemp("faces") / "real", 8)


@pytest.fixture(scope="module")
def packed(real_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(the packed bank of `real_dir` at 48 px, the cache folder its unpacked bank was built in)"""
    work = tmp_path_factory.mktemp("pack")
    config = tiny_config(real_dir, work / "run", work / "e.db", work / "cache")
    config_file = work / "config.json"
    config_file.write_text(config.model_dump_json())
    out = work / "faces.npz"
    assert main(["facebank", "pack", "--config", str(config_file), "--out", str(out), "--quality", "95"]) == 0
    return out, work / "cache"


def test_the_packed_size_is_said_in_its_own_unit(real_dir, tmp_path, capsys):
    # A small bank (a first run's, some KB) was said to be "0.0 MB", as if nothing had been packed.
    from deepshield.media.units import format_bytes

    config = tiny_config(real_dir, tmp_path / "run", tmp_path / "e.db", tmp_path / "cache")
    (tmp_path / "config.json").write_text(config.model_dump_json())
    out = tmp_path / "faces.npz"
    assert main(["facebank", "pack", "--config", str(tmp_path / "config.json"), "--out", str(out)]) == 0
    said = capsys.readouterr().out.strip()
    assert out.stat().st_size < 1e6 and said.endswith(f"packed into {out}: {format_bytes(out.stat().st_size)}"), said


def test_a_bank_is_not_packed_into_itself(packed, tmp_path, capsys):
    # `--max-faces` on a packed bank, written to its own name, replaced it by the subset for good.
    out, cache = packed
    bank = tmp_path / "faces.npz"
    bank.write_bytes(out.read_bytes())
    config = tiny_config(bank, tmp_path / "run", tmp_path / "e.db", cache)
    (tmp_path / "config.json").write_text(config.model_dump_json())
    args = ["facebank", "pack", "--config", str(tmp_path / "config.json"), "--out", str(bank), "--max-faces", "2"]
    assert main(args) == EXIT_USAGE
    assert "is a packed bank the configuration reads (data.real_dirs)" in capsys.readouterr().err
    assert bank.read_bytes() == out.read_bytes()


def test_a_packed_bank_holds_the_built_bank(real_dir, packed):
    out, cache = packed
    policy = CropPolicy(size=48)
    built = build_facebank([real_dir], policy, cache, group_pattern=r"^(person\d)_", workers=1)  # from the cache
    unpacked = unpack_facebank(out, policy, r"^(person\d)_")
    assert len(unpacked) == len(built) == 8
    error = np.abs(unpacked.images.astype(np.int16) - built.images).mean()
    assert 0 < error < 3  # JPEG at quality 95: close, not identical
    np.testing.assert_array_equal(unpacked.keypoints, built.keypoints)
    np.testing.assert_allclose(unpacked.landmarks, built.landmarks, atol=0.02, equal_nan=True)
    np.testing.assert_array_equal(unpacked.valid, built.valid)
    assert unpacked.groups.tolist() == built.groups.tolist() and len(set(unpacked.groups.tolist())) == 4
    assert unpacked.paths.tolist() == built.paths.tolist()


def test_a_packed_bank_trains_in_place_of_its_folder(packed, tmp_path, mlflow_store):
    out, _ = packed
    config = tiny_config(
        Path(out), tmp_path / "run", mlflow_store(tmp_path / "e.db"), tmp_path / "cache", **{"optim.epochs": "1"}
    )
    assert len(facebank_for(config)) == 8
    result = Trainer(config).run()
    assert result.progress.global_step == 16 // 4
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("facebank-*"))  # nothing rebuilt


def test_a_benchmark_is_checked_against_a_packed_banks_photos_where_they_are_not(real_dir, tmp_path, mlflow_store):
    # Packed banks are for machines without the photos: there a benchmark holding two of them was taken
    # (bench_auc chosen on training photos), since the check compared files on disk only.
    import shutil

    from deepshield.training.benchmarks import BenchmarkOverlapError
    from tests.face_data import write_benchmark

    photos = shutil.copytree(real_dir, tmp_path / "photos")
    config = tiny_config(photos, tmp_path / "run", tmp_path / "e.db", tmp_path / "cache")
    config_file = tmp_path / "config.json"
    config_file.write_text(config.model_dump_json())
    out = tmp_path / "faces.npz"
    assert main(["facebank", "pack", "--config", str(config_file), "--out", str(out)]) == 0
    bench = write_benchmark(tmp_path / "bench")
    for photo in sorted(photos.iterdir())[:2]:
        shutil.copy(photo, bench / "real" / photo.name)
    shutil.rmtree(photos)
    with_bench = {"data.benchmarks": f'["{bench}"]', "optim.epochs": "1"}
    trained = tiny_config(
        Path(out), tmp_path / "run2", mlflow_store(tmp_path / "e.db"), tmp_path / "cache2", **with_bench
    )
    with pytest.raises(BenchmarkOverlapError, match=r"shares 2 files with the training data"):
        Trainer(trained).run()
    # A bank packed again from the packed one keeps its sources' digests.
    repacked_config = tmp_path / "repack.json"
    repacked_config.write_text(
        tiny_config(Path(out), tmp_path / "run3", tmp_path / "e.db", tmp_path / "c3").model_dump_json()
    )
    again = tmp_path / "again.npz"
    assert main(["facebank", "pack", "--config", str(repacked_config), "--out", str(again)]) == 0
    with np.load(again) as repacked, np.load(out) as first:
        assert repacked["digests"].tolist() == first["digests"].tolist() and all(first["digests"].tolist())


def test_a_packed_banks_sources_are_looked_for_among_files_of_their_sizes_only(tmp_path, monkeypatch):
    # Every benchmark file was hashed at every training start (minutes for video benchmarks).
    import deepshield.media.files as media_files
    import deepshield.training.benchmarks as benchmarks
    from deepshield.media.files import source_key

    files = []
    for size in (10, 20, 30):
        files.append(tmp_path / f"f{size}.bin")
        files[-1].write_bytes(bytes(size))
    training = tmp_path / "gone.bin"
    training.write_bytes(bytes(20))
    key = source_key(training)
    training.unlink()
    hashed = []
    real_sha = media_files.file_sha256
    monkeypatch.setattr(media_files, "file_sha256", lambda path: hashed.append(path.name) or real_sha(path))
    with pytest.raises(benchmarks.BenchmarkOverlapError, match="shares 1 file"):
        benchmarks.check_no_overlap("set", files, [], [key])
    assert hashed == ["f20.bin"]


def test_a_copy_in_a_folder_and_a_packed_bank_is_one_group(real_dir, packed, tmp_path, monkeypatch):
    # Each bank joined its own copies only: a photo in a folder and in a packed bank were two people.
    import shutil

    out, _ = packed
    folder = tmp_path / "more"
    folder.mkdir()
    original = sorted(real_dir.iterdir())[0]
    shutil.copy(original, folder / "renamed.png")
    config = tiny_config(folder, tmp_path / "run", tmp_path / "e.db", tmp_path / "cache")
    config = config.model_copy(update={"data": config.data.model_copy(update={"real_dirs": [str(folder), str(out)]})})
    import deepshield.media.files as media_files

    hashed = []
    real_sha = media_files.file_sha256
    monkeypatch.setattr(media_files, "file_sha256", lambda path: hashed.append(Path(path).name) or real_sha(path))
    (folder / "other.png").write_bytes(original.read_bytes() + b"\0")  # another size: never hashed
    bank = facebank_for(config)
    group_of = {Path(p).name: g for p, g in zip(bank.paths.tolist(), bank.groups.tolist())}
    assert group_of["renamed.png"] == group_of[original.name]
    assert "other.png" not in hashed and "renamed.png" in hashed


def test_max_faces_draws_a_seeded_subset(packed, tmp_path):
    out, _ = packed
    config_file = out.parent / "config.json"
    subsets = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4), ("d", 5)):
        target = tmp_path / f"{name}.npz"
        argv = ["facebank", "pack", "--config", str(config_file), "--out", str(target), "--max-faces", "5"]
        assert main([*argv, "--seed", str(seed)]) == 0
        subsets.append(unpack_facebank(target, CropPolicy(size=48), None).paths.tolist())
    assert subsets[0] == subsets[1] and len(subsets[0]) == 5 and subsets[0] == sorted(subsets[0])
    # drawn by the seed: not the first five of the bank whatever the seed
    assert len({tuple(s) for s in subsets[1:]}) > 1


def test_a_packed_bank_cut_with_another_policy_is_refused(packed):
    out, _ = packed
    with pytest.raises(DeepShieldError, match=r"pack it again with this configuration"):
        unpack_facebank(out, CropPolicy(size=48, scale=1.3), None)


def test_a_file_that_is_no_packed_bank_is_refused_by_name(tmp_path):
    fake = tmp_path / "faces.npz"
    fake.write_bytes(b"not a bank")
    with pytest.raises(DeepShieldError, match=r"faces.npz is not a packed face bank"):
        unpack_facebank(fake, CropPolicy(size=48), None)
    with pytest.raises(DeepShieldError, match=r"only data.real_dirs reads packed face banks"):
        list_images([fake])
    array = tmp_path / "bank.npy"  # np.load reads it as one array: a TypeError's traceback came out
    np.save(array, np.zeros(3))
    with pytest.raises(DeepShieldError, match=r"bank.npy is not a packed face bank .*single array"):
        unpack_facebank(array, CropPolicy(size=48), None)


def test_image_folders_are_listed_through_linked_folders(real_dir, tmp_path):
    """Path.rglob follows no link: photos in a linked sub-folder were left out of training without a word."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "linked").symlink_to(real_dir, target_is_directory=True)
    (folder / "loop").symlink_to(folder, target_is_directory=True)  # listed once, not forever
    assert [p.name for p in list_images([folder])] == sorted(p.name for p in real_dir.iterdir())


def test_a_dataset_prepared_inside_a_real_face_folder_is_no_face_of_it(real_dir, tmp_path, caplog):
    """`prepare photos --out photos/prep`: its crops, fakes among them, became real faces of the bank."""
    import logging
    import shutil

    folder = shutil.copytree(real_dir, tmp_path / "photos")
    crops = folder / "prep" / "crops" / "photos" / "fake"
    crops.mkdir(parents=True)
    shutil.copyfile(next(real_dir.glob("*.png")), crops / "000000_00.png")
    (folder / "prep" / "manifest.csv").write_text(",".join(MANIFEST_COLUMNS) + "\n")
    with caplog.at_level(logging.WARNING):
        listed = list_images([folder])
    assert sorted(p.name for p in listed) == sorted(p.name for p in real_dir.iterdir())
    assert f"1 file of the prepared dataset {folder / 'prep'} inside it passed over" in caplog.text


def test_a_photo_replaced_under_its_name_is_cropped_again(real_dir, tmp_path):
    import os
    import shutil

    photos = tmp_path / "photos"
    shutil.copytree(real_dir, photos)
    policy = CropPolicy(size=48)
    before = build_facebank([photos], policy, tmp_path / "cache", workers=1)
    first, second = sorted(photos.iterdir())[:2]
    shutil.copyfile(second, first)
    os.utime(first, ns=(1, 1))  # another modification time, whatever the clock's resolution
    after = build_facebank([photos], policy, tmp_path / "cache", workers=1)
    assert not np.array_equal(after.images[0], before.images[0])
    np.testing.assert_array_equal(after.images[0], after.images[1])


def test_a_killed_bank_build_resumes_from_its_last_kept_part(real_dir, tmp_path, monkeypatch):
    import deepshield.training.facebank as facebank

    policy = CropPolicy(size=48)
    straight = build_facebank([real_dir], policy, tmp_path / "straight", workers=1)
    monkeypatch.setattr(facebank, "BANK_PART_FILES", 3)  # 8 photos: parts of 3, 3 and 2
    whole = facebank._process
    seen: list[str] = []

    def killed_at_the_fifth(path):
        seen.append(path.name)
        if len(seen) == 5:
            raise KeyboardInterrupt  # as Ctrl-C, or a kill, in the second part
        return whole(path)

    monkeypatch.setattr(facebank, "_process", killed_at_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        build_facebank([real_dir], policy, tmp_path / "cache", workers=1)
    (parts,) = (tmp_path / "cache").glob("facebank-*.parts")
    assert [p.name for p in sorted(parts.iterdir())] == ["00000.npz"]  # the first part was kept
    seen.clear()
    monkeypatch.setattr(facebank, "_process", lambda path: seen.append(path.name) or whole(path))
    resumed = build_facebank([real_dir], policy, tmp_path / "cache", workers=1)
    assert len(seen) == 5  # the second and third parts only
    for field in ("images", "keypoints", "valid", "groups", "paths"):
        assert np.array_equal(getattr(resumed, field), getattr(straight, field)), field
    assert np.array_equal(resumed.landmarks, straight.landmarks, equal_nan=True)
    assert not parts.exists()  # the finished bank replaces its parts


def test_a_bank_another_process_is_building_is_waited_for_and_read(real_dir, tmp_path, monkeypatch):
    # Two trainings on the same photos (a tune and a second terminal's train sharing data.cache_dir) built one
    # bank at once, into one part file and one temporary name: all but one ended in FileNotFoundError.
    import threading
    import time

    import deepshield.training.facebank as facebank

    policy = CropPolicy(size=48)
    files = list_images([real_dir])
    save = facebank.FaceBank.save
    told = threading.Event()
    warn = facebank.log.warning
    monkeypatch.setattr(facebank.log, "warning", lambda *args: told.set() or warn(*args))
    other: dict[str, object] = {}

    def build_other():
        try:
            other["bank"] = facebank_of_files(files, policy, tmp_path / "cache", workers=1)
        except Exception as exc:  # noqa: BLE001 - the test reports it
            other["error"] = exc

    second = threading.Thread(target=build_other)

    def another_build_meanwhile(self, path):
        if not second.is_alive() and not other:  # the first part is done: the other build starts now
            second.start()
            deadline = time.monotonic() + 60
            while second.is_alive() and not told.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)  # until it waits for this build, or (as before) has built the bank itself
        save(self, path)

    monkeypatch.setattr(facebank.FaceBank, "save", another_build_meanwhile)
    first = facebank_of_files(files, policy, tmp_path / "cache", workers=1)
    second.join(timeout=60)
    assert "error" not in other, other.get("error")
    assert told.is_set()  # the log says what it waits for
    assert np.array_equal(other["bank"].images, first.images) and len(first) == len(files)
    assert len(list((tmp_path / "cache").glob("facebank-*.npz"))) == 1


def test_a_bank_for_the_synthetic_checks_cuts_padded_faces_within_their_picture(tmp_path, astronaut):
    """The synthetic-face checks score faces as the product reads them: a padded face cut within its picture."""
    import cv2

    photos = tmp_path / "photos"
    photos.mkdir()
    close = np.ascontiguousarray(astronaut[70:200, 170:290])  # the face fills the photo: its crop is padded
    cv2.imwrite(str(photos / "close.png"), cv2.cvtColor(close, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(photos / "whole.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    policy = CropPolicy(size=48, scale=1.3)
    padded = facebank_of_files(sorted(photos.iterdir()), policy, tmp_path / "cache", workers=1)
    inside = facebank_of_files(sorted(photos.iterdir()), policy, tmp_path / "cache", workers=1, inside=True)
    assert [p.rsplit("/", 1)[-1] for p in inside.paths] == ["close.png", "whole.png"]
    assert not padded.valid[0].all() and inside.valid[0].all()  # the close face: no padding when cut within
    assert not np.array_equal(padded.images[0], inside.images[0])
    np.testing.assert_array_equal(padded.images[1], inside.images[1])  # a face with room around it: as before


def test_reading_photos_in_this_process_leaves_it_to_its_own_parent():
    # The one-process path ran the workers' initializer, whose watch ended the driver itself once its
    # parent was gone: a training started with nohup died with its terminal.
    import threading
    from contextlib import ExitStack

    from deepshield.training.facebank import _processor

    with ExitStack() as stack:
        _processor(stack, 1, CropPolicy(), None, False)
        assert not any(thread.name == "exit-with-parent" for thread in threading.enumerate())


def test_the_banks_worker_processes_keep_pillows_warnings_off_the_terminal(tmp_path, astronaut, capfd):
    # Spawned workers start with no warning filters: a photo with corrupt EXIF printed Pillow's
    # "Corrupt EXIF data" on the terminal of every `train` and `facebank pack`.
    import io
    import struct

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    tiff = b"II*\x00" + struct.pack("<IHHHII", 8, 5, 0x010F, 2, 4, 0)  # five entries said, one there
    segment = b"Exif\x00\x00" + tiff
    folder = tmp_path / "real"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (folder / name).write_bytes(jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + jpeg[2:])
    bank = build_facebank([folder], CropPolicy(size=48), tmp_path / "cache", workers=2)
    assert len(bank) == 2
    assert "EXIF" not in capfd.readouterr().err


def test_a_face_bank_that_cannot_be_written_says_so_in_one_line(tmp_path):
    # np.savez left its zip open when the write failed: closed as it was collected, after the file under it, it
    # printed "Exception ignored in: <function ZipFile.__del__> ... ValueError: seek of closed file" below the line.
    import subprocess
    import sys

    script = f"""
import dataclasses, resource, sys
from pathlib import Path
import numpy as np
from deepshield.errors import exit_status
from deepshield.training.facebank import FaceBank
larger = dataclasses.replace(FaceBank.empty(48), images=np.zeros((8, 48, 48, 3), np.uint8))
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
sys.exit(exit_status(lambda: larger.save(Path({str(tmp_path / "bank.npz")!r})), "deepshield"))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (2, f"deepshield: error: {tmp_path / 'bank.npz'}: File too large\n")


def test_a_face_bank_that_cannot_be_written_keeps_the_one_before_and_no_temporary_file(tmp_path):
    # A full disk while a face bank (gigabytes, for a large set), a benchmark or an evaluation's crops were
    # cached left their .tmp.npz or .partial.npz behind, holding the space that was short.
    import dataclasses
    import os

    cache = tmp_path / "facebank.npz"
    FaceBank.empty(48).save(cache)
    before = cache.read_bytes()
    larger = dataclasses.replace(FaceBank.empty(48), images=np.zeros((8, 48, 48, 3), np.uint8))
    with file_size_limit(4096), pytest.raises(OSError, match=f"File too large: '{cache}'"):
        larger.save(cache)
    assert cache.read_bytes() == before and os.listdir(tmp_path) == ["facebank.npz"]
