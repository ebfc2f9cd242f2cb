"""Plots people read faster than tables: curves, confusion matrix, example grids."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from deepshield.data.layout import atomic_file
from deepshield.evaluation.metrics import PairedDifference, pr_curve_points, roc_curve_points
from deepshield.evaluation.shown import fraction_text

if TYPE_CHECKING:  # the summary imports scoring and inference; plots are drawn from its models only
    from deepshield.evaluation.summary import PerturbationRow, Reliability


def save_figure(figure, path: Path) -> Path:
    """Write a matplotlib figure as PNG (creating folders; whole or not at all, atomic_file) and free it."""
    figure.tight_layout()
    try:
        with atomic_file(path, clear_left=True) as handle:  # a report's: a killed writer's temporary file goes
            figure.savefig(handle, format="png", dpi=110)
    finally:
        plt.close(figure)
    return path


def roc_plot(labels, scores, path: Path, title: str = "ROC") -> Path:
    fpr, tpr, _ = roc_curve_points(labels, scores)
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot(fpr, tpr, lw=2)
    axis.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    axis.set(xlabel="false-positive rate", ylabel="true-positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    return save_figure(figure, path)


def pr_plot(labels, scores, path: Path, title: str = "Precision-recall") -> Path:
    recall, precision = pr_curve_points(labels, scores)
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot(recall, precision, lw=2)
    axis.axhline(np.mean(labels), ls="--", color="grey", lw=1)
    axis.set(xlabel="recall (fakes caught)", ylabel="precision", title=title, xlim=(0, 1), ylim=(0, 1.01))
    return save_figure(figure, path)


def confusion_plot(labels, scores, threshold: float, path: Path) -> Path:
    labels = np.asarray(labels)
    predicted = np.asarray(scores) >= threshold
    matrix = np.array([[np.sum((labels == t) & (predicted == p)) for p in (0, 1)] for t in (0, 1)])
    figure, axis = plt.subplots(figsize=(4, 3.6))
    axis.imshow(matrix, cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        axis.text(col, row, str(value), ha="center", va="center", fontsize=13, color="black")
    axis.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["real", "fake"],
        yticklabels=["real", "fake"],
        xlabel="predicted",
        ylabel="true",
    )
    axis.set_title(f"threshold {fraction_text(threshold, 4)}")  # as the report's tables give it
    return save_figure(figure, path)


def example_grid(images: list[np.ndarray], captions: list[str], path: Path, columns: int = 8, title: str = "") -> Path:
    rows = max(1, int(np.ceil(len(images) / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.6, rows * 1.8), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, caption in zip(axes.flat, images, captions):
        axis.imshow(image)
        axis.set_title(caption, fontsize=7)
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def curves_plot(history: list[dict[str, float]], keys: list[str], path: Path, title: str) -> Path:
    """`history`'s 0-based epochs drawn as training's log counts them: its "epoch 1" at 1."""
    figure, axis = plt.subplots(figsize=(5, 3.6))
    for key in keys:
        points = [(h["epoch"] + 1, h[key]) for h in history if key in h]
        if points:
            axis.plot(*zip(*points), marker="o", label=key)
    axis.set(xlabel="epoch", title=title)
    axis.legend()
    return save_figure(figure, path)


# ----------------------------------------------------------------------------- evaluation report


def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str = "ROC") -> Path:
    """Several ROC curves on one axis; `curves`: legend -> (labels, scores)."""
    figure, axis = plt.subplots(figsize=(4.8, 4.5))
    for name, (labels, scores) in curves.items():
        fpr, tpr, _ = roc_curve_points(labels, scores)
        axis.plot(fpr, tpr, lw=2, label=name)
    axis.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    axis.set(
        xlabel="false-positive rate (reals flagged)",
        ylabel="true-positive rate (fakes caught)",
        title=title,
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    axis.legend(loc="lower right", fontsize=8)
    return save_figure(figure, path)


def pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str = "Precision-recall") -> Path:
    figure, axis = plt.subplots(figsize=(4.8, 4.5))
    for name, (labels, scores) in curves.items():
        recall, precision = pr_curve_points(labels, scores)
        line = axis.plot(recall, precision, lw=2, label=name)[0]
        axis.axhline(np.mean(labels), ls=":", color=line.get_color(), lw=1)
    axis.set(xlabel="recall (fakes caught)", ylabel="precision", title=title, xlim=(0, 1), ylim=(0, 1.01))
    axis.legend(loc="lower left", fontsize=8)
    return save_figure(figure, path)


def reliability_plot(curves: dict[str, Reliability], path: Path, title: str = "Calibration (reliability)") -> Path:
    """`curves`: legend -> the summary's Reliability (edges, mean_predicted, fraction_fake, counts, ece)."""
    figure, (axis, counts_axis) = plt.subplots(
        2, 1, figsize=(4.8, 5.6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    axis.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="perfectly calibrated")
    width = None
    for offset, (name, rel) in enumerate(curves.items()):
        predicted = np.array([np.nan if v is None else v for v in rel.mean_predicted], dtype=float)
        observed = np.array([np.nan if v is None else v for v in rel.fraction_fake], dtype=float)
        filled = ~np.isnan(predicted)
        ece = rel.ece
        axis.plot(
            predicted[filled],
            observed[filled],
            marker="o",
            lw=1.5,
            label=f"{name} (ECE {fraction_text(ece)})" if ece is not None else name,
        )
        edges = np.asarray(rel.edges)
        width = (edges[1] - edges[0]) / (len(curves) + 0.5)
        counts_axis.bar(edges[:-1] + width * (offset + 0.25), rel.counts, width=width, align="edge", label=name)
    axis.set(ylabel="fraction fake", title=title, xlim=(0, 1), ylim=(0, 1.01))
    axis.legend(loc="upper left", fontsize=8)
    counts_axis.set(xlabel="predicted probability of fake", ylabel="count")
    counts_axis.set_yscale("symlog")
    return save_figure(figure, path)


def score_histograms(labels, scores, threshold: float, path: Path, title: str) -> Path:
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=float)
    figure, axis = plt.subplots(figsize=(5, 3.4))
    bins = np.linspace(0, 1, 41)
    for value, name, colour in ((0, "real", "tab:blue"), (1, "fake", "tab:red")):
        chosen = scores[labels == value]
        if chosen.size:
            axis.hist(
                chosen, bins=bins.tolist(), alpha=0.55, color=colour, label=f"{name} ({chosen.size})", density=False
            )
    axis.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {fraction_text(threshold, 4)}")
    axis.set(xlabel="score (probability of fake)", ylabel="count", title=title, xlim=(0, 1))
    axis.legend(fontsize=8)
    return save_figure(figure, path)


def perturbation_plot(
    rows: list[PerturbationRow], path: Path, confidence: float | None, title: str = "AUC under perturbations"
) -> Path:
    """`confidence`: the file AUC intervals' (None: none, bars alone)."""

    def values_of(name: str) -> list[float]:
        return [np.nan if getattr(r, name) is None else getattr(r, name) for r in rows]

    names = [r.condition for r in rows]
    values, faces, low, high = (values_of(name) for name in ("file_auc", "face_auc", "file_auc_low", "file_auc_high"))
    x = np.arange(len(rows))
    figure, axis = plt.subplots(figsize=(max(4.5, 0.75 * len(rows) + 2), 3.6))
    # A row without an interval (--bootstrap 0, too few files) keeps NaN: no bar drawn, where a zero-length one
    # drew its caps as if the AUC had been measured to the point.
    errors = np.array([np.array(values) - np.array(low), np.array(high) - np.array(values)])
    axis.bar(
        x - 0.2,
        values,
        width=0.4,
        yerr=errors,
        capsize=3,
        label="file AUC" if confidence is None else f"file AUC ({confidence:.0%} CI)",
    )
    axis.bar(x + 0.2, faces, width=0.4, label="face AUC", alpha=0.7)
    axis.axhline(0.5, color="grey", ls=":", lw=1)
    axis.set_xticks(x)
    axis.set_xticklabels(names, rotation=30, ha="right")
    axis.set(ylim=(0, 1.18), ylabel="AUC", title=title)
    axis.set_yticks(np.linspace(0, 1, 6))
    axis.legend(fontsize=8, loc="upper center", ncol=2, frameon=False)
    return save_figure(figure, path)


def paired_differences_plot(
    differences: dict[str, dict[str, PairedDifference]], metrics: list[str], reference: str, path: Path
) -> Path:
    """Each candidate's paired AUC differences against one reference model (rows), a panel per metric: a
    point and its interval, filled where the interval excludes zero. Metrics a candidate lacks are left blank."""
    if not differences or not metrics:
        raise ValueError("nothing to plot: no candidates or no metrics")
    rows = list(differences)
    figure, axes = plt.subplots(
        1, len(metrics), figsize=(3.4 * len(metrics) + 2.6, 0.42 * len(rows) + 1.5), sharey=True, squeeze=False
    )
    for axis, metric in zip(axes[0], metrics):
        axis.axvline(0, color="black", lw=0.8)
        for row, name in enumerate(rows):
            if (d := differences[name].get(metric)) is None:
                continue
            clear = d.low > 0 or d.high < 0
            colour = ("C2" if d.low > 0 else "C3") if clear else "grey"
            axis.plot([d.low, d.high], [row, row], color=colour, lw=2)
            axis.plot(d.difference, row, "o", color=colour, markerfacecolor=colour if clear else "white")
        axis.set(title=metric, xlabel=f"minus {reference}", yticks=range(len(rows)), yticklabels=rows)
        axis.grid(axis="x", alpha=0.3)
    axes[0][0].invert_yaxis()  # the first candidate on top, as in the table it accompanies
    return save_figure(figure, path)
