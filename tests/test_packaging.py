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


# `make run`'s install: the app without the train extra, its packages made unimportable as a venv without them.
WITHOUT_TRAIN_EXTRA = """
import importlib.abc, sys
from deepshield.cli.main import main

TRAIN_EXTRA = {"torch", "onnx", "efficientnet_lite_pytorch", "sklearn", "skimage", "mlflow", "optuna", "yaml"}

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in TRAIN_EXTRA:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Absent())
sys.exit(main(sys.argv[1:]))
"""


def test_a_training_command_without_the_train_extra_says_what_to_install(tmp_path):
    # After `make run` (no torch), `deepshield train`, `evaluate`, `tune`, ... ended in a ModuleNotFoundError
    # traceback, status 1; `--engine ray` without Ray already said what to install in one line.
    (tmp_path / "space.yaml").write_text("optim.lr: [0.001]\n")
    for command, missing in [(["train", "--run-dir", str(tmp_path / "run")], "torch"),
                             (["tune", "--space", str(tmp_path / "space.yaml"), "--out", str(tmp_path / "t")], "optuna")]:  # fmt: skip
        ran = subprocess.run(
            [sys.executable, "-c", WITHOUT_TRAIN_EXTRA, *command], capture_output=True, text=True, cwd=tmp_path
        )
        assert ran.returncode == 2 and "Traceback" not in ran.stderr, ran.stderr
        assert ran.stderr.strip() == (
            f"deepshield: error: deepshield {command[0]} needs the train extra, not installed here (no module "
            f"{missing}): .venv/bin/pip install -e '.[train]' in the checkout, or pip install 'deepfake-shield[train]'"
        )
    scanned = subprocess.run(
        [sys.executable, "-c", WITHOUT_TRAIN_EXTRA, "model"], capture_output=True, text=True, cwd=tmp_path
    )
    assert scanned.returncode == 0, scanned.stderr  # the app itself needs none of them
