"""Dataset statistics: counts per label, source, method and split; bar charts; optional MLflow run;
and warnings about biases a model would happily learn instead of the manipulation."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from deepshield.data.layout import DatasetLayout, atomic_file, atomic_write_text
from deepshield.data.manifest import (
    ALREADY_HELD,
    LISTED_TWICE,
    SPLITS,
    CropRecord,
    ErrorRecord,
    read_errors,
    read_info,
    read_manifest,
)
from deepshield.data.sources import FAKE, LABELS, REAL
from deepshield.data.split import empty_split_warning, one_label_split_warning
from deepshield.one_line import one_line
from deepshield.plural import numbered, plural

if TYPE_CHECKING:
    from deepshield.tracking.tracker import Tracker

LABEL_COLOURS = {REAL: "#2e7d32", FAKE: "#c62828"}


@dataclass
class DatasetStats:
    crops: int
    by_label: dict[str, int]
    by_source: dict[str, dict[str, int]]  # source -> label -> crops
    by_method: dict[str, dict[str, int]]
    by_split: dict[str, dict[str, int]]
    files: int  # distinct source files
    files_by_label: dict[
        str, int
    ]  # distinct source files per label (a real video with synthesised fakes counts in both)
    groups: int
    errors_by_reason: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    already_held: int = 0  # files add-real skipped, being in the dataset already (not files without a crop)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def _table(records: Sequence[CropRecord], key) -> dict[str, dict[str, int]]:
    out: dict[str, Counter] = {}
    for record in records:
        out.setdefault(key(record), Counter())[record.label] += 1
    return {name: {label: out[name][label] for label in LABELS} for name in sorted(out)}


def _error_reason(reason: str) -> str:
    """Collapse per-file details ('line 12: ...', sizes) so that reasons count as categories."""
    if reason.startswith(LISTED_TWICE):  # the rest names the file it repeats: a line each, 3 copies of 3 photos
        return LISTED_TWICE
    reason = re.sub(r"^line \d+: ", "", reason)
    return reason.split(":")[0].strip() or reason


def source_warnings(by_source: dict[str, dict[str, int]], by_label: dict[str, int]) -> list[str]:
    """Warn when real and fake faces come from different sources: a model can learn the source
    (camera, resolution, compression, framing) instead of the fake."""
    if not (by_label.get(REAL) and by_label.get(FAKE)) or not by_source:
        return []
    only_real = sorted(s for s, c in by_source.items() if c[REAL] and not c[FAKE])
    only_fake = sorted(s for s, c in by_source.items() if c[FAKE] and not c[REAL])
    if not only_real and not only_fake:
        return []
    parts = []
    if only_real:
        parts.append(f"only real faces from {', '.join(only_real)}")
    if only_fake:
        parts.append(f"only fake faces from {', '.join(only_fake)}")
    return [
        "real and fake faces come from different sources ("
        + "; ".join(parts)
        + "): a model can learn to tell the sources apart (camera, resolution, compression) instead of the fake. "
        "Add faces of the missing label from the same sources (`dataset balance --add-real` / `--synth-fakes`) "
        "and report test results per source."
    ]


def split_warnings(
    by_split: dict[str, dict[str, int]],
    by_label: dict[str, int],
    ratios: Sequence[float] | None = None,
) -> list[str]:
    """A split left empty or without one label. `ratios`: the shares the dataset was split by (dataset.json);
    a split given none is empty as asked (prepare --split 1,0,0), so not warned of."""
    shares = dict(zip(SPLITS, ratios)) if ratios is not None else {}
    out = []
    for split, counts in by_split.items():
        if not sum(counts.values()):
            if shares.get(split, 1) <= 0:
                continue
            out.append(empty_split_warning(split))
            continue
        missing = [label for label in LABELS if by_label.get(label) and not counts.get(label)]
        if missing:
            out.append(one_label_split_warning(split, missing))
    return out


def compute_stats(
    records: Sequence[CropRecord], errors: Sequence[ErrorRecord] = (), ratios: Sequence[float] | None = None
) -> DatasetStats:
    by_label: dict[str, int] = {label: sum(1 for r in records if r.label == label) for label in LABELS}
    by_source = _table(records, lambda r: r.source)
    by_split_raw = _table(records, lambda r: r.split or "unsplit")
    by_split = {split: by_split_raw.get(split, dict.fromkeys(LABELS, 0)) for split in SPLITS}
    by_split.update({k: v for k, v in by_split_raw.items() if k not in by_split})
    files: dict[str, set] = {label: set() for label in LABELS}
    for record in records:
        files.setdefault(record.label, set()).add(record.source_file)
    # Skipped by add-real: they have crops (as the files the dataset holds), so they are no errors.
    held = sum(e.reason == ALREADY_HELD for e in errors)
    reasons = Counter(_error_reason(e.reason) for e in errors if e.reason != ALREADY_HELD)
    stats = DatasetStats(
        crops=len(records),
        by_label=by_label,
        by_source=by_source,
        by_method=_table(records, lambda r: r.method),
        by_split=by_split,
        files=len({r.source_file for r in records}),
        files_by_label={label: len(files[label]) for label in LABELS},
        groups=len({r.group for r in records}),
        errors_by_reason=dict(sorted(reasons.items())),
        already_held=held,
    )
    stats.warnings = class_warnings(by_label, bool(errors)) or (
        source_warnings(by_source, by_label) + split_warnings(by_split, by_label, ratios)
    )
    return stats


def dataset_stats(dataset_dir: Path | str) -> DatasetStats:
    """A prepared dataset's stats from its manifest, errors.csv and split shares: `dataset stats` and the
    warnings `dataset balance` ends with (which, without errors.csv, said "no face crops" and not why)."""
    return compute_stats(read_manifest(dataset_dir), read_errors(dataset_dir), split_ratios(dataset_dir))


def split_ratios(dataset_dir: Path | str) -> tuple[float, float, float] | None:
    """The --split shares the dataset was prepared with, None without a dataset.json (a bare manifest)."""
    if not DatasetLayout(dataset_dir).info.exists():
        return None
    low, middle, high = read_info(dataset_dir).split
    return low, middle, high


def class_warnings(by_label: dict[str, int], has_errors: bool) -> list[str]:
    """A dataset with no crop, or one class only, said first (it read "split train is empty (too few
    groups?)", or nothing at all)."""
    if not any(by_label.values()):
        return ["no face crops" + (": errors.csv says why for each file" if has_errors else "")]
    missing = [label for label in LABELS if not by_label.get(label)]
    if missing:
        return [f"the dataset has no {missing[0]} faces: a detector cannot be trained or measured on one class"]
    return []


def format_stats(stats: DatasetStats) -> str:
    lines = [
        f"{numbered(stats.crops, 'face crop')} from {numbered(stats.files, 'file')} in {numbered(stats.groups, 'group')}"
    ]

    def block(title: str, table: dict[str, dict[str, int]]) -> None:
        # A source or method is a folder's or a CSV cell's text: a newline in it forged a row of its own.
        rows = {one_line(name): counts for name, counts in table.items()}
        width = max([len(title), *map(len, rows)])
        lines.append("")
        lines.append(f"{title.upper():<{width}}  {'REAL':>8}  {'FAKE':>8}  {'TOTAL':>8}")
        for name, counts in rows.items():
            lines.append(f"{name:<{width}}  {counts[REAL]:>8}  {counts[FAKE]:>8}  {counts[REAL] + counts[FAKE]:>8}")

    block("label", {"all": stats.by_label})
    block("split", stats.by_split)
    block("source", stats.by_source)
    block("method", stats.by_method)
    if stats.errors_by_reason:
        lines.append("")
        lines.append("ERRORS (files without a crop)")
        lines.extend(f"{count:>8}  {one_line(reason)}" for reason, count in stats.errors_by_reason.items())
    if stats.already_held:
        lines += [
            "",
            f"{numbered(stats.already_held, 'file')} given to add-real {plural(stats.already_held, 'was', 'were')} in the dataset already (not added again)",
        ]
    return "\n".join(lines) + "\n"


def _bar_chart(table: dict[str, dict[str, int]], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = list(table)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 2), 3.6), dpi=100)
    # Side by side, each count (a label's 0 too) above its own bar: stacked, with the counts in white inside,
    # 1 real face under 1,200 fakes was a segment under a pixel high and its "1" white over the axis.
    width = 0.4
    for i, label in enumerate(LABELS):
        values = [table[name][label] for name in names]
        places = [k + (i - (len(LABELS) - 1) / 2) * width for k in range(len(names))]
        bars = ax.bar(places, values, width, color=LABEL_COLOURS[label], label=label)
        ax.bar_label(bars, labels=[str(v) for v in values], padding=2, fontsize=8)
    ax.set_xticks(range(len(names)), names)
    ax.margins(y=0.12)  # room for the counts above the tallest bar
    ax.set_title(title)
    ax.set_ylabel("face crops")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the axes: over no bar or count
    if len(names) > 4 or max(map(len, names), default=0) > 10:
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    try:
        with atomic_file(path, clear_left=True) as handle:  # a killed writer's temporary file goes
            # The picture grows to hold long names, the axes keep their size: tight_layout shrank them to a strip for
            # a name of 45 characters, and still let the name's start run off the picture's edge.
            fig.savefig(handle, format="png", metadata={"Software": None}, bbox_inches="tight", pad_inches=0.1)
    finally:
        plt.close(fig)
    return path


def plot_stats(stats: DatasetStats, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        _bar_chart({"all": stats.by_label}, "Crops per label", out_dir / "labels.png"),
        _bar_chart(stats.by_split, "Crops per split", out_dir / "splits.png"),
        _bar_chart(stats.by_source, "Crops per source", out_dir / "sources.png"),
        _bar_chart(stats.by_method, "Crops per method", out_dir / "methods.png"),
    ]


def _metric_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", text)


def log_stats(tracker: Tracker, stats: DatasetStats, dataset_dir: Path, stats_dir: Path | None) -> None:
    """The counts as metrics and the charts as artifacts (None: none were saved) of an MLflow run (`deepshield
    dataset stats`)."""
    metrics = {"crops": stats.crops, "files": stats.files, "groups": stats.groups}
    metrics.update({f"crops_{label}": n for label, n in stats.by_label.items()})
    for prefix, table in (("source", stats.by_source), ("method", stats.by_method), ("split", stats.by_split)):
        for name, counts in table.items():
            for label, n in counts.items():
                metrics[_metric_name(f"{prefix}.{name}.{label}")] = n
    metrics["errors"] = sum(stats.errors_by_reason.values())
    tags = {"deepshield.kind": "dataset-stats", "dataset_dir": str(dataset_dir.resolve())}
    if stats.warnings:
        tags["warnings"] = " | ".join(stats.warnings)[:5000]
    tracker.set_tags(tags)
    tracker.log_metrics({k: float(v) for k, v in metrics.items()})
    if stats_dir is not None:
        tracker.log_artifact(stats_dir, "stats")


def write_stats(stats: DatasetStats, dataset_dir: Path) -> list[Path]:
    """stats/stats.json and the bar charts under DATASET_DIR/stats/."""
    out_dir = DatasetLayout(dataset_dir).stats
    pngs = plot_stats(stats, out_dir)
    atomic_write_text(out_dir / "stats.json", stats.to_json(), clear_left=True)
    return pngs
