"""The installed package, not the working copy: a wheel built from the project holds every file the
package reads at run time (the shipped model, the web page, the training defaults), so that
`pip install deepfake-shield` serves and scans as `make run` does."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _data_files(package: Path) -> set[str]:
    """The package's files that are not Python source, relative to src/."""
    return {
        path.relative_to(package.parent).as_posix()
        for path in package.rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    }


def test_a_wheel_holds_every_file_the_package_reads(tmp_path):
    # Built from a copy, so that the build's own folders never land in the working copy.
    project = tmp_path / "project"
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    subprocess.run([*build, "-w", str(tmp_path / "dist"), str(project)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("deepfake_shield-*.whl")
    packed = set(zipfile.ZipFile(wheel).namelist())
    expected = _data_files(project / "src" / "deepshield")
    assert {"deepshield/models/default/model.onnx", "deepshield/serving/static/index.html"} <= expected
    assert expected - packed == set()
    modules = {path.relative_to(project / "src").as_posix() for path in (project / "src").rglob("*.py")}
    assert modules - packed == set()
