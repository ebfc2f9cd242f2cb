"""Cross-blend donors that are not real samples (data.donor_dirs): e.g. generated faces blended into real
photos, as regional GAN swaps make them."""

import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from deepshield.errors import DeepShieldError
from deepshield.synthesis import SynthesisConfig
from deepshield.training.benchmarks import BenchmarkOverlapError
from deepshield.training.checkpoint import load_checkpoint
from deepshield.training.config import load_config
from deepshield.training.dataset import Donors, FakeMaker
from deepshield.training.facebank import FaceBank
from deepshield.training.synthetic import split_generated_files
from deepshield.training.trainer import Trainer
from tests.face_data import write_benchmark, write_generated_faces, write_real_faces
from tests.test_training import tiny_config

SIZE = 96
KEYPOINTS = np.array([[34, 40], [62, 40], [48, 54], [48, 70], [20, 44], [76, 44]], np.float32)


def bank_of(images: np.ndarray) -> FaceBank:
    count = len(images)
    return FaceBank(
        images,
        np.repeat(KEYPOINTS[None], count, axis=0),
        np.full((count, 468, 2), np.nan, np.float32),
        np.ones((count, SIZE, SIZE), bool),
        np.array([f"g{i}" for i in range(count)]),
        np.array([f"{i}.png" for i in range(count)]),
    )


def change_at_centre(fake: np.ndarray, real: np.ndarray) -> float:
    centre = slice(SIZE // 3, 2 * SIZE // 3)
    return float(np.abs(fake[centre, centre].astype(np.int16) - real[centre, centre]).mean())


@pytest.fixture(scope="module")
def banks() -> tuple[FaceBank, FaceBank]:
    face = cv2.resize(skdata.astronaut()[40:240, 150:310], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    reals = np.stack([np.clip(face.astype(np.int16) + shift, 0, 255).astype(np.uint8) for shift in (-10, 0, 10)])
    checker = ((np.indices((SIZE, SIZE)) // 8).sum(axis=0) % 2 * 200 + 30).astype(np.uint8)  # no real face's texture
    donors = np.stack([np.stack([checker] * 3, axis=-1)] * 2)
    return bank_of(reals), bank_of(donors)


def test_donors_are_blended_into_the_real_faces_deterministically(banks):
    reals, donors = banks
    whole_face = SynthesisConfig(part_probability=0.0, full_blend_probability=1.0)
    with_donors = FakeMaker(reals, whole_face, cross_fraction=1.0, donors=Donors(donors, fraction=1.0))
    without = FakeMaker(reals, whole_face, cross_fraction=1.0)
    for index in range(len(reals)):
        fake = with_donors.make(index, np.random.default_rng([0, index])).image
        np.testing.assert_array_equal(fake, with_donors.make(index, np.random.default_rng([0, index])).image)
        own = without.make(index, np.random.default_rng([0, index])).image
        # the donor's texture fills the blend; another view of the same real face changes it little
        assert change_at_centre(fake, reals.images[index]) > 3 * change_at_centre(own, reals.images[index]), index


def test_a_cross_blends_donor_is_another_person():
    # Frames of one video share a group: of 2000 donors drawn for a bank of 4 videos of 32 frames, 453 came
    # from the target's own video. A bank of one group alone still gets another face.
    bank = replace(bank_of(np.zeros((128, SIZE, SIZE, 3), np.uint8)), groups=np.repeat([f"v{i}" for i in range(4)], 32))
    rng = np.random.default_rng(0)
    for _ in range(500):
        index = int(rng.integers(128))
        assert bank.groups[bank.donor_for(index, rng)] != bank.groups[index]
    alone = replace(bank, groups=np.full(128, "v0"))
    draws = {alone.donor_for(5, rng) for _ in range(300)}
    assert 5 not in draws and len(draws) > 50


def test_a_groups_split_side_does_not_depend_on_the_rest_of_the_bank():
    # The manipulation and synthetic-face scores split the same folders as differently filtered banks;
    # shuffled as a whole, most of one's validation identities were the other's training faces.
    from deepshield.training.dataset import split_by_group

    whole = replace(bank_of(np.zeros((400, 2, 2, 3), np.uint8)), groups=np.array([f"p{i}" for i in range(400)]))
    filtered = whole.subset(np.flatnonzero(np.arange(400) % 7))  # one face in seven dropped
    side = {}
    for bank in (whole, filtered):
        train, val = split_by_group(bank, 0.1, seed=3)
        side[len(bank)] = {**dict.fromkeys(bank.groups[train], "train"), **dict.fromkeys(bank.groups[val], "val")}
    small, large = side[len(filtered)], side[400]
    assert all(large[group] == where for group, where in small.items())
    assert 25 <= list(large.values()).count("val") <= 55  # about a tenth of 400
    assert split_by_group(whole, 0.1, seed=3)[1].tolist() != split_by_group(whole, 0.1, seed=4)[1].tolist()


def test_copies_of_one_photo_under_other_names_are_one_group(tmp_path):
    # A name the group pattern does not read is its own group: a photo and its copy under another name
    # (byte for byte, or its pixels in another file format) fell on both sides of the split (27 of 137
    # such clusters in the shared folders) and were each other's "other person" as blend donors.
    from deepshield.faces.crop import CropPolicy
    from deepshield.training.dataset import split_by_group
    from deepshield.training.facebank import build_facebank

    folder = write_real_faces(tmp_path / "real", 6)
    photos = sorted(folder.iterdir())
    shutil.copy(photos[0], folder / "copy.jpg")
    cv2.imwrite(str(folder / "augmented_image_7.bmp"), cv2.imread(str(photos[1])))
    bank = build_facebank([folder], CropPolicy(size=64), tmp_path / "cache", group_pattern=r"^(person\d)_", workers=1)
    group_of = {Path(path).name: group for path, group in zip(bank.paths.tolist(), bank.groups.tolist())}
    assert (
        group_of["copy.jpg"] == group_of[photos[0].name]
        and group_of["augmented_image_7.bmp"] == group_of[photos[1].name]
    )
    assert len(set(bank.groups.tolist())) == 4  # person0 to person3: the copies joined theirs
    for seed in range(20):  # whichever side their group falls on, both copies are there
        val = split_by_group(bank, 0.5, seed)[1]
        for copy, photo in (("copy.jpg", photos[0].name), ("augmented_image_7.bmp", photos[1].name)):
            sides = {name: "val" if i in val else "train" for i, name in enumerate(Path(p).name for p in bank.paths)}
            assert sides[copy] == sides[photo]


def test_faces_a_few_bits_apart_are_one_photo_and_more_are_two():
    # crop_hash reads a 17 x 16 grid of cells: faces drawn as such grids move its bits one cell at a time.
    from deepshield.training.facebank import SAME_PHOTO_BITS, crop_hash, joined_copies

    rng = np.random.default_rng(0)
    grid = rng.integers(60, 200, (16, 17)).astype(np.uint8)

    def face(cells: np.ndarray) -> np.ndarray:
        return np.repeat(np.kron(cells, np.ones((4, 4), np.uint8))[..., None], 3, axis=2)

    def bits_apart(a: np.ndarray, b: np.ndarray) -> int:
        return int(np.unpackbits(crop_hash(a) ^ crop_hash(b)).sum())

    near, far = grid.copy(), grid.copy()
    near[3, 5] = 255 if near[3, 4] < 250 else 0  # one cell: one or two comparisons change
    for row in range(0, 16, 2):  # cells in other rows, until a few more bits than a copy may differ by
        far[row, 8] = 255 - far[row, 8]
        if bits_apart(face(grid), face(far)) >= 5:
            break
    assert 1 <= bits_apart(face(grid), face(near)) <= SAME_PHOTO_BITS < bits_apart(face(grid), face(far)) <= 8
    images = np.stack([face(grid), face(near), face(far)])
    assert joined_copies(np.array(["a", "b", "c"]), images).tolist() == ["a", "a", "c"]
    # More copies than a hash band may hold (64 here) are still one photo: 65 were 65 groups.
    many = np.stack([face(grid)] * 70 + [face(far)])
    assert len(set(joined_copies(np.array([f"g{i:02d}" for i in range(71)]), many).tolist())) == 2


def test_donors_need_a_share_and_a_share_needs_donors(tmp_path):
    for settings in (["data.donor_fraction=0.5"], [f'data.donor_dirs=["{tmp_path}"]']):
        with pytest.raises(DeepShieldError, match=r"data\.donor_dirs and data\.donor_fraction go together"):
            load_config(None, settings)


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("faces")
    return write_real_faces(root / "real", 8), write_generated_faces(root / "generated", 4)


def test_a_run_with_donors_trains_and_records_them(faces, tmp_path, monkeypatch, mlflow_store):
    from deepshield.training import dataset

    real, generated = faces
    settings = {"data.donor_dirs": f'["{generated}"]', "data.donor_fraction": "0.5", "optim.epochs": "1"}
    config = tiny_config(real, tmp_path / "run", mlflow_store(tmp_path / "mlruns.db"), tmp_path / "cache", **settings)
    handed: list = []  # the donors each training stream was given (the validation fakes take none)
    make = dataset.TrainingSamples.__init__

    def recording(self, *args, **kwargs):
        make(self, *args, **kwargs)
        handed.append(self.fakes.donors)

    monkeypatch.setattr(dataset.TrainingSamples, "__init__", recording)
    result = Trainer(config).run()
    assert result.bundle_dir is not None and len(result.progress.history) == 1
    assert handed and all(d is not None and d.fraction == 0.5 for d in handed)
    assert {Path(p).parent for d in handed for p in d.bank.paths} == {generated.resolve()}
    recorded = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["config"]["data"]
    assert recorded["donor_fraction"] == 0.5 and recorded["donor_dirs"] == [str(generated)]


def test_a_benchmark_holding_a_donor_face_is_refused(faces, tmp_path, mlflow_store):
    real, generated = faces
    benchmark = write_benchmark(tmp_path / "bench")
    shutil.copy(next(generated.glob("*.png")), benchmark / "fake" / "donor.png")
    settings = {
        "data.donor_dirs": f'["{generated}"]',
        "data.donor_fraction": "0.5",
        "data.benchmarks": f'["{benchmark}"]',
    }
    config = tiny_config(real, tmp_path / "run", mlflow_store(tmp_path / "mlruns.db"), tmp_path / "cache", **settings)
    with pytest.raises(BenchmarkOverlapError, match=r"donor\.png"):
        Trainer(config).run()


def test_generated_faces_the_trunk_saw_as_donors_stay_out_of_the_synthetic_checks(tmp_path):
    files = [tmp_path / f"g{i:02d}.png" for i in range(20)]
    seen = frozenset(files[:8])
    plain = split_generated_files(files, 0.2, 0.15, seed=3)
    train, val, holdout = split_generated_files(files, 0.2, 0.15, seed=3, seen=seen)
    assert sorted(train + val + holdout) == sorted(files) and seen <= set(train)
    assert (len(val), len(holdout)) == (len(plain[1]), len(plain[2])) == (3, 4)  # sizes from all the files
    assert not seen & set(val + holdout)
    with pytest.raises(DeepShieldError, match=r"6 generated faces the network has not seen \(14 were blend donors"):
        split_generated_files(files, 0.2, 0.15, seed=3, seen=frozenset(files[:14]))


def test_a_synthetic_head_on_a_trunk_that_saw_every_generated_face_is_refused(faces, tmp_path, mlflow_store):
    real, generated = faces
    donors = {"data.donor_dirs": f'["{generated}"]', "data.donor_fraction": "0.5", "optim.epochs": "1"}
    parent = Trainer(
        tiny_config(real, tmp_path / "parent", mlflow_store(tmp_path / "mlruns.db"), tmp_path / "cache", **donors)
    ).run()
    frozen = {
        "synthetic.fake_dirs": f'["{generated}"]',
        "synthetic.matched_real_dir": str(real),
        "synthetic.init": str(parent.run_dir / "checkpoints" / "best.pt"),
        "export.select": "max.synthetic_val_auc",
    }
    config = tiny_config(real, tmp_path / "frozen", mlflow_store(tmp_path / "mlruns.db"), tmp_path / "cache", **frozen)
    with pytest.raises(DeepShieldError, match=r"were blend donors in its training.*data\.donor_limit_per_folder"):
        Trainer(config).run()


def test_pasting_draws_nothing_when_off_and_makes_a_fake_when_on(banks):
    reals, _ = banks
    default = FakeMaker(reals, SynthesisConfig(), cross_fraction=0.3)
    off = FakeMaker(reals, SynthesisConfig(paste_probability=0.0), cross_fraction=0.3)
    on = FakeMaker(reals, SynthesisConfig(paste_probability=1.0), cross_fraction=0.3)
    for index in range(len(reals)):
        np.testing.assert_array_equal(
            default.make(index, np.random.default_rng([1, index])).image,
            off.make(index, np.random.default_rng([1, index])).image,
        )
        pasted = on.make(index, np.random.default_rng([1, index])).image
        # the test bank has no meshes: a paste falls back to a cross blend with another face
        assert change_at_centre(pasted, reals.images[index]) > 0
