"""Write the web page's example gallery: src/deepshield/serving/static/examples/ (*.jpg, *.mp4, index.json).

The real photo is scikit-image's astronaut (Eileen Collins, NASA, public domain). The fakes are made
from it with the project's own synthesis (deepshield.synthesis): a self-blended face (SBI) and a
face-swap-style blend with a mirrored copy of the same face as donor. The two videos are slow pans
over the real photo and over the face-swap one. Each entry of index.json says which it is
("truth": "real" or "manipulated"); tests/test_examples.py checks that the shipped model puts each on
its side. Seeds are fixed, so the output is reproducible. Usage: python scripts/make_examples.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from deepshield.errors import exit_status

OUT = Path(__file__).resolve().parent.parent / "src" / "deepshield" / "serving" / "static" / "examples"


def face_sample(image: np.ndarray, detector, mesher, margin: float = 0.45):
    """Crop around the largest face (with margin) and express its keypoints and mesh in crop pixels."""
    from deepshield.synthesis import FaceSample

    faces = detector.detect(image)
    if not faces:
        raise SystemExit("no face found in the example source image")
    face = max(faces, key=lambda f: f.box.area)
    height, width = image.shape[:2]
    pad_x, pad_y = face.box.width * margin, face.box.height * margin
    x0, y0 = max(0, int(face.box.x0 - pad_x)), max(0, int(face.box.y0 - pad_y))
    x1, y1 = min(width, int(face.box.x1 + pad_x)), min(height, int(face.box.y1 + pad_y))
    crop = np.ascontiguousarray(image[y0:y1, x0:x1])
    offset = np.array([x0, y0], np.float32)
    return FaceSample(image=crop, keypoints=face.keypoints - offset, landmarks=mesher.landmarks(crop)), (x0, y0, x1, y1)


def paste(image: np.ndarray, patch: np.ndarray, region) -> np.ndarray:
    x0, y0, x1, y1 = region
    out = image.copy()
    out[y0:y1, x0:x1] = patch
    return out


def pan(image: np.ndarray, frames: int = 24, side: int = 384) -> list[np.ndarray]:
    """A slow pan down and to the right, the face well inside every frame."""
    return [np.ascontiguousarray(image[40 + i : 40 + i + side, 40 + 2 * i : 40 + 2 * i + side]) for i in range(frames)]


# x264 quality 20: at 28 the blocking artefacts alone pushed the real pan to 50% (0.14 at 20).
def write_video(path: Path, frames: list[np.ndarray], fps: int = 10, crf: int = 20) -> None:
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import cv2
    from skimage import data

    from deepshield.faces.detector import FaceDetector
    from deepshield.faces.landmarks import FaceMesher
    from deepshield.synthesis import SynthesisConfig, cross_blend, self_blend

    real = data.astronaut()
    detector, mesher = FaceDetector(), FaceMesher()
    target, region = face_sample(real, detector, mesher)
    donor, _ = face_sample(np.ascontiguousarray(real[:, ::-1]), detector, mesher)
    donor_image = cv2.resize(donor.image, (target.image.shape[1], target.image.shape[0]), interpolation=cv2.INTER_AREA)
    scale = np.array(
        [target.image.shape[1] / donor.image.shape[1], target.image.shape[0] / donor.image.shape[0]], np.float32
    )
    donor = type(donor)(
        image=donor_image,
        keypoints=donor.keypoints * scale,
        landmarks=None if donor.landmarks is None else donor.landmarks * scale,
    )

    # Whole-face masks at full strength: the examples should show what the synthesis does.
    config = SynthesisConfig(part_probability=0.0, full_blend_probability=1.0)
    sbi = self_blend(target, np.random.default_rng(7), config)
    swap = cross_blend(target, donor, np.random.default_rng(11), config)

    swapped = paste(real, swap.image, region)
    # The last item: what the shipped model is known to call an example it misses (see tests/test_examples.py).
    examples = [
        ("astronaut-real.jpg", real, "real", "Real photo", "Unedited NASA portrait of astronaut Eileen Collins.", {}),
        (
            "astronaut-self-blend.jpg",
            paste(real, sbi.image, region),
            "manipulated",
            "Self-blended face",
            "The face blended back into itself after colour and sharpness changes (the SBI training fake). "
            "Subtle: the shipped model scores it just under its threshold and calls it inconclusive, not "
            'likely manipulated; a near miss that shows why "no signs found" never proves a photo authentic.',
            {"shipped_verdict": "inconclusive"},
        ),
        (
            "astronaut-swap.jpg",
            swapped,
            "manipulated",
            "Face-swap style",
            "A mirrored copy of the face aligned, colour-matched and blended in, as a face swap does.",
            {},
        ),
    ]
    index = []
    for name, image, truth, title, description, known in examples:
        Image.fromarray(image).save(args.out / name, quality=90)
        entry = {"file": name, "title": title, "description": description, "kind": "image", "truth": truth}
        index.append(entry | known)

    # Short clips (the video path, with one face track): slow pans over the real and the swapped photo.
    for name, image, truth, title, description, poster in (
        (
            "astronaut-pan.mp4",
            real,
            "real",
            "Real video",
            "A 2.4 s pan over the real photo: try the video timeline.",
            "astronaut-real.jpg",
        ),
        (
            "astronaut-swap-pan.mp4",
            swapped,
            "manipulated",
            "Face-swap video",
            "The same pan over the face-swap-style photo.",
            "astronaut-swap.jpg",
        ),
    ):
        write_video(args.out / name, pan(image))
        index.append(
            {
                "file": name,
                "title": title,
                "description": description,
                "kind": "video",
                "truth": truth,
                "poster": poster,
            }
        )

    (args.out / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    for entry in index:
        print(f"{entry['file']}: {(args.out / entry['file']).stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    sys.exit(exit_status(main, "make_examples"))
