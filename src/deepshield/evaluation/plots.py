"""Plots people read faster than tables: curves, confusion matrix, example grids."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def roc_plot(labels, scores, path: Path, title: str = "ROC") -> Path:
    fpr, tpr, _ = roc_curve(labels, scores)
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot(fpr, tpr, lw=2)
    axis.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    axis.set(xlabel="false-positive rate", ylabel="true-positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    return _save(figure, path)


def pr_plot(labels, scores, path: Path, title: str = "Precision-recall") -> Path:
    precision, recall, _ = precision_recall_curve(labels, scores)
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot(recall, precision, lw=2)
    axis.axhline(np.mean(labels), ls="--", color="grey", lw=1)
    axis.set(xlabel="recall (fakes caught)", ylabel="precision", title=title, xlim=(0, 1), ylim=(0, 1.01))
    return _save(figure, path)


def confusion_plot(labels, scores, threshold: float, path: Path) -> Path:
    labels = np.asarray(labels)
    predicted = np.asarray(scores) >= threshold
    matrix = np.array([[np.sum((labels == t) & (predicted == p)) for p in (0, 1)] for t in (0, 1)])
    figure, axis = plt.subplots(figsize=(4, 3.6))
    axis.imshow(matrix, cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        axis.text(col, row, str(value), ha="center", va="center", fontsize=13, color="black")
    axis.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["real", "fake"], yticklabels=["real", "fake"], xlabel="predicted", ylabel="true")
    axis.set_title(f"threshold {threshold:.2f}")
    return _save(figure, path)


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
    return _save(figure, path)


def curves_plot(history: list[dict[str, float]], keys: list[str], path: Path, title: str) -> Path:
    figure, axis = plt.subplots(figsize=(5, 3.6))
    for key in keys:
        points = [(h["epoch"], h[key]) for h in history if key in h]
        if points:
            axis.plot(*zip(*points), marker="o", label=key)
    axis.set(xlabel="epoch", title=title)
    axis.legend()
    return _save(figure, path)
