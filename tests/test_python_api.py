"""The README's Python example, as a developer copies it: it runs, and a type checker sees the API's types."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import forked_child_exit, write_video

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    section = (ROOT / "README.md").read_text().split("\n## Python\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_as_written(astronaut, tmp_path, monkeypatch, capsys):
    Image.fromarray(astronaut).save(tmp_path / "photo.jpg")
    write_video(tmp_path / "clip.mp4", [astronaut] * 10)
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "no_signs_found" in printed or "likely_manipulated" in printed or "inconclusive" in printed


@pytest.mark.skipif(shutil.which("mypy", path=str(Path(sys.executable).parent)) is None, reason="mypy not installed")
def test_a_type_checker_sees_the_apis_types(tmp_path):
    # Without py.typed and a typed `deepshield.Detector`, every call was Any: a misspelt method passed,
    # and the example's `image.metadata.declared_source` (metadata is None for arrays) was not caught.
    user = tmp_path / "user.py"
    user.write_text(readme_example() + 'detector.analyze_imagee("photo.jpg")\n')
    mypy = Path(sys.executable).parent / "mypy"
    checked = subprocess.run(
        [str(mypy), "--cache-dir", str(tmp_path / "cache"), "--no-error-summary", str(user)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    errors = checked.stdout.strip().splitlines()
    assert len(errors) == 1 and '"Detector" has no attribute "analyze_imagee"' in errors[0], checked.stdout


def _analyse_and_close(detector, image) -> None:
    with pytest.raises(RuntimeError, match=r"forked from.*build a Detector in each worker process"):
        detector.analyze_image(image)
    detector.close()  # the parent's graphs, left alone


def test_a_detector_used_in_a_process_forked_from_its_own_says_so_at_once(detector, astronaut):
    # A multiprocessing pool's workers (fork, Linux's default) given the notebook's detector hung for good on
    # their first image, and a child closing it, or exiting with it unclosed, hung too: MediaPipe's graphs wait
    # on threads that a fork does not copy.
    detector.analyze_image(astronaut)
    assert forked_child_exit(_analyse_and_close, detector, astronaut) == 0  # None: it hung
    assert detector.analyze_image(astronaut).faces  # the parent's still works
