"""curves.png: one run's loss and accuracy per epoch, drawn when it ends (rundir.RunWriter).

The notebook's plot_metrics figure: two panels (loss, accuracy in %), 12x4 inches, training dashed against the
split that chooses solid (validation, or the selection split). Drawn with matplotlib's object API on an Agg
canvas, not pyplot: nothing is registered globally and no GUI backend is touched. Input: metrics.csv rows.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import atomic
from .text import visible

DPI = 100
COLOR = "#1f77b4"
TRAIN_STYLE, EVAL_STYLE = "--", "-"
EVAL_NAME = {"val": "validation", "select": "selection split"}


def column(rows: list[dict], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows], dtype=float)


def chooser(rows: list[dict]) -> str:
    """"val" when the run measured val/ every epoch (it chose on val/), "select" when only the selection split."""
    if any(r.get("val_accuracy") is not None for r in rows) or not any(r.get("select_accuracy") is not None
                                                                       for r in rows):
        return "val"
    return "select"


def mpl_text(text) -> str:
    """User text for a matplotlib label: made visible (one line) and with every `$` escaped (no math)."""
    return visible(text).replace("$", r"\$")


def plot_curves(rows: list[dict], path, title: str = "") -> None:
    fig = Figure(figsize=(12, 4))
    FigureCanvasAgg(fig)
    chosen = chooser(rows)
    name = EVAL_NAME[chosen]
    epochs = column(rows, "epoch")
    for i, (metric, label, unit) in enumerate((("loss", "Loss", ""), ("accuracy", "Accuracy", " (%)"))):
        scale = 100.0 if metric == "accuracy" else 1.0
        ax = fig.add_subplot(1, 2, i + 1)
        ax.plot(epochs, column(rows, f"train_{metric}") * scale, TRAIN_STYLE, color=COLOR, lw=1.8, alpha=1.0,
                label=f"Training {label.lower()} (running, augmentation on)")
        ax.plot(epochs, column(rows, f"{chosen}_{metric}") * scale, EVAL_STYLE, color=COLOR, lw=1.8, alpha=1.0,
                label=f"{name.capitalize()} {label.lower()}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("Epoch")
        ax.set_ylabel(label + unit)
        ax.legend(fontsize=8)
        ax.set_title(f"Training and {name} {label.lower()}")
    if title:
        fig.suptitle(mpl_text(title))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    fig.clear()
    atomic.write_bytes(path, buf.getvalue())
