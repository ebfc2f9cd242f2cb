"""Face detection with MediaPipe BlazeFace (weights ship inside the mediapipe 0.10.21 wheel).

Two BlazeFace models run on every image and their detections are merged: the short-range
model finds faces that fill the frame (selfies, face crops), the full-range model finds
small faces (group photos, video frames). Either alone misses about half of the other's faces.

The models see the image shrunk with area averaging to DETECTION_SIDES pixels on its longer side
(their own inputs are 128 and 192 px). MediaPipe's resize samples without low-pass filtering: on
large images fine texture aliases into the model's input, which costs small faces and makes pure
noise look like a face to the short-range model (1 uniform-noise image in 5 at the default
confidence; none in 100 after). Boxes and keypoints are relative, so they map back exactly.
On that whole image the full-range model finds faces down to about 6% of the longer side: nothing
under ~240 px in a 4032 px phone photo, or under ~115 px in a 1080p frame, where a wide news shot's
faces often are, and it finds faces of about 10% only at 0.6-0.8 sure, near the cut-off (skimage's astronaut
beside its mirror image, twice, in a 1024 px square: 1 of its 4 faces of 100 px, 0.73 sure; tiles 0.73-0.89). So an image whose longer side is over TILE_ABOVE
pixels is also cut into overlapping tiles of 0.6 times its longer side but at most TILE_FROM pixels a side,
each given to the full-range model alone, which there sees a face at least as large as in a TILE_FROM image:
faces from TILE_MIN_FACE px at any image size (a 1024 px photo or a 720p frame gets 2-4 more model calls, a
1080p frame 2, a 4032 px phone photo 20, about 11 ms each). Images of 641-1280 px were tiled only from December
2026 (bench/bench_group_photos.py, 40 real photos' faces, found with tiles / without): 1024x1024 at 80 / 100 /
130 px 26 / 43 / 24 of 48 / 48 / 24 against 9 / 29 / 24; 1280x960 22 / 43 / 34 of 48 / 48 / 36 against 13 / 37 /
32; 1280x720 at 80 / 100 px 38 / 55 of 64 against 30 / 47; 800x600 30 / 24 / 12 of 36 / 24 / 12 against 26 / 23 /
12; no extra detection; 23-56 ms a frame against 10-16. At 640x480 tiles found 28 / 16 of 32 / 16 against 27 / 16,
so smaller images are not tiled. No new false face: 300 noise images of 1024-1200 px (1 face at 0.62 either way),
17 skimage pictures scaled to 800 / 1024 / 1200 px, and the 14 dev-eval real photos of 641-1280 px unchanged.
The faces found are then judged like any face that size (`--verdicts`, 8 frames of 1024x1024 with real faces of 100
px: 55 faces judged against 41, 5 flagged against 3, frames likely manipulated 2 / inconclusive 5 against 2 / 2).
Tiles of 0.6 times the longer side at any size (until December 2026) missed most faces of a group photo:
of 48 real faces 130 px wide in 4032x3024 photos they found 13, capped tiles 40 (bench/bench_group_photos.py). In an image of SHARPEN_FROM px or more, a face both the whole image and
a tile find takes the tile's detection, box, keypoints and confidence (`sharpened`): of a 4032 px photo the
whole image is seen at a tenth of its resolution, a tile at a third. The same 260 px face put six times into such a photo got boxes
up to 71 px apart from the whole image, 9 px from the tiles, and real faces' scores moved less from
those of their photos analysed alone (bench/bench_box_sharpening.py: FFHQ faces of 120-380 px set
into 4032x3024 frames, mean logit change 0.17 [0.14, 0.22] with the whole image's box, 0.11 [0.09,
0.13] with the tile's; 3840x2160 0.15 against 0.10; 2560x1440 0.095 against 0.085). In a 1080p frame
the tile sees only 1.7 times as finely and its box measured no better (0.079 against 0.092), so the
whole image's box is kept: the dev-eval sets, 1080p at most, are read as before.

BlazeFace finds faces at any roll, but the classifier was trained on upright faces: real photos turned
a quarter without their orientation tag (a stripped sideways phone photo) were flagged by the shipped
model at 65% (upright: 0.9%). So `detect_frames(images, turns=True)` also reads a file (a photo, or a
video re-encoded without its rotation) that may be turned at one, two and three quarter turns and keeps
the read where an upright face is found most surely (`chosen_turn`), one for all its frames, once MediaPipe's
face mesh confirms a face there (TURN_CONFIRM_SIDE); its faces are then cut upright. Upside down, a face that fills the frame is often not found at all as it is.
Figures: bench/bench_turned_photos.py.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from deepshield.faces.mediapipe_import import import_mediapipe
from deepshield.forks import kept_if_inherited

# Faces narrower or lower than this many pixels are not reported (`min_face_size`).
DEFAULT_MIN_FACE_SIZE = 20
# Faces narrower than about this are often missed at any image size (README, Limits: of real faces set into
# group photos, 33% found at 80 px, 75% at 100 px, all at 220 px).
OFTEN_MISSED_UNDER_PX = 100
# Longer side of the image each model is given (short range, full range). The full-range model
# misses some faces of a 2 x 2 grid of 95 px faces in 1024 px at 256, none at 320 and above (the grid's right
# column mirrored, it finds 1 of the 4 at any input size: TILE_ABOVE).
DETECTION_SIDES = (256, 384)
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")
# Tiles are at most this many pixels a side: each sees a face at least as large as the whole of a TILE_FROM px
# image would (the whole-image pass finds faces down to about 80 px there); each tile costs about 11 ms here.
TILE_FROM = 1280
# Images whose longer side is over this are tiled: their faces of about 10% are found by the whole image only near
# the cut-off (module doc). Up to it, tiles found 1 face more of 48 at 640x480, for 3 times the time.
TILE_ABOVE = 640
# A tile's small faces must be surer than the whole image's: at full resolution the model sees more
# texture to mistake (1 of 30 noise images gave a 0.62 face; faces of 3-8% of an image score 0.86-0.92).
TILE_MIN_CONFIDENCE = 0.75
# Tiles look for faces big enough to judge: real faces of 70 px were flagged twice as often as at 90 px
# and up (10 against 4-5 of about 230 real portraits set into a 1080p frame, shipped model 1.2.2).
TILE_MIN_FACE = 80
# A tile's detection overlapping a whole-image face by this much is that face, seen more finely (`sharpened`).
# (Tile faces overlapping one by 0.3 or more are not added as other faces.)
SAME_FACE_IOU = 0.5
# Faces take a tile's box from this longer side on, where tiles (TILE_FROM px) see at least twice as finely
# as the whole image. Below it (a 1080p frame: 1.7 times) the tile's box measured no better (module doc).
SHARPEN_FROM = 2 * TILE_FROM
# Two detections one of whose boxes lies mostly inside the other are one face. The models sometimes take part
# of a face for a face (an eye, a mouth: 3 real dev-eval photos, where that part scored highest) or add a box
# about twice the face's size around the chin and neck (0.50-0.66 sure beside the face's 0.82-0.91, in a DFDC
# video where hands touch the face: a second "person" of a few frames). IoU alone keeps both (about 0.2).
# Distinct people's faces seldom overlap so.
NESTED_SHARE = 0.6
# Reading a photo's turn. BlazeFace finds faces at any roll, less surely off upright, and places its
# keypoints as on an upright face: a read's surest face, less TURN_TILT_PENALTY per 45 degrees its eye
# line leans past 15, ranks the reads. The photo is read turned when the best turn beats the photo as it
# is by TURN_MARGIN and its face scores at least TURN_MIN_CONFIDENCE (four looks are four chances of a
# false face). The turns are searched only when the photo as it is may be turned: no face, a surest face
# under TURN_SEARCH_BELOW, or an eye line leaning more than TURN_SEARCH_TILT_DEG. Chosen on the 561 real
# photos of dev-eval/modern-swaps and face-edits, each turned four ways (bench/bench_turned_photos.py):
# 536-537 of the 551 with an upright face read right at every quarter turn (by confidence alone, with no
# penalty, minimum 0.75: 504-522), and 6 of 555 upright photos read turned (that rule: 3).
TURN_TILT_PENALTY = 0.2
TURN_MARGIN = 0.05
TURN_MIN_CONFIDENCE = 0.6
TURN_SEARCH_BELOW = 0.85
TURN_SEARCH_TILT_DEG = 25.0
# A video is searched when most of its frames may be turned (and most of those with a face found as they are),
# and its turn read on this many of them.
TURN_DECISION_FRAMES = 3
# A turn is taken only when MediaPipe's face mesh also finds a face in a crop of twice the turned read's surest
# face, shrunk to this longer side (its own short-range detector, then its landmark model's face presence).
# Four looks at a faceless picture are four chances of a false face: skimage's coffee cup read a quarter turned
# was a 0.60 "face", its clock 0.82 (a real face's turned read may score 0.63), and such a file got a verdict.
# Of 75 real portraits (FFHQ, portraits, UTKFace) and the astronaut, as they are and set into a 1200x900
# canvas, each turned four ways (604 reads): all 434 turned right are confirmed, none of the 7 turned wrong. Of 23
# faceless skimage pictures turned four ways (92 reads), 8 were read turned onto a false face, none now.
TURN_CONFIRM_SIDE = 256


def why_no_face(min_face_size: int) -> str:
    """Why a file's faces may go unfound, for a no-face verdict's reason (the reason alone said "no face found")."""
    return (
        f"faces narrower than about {OFTEN_MISSED_UNDER_PX} px, blurred or turned away are often missed, "
        f"and none narrower than {min_face_size} px is reported"
    )


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in pixel coordinates, (x0, y0) inclusive top-left, (x1, y1) bottom-right."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2)

    def intersection(self, other: Box) -> float:
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        return ix * iy

    def iou(self, other: Box) -> float:
        inter = self.intersection(other)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def nested_share(self, other: Box) -> float:
        """How much of the smaller of the two boxes lies inside the other (1: one holds the other)."""
        smaller = min(self.area, other.area)
        return self.intersection(other) / smaller if smaller > 0 else 0.0

    def as_list(self) -> list[float]:
        return [round(self.x0, 1), round(self.y0, 1), round(self.x1, 1), round(self.y1, 1)]


@dataclass(frozen=True)
class Face:
    box: Box
    score: float
    # 6 x 2 pixel coordinates in KEYPOINT_NAMES order ("right" is the subject's right).
    keypoints: NDArray[Any] = field(repr=False)
    # Quarter turns counter-clockwise (as np.rot90) that make the face upright; 0 for most faces.
    turns: int = 0


def unturned_points(points: NDArray[Any], turns: int, height: int, width: int) -> NDArray[Any]:
    """N x 2 (x, y) pixel coordinates in np.rot90(image, turns) mapped back to `image` (height x width).
    One counter-clockwise turn moves the point (x, y) of an image of width w to (y, w - x)."""
    points = np.asarray(points, dtype=np.float64)
    for k in range(turns % 4, 0, -1):
        previous_width = width if (k - 1) % 2 == 0 else height  # the image's width before its k-th turn
        points = np.stack([previous_width - points[:, 1], points[:, 0]], axis=1)
    return points


def unturned_face(face: Face, turns: int, height: int, width: int) -> Face:
    """A face found in np.rot90(image, turns), in the coordinates of `image`."""
    corners = unturned_points(np.array([[face.box.x0, face.box.y0], [face.box.x1, face.box.y1]]), turns, height, width)
    (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
    keypoints = unturned_points(face.keypoints, turns, height, width).astype(np.float32)
    return Face(Box(float(x0), float(y0), float(x1), float(y1)), face.score, keypoints, turns % 4)


def eye_line_deg(keypoints: NDArray[Any]) -> float:
    """The angle of the line from the subject's right eye to the left eye (0: level; image y points down)."""
    (rx, ry), (lx, ly) = keypoints[0], keypoints[1]
    return math.degrees(math.atan2(ly - ry, lx - rx))


def may_be_turned(faces: list[Face]) -> bool:
    """Whether a photo's faces, read as it is, leave room for a turned read (see TURN_SEARCH_BELOW)."""
    return (
        not faces
        or max(face.score for face in faces) < TURN_SEARCH_BELOW
        or any(abs(eye_line_deg(face.keypoints)) > TURN_SEARCH_TILT_DEG for face in faces)
    )


def read_strength(faces: list[Face]) -> float:
    """How surely a read finds an upright face: its surest face's score, less TURN_TILT_PENALTY per 45
    degrees that face's eye line leans past 15 (0 without a face)."""
    if not faces:
        return 0.0
    surest = max(faces, key=lambda face: face.score)
    return surest.score - TURN_TILT_PENALTY * max(0.0, abs(eye_line_deg(surest.keypoints)) - 15.0) / 45.0


def chosen_turn(reads: Sequence[Sequence[list[Face]]]) -> int:
    """`reads[j][k]`: the faces of a file's frame j turned by k quarters (k = 0: as it is; at least one
    frame). A file is turned as a whole, so one turn is read for all its faces: the turn strongest on
    average over the frames (`read_strength`) when it beats the file as it is by TURN_MARGIN and its
    surest face scores at least TURN_MIN_CONFIDENCE, else the file as it is."""
    turns = range(len(reads[0]))
    strength = [float(np.mean([read_strength(frame[k]) for frame in reads])) for k in turns]
    best = max(turns, key=lambda k: strength[k])
    surest = max((face.score for frame in reads for face in frame[best]), default=0.0)
    return best if surest >= TURN_MIN_CONFIDENCE and strength[best] > strength[0] + TURN_MARGIN else 0


def reading_order(faces: list[Face]) -> list[Face]:
    """Rows top to bottom, left to right within a row. A face joins the current row when its centre
    is less than half a face height below the centre of the row's first face, so faces side by side
    at slightly different heights keep their left-to-right order."""
    rows: list[list[Face]] = []
    for face in sorted(faces, key=lambda f: f.box.center[1]):
        if rows:
            first = rows[-1][0]
            if face.box.center[1] - first.box.center[1] < 0.5 * max(first.box.height, face.box.height, 1.0):
                rows[-1].append(face)
                continue
        rows.append([face])
    return [face for row in rows for face in sorted(row, key=lambda f: f.box.center[0])]


def detection_input(image: NDArray[Any], side: int) -> NDArray[Any]:
    """The image shrunk (area averaging, aspect kept) so that its longer side is at most `side`."""
    height, width = image.shape[:2]
    if max(height, width) <= side:
        return np.ascontiguousarray(image)
    factor = side / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class Tile:
    """A window of the image, in pixels: x0, y0 inclusive, x1, y1 exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def largest_face(self) -> int:
        """The largest face a tile is trusted with: neighbouring tiles overlap by at least this much,
        so such a face lies whole in one of them."""
        return max(self.x1 - self.x0, self.y1 - self.y0) // 3


def _spans(length: int, side: int) -> list[tuple[int, int]]:
    """One window over a length up to `side`, else the fewest windows of `side`, evenly spaced from one
    end to the other, whose neighbours overlap by at least a third of `side`."""
    if length <= side:
        return [(0, length)]
    count = -(-(length - side) // (2 * side // 3)) + 1
    return [(start, start + side) for start in np.linspace(0, length - side, count).round().astype(int).tolist()]


def tiles(height: int, width: int) -> list[Tile]:
    """Tiles of 0.6 times the longer side but at most TILE_FROM pixels a side, overlapping by at least a
    third of a tile. A 1080p frame gets two (1152 px), a 4032x3024 photo twenty, a 1024 px square four, a
    640 px image (TILE_ABOVE) none, nor a strip narrower than TILE_MIN_FACE, where no tile can add a face: a 76 KB PNG of 1 x 39,000,000 pixels
    (within the pixel limit) got 45,721, read at four quarter turns, over half an hour of detection."""
    if max(height, width) <= TILE_ABOVE or min(height, width) < TILE_MIN_FACE:
        return []
    side = min(-(-3 * max(height, width) // 5), TILE_FROM)
    return [Tile(x0, y0, x1, y1) for y0, y1 in _spans(height, side) for x0, x1 in _spans(width, side)]


def _inside_tile(box: Box, tile: Tile, height: int, width: int) -> bool:
    """A small face clear of the tile's inner edges: one cut by an edge is whole in a neighbour."""
    margin = 2.0
    return (
        max(box.width, box.height) <= tile.largest_face
        and (tile.x0 == 0 or box.x0 > tile.x0 + margin)
        and (tile.y0 == 0 or box.y0 > tile.y0 + margin)
        and (tile.x1 == width or box.x1 < tile.x1 - margin)
        and (tile.y1 == height or box.y1 < tile.y1 - margin)
    )


def sharpened(face: Face, tile_faces: list[Face]) -> Face:
    """A face the whole image found, as the surest tile that holds it whole found it (SAME_FACE_IOU), if
    one did: a tile sees it more finely than the whole image does (3.2 times in a 4032 px photo), so its
    box and keypoints are placed that much more finely, and its confidence is the detector's on that finer
    view (a face of a few percent of a 4032 px photo read 0.63-0.66 sure there, 0.85-0.89 in its tile)."""
    same = [other for other in tile_faces if other.box.iou(face.box) >= SAME_FACE_IOU]
    return max(same, key=lambda other: other.score) if same else face


def non_max_suppression(faces: list[Face], iou_threshold: float) -> list[Face]:
    """The surest of each group of detections of one face: a face is dropped when a surer one overlaps it
    by `iou_threshold` or more, or when one of the two boxes lies mostly inside the other (NESTED_SHARE)."""
    kept: list[Face] = []
    for face in sorted(faces, key=lambda f: f.score, reverse=True):
        if all(
            face.box.iou(other.box) < iou_threshold and face.box.nested_share(other.box) < NESTED_SHARE
            for other in kept
        ):
            kept.append(face)
    return kept


FORKED = (
    "this detector was built in the process this one was forked from, and its face detection graphs do not "
    "survive a fork: build a Detector in each worker process (a Pool's initializer), started by 'spawn' or "
    "'forkserver' (multiprocessing.get_context('spawn'))"
)


def _close_graphs(models: list[Any], mesh: list[Any], pid: int) -> None:
    graphs = models + mesh
    if kept_if_inherited(graphs, pid):  # a forked child's: closing them would wait for ever on the parent's threads
        return
    for graph in graphs:
        graph.close()


class FaceDetector:
    """Find every face in an RGB uint8 image. Thread-safe (MediaPipe graphs are not, so calls are serialised).

    Only the process that built it can use it: in a forked child (a multiprocessing pool's workers on Linux)
    the graphs it inherits wait for ever on threads that a fork does not copy, so detecting there raises
    RuntimeError(FORKED), and closing or dropping it there leaves them alone."""

    def __init__(self, min_face_size: int = DEFAULT_MIN_FACE_SIZE, min_confidence: float = 0.5) -> None:
        from deepshield.native_logs import native_output_silenced

        self.min_face_size = min_face_size
        self.min_confidence = min_confidence
        with native_output_silenced():
            solution = import_mediapipe().solutions.face_detection  # heavy, deferred until a detector is built
            self._models = [
                solution.FaceDetection(model_selection=0, min_detection_confidence=min_confidence),
                solution.FaceDetection(model_selection=1, min_detection_confidence=min_confidence),
            ]
            # The graphs start their models on their own threads, which log as they start: wait for
            # them (a first inference) before letting stderr through.
            for model in self._models:
                model.process(np.zeros((DETECTION_SIDES[0], DETECTION_SIDES[0], 3), np.uint8))
        self._lock = threading.Lock()
        self._pid = os.getpid()
        # Each graph holds its own threads and ~30 MB until closed; garbage collection alone never
        # closes them (12 detectors built and dropped: 52 threads, +390 MB), so a dropped detector closes
        # them as a backstop for callers that never call close().
        # The face mesh that confirms a turn, built on the first turn to confirm (`_turn_confirmed`).
        self._mesh: list[Any] = []
        # Whether the mesh has placed a face yet: the first time it does it warns on stderr, whatever the
        # input's shape ("Using NORM_RECT without IMAGE_DIMENSIONS ..."), a stray line in a scan's table.
        self._mesh_placed_a_face = False
        self._closer = weakref.finalize(self, _close_graphs, self._models, self._mesh, self._pid)

    def close(self) -> None:
        """Free the MediaPipe graphs (their threads and memory); detecting afterwards is an error. Idempotent."""
        if os.getpid() != self._pid:  # the lock too may have been held by another of the parent's threads
            self._closer()
            return
        with self._lock:
            self._closer()

    @property
    def closed(self) -> bool:
        return not self._closer.alive

    def detect(self, image: NDArray[Any], turns: bool = False) -> list[Face]:
        """The faces of an RGB uint8 image in reading order; `turns`: see `detect_frames`."""
        return self.detect_frames([image], turns)[0]

    def detect_frames(
        self,
        images: Sequence[NDArray[Any]],
        turns: bool = False,
        on_frame: Callable[[int], None] | None = None,
    ) -> list[list[Face]]:
        """The faces of each frame of one file (a photo: one frame), in reading order. With `turns`, a
        file whose faces, read as they are, may be turned in most frames (`may_be_turned`) and in most
        frames where a face is found is also read
        at its other quarter turns on up to TURN_DECISION_FRAMES of those frames, and read at the chosen
        turn (`chosen_turn`) in every frame; each face then carries the turn that makes it upright. A
        file is turned as a whole: a photo whose orientation tag was lost, a video re-encoded without its
        rotation. `on_frame(position)` is called before each frame's detection (progress)."""
        for image in images:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image.shape} {image.dtype}")
        faces = []
        for position, image in enumerate(images):
            if on_frame is not None:
                on_frame(position)
            faces.append(self._detect_as_is(image))
        if turns:
            faces = self._read_upright(images, faces)
        # Reading order (left to right, top to bottom) makes face indices stable for users.
        return [reading_order(found) for found in faces]

    def _read_upright(self, images: Sequence[NDArray[Any]], faces: list[list[Face]]) -> list[list[Face]]:
        """The frames' faces (`faces`: read as they are) at the file's chosen turn, in the frames'
        coordinates: unchanged unless most frames may be turned, so do most of those with a face, and a turn
        wins (`detect_frames`)."""
        unsure = [position for position, found in enumerate(faces) if may_be_turned(found)]
        # Frames where a face was found as it is: read surely and level in most of them, the file is upright,
        # whatever its frames without a face show turned. A video of a person in 4 of 10 frames (0.92, level)
        # and a cup in the rest was read a quarter turned, the cup's turned read a 0.65 "face", the person cut
        # sideways. (A photo is one frame: searched when it may be turned, as before.)
        leaning = sum(1 for position in unsure if faces[position])
        if not images or 2 * len(unsure) < len(images) or len(images) - len(unsure) > leaning:
            return faces
        spread = np.linspace(0, len(unsure) - 1, min(TURN_DECISION_FRAMES, len(unsure))).round().astype(int)
        reads = {
            unsure[i]: [faces[unsure[i]], *(self._detect_turned(images[unsure[i]], k) for k in (1, 2, 3))]
            for i in spread
        }
        turn = chosen_turn(list(reads.values()))
        surest = max(reads, key=lambda position: max((face.score for face in reads[position][turn]), default=0.0))
        if not turn or not self._turn_confirmed(images[surest], turn, reads[surest][turn]):
            return faces
        return [
            [
                unturned_face(face, turn, *image.shape[:2])
                for face in (reads[position][turn] if position in reads else self._detect_turned(image, turn))
            ]
            for position, image in enumerate(images)
        ]

    def _turn_confirmed(self, image: NDArray[Any], turns: int, found: list[Face]) -> bool:
        """Whether the face mesh finds a face around the surest of `found` (faces of np.rot90(image, turns),
        at least one) in that turned image (TURN_CONFIRM_SIDE)."""
        turned = np.rot90(image, turns)
        face = max(found, key=lambda f: f.score)
        (cx, cy), side = face.box.center, max(face.box.width, face.box.height)
        height, width = turned.shape[:2]
        x0, y0 = max(0, round(cx - side)), max(0, round(cy - side))
        x1, y1 = min(width, round(cx + side)), min(height, round(cy + side))
        crop = detection_input(np.ascontiguousarray(turned[y0:y1, x0:x1]), TURN_CONFIRM_SIDE)
        from deepshield.native_logs import native_output_silenced

        with self._graphs():
            if not self._mesh:
                with native_output_silenced():
                    mesh = import_mediapipe().solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1)
                    mesh.process(np.zeros((TURN_CONFIRM_SIDE, TURN_CONFIRM_SIDE, 3), np.uint8))  # see __init__
                self._mesh.append(mesh)
            with contextlib.nullcontext() if self._mesh_placed_a_face else native_output_silenced():
                confirmed = self._mesh[0].process(crop).multi_face_landmarks is not None
            self._mesh_placed_a_face |= confirmed
            return confirmed

    @contextlib.contextmanager
    def _graphs(self) -> Iterator[None]:
        """The MediaPipe graphs held for one use: this process's own (a forked child's are refused, FORKED),
        one thread at a time, and not closed."""
        if os.getpid() != self._pid:
            raise RuntimeError(FORKED)
        with self._lock:
            if self.closed:
                raise RuntimeError("this face detector was closed")
            yield

    def _detect_turned(self, image: NDArray[Any], turns: int) -> list[Face]:
        """The faces of np.rot90(image, turns), in its own coordinates."""
        return self._detect_as_is(np.ascontiguousarray(np.rot90(image, turns)))

    def _detect_as_is(self, image: NDArray[Any]) -> list[Face]:
        """The faces of the image as it is: both models on the whole image, the full-range one on tiles."""
        height, width = image.shape[:2]
        whole = Tile(0, 0, width, height)
        full_range_input = detection_input(image, DETECTION_SIDES[1])
        inputs = (detection_input(full_range_input, DETECTION_SIDES[0]), full_range_input)
        windows = tiles(height, width)
        with self._graphs():
            results = [(whole, model.process(small)) for model, small in zip(self._models, inputs)]
            results += [
                (
                    tile,
                    self._models[1].process(
                        detection_input(image[tile.y0 : tile.y1, tile.x0 : tile.x1], DETECTION_SIDES[1])
                    ),
                )
                for tile in windows
            ]
        found = [
            (tile, self._face_in(detection, tile)) for tile, result in results for detection in result.detections or []
        ]
        in_tiles = [face for tile, face in found if tile is not whole and _inside_tile(face.box, tile, height, width)]
        whole_faces = [
            face for tile, face in found if tile is whole and min(face.box.width, face.box.height) >= self.min_face_size
        ]
        if max(height, width) >= SHARPEN_FROM:
            whole_faces = [sharpened(face, in_tiles) for face in whole_faces]
        # The tiles also add faces the whole image missed.
        tile_faces = [
            face
            for face in in_tiles
            if face.score >= max(self.min_confidence, TILE_MIN_CONFIDENCE)
            and min(face.box.width, face.box.height) >= max(self.min_face_size, TILE_MIN_FACE)
            and all(face.box.iou(other.box) < 0.3 for other in whole_faces)
        ]
        return non_max_suppression(whole_faces + tile_faces, iou_threshold=0.3)

    @staticmethod
    def _face_in(detection: Any, tile: Tile) -> Face:
        """A detection in a window's relative coordinates, as a face in image pixels."""
        width, height = tile.x1 - tile.x0, tile.y1 - tile.y0
        rel = detection.location_data.relative_bounding_box
        box = Box(
            tile.x0 + max(0.0, rel.xmin * width),
            tile.y0 + max(0.0, rel.ymin * height),
            tile.x0 + min(float(width), (rel.xmin + rel.width) * width),
            tile.y0 + min(float(height), (rel.ymin + rel.height) * height),
        )
        keypoints = np.array(
            [[tile.x0 + kp.x * width, tile.y0 + kp.y * height] for kp in detection.location_data.relative_keypoints],
            dtype=np.float32,
        )
        return Face(box=box, score=float(detection.score[0]), keypoints=keypoints)
