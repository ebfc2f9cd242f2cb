"""What the Python API leaves of the process that embeds it: its descriptor 2, its environment, its
warning filters and Pillow's HEIF options stay its own; its refusals can be caught by type."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import warnings

import pytest
from PIL import Image

from deepshield.cli.main import main
from deepshield.errors import DeepShieldError, MissingFileError
from deepshield.media.images import load_image
from deepshield.media.metadata import image_metadata
from deepshield.media.video import sample_frames
from deepshield.native_logs import QUIET_ENV, native_output_silenced
from tests.conftest import write_video


def _stderr_identity() -> tuple[int, int]:
    info = os.fstat(2)
    return info.st_dev, info.st_ino


def test_silences_that_overlap_in_two_threads_give_back_stderr_and_the_environment(monkeypatch):
    # Each thread saved and restored descriptor 2 on its own: the second saved /dev/null and, leaving
    # last, left it there for good. The quiet log levels stayed in the environment after the silence.
    for name in QUIET_ENV:
        monkeypatch.delenv(name, raising=False)
    before = _stderr_identity()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with native_output_silenced():
            first_in.set()
            second_in.wait(10)
        first_out.set()

    def second() -> None:
        first_in.wait(10)
        with native_output_silenced():
            assert all(os.environ[name] == value for name, value in QUIET_ENV.items())
            second_in.set()
            first_out.wait(10)
            assert _stderr_identity() != before  # still silenced: the second thread is inside

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert _stderr_identity() == before
    assert not any(name in os.environ for name in QUIET_ENV)


def test_a_face_detector_leaves_the_hosts_log_levels_as_they_were(monkeypatch):
    from deepshield.faces.detector import FaceDetector

    glog, tensorflow = QUIET_ENV  # glog's is spelt in lower case
    monkeypatch.delenv(glog, raising=False)
    monkeypatch.setenv(tensorflow, "1")
    FaceDetector().close()
    assert glog not in os.environ and os.environ[tensorflow] == "1"


def test_a_host_threads_warnings_are_shown_while_a_file_is_read(tmp_path, astronaut, monkeypatch):
    # Reading a file's metadata ignored every warning with catch_warnings, which changes the process's
    # filters: another thread's warnings were dropped meanwhile, and overlapping calls left them ignored.
    photo = tmp_path / "photo.png"
    Image.fromarray(astronaut).save(photo)
    opening, host_warned = threading.Event(), threading.Event()
    pillow_open = Image.open

    def open_once_the_host_warned(*args, **kwargs):
        opening.set()
        host_warned.wait(10)
        return pillow_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", open_once_the_host_warned)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        reader = threading.Thread(target=image_metadata, args=(photo,))
        reader.start()
        assert opening.wait(10)
        warnings.warn("the host's own warning", stacklevel=1)
        host_warned.set()
        reader.join(20)
    assert [str(w.message) for w in shown] == ["the host's own warning"]


def test_importing_the_readers_keeps_the_hosts_heif_options():
    script = (
        "import pillow_heif; pillow_heif.register_heif_opener(thumbnails=True, depth_images=True)\n"
        "import deepshield.media.images\n"
        "print(pillow_heif.options.THUMBNAILS, pillow_heif.options.DEPTH_IMAGES)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["True", "True"]


def test_a_path_to_nothing_has_an_error_of_its_own(tmp_path):
    with pytest.raises(MissingFileError, match="no such file") as raised:
        load_image(tmp_path / "gone.jpg")
    assert isinstance(raised.value, DeepShieldError)
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(MissingFileError, match="broken symbolic link"):
        load_image(tmp_path / "dangling.jpg")


def test_frames_that_are_not_a_whole_number_are_named(tmp_path, astronaut):
    clip = tmp_path / "clip.mp4"
    write_video(clip, [astronaut] * 4)
    for frames in ("8", None, 1.5):
        with pytest.raises(TypeError, match="frames is a whole number"):
            sample_frames(clip, frames)  # type: ignore[arg-type]
    import numpy as np

    assert len(sample_frames(clip, np.int64(2))[1]) == 2


def test_an_empty_path_is_refused_not_read_as_the_current_folder(detector):
    for analyse in (detector.analyze_image, detector.analyze_video, detector.analyze_path):
        with pytest.raises(ValueError, match="an empty path names no file"):
            analyse("")


@pytest.mark.parametrize(
    "args",
    [
        ["scan", ""],
        ["prepare", "x", "--out", ""],
        ["inspect", ""],
        ["evaluate", ""],
        ["model", "--model", ""],
        ["compare", "x", "--on", "y", "--against", ""],
    ],
    ids=["scan", "prepare-out", "inspect", "evaluate", "model", "compare-against"],
)
def test_an_empty_path_on_the_command_line_is_a_usage_error(args, tmp_path, monkeypatch, capsys):
    # `deepshield scan "$UNSET"` scanned the current folder; `prepare --out ""` would have written into it.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert re.search(r"an empty path names no (file or folder|bundle folder)", capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []
