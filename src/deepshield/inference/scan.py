"""Scan many files: one row per file, a failure recorded in its row and never fatal to the rest."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import BaseModel

from deepshield.errors import DeepShieldError
from deepshield.inference.analysis import Detector
from deepshield.inference.results import ImageResult, VideoResult

MEDIA_SUFFIXES = frozenset(
    ".jpg .jpeg .png .gif .bmp .tif .tiff .webp .mp4 .mov .m4v .mkv .webm .avi .mpg .mpeg .ts".split()
)


class ScanRow(BaseModel):
    path: str
    status: str  # "ok" or "error"
    kind: str | None = None  # "image" / "video"
    verdict: str | None = None  # "fake" / "real" / "no_face"
    probability: float | None = None
    faces: int | None = None  # faces (image) or face tracks (video)
    elapsed_ms: float | None = None
    error: str | None = None
    result: ImageResult | VideoResult | None = None


def collect_files(paths: Iterable[Path], recursive: bool) -> list[Path]:
    """Explicit files are kept whatever their name (type is sniffed later); folders contribute
    their media files by suffix, sorted, so that a folder's notes or metadata are not errors."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            files.extend(
                sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES and not p.name.startswith("."))
            )
        else:
            files.append(path)
    return files


def scan_file(detector: Detector, path: Path, frames: int, heatmaps: bool = False) -> ScanRow:
    try:
        if not path.exists():
            raise DeepShieldError("no such file")
        result = detector.analyze_path(path, frames=frames, heatmaps=heatmaps)
    except DeepShieldError as exc:
        return ScanRow(path=str(path), status="error", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a scan must survive any one file
        return ScanRow(path=str(path), status="error", error=f"{type(exc).__name__}: {exc}")
    count = len(result.faces) if isinstance(result, ImageResult) else len(result.tracks)
    return ScanRow(
        path=str(path),
        status="ok",
        kind=result.kind,
        verdict=result.verdict.label,
        probability=result.verdict.probability,
        faces=count,
        elapsed_ms=round(result.elapsed_ms, 1),
        result=result,
    )


def scan_files(detector: Detector, files: Iterable[Path], frames: int, heatmaps: bool = False) -> Iterator[ScanRow]:
    for path in files:
        yield scan_file(detector, path, frames, heatmaps)
