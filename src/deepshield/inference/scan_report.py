"""`deepshield scan --html`: one self-contained page for a scan, to look at rather than read. The most
suspicious files first, each with its faces (crop and heatmap) or, for a video, each person's most
suspicious frame and the line of their scores over time."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from numpy.typing import NDArray

from deepshield.inference.heatmap import jpeg_url, overlay
from deepshield.inference.results import ImageResult, ScoringTerms, TrackResult, VideoResult, scope
from deepshield.inference.scan import ScanRow
from deepshield.inference.verdict import shown_probability, suspicion

_THUMB_PX = 112  # shown at this size
# Most severe first; within a verdict, the higher face-swap score first.
_SEVERITY = {"likely_manipulated": 0, "inconclusive": 1, "no_signs_found": 2, "no_face": 3}
_WORDS = {
    "likely_manipulated": "Likely manipulated",
    "inconclusive": "Inconclusive",
    "no_signs_found": "No signs found",
    "no_face": "No face",
}
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#17202e;background:#f4f6f9}
h1{font-size:20px;margin:0 0 4px}.muted{color:#5b6678}.small{font-size:12px}.digest{font-family:monospace;overflow-wrap:anywhere;margin-top:4px}
.file{background:#fff;border:1px solid #dde2ea;border-left:5px solid #5b6678;border-radius:8px;padding:10px 14px;margin:10px 0}
.file.likely_manipulated{border-left-color:#c0262d}.file.inconclusive{border-left-color:#9a5b00}
.file.no_signs_found{border-left-color:#1f7a3a}.file.error{border-left-color:#5b6678;background:#eef0f4}
.head{display:flex;gap:12px;align-items:baseline;flex-wrap:wrap}.name{font-weight:700;word-break:break-all}
.label{font-size:11px;font-weight:800;letter-spacing:.05em;padding:1px 7px;border-radius:4px;color:#fff;background:#5b6678}
.label.likely_manipulated{background:#c0262d}.label.inconclusive{background:#9a5b00}.label.no_signs_found{background:#1f7a3a}
.faces{display:flex;flex-wrap:wrap;gap:14px;margin-top:8px}.face{font-size:12px;max-width:260px}
.face img{width:112px;height:112px;border-radius:4px}.caution{color:#9a5b00}.declared{margin-top:6px;padding:4px 8px;background:#fdf3e1;border-left:3px solid #9a5b00}
svg.line{display:block;margin-top:2px}
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _severity(row: ScanRow) -> tuple[int, float]:
    if row.status != "ok" or row.verdict is None:
        return len(_SEVERITY), 0.0
    return _SEVERITY.get(row.verdict, len(_SEVERITY)), -(row.probability or 0.0)


def _score_line(track: TrackResult, threshold: float) -> str:
    """The person's face-swap score over the sampled frames, with the threshold dashed."""
    width, height = 232, 40
    times = [point.timestamp_s for point in track.points]
    start, span = min(times), max(max(times) - min(times), 1e-6)
    coordinates = [
        (4 + (width - 8) * (p.timestamp_s - start) / span, height - 3 - (height - 6) * p.probability)
        for p in track.points
    ]
    level = height - 3 - (height - 6) * threshold
    if len(coordinates) == 1:  # a person seen in one sampled frame: a polyline of one point draws nothing
        ((x, y),) = coordinates
        mark = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="#2563eb"/>'
    else:
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates)
        mark = f'<polyline points="{points}" fill="none" stroke="#2563eb" stroke-width="1.5"/>'

    return (
        f'<svg class="line" width="{width}" height="{height}" role="img" aria-label="score over time">'
        f'<line x1="0" x2="{width}" y1="{level:.1f}" y2="{level:.1f}" stroke="#c0262d" stroke-dasharray="3 3"/>'
        f"{mark}</svg>"
    )


def _thumbnails(crop: NDArray[Any], heatmap: NDArray[Any]) -> tuple[str, str]:
    """A face and its heatmap as small JPEGs: a scan of a thousand files stays a page a browser opens."""
    return jpeg_url(crop, 80, _THUMB_PX), jpeg_url(overlay(crop, heatmap), 80, _THUMB_PX)


def _call(probability: float, synthetic: float | None, label: str, driver: str) -> str:
    """A face's or person's scores and the call they make, saying which score made it when there are two."""
    scores = [f"face-swap {shown_probability(probability)}"]
    if synthetic is not None:
        scores.append(f"synthetic-face {shown_probability(synthetic)}")
    call = _WORDS.get(label, label)
    if synthetic is not None and driver == "synthetic":
        call += " (by the synthetic-face score)"
    return _e(" · ".join([*scores, call]))


def _cautions(cautions: list[str]) -> str:
    return f'<br><span class="caution">Take care: {_e("; ".join(cautions))}.</span>' if cautions else ""


def _faces(result: ImageResult | VideoResult) -> str:
    """A card per face or person, the most suspicious first; each keeps its number (reading order, or the
    order people were first seen)."""
    cards = []
    synthetic_threshold = result.synthetic_threshold
    if isinstance(result, ImageResult):
        faces = sorted(
            result.faces,
            key=lambda f: suspicion(
                f.label, f.verdict_driver, f.probability, f.synthetic_probability, result.threshold, synthetic_threshold
            ),
            reverse=True,
        )
        for face in faces:
            if face.crop is None or face.heatmap is None:
                continue
            crop, heat = _thumbnails(face.crop, face.heatmap)
            cards.append(
                f'<div class="face"><img src="{crop}" alt="face {face.index + 1}"> <img src="{heat}" '
                f'alt="heatmap of face {face.index + 1}"><br>Face {face.index + 1}: '
                f"{_call(face.probability, face.synthetic_probability, face.label, face.verdict_driver)}"
                f"{_cautions(face.cautions)}</div>"
            )
    else:
        people = sorted(
            enumerate(result.tracks, start=1),
            key=lambda pair: suspicion(
                pair[1].label,
                pair[1].verdict_driver,
                pair[1].score,
                pair[1].synthetic_score,
                result.threshold,
                synthetic_threshold,
                pair[1].counted,
            ),
            reverse=True,
        )
        for number, track in people:
            if track.crop is None or track.heatmap is None:
                continue
            crop, heat = _thumbnails(track.crop, track.heatmap)
            counted = "" if track.counted else " (not counted)"
            cards.append(
                f'<div class="face"><img src="{crop}" alt="person {number}, most suspicious frame"> '
                f'<img src="{heat}" alt="heatmap of person {number}"><br>Person {number}: '
                f"{_call(track.score, track.synthetic_score, track.label, track.verdict_driver)}{counted}, "
                f"peak at {track.peak_timestamp_s:.1f} s{_cautions(track.cautions)}{_score_line(track, result.threshold)}</div>"
            )
    return f'<div class="faces">{"".join(cards)}</div>' if cards else ""


def _digest(row: ScanRow) -> str:
    return "" if row.sha256 is None else f'<div class="small muted digest">SHA-256 {row.sha256}</div>'


def _file(row: ScanRow) -> str:
    result = row.result
    if row.status != "ok" or result is None:
        return (
            f'<div class="file error"><div class="head"><span class="name">{_e(row.path)}</span></div>'
            f"{_e(row.error)}{_digest(row)}</div>"
        )
    verdict = result.verdict
    noun = "person" if row.kind == "video" else "face"
    count = row.faces or 0
    facts = [row.kind or "", f"{count} {noun if count == 1 else ('people' if noun == 'person' else 'faces')}"]
    if verdict.probability is not None:
        facts.append(f"face-swap {shown_probability(verdict.probability)}")
    if verdict.synthetic_probability is not None:
        facts.append(f"synthetic-face {shown_probability(verdict.synthetic_probability)}")
    if row.part:
        facts.append(f"part {row.part}")
    if isinstance(result, VideoResult) and result.video.has_audio:
        facts.append("sound not analysed")
    metadata = result.metadata
    source = None if metadata is None else metadata.declared_source
    declared = ""
    if source is not None and source.generative_ai:
        state = f" ({metadata.credentials.state})" if metadata is not None and metadata.credentials else ""
        declared = (
            f'<div class="declared">Declares "{_e(source.meaning)}" {_e(source.place())}{_e(state)}: '
            "a claim, not scored.</div>"
        )
    return (
        f'<div class="file {_e(verdict.label)}"><div class="head"><span class="name">{_e(row.path)}</span>'
        f'<span class="label {_e(verdict.label)}">{_e(_WORDS.get(verdict.label, verdict.label))}</span>'
        f'<span class="muted">{_e(" · ".join(facts))}</span></div>'
        f'<div class="small muted">{_e(verdict.reason)}</div>{declared}{_faces(result)}{_digest(row)}</div>'
    )


class ScanPage:
    """The page, built a file at a time: each row is drawn as it arrives and its pixels let go, so a long
    scan holds a page of HTML, not every face."""

    def __init__(self, has_synthetic: bool) -> None:
        self.has_synthetic = has_synthetic  # the model gives the synthetic-face score (known with no file scored)
        self._files: list[tuple[tuple[int, float], int, str]] = []
        self._terms: ScoringTerms | None = None

    def add(self, row: ScanRow) -> None:
        if self._terms is None and row.result is not None:
            self._terms = row.result
        self._files.append((_severity(row), len(self._files), _file(row)))

    def html(self, outcome: str) -> str:
        """The page, most suspicious files first (`outcome`: the scan's summary line)."""
        terms = self._terms
        model = "" if terms is None else f"model {terms.model} · threshold {shown_probability(terms.threshold)} · "
        made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        body = "".join(fragment for _, _, fragment in sorted(self._files))
        return (
            f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Deepfake Shield scan</title>"
            f"<style>{_CSS}</style></head><body><h1>Deepfake Shield scan</h1>"
            f'<div class="muted">{_e(outcome)} · {_e(model)}made {made}</div>'
            f'<p class="small muted">{_e(scope(self.has_synthetic))} No signs found does not prove a file authentic; '
            f"heatmaps show where the model saw evidence (red), not a map of the edit.</p>{body}</body></html>\n"
        )
