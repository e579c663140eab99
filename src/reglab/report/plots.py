"""Figures for run folders and study reports (PNG, written atomically).

Figures are built with matplotlib's object API on an Agg canvas rather than pyplot: nothing is registered
in pyplot's global figure list, so there is nothing to leak or close and no GUI backend is ever touched
(importing this module does not change the user's matplotlib backend either).
Inputs are plain data (metric rows, arrays), not run folders.

A "series" is {seed: rows}, where rows are metrics.csv rows (dicts with epoch, train_loss, ...).
"""

from __future__ import annotations

import io
import math
import textwrap

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .. import atomic

DPI = 100
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")


def color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    fig.clear()  # drop the artists now; large image grids otherwise linger until garbage collection
    atomic.write_bytes(path, buf.getvalue())


def _col(rows: list[dict], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows], dtype=float)


def _gap(rows: list[dict]) -> np.ndarray:
    return _col(rows, "train_accuracy") - _col(rows, "val_accuracy")


def _mean_curve(series: dict, values) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean over seeds, only over the epochs every seed reached: a mean over a shrinking set of early-
    stopped runs would jump where a run ends and suggest a change in training that never happened."""
    if len(series) < 2:
        return None
    n = min(len(rows) for rows in series.values())
    if n == 0:
        return None
    first = next(iter(series.values()))
    stacked = np.stack([values(rows)[:n] for rows in series.values()])
    return _col(first[:n], "epoch"), stacked.mean(axis=0)


def plot_curves(rows: list[dict], path, title: str = "") -> None:
    """One run's loss and accuracy, train against val: the notebook's plot_metrics (2 panels, 12x4 in)."""
    fig = _figure(12, 4)
    epochs = _col(rows, "epoch")
    for i, (metric, name) in enumerate((("loss", "Loss"), ("accuracy", "Accuracy"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.plot(epochs, _col(rows, f"train_{metric}"), label=f"Training {name}")
        ax.plot(epochs, _col(rows, f"val_{metric}"), label=f"Validation {name}")
        ax.set_xlabel("Epoch")
        ax.set_ylabel(name)
        ax.legend()
        ax.set_title(f"Training and Validation {name}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def _draw_series(ax, series: dict, values, c: str, label: str, style: str = "-") -> None:
    """All seeds as thin lines; the mean in bold when there is more than one seed."""
    mean = _mean_curve(series, values)
    for k, rows in enumerate(series.values()):
        single = mean is None and k == 0
        ax.plot(_col(rows, "epoch"), values(rows), style, color=c, lw=1.8 if single else 0.8,
                alpha=1.0 if single else 0.35, label=label if single else None)
    if mean is not None:
        ax.plot(*mean, style, color=c, lw=2.4, label=f"{label} (mean of {len(series)})")


def plot_seed_curves(series: dict, path, title: str = "") -> None:
    """One model's loss and accuracy, train (dashed) against val (solid), every seed thin plus the mean."""
    fig = _figure(12, 4)
    for i, (metric, name) in enumerate((("loss", "Loss"), ("accuracy", "Accuracy"))):
        ax = fig.add_subplot(1, 2, i + 1)
        _draw_series(ax, series, lambda r, m=metric: _col(r, f"train_{m}"), color(0), f"Training {name}", "--")
        _draw_series(ax, series, lambda r, m=metric: _col(r, f"val_{m}"), color(1), f"Validation {name}")
        ax.set_xlabel("Epoch")
        ax.set_ylabel(name)
        ax.legend(fontsize=8)
        ax.set_title(f"Training and Validation {name}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_overlay(by_variant: dict, path, title: str = "") -> None:
    """Every variant on the same axes: one colour per variant, val solid, train dashed."""
    fig = _figure(12, 4.5)
    for i, (metric, name) in enumerate((("loss", "Loss"), ("accuracy", "Accuracy"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for j, (variant, series) in enumerate(by_variant.items()):
            _draw_series(ax, series, lambda r, m=metric: _col(r, f"train_{m}"), color(j), f"{variant} train", "--")
            _draw_series(ax, series, lambda r, m=metric: _col(r, f"val_{m}"), color(j), f"{variant} val")
        ax.set_xlabel("Epoch")
        ax.set_ylabel(name)
        ax.legend(fontsize=8)
        ax.set_title(name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_gap(by_variant: dict, path, side_by_side: bool = False, title: str = "") -> None:
    """Generalization gap (train accuracy - val accuracy) per epoch; one panel, or one panel per variant."""
    n = len(by_variant) if side_by_side else 1
    fig = _figure(max(6.0, 4.2 * n) if side_by_side else 7, 4)
    axes = [fig.add_subplot(1, n, 1)]
    axes += [fig.add_subplot(1, n, k + 1, sharey=axes[0]) for k in range(1, n)]
    for j, (variant, series) in enumerate(by_variant.items()):
        ax = axes[j] if side_by_side else axes[0]
        _draw_series(ax, series, _gap, color(j), variant)
        if side_by_side:
            ax.set_title(variant)
    for ax in axes:
        ax.axhline(0.0, color="#888", lw=0.8)
        ax.set_xlabel("Epoch")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("Train accuracy - val accuracy")
    if title or not side_by_side:
        fig.suptitle(title or "Generalization gap")
    fig.tight_layout()
    _save(fig, path)


def plot_confusion(counts: np.ndarray, class_names: list[str], path, title: str = "") -> None:
    """Row-normalised confusion matrix: row = true class, so the diagonal is each class's recall."""
    counts = np.asarray(counts, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    c = len(class_names)
    side = min(12.0, 3.0 + 0.55 * c)
    fig = _figure(side + 1.2, side)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(c), labels=class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(c), labels=class_names, fontsize=8)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    if c <= 15:
        for i in range(c):
            for j in range(c):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)


def _image_grid(images: list[np.ndarray], labels: list[str], cols: int, path, title: str, cell: float = 2.2) -> None:
    rows = max(1, math.ceil(len(images) / cols))
    fig = _figure(cols * cell, rows * (cell + 0.35) + 0.5)
    for k, (img, label) in enumerate(zip(images, labels)):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(img, interpolation="nearest")
        ax.set_title(label, fontsize=7)
        ax.axis("off")
    if not images:
        fig.text(0.5, 0.5, "none", ha="center", va="center")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_misclassified(images: np.ndarray, true_names: list[str], pred_names: list[str],
                       confidences: list[float], path, title: str = "", cols: int = 4) -> None:
    """The most confidently wrong val images, each titled with its true and predicted class."""
    wrap = lambda s: textwrap.shorten(str(s), 22, placeholder="…")  # noqa: E731 - keep titles on one line
    labels = [f"true: {wrap(t)}\npred: {wrap(p)} ({c:.0%})" for t, p, c in zip(true_names, pred_names, confidences)]
    _image_grid(list(images), labels, cols, path, title)


def plot_augmentation(images: np.ndarray, augment_name: str, path, draws: int = 4, max_images: int = 4,
                      title: str = "") -> None:
    """A few training images (rows): the original, then `draws` independent augmented versions.

    Uses the training code's own augment() with a fixed generator, so the figure shows exactly the
    transformation training applied and is the same on every re-render.
    """
    import torch

    from ..data.augment import augment

    imgs = np.asarray(images)[:max_images]
    x = torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float() / 255.0
    g = torch.Generator().manual_seed(0)
    outs = [augment(augment_name, x, g) for _ in range(draws)]
    to_img = lambda t: (t.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)  # noqa: E731
    grid, labels = [], []
    for i in range(len(imgs)):
        grid.append(imgs[i])
        labels.append("original")
        for d, out in enumerate(outs):
            grid.append(to_img(out[i]))
            labels.append(f"{augment_name} draw {d + 1}")
    _image_grid(grid, labels, draws + 1, path, title or f"augment = {augment_name}", cell=1.9)


def plot_forest(labels: list[str], diffs, los, his, path, xlabel: str, title: str = "") -> None:
    """Differences with their confidence intervals; a dashed line at zero (no difference).

    A comparison without an interval (one seed) is drawn as a hollow marker, so it does not look tested.
    """
    n = len(labels)
    fig = _figure(8, 1.2 + 0.55 * max(n, 1))
    ax = fig.add_subplot(1, 1, 1)
    for i, (d, lo, hi) in enumerate(zip(diffs, los, his)):
        y = n - 1 - i
        if math.isfinite(lo) and math.isfinite(hi):
            ax.errorbar([d], [y], xerr=[[d - lo], [hi - d]], fmt="o", color=color(0), capsize=4)
        elif math.isfinite(d):
            ax.plot([d], [y], "o", mfc="white", color=color(0))
    ax.axvline(0.0, color="#888", ls="--", lw=1)
    ax.set_yticks(range(n), labels=list(reversed(labels)))
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)
