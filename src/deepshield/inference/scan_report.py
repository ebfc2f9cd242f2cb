"""`deepshield scan --html`: one self-contained page for a scan, to look at rather than read. The most
suspicious files first, each with its faces (crop and heatmap) or, for a video, each person's most
suspicious frame and the line of their scores over time."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from deepshield.data.layout import atomic_file
from deepshield.inference.heatmap import jpeg_url, overlay
from deepshield.inference.results import (
    BLIND_SPOT,
    NOT_A_SOLE_BASIS,
    ImageResult,
    ScoringTerms,
    TrackResult,
    VideoResult,
    scope,
)
from deepshield.inference.scan import ScanRow
from deepshield.inference.verdict import shown_probability, suspicion
from deepshield.media.files import shown_name
from deepshield.media.units import clock_time
from deepshield.models.card import InconclusiveBand, not_calibrated
from deepshield.plural import numbered

_THUMB_PX = 112  # shown at this size
# Most severe first: a file that could not be analysed is unknown, so it comes before the calm ones; within
# a verdict, the file whose deciding score lies furthest above its threshold first.
_ORDER = {"likely_manipulated": 0, "inconclusive": 1, "error": 2, "no_signs_found": 3, "no_face": 4}
_WORDS = {
    "likely_manipulated": "Likely manipulated",
    "inconclusive": "Inconclusive",
    "no_signs_found": "No signs found",
    "no_face": "No face",
    "error": "Not analysed",
}


@dataclass(frozen=True)
class PageTerms:
    """What the page says the files were judged by, known from the model before any file is scanned (a
    page of failures only named no model)."""

    model: str
    threshold: float
    synthetic_threshold: float | None  # None: the model has no synthetic-face score
    band: InconclusiveBand | None = None  # each score's inconclusive band, said beside its threshold
    synthetic_band: InconclusiveBand | None = None
    calibrated: bool = True  # False: the face-swap score's calibration is the defaults (not_calibrated)
    threshold_given: bool = False  # scan's --threshold: only the temperature is the default

    @property
    def has_synthetic(self) -> bool:
        return self.synthetic_threshold is not None


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#17202e;background:#f4f6f9}
h1{font-size:20px;margin:0 0 4px}.muted{color:#5b6678}.small{font-size:12px}.digest{font-family:monospace;overflow-wrap:anywhere;margin-top:4px}
.file{background:#fff;border:1px solid #dde2ea;border-left:5px solid #5b6678;border-radius:8px;padding:10px 14px;margin:10px 0}
.file.likely_manipulated{border-left-color:#c0262d}.file.inconclusive{border-left-color:#9a5b00}
.file.no_signs_found{border-left-color:#4a5d78}.file.error{border-left-color:#5b6678;background:#eef0f4}
.head{display:flex;gap:12px;align-items:baseline;flex-wrap:wrap}.name{font-weight:700;word-break:break-all}
.label{font-size:11px;font-weight:800;letter-spacing:.05em;padding:1px 7px;border-radius:4px;color:#fff;background:#5b6678}
.label.likely_manipulated{background:#c0262d}.earlier{font-style:italic}.label.inconclusive{background:#9a5b00}.label.no_signs_found{background:#4a5d78}
.faces{display:flex;flex-wrap:wrap;gap:14px;margin-top:8px}.face{font-size:12px;max-width:260px}
.face img{width:112px;height:112px;border-radius:4px}.caution{color:#9a5b00}.declared{margin-top:6px;padding:4px 8px;background:#fdf3e1;border-left:3px solid #9a5b00}
svg.line{display:block;margin-top:2px}.axis{display:flex;justify-content:space-between;width:232px}
h2.name{font-size:inherit;margin:0}
@media print{body{background:#fff;margin:0}.file,.face{break-inside:avoid}.label{color:#000;background:none;border:1.5px solid #000}}
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _name(path: str) -> str:
    return _e(shown_name(path))


def _badge(label: str, driver: str | None) -> str:
    if label == "likely_manipulated" and driver == "synthetic":
        return "Likely AI-generated"
    return _WORDS.get(label, label)


def _score_line(
    track: TrackResult, times: tuple[float, float], threshold: float, synthetic_threshold: float | None
) -> str:
    """The score behind the person's verdict over the sampled frames, with its threshold dashed, on the
    video's time axis (`times`: its first and last sampled frame, both labelled): every person of a video
    on the same axis, where each was stretched over their own time."""
    width, height = 232, 40
    by_synthetic = track.verdict_driver == "synthetic" and synthetic_threshold is not None
    scores = [p.synthetic_probability if by_synthetic else p.probability for p in track.points]
    start, span = times[0], max(times[1] - times[0], 1e-6)
    coordinates = [
        (4 + (width - 8) * (p.timestamp_s - start) / span, height - 3 - (height - 6) * (score or 0.0))
        for p, score in zip(track.points, scores)
    ]
    line_at = synthetic_threshold if by_synthetic and synthetic_threshold is not None else threshold
    level = height - 3 - (height - 6) * line_at
    if len(coordinates) == 1:  # a person seen in one sampled frame: a polyline of one point draws nothing
        ((x, y),) = coordinates
        mark = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="#2563eb"/>'
    else:
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates)
        mark = f'<polyline points="{points}" fill="none" stroke="#2563eb" stroke-width="1.5"/>'
    what = "synthetic-face" if by_synthetic else "face-swap"
    return (
        f'<svg class="line" width="{width}" height="{height}" role="img" aria-label="{what} score over time">'
        f'<line x1="0" x2="{width}" y1="{level:.1f}" y2="{level:.1f}" stroke="#c0262d" stroke-dasharray="3 3"/>'
        f'{mark}</svg><div class="small muted axis"><span>{_when(times[0], times)}</span>'
        f"<span>{what} score</span><span>{_when(times[1], times)}</span></div>"
    )


def _when(seconds: float, times: tuple[float, float]) -> str:
    """A time in the video, as the page and the part analysed say it: `3.4 s` within a video's first minute,
    else `12:30.4` (`times`: its first and last sampled frame; "peak at 750.4 s" stood beside "part 12:30 to 14:00")."""
    return f"{seconds:.1f} s" if times[1] < 60 else clock_time(seconds)


def _thumbnails(crop: NDArray[Any], heatmap: NDArray[Any]) -> tuple[str, str]:
    """A face and its heatmap as small JPEGs: a scan of a thousand files stays a page a browser opens."""
    return jpeg_url(crop, 80, _THUMB_PX), jpeg_url(overlay(crop, heatmap), 80, _THUMB_PX)


def _call(probability: float, synthetic: float | None, label: str, driver: str, terms: ScoringTerms) -> str:
    """A face's or person's scores and the call they make, saying which score made it when there are two;
    each score to the places that keep it on its side of its band (`terms`: the file's result)."""
    scores = [f"face-swap {terms.shown_score(probability)}"]
    if synthetic is not None:
        scores.append(f"synthetic-face {terms.shown_score(synthetic, synthetic=True)}")
    call = _badge(label, driver)  # as the file's badge says it ("Likely manipulated" beside "Likely AI-generated")
    if synthetic is not None and driver == "synthetic" and label == "inconclusive":
        # Not for "no signs found": both scores lie below their bands, and it read as if one alone was checked.
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
                f"{_call(face.probability, face.synthetic_probability, face.label, face.verdict_driver, result)}"
                f"{_cautions(face.cautions)}</div>"
            )
    else:
        sampled = [point.timestamp_s for point in result.timeline] or [0.0]
        times = (min(sampled), max(sampled))
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
            line = _score_line(track, times, result.threshold, synthetic_threshold)
            cards.append(
                f'<div class="face"><img src="{crop}" alt="person {number}, most suspicious frame"> '
                f'<img src="{heat}" alt="heatmap of person {number}"><br>Person {number}: '
                f"{_call(track.score, track.synthetic_score, track.label, track.verdict_driver, result)}{counted}, "
                f"peak at {_when(track.peak_timestamp_s, times)}{_cautions(track.cautions)}{line}</div>"
            )
    return f'<div class="faces">{"".join(cards)}</div>' if cards else ""


def _digest(row: ScanRow) -> str:
    return "" if row.sha256 is None else f'<div class="small muted digest">SHA-256 {row.sha256}</div>'


def _head(row: ScanRow, label: str, facts: list[str]) -> str:
    return (
        f'<div class="head"><h2 class="name">{_name(row.path)}</h2>'
        f'<span class="label {_e(label)}">{_e(_badge(label, row.verdict_driver))}</span>'
        f'<span class="muted">{_e(" · ".join(facts))}</span></div>'
    )


def _facts(row: ScanRow) -> list[str]:
    count = row.faces or 0
    facts = [row.kind or "", numbered(count, "person", "people") if row.kind == "video" else numbered(count, "face")]
    if row.probability is not None:
        facts.append(f"face-swap {row.shown_score(row.probability)}")
    if row.synthetic_probability is not None:
        facts.append(f"synthetic-face {row.shown_score(row.synthetic_probability, synthetic=True)}")
    if row.part:
        facts.append(f"part {row.part}")
    return facts


def _file(row: ScanRow, earlier: str | None = None) -> str:
    """A file's card; `earlier`: the output file an earlier run of the scan wrote the row to (a resumed
    scan's page held only the files of its own run)."""
    result = row.result
    if row.status != "ok":
        return f'<div class="file error">{_head(row, "error", [])}{_e(row.error)}{_digest(row)}</div>'
    label = row.verdict or "no_face"
    if result is None:  # a row read back from --out: its figures, not its faces
        note = (
            f"Scanned in an earlier run of this scan (rows in {_name(earlier or '')}): its faces are not on this page."
        )
        return (
            f'<div class="file {_e(label)}">{_head(row, label, _facts(row))}'
            f'<div class="small muted earlier">{note}</div>{_digest(row)}</div>'
        )
    verdict = result.verdict
    facts = _facts(row)
    if isinstance(result, VideoResult) and len(result.tracks) > (row.faces or 0):
        # row.faces counts the people counted; the tracks seen too briefly to count are said beside them.
        facts[1] += f" counted ({len(result.tracks)} seen)"
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
        f'<div class="file {_e(verdict.label)}">{_head(row, verdict.label, facts)}'
        f'<div>{_e(verdict.headline)}</div><div class="small muted">{_e(verdict.reason)}</div>{declared}{_faces(result)}{_digest(row)}</div>'
    )


class ScanPage:
    """The page, built a file at a time: each row is drawn as it arrives and its pixels let go, so a long
    scan holds a page of HTML, not every face."""

    def __init__(self, terms: PageTerms) -> None:
        self.terms = terms
        # a file's key -> its card's place, the order it came in, its card, whether from an earlier run's rows
        self._files: dict[str, tuple[tuple[int, float], int, str, bool]] = {}
        self._added = 0

    def _place(self, row: ScanRow) -> tuple[int, float]:
        """Most severe first, then by how far the score behind the verdict lies above its threshold (the
        synthetic-face score's for a file it decided: files were ordered by the face-swap score alone)."""
        if row.status != "ok":
            return _ORDER["error"], 0.0
        label = row.verdict or "no_face"
        if label == "no_face" or row.probability is None:
            return _ORDER["no_face"], 0.0
        _, _, margin = suspicion(
            label,  # type: ignore[arg-type]
            "synthetic" if row.verdict_driver == "synthetic" else "manipulation",
            row.probability,
            row.synthetic_probability,
            self.terms.threshold,
            self.terms.synthetic_threshold,
        )
        return _ORDER.get(label, len(_ORDER)), -margin

    @property
    def earlier(self) -> int:
        """Files shown from an earlier run's rows."""
        return sum(from_earlier for *_, from_earlier in self._files.values())

    def add(self, row: ScanRow, earlier: str | None = None, key: str | None = None) -> None:
        """A row of this run, or (`earlier`: the output file it was read from) of an earlier run. A file's
        card (`key`, its path by default) takes the place of the one it had: a file a watch scanned again (a
        copy that stalled, then ended) was shown twice, its error beside its verdict."""
        self._files[row.path if key is None else key] = (
            self._place(row),
            self._added,
            _file(row, earlier),
            earlier is not None,
        )
        self._added += 1

    def html(self, outcome: str) -> str:
        """The page, most suspicious files first (`outcome`: the scan's summary line)."""
        terms = self.terms
        said = [outcome]
        if self.earlier:
            said.append(f"{numbered(self.earlier, 'earlier file')} shown from their rows")

        # Each score's band beside its threshold: a card reading "face-swap 56.0% · Inconclusive" under a
        # header of thresholds alone seemed to contradict it.
        def terms_of(name: str, threshold: float, band: InconclusiveBand | None) -> str:
            within = (
                ""
                if band is None
                else f", inconclusive {shown_probability(band.low)} to {shown_probability(band.high)}"
            )
            return f"{name} threshold {shown_probability(threshold)}{within}"

        scores = [terms_of("face-swap", terms.threshold, terms.band)]
        if terms.synthetic_threshold is not None:
            scores.append(terms_of("synthetic-face", terms.synthetic_threshold, terms.synthetic_band))
        uncalibrated = "" if terms.calibrated else f" ({not_calibrated(terms.threshold_given)})"
        said.append(f"model {terms.model}{uncalibrated} · {' · '.join(scores)}")
        made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        no_map = " (the synthetic-face score has no map)" if terms.has_synthetic else ""
        body = "".join(fragment for _, _, fragment, _ in sorted(self._files.values()))
        return (
            f"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width,initial-scale=1\"><meta http-equiv=Content-Security-Policy content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\"><title>Deepfake Shield scan</title>"
            f"<style>{_CSS}</style></head><body><h1>Deepfake Shield scan</h1>"
            f'<div class="muted">{_e(" · ".join(said))} · made {made}</div>'
            f'<p class="small muted">{_e(scope(terms.has_synthetic))} {_e(NOT_A_SOLE_BASIS)} No signs found does not prove a file authentic '
            f"({_e(BLIND_SPOT)}); heatmaps show where the face-swap score saw evidence (red), not a map of the edit{no_map}.</p>{body}</body></html>\n"
        )

    def write(self, path: os.PathLike[str] | str, outcome: str) -> None:
        """Write the page whole or not at all (atomic_file): a page cut short by a failure kept no earlier page
        either. The temporary pages killed scans left beside it (<page>.<pid>.part) go (clear_left): each scan
        wrote its own, of its own pid, and none was ever removed."""
        with atomic_file(Path(path), clear_left=True) as handle:
            handle.write(self.html(outcome).encode("utf-8"))
