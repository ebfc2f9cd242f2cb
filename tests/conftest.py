"""Shared fixtures. Everything is built here from data shipped inside packages (no ../shared)."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import multiprocessing
import os
import re
import signal
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from deepshield.faces.crop import CropPolicy
from deepshield.inference.runtime import FaceScores
from deepshield.models.card import Calibration, ModelCard
from deepshield.native_logs import quiet_environment

quiet_environment()

# What MediaPipe / TensorFlow Lite / absl write when not silenced (glog-style "W0000 ..." lines and others).
NATIVE_LOG_LINE = re.compile(
    r"^[IWEF]\d{4} |TensorFlow Lite|absl::|XNNPACK|inference_feedback_manager|landmark_projection", re.M
)


class ScriptedClassifier:
    """Stands in for OnnxClassifier: returns the given logits in the order crops arrive (the
    analysis scores every face of a call in one batch: frame by frame, faces in reading order)."""

    def __init__(
        self, logits: list[float], temperature: float = 1.0, threshold: float = 0.5, offset: float = 0.0
    ) -> None:
        self.card = ModelCard(
            name="scripted",
            version="1",
            architecture="tiny",
            input_size=32,
            crop_policy=CropPolicy(size=32),
            calibration=Calibration(temperature=temperature, threshold=threshold, offset=offset),
        )
        self.logits = list(logits)
        self.batches: list[int] = []

    def score(self, crops: np.ndarray, synthetic_crops: np.ndarray | None = None) -> FaceScores:
        assert crops.shape[1:] == (32, 32, 3)
        self.batches.append(len(crops))
        logits = np.array(self.logits[: len(crops)], np.float32)
        del self.logits[: len(crops)]
        cams = np.repeat(logits[:, None, None], 4, axis=1).repeat(4, axis=2)
        return FaceScores(logits, self.card.calibration.probability(logits), cams)


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """512 x 512 RGB photo with one real face (Eileen Collins), shipped inside scikit-image."""
    return skdata.astronaut()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A randomly initialised tiny network exported as a real bundle (64 px input)."""
    import torch

    from deepshield.faces.crop import CropPolicy
    from deepshield.models.card import Calibration, ModelCard
    from deepshield.models.export import export_bundle
    from deepshield.models.network import DeepfakeNet

    torch.manual_seed(0)
    net = DeepfakeNet("tiny", 64, pretrained=False).eval()
    # Its terms set, as calibrate or an export sets them: an uncalibrated model's scan says so on stderr, which
    # the tests' outputs (read whole) are not about.
    calibration = Calibration(fitted_on="the tests' terms")
    card = ModelCard(
        name="tiny-test",
        version="0.0.1",
        architecture="tiny",
        input_size=64,
        crop_policy=CropPolicy(size=64),
        calibration=calibration,
    )
    return export_bundle(net, card, tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def detector(tiny_bundle):
    from deepshield.inference.analysis import Detector

    return Detector.from_bundle(tiny_bundle)


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory):
    """mlflow_store(path): `path`, an empty MLflow SQLite store as MLflow makes one on first use, where none is
    there yet. Making one runs MLflow's schema migrations (over a second each): it is made once, in a child
    process (this one's modules untouched), and copied. The copy holds no Default experiment: MLflow adds it on
    opening the store, its folder from the cwd of then, as in a store of its own making."""
    import shutil
    import subprocess
    import sys

    empty = tmp_path_factory.mktemp("mlflow") / "empty.db"
    make = (
        "import sqlite3, sys; from mlflow.tracking import MlflowClient; "
        "MlflowClient(tracking_uri='sqlite:///' + sys.argv[1]).search_experiments(); "
        "db = sqlite3.connect(sys.argv[1]); db.execute('DELETE FROM experiments'); db.commit(); db.close()"
    )
    child = subprocess.run([sys.executable, "-c", make, str(empty)], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr[-2000:]  # its output kept off the first test's own

    def made(path: Path) -> Path:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(empty, path)
        return path

    return made


@contextlib.contextmanager
def python_ctrl_c():
    """Python's own Ctrl-C handler for the block, also when the suite was started in the background
    (SIGINT ignored there); the handler before is put back after."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def write_video(
    path: Path,
    frames: list[np.ndarray],
    fps: int = 10,
    codec: str = "libx264",
    tags: dict[str, str] | None = None,
    sound: bool = False,
) -> Path:
    """Encode RGB frames (even width and height) into a video file with PyAV (`tags`: the container's
    metadata; `sound`: a silent AAC track beside the picture)."""
    with av.open(str(path), mode="w") as container:
        container.metadata.update(tags or {})
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=44100) if sound else None
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio is not None:
            mux_silence(container, audio, round(44100 * len(frames) / fps / 1024))
    return path


def mux_silence(container: av.container.OutputContainer, audio: av.audio.stream.AudioStream, chunks: int) -> None:
    """`chunks` x 1024 samples of mono silence, encoded into `audio` and written into `container`."""
    for index in range(chunks):
        chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = audio.rate, index * 1024
        for packet in audio.encode(chunk):
            container.mux(packet)
    for packet in audio.encode():
        container.mux(packet)


@pytest.fixture
def face_video(tmp_path, astronaut) -> Path:
    """2 s, 10 fps: the astronaut drifting right by 2 px a frame (one face track)."""
    frames = [np.roll(astronaut, 2 * i, axis=1) for i in range(20)]
    return write_video(tmp_path / "face.mp4", frames)


# Whole files by what they need: `make test-fast` (-m "not slow and not browser and not ray") skips them.
MARKS_BY_FILE = {
    "test_ray_engine.py": "ray",  # starts local Ray instances
    "test_serving_browser.py": "browser",  # Debian chromium (installed as root by .ci/setup-system.sh)
    "test_training.py": "slow",
    "test_synthetic_training.py": "slow",
    "test_training_benchmarks.py": "slow",
    "test_tuning_search.py": "slow",
    "test_tuning_train.py": "slow",
    "test_serving_hostile.py": "slow",
    "test_serving_load.py": "slow",
}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        mark = MARKS_BY_FILE.get(item.path.name)
        if mark:
            item.add_marker(getattr(pytest.mark, mark))


def photo_with_exif(astronaut: np.ndarray, fmt: str = "JPEG") -> bytes:
    """A camera's photo: make, model, software, both dates and a GPS position in its EXIF."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0131] = "Canon", "EOS 5D\x00\x00", "Adobe Photoshop 25.0"
    exif[0x0132] = "2026:01:02 10:11:12"  # last changed
    exif.get_ifd(0x8769)[0x9003] = "2025:12:31 09:00:00"  # taken: preferred
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 0.0), 3: "E", 4: (2.0, 21.0, 0.0)})  # a GPS position
    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, fmt, exif=exif)
    return buffer.getvalue()


def bundle_with_record(bundle: Path, folder: Path) -> Path:
    """A copy of `bundle` whose card records figures on two labelled sets, one of them from few files (and
    names one it has none for)."""
    import shutil

    copy = Path(shutil.copytree(bundle, folder))
    card = json.loads((copy / "model_card.json").read_text())
    card["training"] = {"benchmarks": ["dev-eval/modern-swaps", "dev-eval/never-scored", "dev-eval/dfdc-sample"]}
    card["license"] = "Weights: research use only (trained on a test set). Code: Apache-2.0."
    card["metrics"] = {
        "val_auc": 0.93, "real_fpr_validation": 0.009,
        "bench_modern_swaps_file_auc": 0.604, "bench_modern_swaps_file_auc_lo": 0.426,
        "bench_modern_swaps_file_auc_hi": 0.742, "bench_modern_swaps_face_auc": 0.733, "real_fpr_modern_swaps": 0.0456,
        "bench_modern_swaps_real_files": 22.0, "bench_modern_swaps_fake_files": 24.0,
        "bench_dfdc_sample_file_auc": 1.0, "bench_dfdc_sample_file_auc_lo": 1.0, "bench_dfdc_sample_file_auc_hi": 1.0,
        "bench_dfdc_sample_real_files": 1.0, "bench_dfdc_sample_fake_files": 3.0,
        "bench_dfdc_sample_face_auc": 0.9981,  # 1.00 to 2 places: shown to 3
    }  # fmt: skip
    (copy / "model_card.json").write_text(json.dumps(card))
    return copy


# A path from the root: "/" after no letter, dot, tilde or slash ("real/ and fake/", "cam / t" are not).
ABSOLUTE_PATH = re.compile(r"(?<![\w.~/])/[\w.+-]+")


def absolute_paths_in(bundle: Path) -> list[str]:
    """The absolute paths a bundle's card and README hold (the project's rule: none, no machine's folder)."""
    texts = [(bundle / name).read_text() for name in ("model_card.json", "README.md") if (bundle / name).exists()]
    return [found for text in texts for found in ABSOLUTE_PATH.findall(text)]


def _denied(path: object) -> PermissionError:
    return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))


def deny_reading(monkeypatch, *files: Path) -> None:
    """Opening `files` fails as a file without read permission does (chmod is no test here: root ignores it)."""
    denied = {os.path.abspath(path) for path in files}
    real_open = io.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(file)) in denied:
            raise _denied(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded)
    monkeypatch.setattr("io.open", guarded)  # Path.open, read_text and read_bytes


def deny_listing(monkeypatch, folder: Path) -> None:
    """`folder` as one without read and search permission (mode 000): not listed, nothing inside it stat'ed."""
    folder = Path(os.path.abspath(folder))
    real_stat, real_scandir, real_listdir = os.stat, os.scandir, os.listdir

    def stat(path, *args, **kwargs):
        if isinstance(path, (str, bytes, os.PathLike)) and folder in Path(os.path.abspath(os.fsdecode(path))).parents:
            raise _denied(path)
        return real_stat(path, *args, **kwargs)

    def listing(real):
        def guarded(path=".", *args, **kwargs):
            if isinstance(path, (str, bytes, os.PathLike)) and Path(os.path.abspath(os.fsdecode(path))) == folder:
                raise _denied(path)
            return real(path, *args, **kwargs)

        return guarded

    monkeypatch.setattr("os.stat", stat)
    monkeypatch.setattr("os.scandir", listing(real_scandir))
    monkeypatch.setattr("os.listdir", listing(real_listdir))


@contextlib.contextmanager
def file_size_limit(size: int):
    """Files larger than `size` bytes cannot be written while the block runs (`ulimit -f`): a write past it
    fails with EFBIG (Python ignores SIGXFSZ), as one on a full disk fails with ENOSPC."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@contextlib.contextmanager
def module_edited(monkeypatch, folder: Path, module):
    """The crops' code fingerprint (data.extract.code_fingerprint) read while `module`'s source is edited."""
    import inspect

    import deepshield.data.extract as extract

    edited = folder / Path(inspect.getfile(module)).name
    edited.write_text(Path(inspect.getfile(module)).read_text() + "\n# read otherwise\n")
    real_getfile = inspect.getfile
    monkeypatch.setattr(extract.inspect, "getfile", lambda m: str(edited) if m is module else real_getfile(m))
    extract.code_fingerprint.cache_clear()
    try:
        yield
    finally:
        monkeypatch.undo()
        extract.code_fingerprint.cache_clear()


def forked_child_exit(target, *args) -> int | None:
    """The exit code of `target(*args)` run in a child forked from this process; None when it hung (still
    running after 60 s: it is killed)."""
    child = multiprocessing.get_context("fork").Process(target=target, args=args)
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        child.join()
        return None
    return child.exitcode


def dead_pid() -> int:
    """The pid of a process that has ended: a writer killed before it renamed its temporary file."""
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def left_by_a_killed_writer(*targets: Path) -> list[Path]:
    """The `<target>.<pid>.part` file a writer killed an hour ago left beside each target (atomic_file's
    temporary name), its process gone: what the sweep of killed writers' files must remove."""
    pid = dead_pid()
    left = []
    for target in targets:
        path = target.with_name(f"{target.name}.{pid}.part")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
        old = os.path.getmtime(path) - 3600
        os.utime(path, (old, old))
        left.append(path)
    return left
