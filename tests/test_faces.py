"""Face detection on real faces and composites built from them, and the crop policy."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

import deepshield.faces.detector as detector_module
from deepshield.faces.crop import CropPolicy, FaceCrop, crop_face, crop_matrix, crop_validity
from deepshield.faces.detector import Box, Face, FaceDetector, detection_input, reading_order, tiles

# Eileen Collins' face in skimage's 512 x 512 astronaut photo, as the short-range model boxes it
# at full resolution (x 177.6-272.9, y 82.9-178.2); checked by eye against the photo.
FACE = Box(178, 83, 273, 178)
FACE_SIDE = 95


def shifted(box: Box, dx: float = 0.0, dy: float = 0.0, scale: float = 1.0) -> Box:
    return Box(box.x0 * scale + dx, box.y0 * scale + dy, box.x1 * scale + dx, box.y1 * scale + dy)


def around(center: tuple[float, float], side: float) -> Box:
    return Box(center[0] - side / 2, center[1] - side / 2, center[0] + side / 2, center[1] + side / 2)


def assert_found(faces: list[Face], expected: list[Box], min_iou: float) -> None:
    assert len(faces) == len(expected), [f.box.as_list() for f in faces]
    for face, box in zip(faces, expected):
        assert face.box.iou(box) >= min_iou, (face.box.as_list(), box.as_list(), face.box.iou(box))
        # Keypoints are image coordinates of this face: the eyes lie inside its box.
        for x, y in face.keypoints[:2]:
            assert box.x0 - 5 <= x <= box.x1 + 5 and box.y0 - 5 <= y <= box.y1 + 5


@pytest.fixture(scope="module")
def faces(detector) -> FaceDetector:
    return detector.faces


# --- detection -------------------------------------------------------------------------------


def test_astronaut_face_found_with_landmarks_in_place(faces, astronaut):
    found = faces.detect(astronaut)
    assert_found(found, [FACE], 0.85)
    face = found[0]
    assert face.score > 0.8
    assert face.keypoints.shape == (6, 2)
    right_eye, left_eye, nose, mouth = face.keypoints[:4]
    assert right_eye[0] < left_eye[0]  # the subject's right eye is on the viewer's left
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]
    assert 0.3 * FACE_SIDE < left_eye[0] - right_eye[0] < 0.6 * FACE_SIDE


def test_mirrored_face_box_is_mirrored(faces, astronaut):
    found = faces.detect(np.ascontiguousarray(astronaut[:, ::-1]))
    assert_found(found, [Box(512 - FACE.x1, FACE.y0, 512 - FACE.x0, FACE.y1)], 0.8)
    right_eye, left_eye = found[0].keypoints[:2]
    assert right_eye[0] < left_eye[0]


@pytest.mark.parametrize("angle", [15, -15])
def test_rotated_face_found_at_rotated_place(faces, astronaut, angle):
    matrix = cv2.getRotationMatrix2D((256, 256), angle, 1.0)
    rotated = cv2.warpAffine(astronaut, matrix, (512, 512))
    center = matrix @ np.array([*FACE.center, 1.0])
    found = faces.detect(rotated)
    assert_found(found, [around(center, FACE_SIDE)], 0.7)
    right_eye, left_eye = found[0].keypoints[:2]
    tilt = math.degrees(math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0]))
    # A counter-clockwise turn of the photo raises the left eye (image y points down).
    assert tilt == pytest.approx(-angle, abs=10)


@pytest.mark.parametrize("count", [2, 3])
def test_faces_side_by_side_each_found_in_reading_order(faces, astronaut, count):
    canvas = np.concatenate([astronaut] * count, axis=1)
    found = faces.detect(canvas)
    # The full-range model (it finds these) boxes a little higher than the short-range one.
    assert_found(found, [shifted(FACE, dx=512 * k) for k in range(count)], 0.5)
    assert [f.box.x0 for f in found] == sorted(f.box.x0 for f in found)


def test_faces_at_staggered_heights_keep_left_to_right_order(faces, astronaut):
    # Three faces in one row, the middle one highest and the right one lowest: a row grouping that
    # quantised y by face height put the right-hand face first.
    canvas = np.zeros((600, 1500, 3), np.uint8)
    offsets = [(0, 40), (500, 0), (1000, 80)]
    for x, y in offsets:
        canvas[y : y + 512, x : x + 500] = astronaut[:, 6:506]
    found = faces.detect(canvas)
    assert_found(found, [shifted(FACE, dx=x - 6, dy=y) for x, y in offsets], 0.5)


def test_two_rows_of_faces_read_row_by_row(faces, astronaut):
    grid = np.concatenate([np.concatenate([astronaut, astronaut], axis=1)] * 2, axis=0)
    found = faces.detect(grid)
    expected = [shifted(FACE, dx=dx, dy=dy) for dy in (0, 512) for dx in (0, 512)]
    assert_found(found, expected, 0.5)


@pytest.mark.parametrize(
    ("canvas_side", "photo_side", "top_left"),
    [(1024, 384, (600, 100)), (1024, 384, (0, 0)), (640, 256, (384, 300))],  # faces of 71 and 48 px
)
def test_small_face_in_big_canvas(faces, astronaut, canvas_side, photo_side, top_left):
    # Reliable down to about 7% of the canvas side (the models see 256 / 384 px versions of it).
    canvas = np.zeros((canvas_side, canvas_side, 3), np.uint8)
    y, x = top_left
    canvas[y : y + photo_side, x : x + photo_side] = cv2.resize(
        astronaut, (photo_side, photo_side), interpolation=cv2.INTER_AREA
    )
    found = faces.detect(canvas)
    assert_found(found, [shifted(FACE, dx=x, dy=y, scale=photo_side / 512)], 0.5)


def test_face_filling_close_crop(faces, astronaut):
    close = cv2.resize(astronaut[40:220, 135:315], (720, 720), interpolation=cv2.INTER_CUBIC)
    found = faces.detect(close)
    assert_found(found, [shifted(FACE, dx=-135 * 4, dy=-40 * 4, scale=4.0)], 0.75)


@pytest.mark.parametrize("fill", [0, 255])
def test_blank_image_has_no_face(faces, fill):
    assert faces.detect(np.full((480, 640, 3), fill, np.uint8)) == []


@pytest.mark.parametrize("seed", range(6))
def test_noise_has_no_face(faces, seed):
    # Uniform noise fooled the short-range model in 8 of 40 images before the area-averaged
    # detection input (seed 0 and 1 among them).
    rng = np.random.default_rng(seed)
    shape = [(480, 640), (512, 512), (720, 1280)][seed % 3]
    assert faces.detect(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)) == []


def test_min_face_size_filters_small_faces(detector, astronaut):
    canvas = np.zeros((512, 896, 3), np.uint8)
    canvas[:, :512] = astronaut  # a 95 px face
    canvas[64:448, 512:896] = cv2.resize(astronaut, (384, 384), interpolation=cv2.INTER_AREA)  # a 71 px face
    assert len(detector.faces.detect(canvas)) == 2
    found = FaceDetector(min_face_size=85).detect(canvas)
    assert len(found) == 1 and found[0].box.iou(FACE) > 0.5
    assert FaceDetector(min_face_size=110).detect(canvas) == []


def test_detect_rejects_non_rgb_arrays(faces):
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        faces.detect(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        faces.detect(np.zeros((64, 64, 3), np.float32))


def test_detection_input_is_area_shrunk_keeping_aspect():
    image = np.zeros((1000, 2000, 3), np.uint8)
    image[:, ::2] = 255  # 1-pixel stripes: an area average gives flat grey, point sampling does not
    small = detection_input(image, 256)
    assert small.shape == (128, 256, 3)
    assert abs(float(small.mean()) - 127.5) < 1 and small.std() < 5
    assert cv2.resize(image, (256, 128), interpolation=cv2.INTER_LINEAR).std() > 50  # what sampling gives
    assert detection_input(np.zeros((100, 50, 3), np.uint8), 256).shape == (100, 50, 3)


def test_reading_order_groups_rows_by_overlap():
    def face(x, y, side=100):
        return Face(Box(x, y, x + side, y + side), 0.9, np.zeros((6, 2), np.float32))

    # Centres at y 151 and 149 straddle 1.5 face heights: one row all the same (rounding y / height
    # put the right-hand face first).
    row = [face(300, 99), face(0, 101), face(150, 120)]
    below = [face(100, 400), face(0, 420)]
    ordered = reading_order(below + row)
    assert [(f.box.x0, f.box.y0) for f in ordered] == [(0, 101), (150, 120), (300, 99), (0, 420), (100, 400)]
    assert reading_order([]) == []


# --- crop policy -----------------------------------------------------------------------------


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_crop_is_square_fixed_size_with_the_policy_margin():
    image = np.full((400, 600, 3), 255, np.uint8)
    box = Box(250, 150, 350, 230)  # 100 x 80: the longer side sets the crop
    image[150:230, 250:350] = (255, 0, 0)
    policy = CropPolicy(size=120, scale=2.0)
    crop = crop_face(image, box, None, policy)
    assert crop.pixels.shape == (120, 120, 3) and crop.pixels.dtype == np.uint8
    # The crop spans 2 x 100 px around the box centre at 0.6 output px per image px.
    corners = apply(crop.matrix, np.array([[box.x0, box.y0], [box.x1, box.y1]], np.float64))
    np.testing.assert_allclose(corners, [[30, 36], [90, 84]], atol=1e-6)
    red = (crop.pixels[:, :, 1] < 128).nonzero()
    assert red[1].min() in (29, 30, 31) and red[1].max() in (88, 89, 90)
    assert red[0].min() in (35, 36, 37) and red[0].max() in (82, 83, 84)


def test_crop_outside_the_image_is_black():
    image = np.full((200, 200, 3), 200, np.uint8)
    crop = crop_face(image, Box(0, 0, 40, 40), None, CropPolicy(size=64, scale=2.0))
    # The crop covers x, y in [-20, 60): its top-left quarter lies outside the image.
    assert crop.pixels[:14, :14].max() == 0
    assert crop.pixels[20:, 20:].min() == 200


@pytest.mark.parametrize("angle", [20, -25])
def test_align_levels_the_eyes(faces, astronaut, angle):
    tilted = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((256, 256), angle, 1.0), (512, 512))
    face = faces.detect(tilted)[0]
    policy = CropPolicy(size=256, scale=2.0, align=True)
    aligned = crop_face(tilted, face.box, face.keypoints, policy)
    plain = crop_face(tilted, face.box, face.keypoints, policy.model_copy(update={"align": False}))

    def tilt(points):
        (rx, ry), (lx, ly) = points[:2]
        return math.degrees(math.atan2(ly - ry, lx - rx))

    # The detector's eye keypoints mapped into the aligned crop are level; in the plain crop they
    # keep the photo's tilt.
    assert abs(tilt(apply(aligned.matrix, face.keypoints))) < 1e-3
    assert abs(tilt(apply(plain.matrix, face.keypoints))) > 8
    # The pixels turned the right way too: detecting again on the crops, the aligned face is
    # markedly more level than the plain one (keypoints on tilted faces are only good to ~5 deg).
    tilt_aligned = tilt(faces.detect(aligned.pixels)[0].keypoints)
    tilt_plain = tilt(faces.detect(plain.pixels)[0].keypoints)
    assert abs(tilt_aligned) < 10 and abs(tilt_aligned) < abs(tilt_plain) - 8, (tilt_aligned, tilt_plain)
    # Alignment rotates about the box centre: the centre stays in the middle of the crop.
    np.testing.assert_allclose(apply(aligned.matrix, np.array([face.box.center])), [[128, 128]], atol=1e-6)


@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("side", [60, 900])  # 900 px: the pre-shrunk path
def test_to_image_inverts_the_crop_matrix(align, side):
    image = np.zeros((1200, 1200, 3), np.uint8)
    box = Box(100, 150, 100 + side, 150 + side * 0.9)
    keypoints = np.array(
        [[100 + side * 0.3, 150 + side * 0.40], [100 + side * 0.7, 150 + side * 0.35]] + [[0, 0]] * 4, np.float32
    )
    crop = crop_face(image, box, keypoints, CropPolicy(size=96, align=align))
    points = np.array([[0, 0], [95, 0], [48, 48], [10, 80]], np.float64)
    np.testing.assert_allclose(apply(crop.matrix, crop.to_image(points)), points, atol=1e-6)
    np.testing.assert_allclose(crop.to_image(apply(crop.matrix, np.array([box.center]))), [box.center], atol=1e-6)
    assert crop.matrix is not None and isinstance(crop, FaceCrop)


def test_large_face_is_shrunk_without_aliasing():
    # A 1800 px face cropped to 224 px: the crop keeps 0.083 output px per image px. Gratings just
    # above the crop's Nyquist frequency must average out instead of folding back as moire.
    size, box = 3000, Box(600, 600, 2400, 2400)
    policy = CropPolicy(size=224, scale=1.5)
    zoom = 224 / (1.5 * 1800)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)

    def grating(cycles_per_crop_pixel: float) -> np.ndarray:
        wave = 127.5 + 127.5 * np.cos(2 * np.pi * cycles_per_crop_pixel * zoom * (xx + 0.3 * yy))
        return np.repeat(wave[:, :, None].astype(np.uint8), 3, axis=2)

    naive = lambda image: cv2.warpAffine(image, crop_matrix(box, None, policy), (224, 224), flags=cv2.INTER_LINEAR)  # noqa: E731
    for frequency in (0.75, 1.0, 1.5):
        fine = grating(frequency)
        assert naive(fine).std() > 40  # what plain bilinear sampling makes of it: strong moire
        # (Shrinking only to a 2x remainder, as crop_face once did, left 50-60 here.)
        assert crop_face(fine, box, None, policy).pixels.std() < 16, frequency
    coarse = grating(0.1)  # well below Nyquist: detail the crop must keep
    assert crop_face(coarse, box, None, policy).pixels.std() > 70


def test_crop_policy_validates_its_fields():
    with pytest.raises(ValueError, match=r"size\n  Input should be greater than or equal to 16"):
        CropPolicy(size=8)
    with pytest.raises(ValueError, match=r"scale\n  Input should be greater than or equal to 1"):
        CropPolicy(scale=0.5)


# --- tiles: faces too small for the whole-image pass ------------------------------------------


@pytest.mark.parametrize(
    ("shape", "count"),
    [
        ((1080, 1920), 2),
        ((3024, 4032), 20),
        ((4032, 3024), 20),
        ((2160, 3840), 15),
        ((1440, 1440), 4),
        ((720, 1280), 2),
        ((1000, 1000), 4),
        ((480, 640), 0),
        # A strip narrower than a tile's smallest face gets none: 1 x 39,000,000 (a 76 KB PNG) got 45,721.
        ((1, 39_000_000), 0),
        ((39_000_000, 1), 0),
        ((79, 5000), 0),
    ],
)
def test_tiles_cover_the_image_so_any_small_face_lies_whole_in_one(shape, count):
    height, width = shape
    windows = tiles(height, width)
    assert len(windows) == count
    if not windows:
        return
    assert all(0 <= t.x0 < t.x1 <= width and 0 <= t.y0 < t.y1 <= height for t in windows)
    side = min(t.largest_face for t in windows)
    rng = np.random.default_rng(0)
    for x, y in zip(rng.integers(0, width - side, 500), rng.integers(0, height - side, 500)):
        assert any(t.x0 <= x and x + side <= t.x1 and t.y0 <= y and y + side <= t.y1 for t in windows), (x, y)


def _astronaut_at(canvas: np.ndarray, astronaut: np.ndarray, photo_side: int, x: int, y: int) -> Box:
    canvas[y : y + photo_side, x : x + photo_side] = cv2.resize(
        astronaut, (photo_side, photo_side), interpolation=cv2.INTER_AREA
    )
    return shifted(FACE, dx=x, dy=y, scale=photo_side / 512)


def test_faces_too_small_for_the_whole_image_are_found_in_tiles(faces, astronaut, monkeypatch):
    # Faces of 4.5% of a phone photo's width (181 px in 4032): the whole-image pass misses them. One
    # sits across the middle, where two tiles meet, one near a corner; each is found once, in place.
    canvas = np.full((3024, 4032, 3), 90, np.uint8)
    expected = [_astronaut_at(canvas, astronaut, 976, x, y) for x, y in ((1500, 300), (150, 1900))]
    found = faces.detect(canvas)
    assert_found(found, expected, 0.5)
    monkeypatch.setattr(detector_module, "TILE_ABOVE", 10**9)
    assert faces.detect(canvas) == []


def test_a_group_photo_s_small_faces_are_all_found(faces, astronaut, monkeypatch):
    # Six faces of 120 px (3% of a phone photo's width) across a 4032x3024 photo: tiles of at most
    # TILE_FROM px see each as large as a 1280 px image would (tiles of 0.6 times the longer side, as
    # before December 2026, found none: bench/bench_group_photos.py). The whole image alone finds none.
    canvas = np.full((3024, 4032, 3), 90, np.uint8)
    spots = ((150, 150), (1500, 250), (3100, 200), (300, 2200), (1800, 1400), (3200, 2250))
    expected = [_astronaut_at(canvas, astronaut, 640, x, y) for x, y in spots]
    found = faces.detect(canvas)
    assert len(found) == len(expected)
    assert all(max(face.box.iou(box) for face in found) >= 0.5 for box in expected)
    monkeypatch.setattr(detector_module, "TILE_ABOVE", 10**9)
    assert faces.detect(canvas) == []


def test_faces_the_whole_image_finds_in_a_1080p_frame_keep_their_boxes(faces, astronaut, monkeypatch):
    # A large face and a small one in a 1080p frame: the large one's detection is the same with and
    # without tiles (no duplicate from a tile; a tile sees it only 1.7 times as finely, under
    # SHARPEN_FROM), the small one (100 px) only comes from a tile.
    canvas = np.full((1080, 1920, 3), 90, np.uint8)
    large = _astronaut_at(canvas, astronaut, 1000, 100, 40)
    small = _astronaut_at(canvas, astronaut, 540, 1300, 480)
    found = faces.detect(canvas)
    assert_found(found, [large, small], 0.5)
    monkeypatch.setattr(detector_module, "TILE_ABOVE", 10**9)
    whole_only = faces.detect(canvas)
    assert len(whole_only) == 1 and whole_only[0].box == found[0].box


def test_a_1024_px_group_photo_s_faces_of_a_tenth_of_it_are_all_found(faces, astronaut, monkeypatch):
    # The astronaut beside its mirror image, twice, as a 1024 px JPEG: four faces of 95 px, of which the
    # whole image finds one (0.72 sure); tiles (TILE_ABOVE) find all four.
    grid = np.tile(np.hstack([astronaut, astronaut[:, ::-1]]), (2, 1, 1))
    _, encoded = cv2.imencode(".jpg", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 75])
    photo = cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    mirrored = Box(512 - FACE.x1, FACE.y0, 512 - FACE.x0, FACE.y1)
    expected = [shifted(FACE, 0, 0), shifted(mirrored, 512, 0), shifted(FACE, 0, 512), shifted(mirrored, 512, 512)]
    assert_found(faces.detect(photo), expected, 0.5)
    monkeypatch.setattr(detector_module, "TILE_ABOVE", 10**9)
    assert len(faces.detect(photo)) == 1


def test_a_phone_photo_s_faces_take_the_finer_boxes_of_their_tiles(faces, astronaut, monkeypatch):
    # The same 260 px face six times across a 4032x3024 photo. Placed by the whole image (shrunk 10.5
    # times) the boxes, each taken relative to its copy, lie up to 71 px apart, some 220 px wide and some
    # 260; placed by the tiles that hold them (shrunk 3.3 times), within 9 px.
    patch = cv2.resize(astronaut[30:210, 130:310], (440, 440), interpolation=cv2.INTER_CUBIC)
    spots = ((300, 300), (1500, 420), (2700, 250), (700, 1900), (2100, 2000), (3300, 1700))
    canvas = np.full((3024, 4032, 3), 90, np.uint8)
    for x, y in spots:
        canvas[y : y + 440, x : x + 440] = patch

    def spread_of_the_boxes() -> float:
        found = faces.detect(canvas)
        assert len(found) == len(spots)
        nearest = [min(found, key=lambda face: abs(face.box.x0 - x) + abs(face.box.y0 - y)) for x, y in spots]
        boxes = np.array([np.array(face.box.as_list()) - (x, y, x, y) for face, (x, y) in zip(nearest, spots)])
        return float((boxes.max(axis=0) - boxes.min(axis=0)).max())

    assert spread_of_the_boxes() < 12
    monkeypatch.setattr(detector_module, "sharpened", lambda face, tile_faces: face)
    assert spread_of_the_boxes() > 40


def test_tiles_add_no_face_too_small_to_judge(faces, astronaut, monkeypatch):
    # A 70 px face in a 1080p frame is within a tile's reach but under TILE_MIN_FACE (80): not added.
    canvas = np.full((1080, 1920, 3), 90, np.uint8)
    face = _astronaut_at(canvas, astronaut, 377, 1300, 500)
    assert faces.detect(canvas) == []
    monkeypatch.setattr(detector_module, "TILE_MIN_FACE", 60)
    assert_found(faces.detect(canvas), [face], 0.5)


# --- faces turned a quarter or upside down ------------------------------------------------------


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_unturned_points_find_the_same_pixel(turns):
    image = np.zeros((30, 50), np.uint8)
    image[7, 41] = 255  # one marked pixel, at x 41, y 7
    turned = np.rot90(image, turns)
    y, x = np.argwhere(turned == 255)[0]
    back = detector_module.unturned_points(np.array([[x + 0.5, y + 0.5]]), turns, 30, 50)
    assert back[0] == pytest.approx([41.5, 7.5])


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_sideways_photo_face_is_found_and_cut_upright(faces, astronaut, turns):
    """A photo turned by a quarter (or upside down) without its orientation tag: the face is found
    where it is, carries the turns that make it upright, and its crop is the upright photo's crop."""
    sideways = np.ascontiguousarray(np.rot90(astronaut, -turns))
    found = faces.detect(sideways, turns=True)
    assert len(found) == 1 and found[0].turns == turns
    upright = faces.detect(astronaut)[0]
    expected = unturned_face_box(upright.box, turns, sideways.shape)
    assert found[0].box.iou(expected) > 0.98
    policy = CropPolicy(size=96, scale=1.5)
    crop = crop_face(sideways, found[0].box, found[0].keypoints, policy, found[0].turns).pixels
    reference = crop_face(astronaut, upright.box, upright.keypoints, policy).pixels
    difference = np.abs(crop.astype(int) - reference.astype(int))
    # The same pixels, up to the warp's 1/32-pixel interpolation steps (without the half-pixel term of
    # crop_matrix: 6.9-9.5 mean, 120-156 at most).
    assert difference.mean() < 0.05 and difference.max() <= 4


def unturned_face_box(box: Box, turns: int, shape: tuple[int, ...]) -> Box:
    """Where `box` of the upright photo lies in np.rot90(photo, -turns) (shape: that image's)."""
    corners = detector_module.unturned_points(np.array([[box.x0, box.y0], [box.x1, box.y1]]), turns, *shape[:2])
    (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
    return Box(x0, y0, x1, y1)


def test_upright_photo_is_not_turned(faces, astronaut):
    plain, searched = faces.detect(astronaut), faces.detect(astronaut, turns=True)
    assert [f.turns for f in searched] == [0]
    assert searched[0].box == plain[0].box


def test_a_photo_is_read_in_one_turn_and_upright_unless_a_turn_is_clearly_surer():
    keypoints = np.zeros((6, 2), np.float32)

    def faces(*scores: float) -> list[Face]:
        return [Face(Box(10 * i, 0, 10 * i + 8, 8), score, keypoints) for i, score in enumerate(scores)]

    assert detector_module.chosen_turn([[faces(0.75, 0.61), faces(), faces(0.92), faces(0.6)]]) == 2
    assert detector_module.chosen_turn([[faces(0.80), faces(0.84), faces(), faces()]]) == 0  # within the margin
    assert detector_module.chosen_turn([[faces(), faces(0.55), faces(0.58), faces()]]) == 0  # too unsure: no face
    assert detector_module.chosen_turn([[faces(), faces(), faces(), faces(0.66)]]) == 3  # found only turned
    assert detector_module.chosen_turn([[faces(), faces(), faces(), faces()]]) == 0
    # A read whose face leans (its eye line 60 degrees off level: BlazeFace places keypoints as on an
    # upright face) counts 0.2 less: the level read at 0.80 beats it at 0.90.
    leaning = np.zeros((6, 2), np.float32)
    leaning[1] = [10, 10 * math.sqrt(3)]
    assert detector_module.read_strength([Face(Box(0, 0, 8, 8), 0.90, leaning)]) == pytest.approx(0.70)
    assert detector_module.chosen_turn([[faces(0.6), [Face(Box(0, 0, 8, 8), 0.90, leaning)], faces(0.80), []]]) == 2
    # A video: the turn strongest on average over its decision frames, one frame's slip outvoted.
    frames = [
        [faces(0.6), faces(), faces(0.9), faces()],
        [faces(0.6), faces(0.95), faces(0.85), faces()],
        [faces(0.62), faces(), faces(0.88), faces()],
    ]
    assert detector_module.chosen_turn(frames) == 2


def test_the_turns_are_searched_only_when_a_photo_may_be_turned():
    level = np.array([[40, 50], [60, 50], [50, 60], [50, 70], [30, 55], [70, 55]], np.float32)
    tilted = level.copy()
    tilted[1] = [55, 70]  # the left eye 20 px below the right one, 15 px across: 53 degrees
    box = Box(20, 30, 80, 90)
    assert not detector_module.may_be_turned([Face(box, 0.93, level)])
    assert detector_module.may_be_turned([])
    assert detector_module.may_be_turned([Face(box, 0.80, level)])  # unsure, as sideways faces are
    assert detector_module.may_be_turned([Face(box, 0.93, level), Face(box, 0.95, tilted)])


def test_a_box_around_a_surer_face_is_the_same_face_but_neighbours_are_not():
    from deepshield.faces.detector import non_max_suppression

    def face(x0: float, y0: float, x1: float, y1: float, score: float) -> Face:
        return Face(Box(x0, y0, x1, y1), score, np.zeros((6, 2), np.float32))

    # Frame 92 of a DFDC video: the face at 0.889 and a box twice its size around the chin at 0.601 (IoU 0.2,
    # 72% of the face inside it): one face, the surer box kept.
    own, around = face(372, 333, 459, 421, 0.889), face(319, 358, 515, 554, 0.601)
    assert around.box.iou(own.box) < 0.3 and own.box.nested_share(around.box) == pytest.approx(0.716, abs=0.001)
    assert non_max_suppression([around, own], iou_threshold=0.3) == [own]
    # Two people side by side whose boxes touch (a third of the smaller one shared) stay two faces.
    left, right = face(0, 0, 100, 100, 0.9), face(67, 10, 147, 90, 0.7)
    assert non_max_suppression([left, right], iou_threshold=0.3) == [left, right]


def test_a_crops_padding_is_the_share_past_the_pictures_edge(astronaut):
    # The synthetic-face score reads black padding as a real photo's: how much of a crop is padding decides
    # the tightly-framed caution.
    policy = CropPolicy(size=64, scale=1.3)
    middle = crop_face(astronaut, Box(200, 200, 300, 300), np.zeros((6, 2)), policy)
    corner = crop_face(astronaut, Box(0, 0, 100, 100), np.zeros((6, 2)), policy)  # a quarter-ish past two edges
    assert middle.padding == 0.0
    inside = (1.3 * 100 / 2 + 50) / 130  # the part of each side inside the picture
    assert corner.padding == pytest.approx(1 - inside**2, abs=0.02)
    assert corner.padding == pytest.approx(1 - (corner.pixels.any(axis=2)).mean(), abs=0.05)
    # A crop turned by the eyes' angle: the mapped picture's bounding box read 0% for a crop 27% padding.
    tilted = np.array([[-10, 330], [60, 345]] + [[35, 360]] * 4, float)
    aligned = crop_face(astronaut, Box(-20, 300, 90, 420), tilted, CropPolicy(size=64, scale=1.3, align=True))
    exact = 1 - crop_validity(astronaut.shape, aligned.matrix, 64).mean()
    assert exact > 0.2 and aligned.padding == pytest.approx(exact, abs=0.02)


def test_the_documented_face_order_is_the_detectors():
    """FaceResult.index's description (the API's schema) says the order reading_order gives."""
    from deepshield.inference.results import FaceResult

    described = FaceResult.model_fields["index"].description or ""
    assert "reading order: rows top to bottom, left to right within a row" in described
    assert "less than half a face height below the centre of the row's first face" in described
    assert "less than half a face height" in (reading_order.__doc__ or "")


def test_readme_states_the_detectors_thresholds_and_face_order():
    import inspect
    from pathlib import Path

    from deepshield.faces import detector

    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    confidence = inspect.signature(FaceDetector.__init__).parameters["min_confidence"].default
    assert (
        f"reported from a detector confidence of {confidence} (one that only a tile finds: "
        f"{detector.TILE_MIN_CONFIDENCE}, and {detector.TILE_MIN_FACE} px wide and high)" in readme
    )
    assert f"`--min-face-size` (default {detector.DEFAULT_MIN_FACE_SIZE} px)" in readme
    assert "faces come in reading order, `index` from 0: rows top to bottom, left to right within a row" in readme


def test_a_video_whose_faces_read_upright_is_not_turned_for_its_faceless_frames(faces, astronaut):
    """A person upright and level in 4 of 10 frames, a cup (turned, a 0.65 "face") in the rest: most frames
    may be turned (no face), but those with a face read surely upright, so the file is read as it is."""
    from skimage import data

    cup = np.zeros((512, 512, 3), np.uint8)
    cup[56:456] = cv2.resize(data.coffee(), (512, 400), interpolation=cv2.INTER_AREA)
    assert faces.detect(cup) == [] and faces._detect_turned(cup, 1)  # a "face" when read turned
    found = faces.detect_frames([astronaut] * 4 + [cup] * 6, turns=True)
    assert [[face.turns for face in frame] for frame in found] == [[0]] * 4 + [[]] * 6


@pytest.mark.parametrize("picture", ["coffee", "clock"])
def test_a_faceless_picture_read_turned_gets_no_face(faces, picture):
    """Read a quarter turned, skimage's coffee cup is a 0.60 "face" and its clock 0.82 (a real face's turned
    read may score 0.63): the face mesh finds none there, so the picture is not read turned, and has no face."""
    from skimage import data

    pixels = getattr(data, picture)()
    image = np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels  # the clock is grey
    turned = faces._detect_turned(image, 1)
    assert max(face.score for face in turned) >= detector_module.TURN_MIN_CONFIDENCE
    assert faces.detect(image) == [] and faces.detect(image, turns=True) == []


def test_confirming_a_turn_writes_nothing_on_stderr(tmp_path, astronaut):
    """The face mesh warned once a process, the first time it placed a face ("Using NORM_RECT without
    IMAGE_DIMENSIONS ..."), a line among a scan's table: a fresh process, as a scan is, to see its first time."""
    import subprocess
    import sys

    photo = tmp_path / "turned.png"
    cv2.imwrite(str(photo), cv2.cvtColor(np.ascontiguousarray(np.rot90(astronaut)), cv2.COLOR_RGB2BGR))
    code = (
        "import sys, cv2; from deepshield.faces.detector import FaceDetector; "
        "image = cv2.cvtColor(cv2.imread(sys.argv[1]), cv2.COLOR_BGR2RGB); "
        "print([face.turns for face in FaceDetector().detect(image, turns=True)])"
    )
    run = subprocess.run([sys.executable, "-c", code, str(photo)], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[3]" and run.stderr == ""


def test_a_detector_is_built_without_importing_matplotlib():
    """`import mediapipe` imported matplotlib.pyplot (for its drawing_utils' plot_landmarks, never used here):
    about a second of every scan's start. A fresh process, as a scan is; MediaPipe's plotting still works."""
    import subprocess
    import sys

    code = (
        "import sys; from deepshield.faces.detector import FaceDetector; FaceDetector().close(); "
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'matplotlib')); "
        "from mediapipe.python.solutions import drawing_utils; import matplotlib.pyplot as plt; "
        "print(drawing_utils.plt.figure is plt.figure)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split("\n")[:2] == ["[]", "True"]


def test_matplotlib_imported_by_another_thread_while_mediapipe_is_imported_is_the_real_one(tmp_path):
    """Another thread's `import matplotlib` while MediaPipe was imported got the stand-in: its first use recursed
    until a RecursionError, and `import matplotlib.colors` found no package. It now waits for the real one. A
    stand-in MediaPipe (in a fresh process) holds the import open until that thread has its matplotlib."""
    import os
    import subprocess
    import sys

    (tmp_path / "mediapipe").mkdir()
    (tmp_path / "mediapipe" / "__init__.py").write_text(
        "import threading\n"
        "got, result = threading.Event(), []\n"
        "def other():\n"
        "    import matplotlib\n"
        "    got.set()\n"
        "    for use in (lambda: matplotlib.get_backend() != '', lambda: __import__('matplotlib.colors').colors.to_hex('red')):\n"
        "        try:\n"
        "            result.append(use())\n"
        "        except BaseException as exc:\n"
        "            result.append(type(exc).__name__)\n"
        "thread = threading.Thread(target=other)\n"
        "thread.start()\n"
        "got.wait(10)\n"
    )
    code = (
        "import sys; from deepshield.faces.mediapipe_import import import_mediapipe; mp = import_mediapipe(); "
        "mp.thread.join(60); import matplotlib; print(mp.result, type(matplotlib).__name__)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert run.stdout.strip() == "[True, '#ff0000'] module"
