import contextlib
import os

import cv2
import numpy as np
import pytest

from deepshield.faces.crop import CropPolicy, crop_face
from deepshield.faces.detector import FaceDetector
from deepshield.faces.landmarks import FaceMesher
from deepshield.synthesis import FaceSample, SynthesisConfig, cross_blend, part_paste, self_blend
from deepshield.synthesis.masks import deform, hull_mask, keypoint_ellipse_mask


@pytest.fixture(scope="module")
def face_sample(astronaut) -> FaceSample:
    face = FaceDetector().detect(astronaut)[0]
    crop = crop_face(astronaut, face.box, face.keypoints, CropPolicy(size=128))
    keypoints = face.keypoints @ crop.matrix[:, :2].T + crop.matrix[:, 2]
    landmarks = FaceMesher().landmarks(crop.pixels)
    assert landmarks is not None and landmarks.shape == (468, 2)
    return FaceSample(crop.pixels, keypoints.astype(np.float32), landmarks)


WHOLE_FACE = SynthesisConfig(part_probability=0.0)


@pytest.mark.parametrize("seed", range(5))
def test_self_blend_mask_covers_the_face_and_only_it(face_sample, seed):
    result = self_blend(face_sample, np.random.default_rng(seed), WHOLE_FACE)
    mask = result.mask
    assert mask.shape == face_sample.image.shape[:2] and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    # Eyes, nose and mouth centre are inside the blended region ...
    for x, y in face_sample.keypoints[:4]:
        assert mask[int(y), int(x)] > 0.3
    # ... the crop's corners (background) are not.
    for y, x in [(0, 0), (0, 127), (127, 0), (127, 127)]:
        assert mask[y, x] == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_fake_differs_from_real_only_inside_the_mask_support(face_sample, seed):
    result = self_blend(face_sample, np.random.default_rng(seed))
    outside = result.mask == 0
    assert outside.any()
    assert np.array_equal(result.image[outside], face_sample.image[outside])
    inside = result.mask > 0.5
    difference = np.abs(result.image.astype(int) - face_sample.image.astype(int)).sum(axis=2)
    assert difference[inside].mean() > 1.0  # the blend changed the face


def test_cross_blend_replaces_inside_the_mask_with_the_donor(face_sample):
    donor = FaceSample(
        np.ascontiguousarray(face_sample.image[:, ::-1]), face_sample.keypoints.copy(), face_sample.landmarks.copy()
    )
    donor_landmarks = donor.landmarks.copy()
    donor_landmarks[:, 0] = face_sample.image.shape[1] - 1 - donor_landmarks[:, 0]
    donor = FaceSample(donor.image, donor.keypoints, donor_landmarks)
    result = cross_blend(face_sample, donor, np.random.default_rng(3), WHOLE_FACE)
    assert result.method == "cross_blend"
    outside = result.mask == 0
    assert np.array_equal(result.image[outside], face_sample.image[outside])
    assert (
        np.abs(result.image.astype(int) - face_sample.image.astype(int))[result.mask > 0.5 * result.mask.max()].mean()
        > 2.0
    )


def test_synthesis_is_deterministic_under_a_seed(face_sample):
    first = self_blend(face_sample, np.random.default_rng(42))
    second = self_blend(face_sample, np.random.default_rng(42))
    other = self_blend(face_sample, np.random.default_rng(43))
    assert np.array_equal(first.image, second.image) and np.array_equal(first.mask, second.mask)
    assert not np.array_equal(first.mask, other.mask)


def test_keypoint_fallback_mask_when_no_mesh(face_sample):
    sample = FaceSample(face_sample.image, face_sample.keypoints, None)
    ellipse = keypoint_ellipse_mask((128, 128), sample.keypoints)
    for x, y in sample.keypoints[:4]:
        assert ellipse[int(y), int(x)] == 1.0
    result = self_blend(sample, np.random.default_rng(0))
    assert np.array_equal(result.image[result.mask == 0], sample.image[result.mask == 0])
    # The blend covers the face the keypoints outline (an empty fallback mask passed the line above).
    eyes_and_mouth = [(int(y), int(x)) for x, y in sample.keypoints[[0, 1, 3]]]
    assert all(result.mask[y, x] > 0.5 for y, x in eyes_and_mouth)
    assert np.abs(result.image.astype(int) - sample.image.astype(int))[result.mask > 0.5].mean() > 1


def test_deform_keeps_the_region_near_its_origin():
    mask = np.zeros((100, 100), np.float32)
    mask[30:70, 30:70] = 1
    soft = deform(mask, np.random.default_rng(0))
    assert soft.max() == pytest.approx(1.0)
    assert soft[50, 50] > 0.5 and soft[2, 2] == 0.0


def test_synth_takes_no_progress_for_its_face_bank_bar(tmp_path, monkeypatch):
    # synth draws the face bank's bar on a terminal, as train does, and refused --no-progress, which every
    # other command drawing one takes.
    import deepshield.training.facebank as facebank
    from deepshield.cli.main import main
    from tests.face_data import write_real_faces

    asked = []
    build = facebank.build_facebank

    def spied(*args, **kwargs):
        asked.append(kwargs.get("progress"))
        return build(*args, **kwargs)

    monkeypatch.setattr(facebank, "build_facebank", spied)
    real = write_real_faces(tmp_path / "real", 2)
    assert main(["synth", str(real), str(tmp_path / "out"), "-n", "1", "--size", "96", "--no-progress"]) == 0
    assert asked == [False]


def test_synth_command_writes_fakes_and_a_contact_sheet(tmp_path):
    from deepshield.cli.main import main
    from tests.face_data import write_real_faces

    real = write_real_faces(tmp_path / "real", 4)
    out = tmp_path / "out"
    assert main(["synth", str(real), str(out), "-n", "4", "--size", "96"]) == 0
    assert sorted(p.name for p in out.glob("fake_*.png") if "mask" not in p.name) == [
        f"fake_{k:03d}.png" for k in range(4)
    ]
    assert len(list(out.glob("fake_*_mask.png"))) == 4
    assert (out / "contact_sheet.png").stat().st_size > 10_000
    pasted = tmp_path / "pasted"
    assert main(["synth", str(real), str(pasted), "-n", "2", "--size", "96", "--method", "paste"]) == 0
    assert len(list(pasted.glob("fake_*_mask.png"))) == 2
    # An output inside the real folder: its fakes were read back as real faces on the next run.
    assert main(["synth", str(real), str(real / "out"), "-n", "2", "--size", "96"]) == 2
    assert not (real / "out").exists()
    # A folder name that is not UTF-8: cv2.imwrite crashed the process (segmentation fault) on it.
    odd = tmp_path / os.fsdecode(b"\xe9t\xe9")
    assert main(["synth", str(real), str(odd), "-n", "1", "--size", "96"]) == 0
    assert (odd / "fake_000.png").stat().st_size > 1000 and (odd / "fake_000_mask.png").is_file()


def test_synth_refuses_an_earlier_runs_fakes_unless_forced_then_replaces_them_all(tmp_path, capsys):
    # A second run of fewer fakes left the first's beyond them in the folder, unsaid: two sets mixed.
    from deepshield.cli.main import EXIT_USAGE, main
    from tests.face_data import write_real_faces

    real = write_real_faces(tmp_path / "real", 2)
    out = tmp_path / "out"
    assert main(["synth", str(real), str(out), "-n", "3", "--size", "96", "--no-progress"]) == 0
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    assert main(["synth", str(real), str(out), "-n", "1", "--size", "96", "--method", "self"]) == EXIT_USAGE
    assert "holds an earlier synth's fakes and contact sheet: use --force" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == before
    assert main(["synth", str(real), str(out), "-n", "1", "--size", "96", "--method", "self", "--force"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "contact_sheet.png",
        "fake_000.png",
        "fake_000_mask.png",
        "notes.txt",
    ]


def test_synth_writes_a_mask_that_is_0_only_where_no_pixel_changed(tmp_path, monkeypatch):
    # The mask was truncated to 0-255: a pixel a faint edge of the blend changed read 0 (10 of 30 fakes).
    from deepshield.cli.main import main
    from deepshield.media.images import load_image
    from deepshield.synthesis import blend
    from tests.face_data import write_real_faces

    made = []

    def recorded(target, rng, config=None):
        made.append(target.image)
        return self_blend(target, rng, config)

    monkeypatch.setattr(blend, "self_blend", recorded)
    out = tmp_path / "out"
    assert main(["synth", str(write_real_faces(tmp_path / "real", 2)), str(out), "-n", "12", "--method", "self"]) == 0
    for k, real in enumerate(made):
        changed = (load_image(out / f"fake_{k:03d}.png") != real).any(axis=2)
        mask = cv2.imread(str(out / f"fake_{k:03d}_mask.png"), cv2.IMREAD_UNCHANGED)
        assert changed.any() and not (changed & (mask == 0)).any(), k


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--smooth-probability", "1.5"], "--smooth-probability: must be between 0 and 1"),
        (["-n", "-2"], "-n: must be a positive integer"),
        (["-n", "0"], "-n: must be a positive integer"),
        (["--size", "8"], "invalid crop policy: size: Input should be greater than or equal to 16"),
    ],
)
def test_synth_refuses_bad_options_in_one_line(tmp_path, capsys, args, message):
    from deepshield.cli.main import EXIT_USAGE, main

    try:
        code = main(["synth", str(tmp_path / "real"), str(tmp_path / "out"), *args])
    except SystemExit as exit_info:  # argparse's own refusals
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and message in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("seed", range(4))
def test_blends_never_reach_the_crop_padding(face_sample, seed):
    # The left third of the crop is padding (outside the photo): no blend may touch it or its edge,
    # or black padding would leak into fakes and become a cue that real photos do not have.
    valid = np.ones((128, 128), bool)
    valid[:, :50] = False
    sample = FaceSample(face_sample.image, face_sample.keypoints, face_sample.landmarks, valid)
    rng = np.random.default_rng(seed)
    for result in (self_blend(sample, rng, WHOLE_FACE), cross_blend(sample, sample, rng, WHOLE_FACE)):
        assert result.mask[:, :54].max() == 0.0
        assert np.array_equal(result.image[:, :54], face_sample.image[:, :54])
        assert result.mask.max() > 0.3  # the rest of the face is still blended


def flipped_donor(face_sample: FaceSample) -> FaceSample:
    """Another 'person': the mirrored face, with its mesh mirrored to match."""
    landmarks = face_sample.landmarks.copy()
    landmarks[:, 0] = face_sample.image.shape[1] - 1 - landmarks[:, 0]
    return FaceSample(np.ascontiguousarray(face_sample.image[:, ::-1]), face_sample.keypoints.copy(), landmarks)


@pytest.mark.parametrize("seed", range(6))
def test_part_paste_changes_one_part_and_nothing_outside_it(face_sample, seed):
    result = part_paste(face_sample, flipped_donor(face_sample), np.random.default_rng(seed))
    assert result.method == "part_paste" and result.mask.dtype == np.float32
    outside = result.mask == 0
    assert np.array_equal(result.image[outside], face_sample.image[outside])
    # one part, not the face: well under the whole-face blend's area, and it does change the pixels
    assert 0 < (result.mask > 0.5).sum() < 0.6 * hull_mask(result.mask.shape, face_sample.landmarks).sum()
    changed = np.abs(result.image.astype(int) - face_sample.image.astype(int)).sum(axis=2)
    assert changed[result.mask > 0.5].mean() > 2.0


def test_every_mask_is_a_blend_weight_within_0_and_1(face_sample):
    # A feathered mask's blur summed to 1.0000002 inside a lasso and near padding (cross blends' and pastes'
    # masks), an alpha over 1 that SynthesisResult promises never to be.
    valid = np.ones((128, 128), bool)
    valid[:, :20] = False
    donor = flipped_donor(face_sample)
    donor = FaceSample(donor.image, donor.keypoints, donor.landmarks, valid)
    for seed in range(12):
        for make in (cross_blend, part_paste):
            mask = make(face_sample, donor, np.random.default_rng(seed)).mask
            assert mask.dtype == np.float32 and mask.min() >= 0.0 and mask.max() <= 1.0, (make.__name__, seed)


def test_a_monochrome_photos_fakes_stay_monochrome(face_sample):
    # A self-blend's colour jitter tinted a grey photo's face (8 of 20 fakes), a part pasted from a colour
    # photo unmatched was in colour (half of them): a cue no swap of a grey photo leaves.
    grey = cv2.cvtColor(cv2.cvtColor(face_sample.image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    toned = np.clip(grey.astype(int) + np.array([2, 0, -1]), 0, 255).astype(np.uint8)  # a faint sepia-like tone
    donor = flipped_donor(face_sample)
    jittered = SynthesisConfig(cross_colour_probability=1.0)
    for image, rounding in ((grey, 0), (toned, 2)):
        target = FaceSample(image, face_sample.keypoints, face_sample.landmarks)
        tone = image.astype(int) - image.astype(int)[..., 1:2]
        for seed in range(8):
            rng = np.random.default_rng(seed)
            for fake in (
                self_blend(target, rng),
                cross_blend(target, donor, rng, jittered),
                part_paste(target, donor, rng),
            ):
                assert not np.array_equal(fake.image, image), (fake.method, seed)
                off = fake.image.astype(int) - fake.image.astype(int)[..., 1:2] - tone
                assert np.abs(off).max() <= rounding, (fake.method, seed)


def test_part_paste_is_deterministic_and_falls_back_to_a_blend_without_meshes(face_sample):
    donor = flipped_donor(face_sample)
    first = part_paste(face_sample, donor, np.random.default_rng(7))
    assert np.array_equal(first.image, part_paste(face_sample, donor, np.random.default_rng(7)).image)
    no_mesh = FaceSample(face_sample.image, face_sample.keypoints, None)
    fallback = part_paste(no_mesh, donor, np.random.default_rng(7))
    assert fallback.method == "cross_blend" and fallback.mask.max() > 0.5  # a blend that blends
    assert not np.array_equal(fallback.image, face_sample.image)


def _grain(image: np.ndarray, region: np.ndarray) -> float:
    """Fine-texture energy: the spread of what a 1-pixel blur removes, inside `region`."""
    grey = image.astype(np.float32).mean(axis=2)
    residual = grey - cv2.GaussianBlur(grey, (0, 0), 1.0)
    return float(residual[region].std())


def test_restoration_smoothing_takes_the_grain_out_of_the_blended_face_only(face_sample):
    # A smooth shaded image with sensor-like grain, under the astronaut's face geometry: the grain
    # measure then reads the grain alone.
    rows, cols = np.mgrid[0:128, 0:128].astype(np.float32)
    shaded = np.stack([100 + cols * 0.5, 120 + rows * 0.3, 90 + 0 * cols], axis=-1)
    grain = np.random.default_rng(0).normal(0, 8, shaded.shape)
    grainy = FaceSample(np.clip(shaded + grain, 0, 255).astype(np.uint8), face_sample.keypoints, face_sample.landmarks)
    smooth = SynthesisConfig(part_probability=0.0, full_blend_probability=1.0, smooth_probability=1.0)
    first = self_blend(grainy, np.random.default_rng(5), smooth)
    assert np.array_equal(first.image, self_blend(grainy, np.random.default_rng(5), smooth).image)
    for seed in range(8):
        fake = self_blend(grainy, np.random.default_rng(seed), smooth)
        inside, outside = fake.mask > 0.95, fake.mask == 0
        assert inside.sum() > 500 and outside.sum() > 500
        assert _grain(fake.image, inside) < 0.4 * _grain(grainy.image, inside)
        assert _grain(fake.image, outside) == pytest.approx(_grain(grainy.image, outside), rel=0.01)
    # Off (the default), the resampling jitter's sharpening or "unchanged" keeps a source's grain, its
    # shrinking takes it out: 4 of these 8, never all or none.
    kept = [
        _grain(fake.image, fake.mask > 0.95) > 0.6 * _grain(grainy.image, fake.mask > 0.95)
        for fake in (
            self_blend(
                grainy, np.random.default_rng(seed), SynthesisConfig(part_probability=0.0, full_blend_probability=1.0)
            )
            for seed in range(8)
        )
    ]
    assert kept.count(True) == 4, kept


def _blocking(image: np.ndarray, region: np.ndarray) -> float:
    """JPEG blocking inside `region`: the strongest 8-pixel phase of horizontal steps against their median."""
    steps = np.abs(np.diff(image.astype(np.float32).mean(axis=2), axis=1))
    inside = region[:, 1:] & region[:, :-1]
    per_phase = [steps[:, phase::8][inside[:, phase::8]].mean() for phase in range(8)]
    return float(max(per_phase) / np.median(per_phase))


def test_source_compression_puts_blocking_inside_the_blend_only(face_sample):
    # A smooth shaded image under the astronaut's face geometry: no blocking of its own, so any comes
    # from the source's compression. No misalignment, so the source's grid stays one grid.
    rows, cols = np.mgrid[0:128, 0:128].astype(np.float32)
    shaded = np.stack([60 + cols, 80 + rows * 0.8, 90 + (rows + cols) * 0.4], axis=-1).astype(np.uint8)
    smooth = FaceSample(shaded, face_sample.keypoints, face_sample.landmarks)
    geometry = {"part_probability": 0.0, "full_blend_probability": 1.0, "max_shift": 0.0, "max_scale_change": 0.0}
    compressed = SynthesisConfig(**geometry, source_jpeg_probability=1.0, source_jpeg_quality=(30, 50))
    first = self_blend(smooth, np.random.default_rng(3), compressed)
    assert np.array_equal(first.image, self_blend(smooth, np.random.default_rng(3), compressed).image)
    for seed in range(6):
        fake = self_blend(smooth, np.random.default_rng(seed), compressed)
        plain = self_blend(smooth, np.random.default_rng(seed), SynthesisConfig(**geometry))
        assert _blocking(fake.image, fake.mask > 0.95) > 2.5
        assert _blocking(plain.image, plain.mask > 0.95) < 1.2
        assert _blocking(fake.image, fake.mask == 0) < 1.05
    # Off, the quality range draws nothing: the default recipe's fakes are unchanged.
    off = SynthesisConfig(source_jpeg_quality=(10, 20))
    assert np.array_equal(
        self_blend(face_sample, np.random.default_rng(1), off).image,
        self_blend(face_sample, np.random.default_rng(1)).image,
    )


def test_seamless_compositing_leaves_no_seam_and_keeps_the_source_in_place(face_sample):
    whole_face = {"part_probability": 0.0, "full_blend_probability": 1.0}
    seamless = SynthesisConfig(**whole_face, seamless_probability=1.0)
    target = face_sample.image.astype(float)
    for seed in range(6):
        # The compositing draw comes after the source and the mask: the same seed gives both the same ones.
        alpha = self_blend(face_sample, np.random.default_rng(seed), SynthesisConfig(**whole_face))
        poisson = self_blend(face_sample, np.random.default_rng(seed), seamless)
        # Its mask is the soft mask within the Poisson core, where it mixed: the whole soft mask marked a
        # ring of real pixels it left unchanged as 15-18% source (three in four of the ring's pixels). The
        # core is the soft mask over half its peak short of the crop's outer 2 pixels.
        core = alpha.mask >= 0.5 * alpha.mask.max()
        core[:2], core[-2:], core[:, :2], core[:, -2:] = False, False, False, False
        assert np.array_equal(poisson.mask, np.where(core, alpha.mask, 0))
        outside = poisson.mask == 0
        assert np.array_equal(poisson.image[outside], face_sample.image[outside])
        marked = poisson.mask > 0.02
        unchanged = marked & np.all(poisson.image == face_sample.image, axis=-1)
        assert unchanged.sum() < 0.05 * marked.sum()
        # The seam: the blend region's outer band, where alpha blending shows the source's colour offset
        # and the Poisson composite meets the target's colours.
        region = (alpha.mask >= 0.5).astype(np.uint8)
        band = (region > 0) & ~(cv2.erode(region, np.ones((7, 7), np.uint8)) > 0)
        seam_alpha = np.abs(alpha.image[band] - target[band]).mean()
        seam_poisson = np.abs(poisson.image[band] - target[band]).mean()
        assert seam_alpha > 5 and seam_poisson < 0.4 * seam_alpha
        # Inside, the composite has the source's gradients, at the same place.
        core = cv2.erode((alpha.mask > 0.99).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        grad_alpha = np.diff(alpha.image.astype(float), axis=1)[core[:, 1:]]
        grad_poisson = np.diff(poisson.image.astype(float), axis=1)[core[:, 1:]]
        assert np.corrcoef(grad_alpha.ravel(), grad_poisson.ravel())[0, 1] > 0.9
    # Off (the default), no draw is spent: the default recipe's fakes are unchanged.
    assert np.array_equal(
        self_blend(face_sample, np.random.default_rng(1), SynthesisConfig(seamless_probability=0.0)).image,
        self_blend(face_sample, np.random.default_rng(1)).image,
    )


def test_a_seamless_blends_mask_leaves_out_the_crop_edge_it_left_unchanged(face_sample):
    # A face filling its crop (crop_scale near 1): the soft mask reaches the crop's edge, which the Poisson
    # core leaves out, and the mask marked those unchanged pixels as blended (every one of 20 fakes).
    centre = np.array([64.0, 64.0])
    filling = FaceSample(face_sample.image, face_sample.keypoints, (face_sample.landmarks - centre) * 1.8 + centre)
    config = SynthesisConfig(part_probability=0.0, full_blend_probability=1.0, seamless_probability=1.0)
    edge = np.ones((128, 128), bool)
    edge[2:-2, 2:-2] = False
    for seed in range(4):
        fake = self_blend(filling, np.random.default_rng(seed), config)
        assert np.array_equal(fake.image[edge], face_sample.image[edge])
        assert fake.mask[edge].max() == 0.0 and fake.mask.max() == 1.0, seed


def test_a_mesh_warped_donor_takes_the_target_face_shape(face_sample):
    # The donor is the target's own face bent out of shape (stretched and waved vertically), its landmarks
    # moved with it: a similarity cannot undo that, a warp over the face mesh can.
    height, width = face_sample.image.shape[:2]
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    centre, stretch, wave = height / 2, 1.12, 4.0
    bent_rows = (centre + (rows - centre) * stretch + wave * np.sin(cols / 15)).astype(np.float32)
    bent = cv2.remap(face_sample.image, cols, bent_rows, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    def unbend(points: np.ndarray) -> np.ndarray:
        x, y = points[:, 0], points[:, 1]
        return np.stack([x, centre + (y - wave * np.sin(x / 15) - centre) / stretch], axis=1).astype(np.float32)

    donor = FaceSample(bent, unbend(face_sample.keypoints), unbend(face_sample.landmarks))
    still = {"part_probability": 0.0, "full_blend_probability": 1.0, "max_shift": 0.0, "max_scale_change": 0.0}
    hull = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(face_sample.landmarks.astype(np.int32)), 1)
    target = face_sample.image.astype(float)

    def error(config: SynthesisConfig, seed: int) -> float:
        fake = cross_blend(face_sample, donor, np.random.default_rng(seed), config)
        core = cv2.erode(hull * (fake.mask > 0.99), np.ones((9, 9), np.uint8)) > 0
        return float(np.abs(fake.image[core] - target[core]).mean())

    for seed in range(4):
        assert error(SynthesisConfig(**still, mesh_warp_probability=1.0), seed) < 0.4 * error(
            SynthesisConfig(**still), seed
        )
    # Off (the default), no draw is spent: the default recipe's fakes are unchanged.
    assert np.array_equal(
        cross_blend(face_sample, donor, np.random.default_rng(2), SynthesisConfig(mesh_warp_probability=0.0)).image,
        cross_blend(face_sample, donor, np.random.default_rng(2)).image,
    )


def test_cross_colour_jitter_leaves_a_colour_seam_the_colour_transfer_removed(face_sample):
    # The donor is the target itself: the colour transfer leaves its colours as they are, so any offset
    # inside the blend comes from the jitter.
    still = {"part_probability": 0.0, "full_blend_probability": 1.0, "max_shift": 0.0, "max_scale_change": 0.0}
    target = face_sample.image.astype(float)

    def offsets(config: SynthesisConfig) -> list[float]:
        found = []
        for seed in range(8):
            fake = cross_blend(face_sample, face_sample, np.random.default_rng(seed), config)
            core = cv2.erode((fake.mask > 0.99).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
            found.append(float(np.abs((fake.image[core] - target[core]).mean(axis=0)).max()))
        return found

    assert max(offsets(SynthesisConfig(**still))) < 1.0
    jittered = offsets(SynthesisConfig(**still, cross_colour_probability=1.0))
    assert min(jittered) > 2.0 and np.mean(jittered) > 6.0
    # Off (the default), no draw is spent: the default recipe's fakes are unchanged.
    assert np.array_equal(
        cross_blend(
            face_sample, face_sample, np.random.default_rng(2), SynthesisConfig(cross_colour_probability=0.0)
        ).image,
        cross_blend(face_sample, face_sample, np.random.default_rng(2)).image,
    )


def test_a_weak_blend_still_takes_the_targets_colour(face_sample):
    # The colour transfer's statistics came from where the mask exceeded 0.5: a mask scaled by a blend
    # ratio of 0.5 or less (or lowered near padding) had none, and the donor kept its own colour.
    from deepshield.synthesis.blend import _match_colour, _soft_mask

    target = face_sample.image
    donor = np.clip(target.astype(int) * [1.0, 0.7, 0.6] + 30, 0, 255).astype(np.uint8)
    mask = _soft_mask(
        face_sample, np.random.default_rng(0), SynthesisConfig(part_probability=0.0, full_blend_probability=1.0)
    )
    face = mask > 0.5
    for ratio in (1.0, 0.45):
        matched = _match_colour(donor, target, mask * ratio)
        assert (
            np.abs(matched.astype(float) - target)[face].mean()
            < 0.4 * np.abs(donor.astype(float) - target)[face].mean()
        )


def test_a_contact_sheet_whose_write_fails_keeps_the_earlier_one(capsys, tmp_path, monkeypatch):
    # A full disk while the sheet (and every figure of a report) was drawn left it cut short.
    import errno

    from matplotlib.figure import Figure

    from deepshield.cli.main import EXIT_USAGE, main
    from tests.face_data import write_real_faces

    real = write_real_faces(tmp_path / "real", 2)
    out = tmp_path / "out"
    assert main(["synth", str(real), str(out), "-n", "1", "--size", "96"]) == 0
    sheet = (out / "contact_sheet.png").read_bytes()

    def full_disk(self, target, **kwargs):
        with open(target, "wb") if isinstance(target, (str, os.PathLike)) else contextlib.nullcontext(target) as f:
            f.write(b"\x89PNG cut short")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    capsys.readouterr()
    assert main(["synth", str(real), str(out), "-n", "1", "--size", "96", "--force"]) == EXIT_USAGE
    assert capsys.readouterr().err == f"deepshield: error: {out / 'contact_sheet.png'}: No space left on device\n"
    assert (out / "contact_sheet.png").read_bytes() == sheet
    assert not list(out.glob("*.part"))
