"""Write an evaluation report folder: report.html (self-contained), metrics.json, scores.csv, files.csv, PNGs.

REPORT_DIR/
  report.html    one page; every picture is embedded (data: URIs), no script, no web font, no CDN
  metrics.json   every figure of the page (see deepshield.evaluation.summary)
  scores.csv     one row per scored face and condition (clean or a perturbation)
  files.csv      one row per file: status, score under each video rule and each perturbation
  plots/*.png    the page's plots; examples/*.png the worst cases' crops and heatmap overlays
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from deepshield.csv_rows import CsvRows
from deepshield.data.layout import atomic_text_file, atomic_write_bytes, atomic_write_text
from deepshield.evaluation import plots
from deepshield.evaluation.metrics import METRIC_NAMES
from deepshield.evaluation.scoring import CLEAN, ScoredSet
from deepshield.evaluation.shown import fraction_text
from deepshield.evaluation.summary import (
    CALLED_FAKE,
    Confusion,
    EvaluationSettings,
    EvaluationSummary,
    Interval,
    MetricBlock,
    PerturbationRow,
    face_level,
    file_level,
)
from deepshield.inference.results import scope
from deepshield.inference.video_rule import VideoRule
from deepshield.media.files import shown_name

METRIC_LABELS = {
    "auc": "AUC",
    "ap": "AP",
    "eer": "EER",
    "log_loss": "log-loss",
    "balanced_accuracy": "balanced acc.",
    "accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
}


# ------------------------------------------------------------------------------------------ files


# The report folder's image folders, whose PNGs each report writes afresh, and its figures file.
PLOTS, EXAMPLES, METRICS = "plots", "examples", "metrics.json"


def write_scores_csv(scored: ScoredSet, path: Path) -> Path:
    """One row per face and condition; a synthetic-face score's logit and probability beside the face-swap score's."""
    probabilities = scored.probabilities()
    columns = scored.faces
    synthetic = scored.synthetic_view()
    second = [] if synthetic is None else ["synthetic_logit", "synthetic_probability"]
    synthetic_probabilities = None if synthetic is None else synthetic.probabilities()
    with atomic_text_file(path, clear_left=True) as handle:
        writer = CsvRows(handle)
        writer.writerow(
            [
                "condition",
                "path",
                "label",
                "source",
                "method",
                "kind",
                "frame_index",
                "face_index",
                "track_id",
                "detection_score",
                "box_x0",
                "box_y0",
                "box_x1",
                "box_y1",
                "logit",
                "probability",
                *second,
            ]
        )
        for row in range(scored.face_count):
            f = scored.files[int(columns["file_id"][row])]
            writer.writerow(
                [
                    scored.conditions[int(columns["condition"][row])],
                    f.path,
                    f.label_name,
                    f.source,
                    f.method,
                    f.kind,
                    int(columns["frame_index"][row]),
                    int(columns["face_index"][row]),
                    int(columns["track_id"][row]),
                    f"{columns['detection_score'][row]:.4f}",
                    *(f"{columns[name][row]:.1f}" for name in ("x0", "y0", "x1", "y1")),
                    f"{columns['logit'][row]:.5f}",
                    f"{probabilities[row]:.6f}",
                ]
                + (
                    []
                    if synthetic_probabilities is None
                    else [f"{columns['synthetic_logit'][row]:.5f}", f"{synthetic_probabilities[row]:.6f}"]
                )
            )
    return path


def write_files_csv(
    scored: ScoredSet, settings: EvaluationSettings, path: Path, synthetic: EvaluationSettings | None = None
) -> Path:
    """One row per file: the face-swap score (`score`, called with its band and at its threshold) under each
    video rule and perturbation; with `synthetic` (the synthetic-face score's threshold and band), that score
    and its own call beside it: `called` alone read "no_signs_found" of a generated face scan calls likely
    AI-generated."""
    rule = settings.rule
    view = scored.synthetic_view() if synthetic is not None else None
    second = None if view is None else view.file_scores(CLEAN, rule)
    by_rule = {kind: scored.file_scores(CLEAN, VideoRule(kind=kind)) for kind in settings.rules}
    by_condition = {c: scored.file_scores(c, rule) for c in scored.conditions[1:]}
    clean = scored.file_scores(CLEAN, rule)
    counts = (
        np.bincount(scored.faces["file_id"][scored.condition_mask(CLEAN)], minlength=len(scored.files))
        if scored.face_count
        else np.zeros(len(scored.files), int)
    )

    def fmt(value: float) -> str:
        return "" if math.isnan(value) else f"{value:.6f}"

    band = settings.inconclusive
    with atomic_text_file(path, clear_left=True) as handle:
        writer = CsvRows(handle)
        header = [
            "path",
            "label",
            "source",
            "method",
            "group",
            "kind",
            "frames_sampled",
            "faces",
            "status",
            "reason",
            "score",
            "called",
            "called_at_threshold",
        ]
        if second is not None:
            header += ["synthetic_score", "synthetic_called"]
        writer.writerow([*header, *(f"score_{k}" for k in by_rule), *(f"score_{c}" for c in by_condition)])
        for f in scored.files:
            score = clean[f.file_id]
            status = "error" if f.error else ("no_face" if math.isnan(score) else "ok")
            called, at_threshold = (
                (status, status)
                if status != "ok"
                else (band.classify(score), "fake" if score >= settings.threshold else "real")
            )
            writer.writerow(
                [
                    f.path,
                    f.label_name,
                    f.source,
                    f.method,
                    f.group,
                    f.kind,
                    f.frames,
                    int(counts[f.file_id]),
                    status,
                    f.error,
                    fmt(score),
                    called,
                    at_threshold,
                ]
                + _second_score(second, synthetic, f.file_id, status)
                + [fmt(values[f.file_id]) for values in by_rule.values()]
                + [fmt(values[f.file_id]) for values in by_condition.values()]
            )
    return path


def _second_score(
    scores: np.ndarray | None, settings: EvaluationSettings | None, file_id: int, status: str
) -> list[str]:
    """files.csv's synthetic_score and synthetic_called cells of one file (none for a one-score model)."""
    if scores is None or settings is None:
        return []
    if status != "ok":
        return ["", status]
    return [f"{scores[file_id]:.6f}", settings.inconclusive.classify(float(scores[file_id]))]


def _png(image: np.ndarray, path: Path) -> Path:
    from deepshield.media.images import encode_png

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, encode_png(image), clear_left=True)
    return path


def write_plots(
    scored: ScoredSet, settings: EvaluationSettings, summary: EvaluationSummary, out: Path
) -> dict[str, Path]:
    """Every plot that the data allows (a one-class set has no ROC); name -> PNG path."""
    folder = out / PLOTS
    made: dict[str, Path] = {}
    files = file_level(scored, CLEAN, settings.rule, settings.no_face)
    faces = face_level(scored)
    both = {
        name: (d.labels, d.scores) for name, d in (("file", files), ("face", faces)) if len(np.unique(d.labels)) == 2
    }
    blocks = {"file": summary.file, "face": summary.face}
    if both:
        made["roc"] = plots.roc_curves(
            {f"{k} level (AUC {_num(blocks[k].value('auc'))})": v for k, v in both.items()}, folder / "roc.png"
        )
        made["pr"] = plots.pr_curves(
            {f"{k} level (AP {_num(blocks[k].value('ap'))})": v for k, v in both.items()}, folder / "pr.png"
        )
    calibration = summary.calibration
    reliabilities = {
        f"{k} level": rel for k, rel in (("file", calibration.file), ("face", calibration.face)) if rel is not None
    }
    if reliabilities:
        made["reliability"] = plots.reliability_plot(reliabilities, folder / "reliability.png")
    if files.labels.size:
        made["hist_file"] = plots.score_histograms(
            files.labels,
            files.scores,
            settings.threshold,
            folder / "hist_file.png",
            f"file scores ({settings.rule.kind})",
        )
        made["confusion_file"] = plots.confusion_plot(
            files.labels, files.scores, settings.threshold, folder / "confusion_file.png"
        )
    if faces.labels.size:
        made["hist_face"] = plots.score_histograms(
            faces.labels, faces.scores, settings.threshold, folder / "hist_face.png", "face probabilities"
        )
        made["confusion_face"] = plots.confusion_plot(
            faces.labels, faces.scores, settings.threshold, folder / "confusion_face.png"
        )
    if len(summary.perturbations) > 1:
        made["perturbations"] = plots.perturbation_plot(
            summary.perturbations, folder / "perturbations.png", _confidence(summary)
        )
    return made


def write_examples(scored: ScoredSet, summary: EvaluationSummary, out: Path) -> dict[str, list[dict]]:
    """Crop and heatmap overlay PNGs of the highest-scoring reals and lowest-scoring fakes, and of each of their
    face tracks (its most suspicious frame), with when each track was seen and whether it counts."""
    from deepshield.inference.heatmap import overlay

    by_path = {scored.files[e.file_id].path: e for e in scored.examples.values()}
    written: dict[str, list[dict]] = {}
    for kind, short in (("highest_real", "real"), ("lowest_fake", "fake")):
        written[kind] = []
        for rank, entry in enumerate(getattr(summary.worst, kind), start=1):
            example = by_path.get(entry.path)
            if example is None:
                continue
            crop = _png(example.crop, out / EXAMPLES / f"{short}_{rank:02d}_crop.png")
            heat = _png(overlay(example.crop, example.heatmap), out / EXAMPLES / f"{short}_{rank:02d}_heatmap.png")
            tracks = [
                {
                    "track_id": t.track_id,
                    "score": t.score,
                    "frames_seen": t.frames_seen,
                    "first_frame": t.first_frame,
                    "last_frame": t.last_frame,
                    "first_s": t.first_s,
                    "last_s": t.last_s,
                    "peak_frame": t.peak_frame,
                    "not_counted_reason": t.not_counted_reason,
                    "crop": _png(t.crop, out / EXAMPLES / f"{short}_{rank:02d}_track{t.track_id}_crop.png"),
                    "heatmap": _png(
                        overlay(t.crop, t.heatmap),
                        out / EXAMPLES / f"{short}_{rank:02d}_track{t.track_id}_heatmap.png",
                    ),
                }
                for t in example.tracks
            ]
            written[kind].append({**entry.model_dump(), "crop": crop, "heatmap": heat, "tracks": tracks})
    return written


# ------------------------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1b1f24;padding:0 1rem}
h1{font-size:1.6rem}h2{margin-top:2.2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem;font-size:1.25rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}th,td{border:1px solid #d0d7de;padding:.3rem .55rem;text-align:right}
th{background:#f6f8fa}td.l,th.l{text-align:left}.ci{color:#57606a;font-size:.8em}.muted{color:#57606a}
.plots{display:flex;flex-wrap:wrap;gap:1rem}.plots figure{margin:0}.plots img{max-width:520px;width:100%;border:1px solid #eee}
.gallery{display:flex;flex-wrap:wrap;gap:.8rem}.gallery figure{margin:0;width:230px;font-size:.75rem;word-break:break-all}
.gallery img{width:112px;height:112px;image-rendering:auto;border:1px solid #ccc}.gallery .track{margin-top:.4rem}.gallery .track img{width:56px;height:56px}.warn{background:#fff8c5;padding:.5rem .8rem;border:1px solid #d4a72c}
.bad{color:#cf222e}.good{color:#1a7f37}code{font-size:.85em}
.wide{max-width:100%;overflow-x:auto}th.n{background:none;font-weight:400}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%);white-space:nowrap}
@media print{.wide{overflow:visible}figure,.track,tr{break-inside:avoid}h2{break-after:avoid}}
"""


def _table(rows: str, caption: str) -> str:
    """A table in a box of its own that scrolls sideways where the page is narrower than it (a phone, 200% zoom):
    the metrics' thirteen columns pushed the whole page, its text too, sideways at 320 px. On paper the box lets
    the table show whole, as the browser fits it to the page. `caption`: the table's name, for a screen reader's
    list of tables (the heading above says it to the eye)."""
    return f'<div class="wide"><table><caption class="sr">{_e(caption)}</caption>{rows}</table></div>'


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _img(path: Path | None, caption: str, alt: str) -> str:
    """A plot under its `caption`; `alt`: what it shows, for a reader who cannot see it (the caption again said
    only "ROC curves")."""
    if path is None:
        return ""
    return (
        f'<figure><img src="{_data_uri(path)}" alt="{html.escape(alt)}">'
        f'<figcaption class="muted">{html.escape(caption)}</figcaption></figure>'
    )


def _by_level(summary: EvaluationSummary, metric: str) -> str:
    """A metric at both levels as the plots' legends give it ("file level 0.602, face level 0.605")."""
    return ", ".join(
        f"{level} level {_num(block.value(metric))}"
        for level, block in (("file", summary.file), ("face", summary.face))
        if block.value(metric) is not None
    )


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return "–"
    return fraction_text(value, digits) if isinstance(value, float) else str(value)


def _calibration_figure(value: float | None) -> str:
    """A temperature or an offset as the model card's text gives it (4 significant digits): not a fraction, and
    printed whole it read 4.396733992401202."""
    return "–" if value is None else f"{value:.4g}"


def _with_ci(entry: Interval | None) -> str:
    if entry is None:
        return "–"
    text = _num(entry.value)
    if entry.low is not None:
        text += f' <span class="ci">[{_num(entry.low)}, {_num(entry.high)}]</span>'
    return text


def _e(text) -> str:
    return html.escape(shown_name(str(text)))


def _metrics_table(rows: list[tuple[str, MetricBlock]], caption: str) -> str:
    """Each row headed by its name (a screen reader read a column's figures with no word of their row)."""
    head = (
        "<tr><td></td><th scope=col>files</th><th scope=col>samples</th><th scope=col>fakes</th>"
        + "".join(f"<th scope=col>{METRIC_LABELS[n]}</th>" for n in METRIC_NAMES)
        + "</tr>"
    )
    body = []
    cautioned: dict[str, list[str]] = {}  # caution -> the rows it applies to, one footnote each
    for name, block in rows:
        mark = ""
        if block.caution:  # a block over few files, with metrics or a one-class rate (metric_block)
            cautioned.setdefault(block.caution, []).append(name)
            mark = "†"
        cells = f"<th scope=row class='l n'>{_e(name)}{mark}</th><td>{block.files}</td><td>{block.count}</td><td>{block.positives}</td>"
        if block.metrics:
            cells += "".join(f"<td>{_with_ci(block.metrics[n])}</td>" for n in METRIC_NAMES)
        else:
            rate = block.detection_rate or block.true_negative_rate
            what = "detection rate" if block.detection_rate else "true-negative rate"
            note = f"{what} {_with_ci(rate)} — " if rate else ""
            cells += (
                f'<td class=l colspan={len(METRIC_NAMES)}>{note}<span class="muted">{_e(block.error or "")}</span></td>'
            )
        body.append(f"<tr>{cells}</tr>")
    notes = "".join(
        f'<p class="muted caution">† {_e(", ".join(names))}: {_e(caution)}</p>' for caution, names in cautioned.items()
    )
    return f"{_table(head + ''.join(body), caption)}{notes}"


def _confusion_table(block: MetricBlock, title: str) -> str:
    c: Confusion | None = block.confusion
    if c is None:
        return ""
    return _table(
        f"<tr><th class=l scope=col>{_e(title)}</th><th scope=col>called real</th><th scope=col>called fake</th></tr>"
        f"<tr><th class=l scope=row>real</th><td>{c.tn}</td><td>{c.fp}</td></tr>"
        f"<tr><th class=l scope=row>fake</th><td>{c.fn}</td><td>{c.tp}</td></tr>",
        f"{title} by label and call at the threshold",
    )


def _confidence(summary: EvaluationSummary) -> float | None:
    """The intervals' confidence, None without intervals (--bootstrap 0): the robustness table and its plot
    said "95% CI" of intervals they did not have, or had at another confidence."""
    return summary.settings.confidence if summary.settings.bootstrap_resamples else None


def _perturbation_table(rows: list[PerturbationRow], sources: list[str], confidence: float | None) -> str:
    interval = "" if confidence is None else f" [{confidence:.0%} CI]"
    head = f"<tr><th class=l scope=col>condition</th><th scope=col>file AUC{interval}</th><th scope=col>Δ vs clean</th><th scope=col>face AUC</th><th scope=col>Δ vs clean</th><th scope=col>balanced acc.</th><th scope=col>recall</th><th scope=col>FPR</th><th scope=col>files without a face</th><th scope=col>files that lost their face (fake / real)</th><th scope=col>faces</th>"
    if len(sources) > 1:
        head += "".join(f"<th scope=col>{_e(s)} file AUC</th>" for s in sources)
    head += "</tr>"
    body = []
    for r in rows:
        auc = Interval(value=r.file_auc, low=r.file_auc_low, high=r.file_auc_high)

        def delta(value):
            if value is None:
                return "–"
            css = "bad" if value < -0.02 else ("good" if value > 0.02 else "")
            return f'<span class="{css}">{value:+.3f}</span>'

        cells = (
            f"<th scope=row class='l n'>{_e(r.condition)}</th><td>{_with_ci(auc)}</td><td>{delta(r.file_auc_change)}</td><td>{_num(r.face_auc)}</td>"
            f"<td>{delta(r.face_auc_change)}</td><td>{_num(r.file_balanced_accuracy)}</td><td>{_num(r.file_recall)}</td>"
            f"<td>{_num(r.file_false_positive_rate)}</td><td>{r.files_without_face}</td>"
            f"<td>{r.fakes_lost} / {r.reals_lost}</td><td>{r.faces}</td>"
        )
        if len(sources) > 1:
            cells += "".join(f"<td>{_num(r.by_source_file_auc.get(s))}</td>" for s in sources)
        body.append(f"<tr>{cells}</tr>")
    return _table(head + "".join(body), "metrics under each perturbation")


def _listing(entries: Sequence[BaseModel], columns: list[str], caption: str, limit: int = 200) -> str:
    """Entries a row each, headed by their first column (the path)."""
    if not entries:
        return '<p class="muted">none</p>'
    head = "".join(f"<th class=l scope=col>{_e(c)}</th>" for c in columns)
    rows = "".join(
        f"<tr><th scope=row class='l n'>{_e(getattr(e, columns[0]))}</th>"
        + "".join(f"<td class=l>{_e(getattr(e, c))}</td>" for c in columns[1:])
        + "</tr>"
        for e in entries[:limit]
    )
    more = f'<p class="muted">… and {len(entries) - limit} more (see metrics.json)</p>' if len(entries) > limit else ""
    return f"{_table(f'<tr>{head}</tr>{rows}', caption)}{more}"


def _gallery(entries: list[dict], what: str, threshold: float, wrong: str) -> str:
    """`wrong`: what the threshold makes of an entry on the wrong side of it (a real flagged, a fake missed)."""
    if not entries:
        return f'<p class="muted">no {what} among the files scored</p>'
    figures = []
    for e in entries:
        image = not e["video"]
        where = f"face {e['face_index']}" if image else f"frame {e['frame_index']}, face {e['face_index']}"
        misjudged = (e["score"] >= threshold) == (wrong == "flagged")
        call = (
            f'<span class="bad">{wrong}</span>'
            if misjudged
            else '<span class="muted">right side of the threshold</span>'
        )
        score = _beside(e["score"], threshold)
        tracks = _face_list(e.get("tracks", []), threshold) if image else _track_list(e.get("tracks", []), threshold)
        # Each picture named by its file and score: a screen reader read "crop, heatmap" twenty times over. The
        # face's own score, and the file's apart: a video's (its rule over its tracks) is not its top face's.
        name = _e(Path(e["path"]).name)
        face = _beside(e["face_probability"], threshold)
        figures.append(
            f'<figure><img src="{_data_uri(e["crop"])}" alt="{name}: most suspicious face, score {face} (file score {score})">'
            f'<img src="{_data_uri(e["heatmap"])}" alt="{name}: heatmap of that face (red: looks manipulated)">'
            f"<figcaption><b>score {score}</b> (face {face}) · {call}<br>{_e(e['path'])}<br>"
            f'<span class="muted">{_e(e["source"])} / {_e(e["method"])} · {where}</span>{tracks}</figcaption></figure>'
        )
    return f'<div class="gallery">{"".join(figures)}</div>'


def _beside(score: float, threshold: float) -> str:
    """A score to three decimals, or more where rounding would carry it across the threshold (0.5556
    under a threshold of 0.5558 would read 0.556, above it)."""
    digits = 3
    while digits < 6 and (score >= threshold) != (round(score, digits) >= threshold):
        digits += 1
    return _num(score, digits)


def _face_list(faces: list[dict], threshold: float) -> str:
    """An image's faces under its gallery entry, when it has several: each one's crop, heatmap and score."""
    if len(faces) < 2:
        return ""  # its one face is the entry above
    return "".join(
        _face_pair(f, f"face {f['track_id']}", f"face {f['track_id']}: <b>{_beside(f['score'], threshold)}</b>")
        for f in faces
    )


def _face_pair(entry: dict, name: str, caption: str, crop_alt: str | None = None) -> str:
    """A face's crop and heatmap side by side, with `caption` (HTML) under them."""
    return (
        f'<div class="track"><img src="{_data_uri(entry["crop"])}" alt="{crop_alt or name}">'
        f'<img src="{_data_uri(entry["heatmap"])}" alt="{name} heatmap"><div>{caption}</div></div>'
    )


def _track_list(tracks: list[dict], threshold: float) -> str:
    """A video's face tracks under its gallery entry: who each is, when it was seen, whether it counts."""
    if len(tracks) < 2 and not any(t["frames_seen"] > 1 for t in tracks):
        return ""  # a single face seen once: the entry above already shows it
    items = []
    for t in tracks:
        when = (
            f"{t['first_s']:.1f}–{t['last_s']:.1f} s"
            if t["first_s"] is not None
            else f"frames {t['first_frame']}–{t['last_frame']}"
        )
        counted = "counts" if t["not_counted_reason"] is None else f"does not count: {_e(t['not_counted_reason'])}"
        items.append(
            _face_pair(
                t,
                f"track {t['track_id']}",
                f"track {t['track_id']}: <b>{_beside(t['score'], threshold)}</b> · {t['frames_seen']} frames, {when} · "
                f"peak frame {t['peak_frame']} · {counted}",
                crop_alt=f"track {t['track_id']} face",
            )
        )
    return "".join(items)


def _synthetic_section(synthetic: EvaluationSummary | None, sources: list[str]) -> list[str]:
    """The synthetic-face score's figures (a two-output bundle): the same metrics, its own threshold, and
    under each perturbation."""
    if synthetic is None:
        return []
    perturbed = (
        [
            "<p>Under each perturbation (the same faces as above):</p>",
            _perturbation_table(synthetic.perturbations, sources, _confidence(synthetic)),
        ]
        if len(synthetic.perturbations) > 1
        else []
    )
    faces = [("all", synthetic.face)] + [(name, block.face) for name, block in synthetic.by_source.items()]
    flagged = [
        (name, face.confusion.false_positive_rate)
        for name, face in faces
        if face.confusion is not None and face.confusion.false_positive_rate is not None
    ]
    return [
        "<h2>Synthetic-face score</h2>",
        "<p>The same faces scored by the model's second output (is the face fully AI-generated?), "
        f"with its own temperature {_calibration_figure(synthetic.model.temperature)}, offset "
        f"{_calibration_figure(synthetic.model.offset)} and threshold "
        f"{synthetic.settings.threshold:.4f}. A set whose fakes are face swaps is not what this score "
        "judges: read its AUC on sets of generated faces.</p>",
        _metrics_table(
            [("file level", synthetic.file), ("face level", synthetic.face)]
            + [(f"{name} · face", block.face) for name, block in synthetic.by_source.items()],
            "synthetic-face score metrics",
        ),
        "<p>Real faces flagged synthetic (at its threshold): "
        + (", ".join(f"{_e(name)} {rate:.1%}" for name, rate in flagged) or "none to flag: the set has no real faces")
        + "</p>",
        *perturbed,
    ]


def render_html(
    summary: EvaluationSummary, images: dict[str, Path], examples: dict[str, list[dict]], title: str
) -> str:
    s = summary.settings
    counts = summary.counts
    model = summary.model
    sources = sorted(summary.by_source)
    calibration = summary.calibration
    parts = [
        f'<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content="width=device-width,initial-scale=1"><title>{_e(title)}</title><style>{CSS}</style></head><body>',
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">{_e(scope(summary.synthetic is not None))}</p>',
        f'<p class="muted">Written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC · model <b>{_e(model.name or "?")} {_e(model.version or "")}</b>'
        f" · data: {_e(', '.join(s.datasets))}</p>",
        _table(
            "".join(
                f"<tr><th class=l scope=row>{_e(k)}</th><td class=l>{_e(v)}</td></tr>"
                for k, v in (
                    (f"face-swap score's threshold ({CALLED_FAKE})", f"{s.threshold:.4f}"),
                    ("its temperature", _calibration_figure(model.temperature)),
                    (
                        "its offset (probability = sigmoid((logit − offset) / temperature))",
                        _calibration_figure(model.offset),
                    ),
                    ("video rule (headline)", s.video_rule_text),
                    ("frames sampled per video", "–" if s.frames is None else s.frames),
                    (
                        "files",
                        f"{counts.files} ({counts.real_files} real, {counts.fake_files} fake; {counts.images} images, "
                        f"{counts.videos} videos, {counts.missing_files} missing, {counts.unreadable_files} unreadable)",
                    ),
                    (
                        "files with a face / without / missing / unreadable",
                        f"{counts.files_with_face} / {counts.files_without_face} / {counts.missing_files} / {counts.unreadable_files}",
                    ),
                    ("files in file-level metrics", counts.files_in_file_metrics),
                    ("faces scored (clean)", counts.faces),
                    (
                        "files without a face",
                        "left out of file-level metrics (counted and listed below)"
                        if s.no_face == "exclude"
                        else "scored 0 (called real) in file-level metrics",
                    ),
                    (
                        "confidence intervals",
                        f"{s.confidence:.0%} percentile bootstrap, {s.bootstrap_resamples} resamples of files (stratified by class), seed {s.seed}"
                        if s.bootstrap_resamples
                        else "not computed (--bootstrap 0)",
                    ),
                )
            ),
            "what was evaluated, and how",
        ),
    ]
    for note in summary.notes:
        parts.append(f'<p class="warn">{_e(note)}</p>')
    parts += [
        "<h2>Headline metrics</h2>",
        "<p>The face-swap score's figures. File level: one score per file (the video rule over its face tracks; an image's most suspicious face). "
        "Face level: every face of every sampled frame, labelled with its file's label. Intervals in grey.</p>",
        _metrics_table([("file level", summary.file), ("face level", summary.face)], "headline metrics"),
        '<div class="plots">'
        + _confusion_table(summary.file, "files")
        + _confusion_table(summary.face, "faces")
        + "</div>",
        '<div class="plots">'
        + _img(
            images.get("roc"),
            "ROC curves",
            f"ROC curves: fakes caught against reals flagged at every threshold; AUC {_by_level(summary, 'auc')}",
        )
        + _img(
            images.get("pr"),
            "precision-recall curves",
            f"precision-recall curves: precision against fakes caught at every threshold; AP {_by_level(summary, 'ap')}",
        )
        + "</div>",
        "<h2>Calibration</h2>",
        "<p>Do probabilities mean what they say? Each point is a bin of scores: mean predicted probability against the observed fraction of fakes. "
        f"Expected calibration error: file level {_num(calibration.file and calibration.file.ece)}, face level {_num(calibration.face and calibration.face.ece)}.</p>",
        '<div class="plots">'
        + _img(
            images.get("reliability"),
            "reliability diagram",
            "reliability diagram: the fraction of fakes in each bin of scores against its mean score, the diagonal "
            f"perfectly calibrated, with each bin's count below; expected calibration error file level "
            f"{_num(calibration.file and calibration.file.ece)}, face level {_num(calibration.face and calibration.face.ece)}",
        )
        + _img(
            images.get("hist_file"),
            "file score histogram per class",
            f"histogram of the file scores of real and of fake files, the threshold {s.threshold:.4f} dashed",
        )
        + _img(
            images.get("hist_face"),
            "face probability histogram per class",
            f"histogram of the face probabilities of real and of fake files' faces, the threshold {s.threshold:.4f} dashed",
        )
        + "</div>",
        "<h2>By source dataset</h2>",
        _metrics_table(
            [(f"{name} · file", block.file) for name, block in summary.by_source.items()]
            + [(f"{name} · face", block.face) for name, block in summary.by_source.items()],
            "metrics by source dataset",
        ),
        *_synthetic_section(summary.synthetic, sources),
        "<h2>By manipulation method</h2>",
        "<p>Each method's fakes against every real file of the sources the method appears in.</p>",
        _metrics_table(
            [(f"{name} · file", block.file) for name, block in summary.by_method.items()],
            "metrics by manipulation method",
        )
        if summary.by_method
        else '<p class="muted">no fakes</p>',
        "<h2>Video rules compared</h2>",
        "<p>The same face scores aggregated per file by each rule (file level). For images every rule gives the most suspicious face.</p>",
        _metrics_table(
            [(f"{kind}", block.file) for kind, block in summary.video_rules.items()], "metrics by video rule"
        ),
    ]
    if any(block.videos_only is not None for block in summary.video_rules.values()):
        parts.append(
            "<p>Videos only:</p>"
            + _metrics_table(
                [
                    (f"{kind} (videos)", block.videos_only)
                    for kind, block in summary.video_rules.items()
                    if block.videos_only is not None
                ],
                "metrics by video rule, videos only",
            )
        )
    parts.append(
        "<ul>"
        + "".join(f"<li><b>{_e(kind)}</b>: {_e(block.rule)}</li>" for kind, block in summary.video_rules.items())
        + "</ul>"
    )
    parts += ["<h2>Robustness to perturbations</h2>"]
    if len(summary.perturbations) > 1:
        parts += [
            "<p>Each perturbation is applied to the full frame before face detection (video frames one by one), then the set is scored again. "
            "Files that lose their face under a perturbation follow the no-face policy above, and are counted (a fake "
            "whose face is hidden is missed by the product); Δ vs clean compares the files with a face under both.</p>",
            _perturbation_table(summary.perturbations, sources, _confidence(summary)),
            '<div class="plots">'
            + _img(
                images.get("perturbations"),
                "AUC under perturbations",
                f"bar chart of the file AUC{'' if _confidence(summary) is None else ' (with its interval)'} and face "
                "AUC under each perturbation, as in the table above",
            )
            + "</div>",
        ]
    else:
        parts.append(
            '<p class="muted">no perturbation requested (use --perturb jpeg:90,70,50 h264:23,35 resize:0.5 blur:1.5 noise:5)</p>'
        )
    parts += [
        "<h2>Real files scored highest</h2><p>The false positives first, then the real files nearest to being flagged; "
        "the most suspicious face, its crop and heatmap (red: looks manipulated).</p>",
        _gallery(examples.get("highest_real", []), "real files", s.threshold, "flagged"),
        "<h2>Fake files scored lowest</h2><p>The fakes missed first, then those nearest to being missed; their most "
        "suspicious face.</p>",
        _gallery(examples.get("lowest_fake", []), "fake files", s.threshold, "missed"),
        f"<h2>Files without a face ({len(summary.no_face_files)})</h2>",
        _listing(summary.no_face_files, ["path", "label", "source", "method"], "files without a face"),
        f"<h2>Missing files ({len(summary.missing_files)})</h2>",
        '<p class="muted">named by the dataset\'s listing (metadata.json, CSV) but not on disk</p>'
        if summary.missing_files
        else "",
        _listing(summary.missing_files, ["path", "label", "source"], "missing files"),
        f"<h2>Unreadable files ({len(summary.unreadable_files)})</h2>",
        _listing(summary.unreadable_files, ["path", "label", "source", "reason"], "unreadable files"),
    ]
    if summary.unlabelled_entries:
        parts += [
            f"<h2>Unlabelled entries ({len(summary.unlabelled_entries)})</h2>",
            _listing(summary.unlabelled_entries, ["path", "reason"], "unlabelled entries"),
        ]
    parts.append(
        '<p class="muted">Figures: metrics.json · per-face scores: scores.csv · per-file scores: files.csv</p></body></html>'
    )
    return "\n".join(parts)


def write_report(
    scored: ScoredSet,
    settings: EvaluationSettings,
    summary: EvaluationSummary,
    out: Path,
    title: str = "Deepfake Shield evaluation",
    synthetic: EvaluationSettings | None = None,
) -> Path:
    """Write the report folder; returns the path of report.html. `synthetic`: the synthetic-face score's
    settings (its threshold and band), for files.csv's calls of it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / METRICS).is_file():  # an earlier report's images here would pass for this one's: its PNGs go
        for folder in (PLOTS, EXAMPLES):
            for image in (out / folder).glob("*.png"):
                image.unlink()
    atomic_write_text(out / METRICS, json.dumps(summary.to_json(), indent=2, allow_nan=False) + "\n", clear_left=True)
    write_scores_csv(scored, out / "scores.csv")
    write_files_csv(scored, settings, out / "files.csv", synthetic)
    images = write_plots(scored, settings, summary, out)
    examples = write_examples(scored, summary, out)
    page = out / "report.html"
    atomic_write_text(page, render_html(summary, images, examples, title), clear_left=True)
    return page


def log_report(tracker, summary: EvaluationSummary, report_dir: Path) -> None:
    """Params, headline metrics (both levels, with interval ends; a synthetic-face score's as synthetic_<name>),
    the perturbation AUCs and the folder."""
    recorded = summary.to_json()
    tracker.log_params({part: recorded[part] for part in ("model", "settings", "counts")})
    metrics = {**summary.headline("file"), **summary.headline("face")}
    if summary.synthetic is not None:  # the second score's, named apart from the face-swap score's
        metrics |= {
            f"synthetic_{k}": v for level in ("file", "face") for k, v in summary.synthetic.headline(level).items()
        }
    for row in summary.perturbations:
        name = row.condition.replace(":", "_")
        if row.file_auc is not None:
            metrics[f"perturb_{name}_file_auc"] = row.file_auc
        if row.face_auc is not None:
            metrics[f"perturb_{name}_face_auc"] = row.face_auc
    for kind, block in summary.video_rules.items():
        auc = block.file.value("auc")
        if auc is not None:
            metrics[f"rule_{kind}_file_auc"] = auc
    tracker.log_metrics(metrics)
    tracker.log_artifact(report_dir, "evaluation")
