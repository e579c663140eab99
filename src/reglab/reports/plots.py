"""Figures for run folders and study reports (PNG, written atomically), and the model diagram as SVG.

Figures are built with matplotlib's object API on an Agg canvas rather than pyplot: nothing is registered
in pyplot's global figure list, so there is nothing to leak or close and no GUI backend is ever touched
(importing this module does not change the user's matplotlib backend either).
Inputs are plain data (metric rows, arrays), not run folders.

One visual language throughout: one colour per variant in every figure (the caller passes it), training dashed
and validation (or the selection split) solid, accuracies in % and differences in percentage points (the units
of the tables), integer epoch ticks. Every text that may come from the user's data goes through `mpl_text`, so
a `$` in a class folder is a dollar sign and not the start of a formula.

A "series" is {seed: rows}, where rows are metrics.csv rows (dicts with epoch, train_loss, ...).
"""

from __future__ import annotations

import html
import io
import math
import textwrap
from collections import OrderedDict

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import ScaledTranslation

from .. import atomic
from ..models import layer_label
from ..text import visible

DPI = 100
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")
PANEL_COLUMNS = 3  # small multiples: at most this many panels a row
TRAIN_STYLE, EVAL_STYLE = "--", "-"


def color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def mpl_text(text) -> str:
    """User text for a matplotlib label: made visible (one line) and with every `$` escaped (no math)."""
    return visible(text).replace("$", r"\$")


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


def chooser(rows: list[dict]) -> str:
    """"val" when the run measured val/ every epoch (it chose on val/), "select" when only the selection split."""
    if any(r.get("val_accuracy") is not None for r in rows) or not any(r.get("select_accuracy") is not None
                                                                       for r in rows):
        return "val"
    return "select"


EVAL_NAME = {"val": "validation", "select": "selection split"}


def _eval(rows: list[dict], metric: str) -> np.ndarray:
    return _col(rows, f"{chooser(rows)}_{metric}")


def _scaled(values, metric: str):
    """Accuracies in %, losses as they are."""
    return (lambda rows: values(rows) * 100.0) if metric == "accuracy" else values


def _epoch_axis(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Epoch")


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


def _draw_series(ax, series: dict, values, c: str, label: str, style: str = EVAL_STYLE) -> None:
    """All seeds as thin lines; the mean in bold when there is more than one seed."""
    mean = _mean_curve(series, values)
    for k, rows in enumerate(series.values()):
        single = mean is None and k == 0
        ax.plot(_col(rows, "epoch"), values(rows), style, color=c, lw=1.8 if single else 0.8,
                alpha=1.0 if single else 0.35, label=label if single else None)
    if mean is not None:
        ax.plot(*mean, style, color=c, lw=2.4, label=f"{label} (mean of {len(series)})")


def _loss_accuracy(fig, series: dict, c: str, rows_for_names: list[dict]) -> None:
    name = EVAL_NAME[chooser(rows_for_names)]
    for i, (metric, label, unit) in enumerate((("loss", "Loss", ""), ("accuracy", "Accuracy", " (%)"))):
        ax = fig.add_subplot(1, 2, i + 1)
        _draw_series(ax, series, _scaled(lambda r, m=metric: _col(r, f"train_{m}"), metric), c,
                     f"Training {label.lower()} (running, augmentation on)", TRAIN_STYLE)
        _draw_series(ax, series, _scaled(lambda r, m=metric: _eval(r, m), metric), c, f"{name.capitalize()} "
                     f"{label.lower()}", EVAL_STYLE)
        _epoch_axis(ax)
        ax.set_ylabel(label + unit)
        ax.legend(fontsize=8)
        ax.set_title(f"Training and {name} {label.lower()}")


def plot_curves(rows: list[dict], path, title: str = "", c: str | None = None) -> None:
    """One run's loss and accuracy, training against the split that chooses (2 panels, 12x4 in, as the
    notebook's plot_metrics): training dashed, validation (or selection split) solid, accuracy in %."""
    fig = _figure(12, 4)
    _loss_accuracy(fig, {0: rows}, c or color(0), rows)
    if title:
        fig.suptitle(mpl_text(title))
    fig.tight_layout()
    _save(fig, path)


def plot_seed_curves(series: dict, path, title: str = "", c: str | None = None) -> None:
    """One model's loss and accuracy, every seed thin plus the mean, in the variant's colour."""
    fig = _figure(12, 4)
    first = next(iter(series.values()), [])
    _loss_accuracy(fig, series, c or color(0), first)
    if title:
        fig.suptitle(mpl_text(title))
    fig.tight_layout()
    _save(fig, path)


def plot_overlay(by_variant: dict, path, colors: dict | None = None, title: str = "") -> None:
    """Every variant on the same axes: one colour per variant, evaluation solid, training dashed."""
    colors = colors or {v: color(i) for i, v in enumerate(by_variant)}
    fig = _figure(12, 4.5)
    for i, (metric, name, unit) in enumerate((("loss", "Loss", ""), ("accuracy", "Accuracy", " (%)"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for variant, series in by_variant.items():
            v = mpl_text(variant)
            _draw_series(ax, series, _scaled(lambda r, m=metric: _col(r, f"train_{m}"), metric), colors[variant],
                         f"{v} training (running)", TRAIN_STYLE)
            first = next(iter(series.values()), [])
            _draw_series(ax, series, _scaled(lambda r, m=metric: _eval(r, m), metric), colors[variant],
                         f"{v} {EVAL_NAME[chooser(first)]}", EVAL_STYLE)
        _epoch_axis(ax)
        ax.set_ylabel(name + unit)
        ax.legend(fontsize=7)
        ax.set_title(name)
    if title:
        fig.suptitle(mpl_text(title))
    fig.tight_layout()
    _save(fig, path)


def grid_shape(n: int, columns: int = PANEL_COLUMNS) -> tuple[int, int]:
    cols = max(1, min(columns, n))
    return math.ceil(max(n, 1) / cols), cols


def plot_gap_grid(panels: dict, path, colors: dict | None = None, title: str = "") -> None:
    """Small multiples, one panel per variant (at most 3 a row, shared axes): running training accuracy
    (dashed) and evaluation accuracy (solid) per epoch, and the MEASURED generalization gap of every seed as a
    vertical bar at its best epoch, from clean training accuracy (hollow) down to restored-best accuracy (dot).

    panels: {variant: {"series": {seed: rows}, "measured": [(best_epoch, clean_train, restored_val), ...]}}.
    """
    colors = colors or {v: color(i) for i, v in enumerate(panels)}
    rows_n, cols = grid_shape(len(panels))
    fig = _figure(4.2 * cols, 3.2 * rows_n + 0.6)
    axes = []
    for k, (variant, panel) in enumerate(panels.items()):
        share = axes[0] if axes else None
        ax = fig.add_subplot(rows_n, cols, k + 1, sharex=share, sharey=share)
        axes.append(ax)
        c = colors[variant]
        series = panel["series"]
        _draw_series(ax, series, _scaled(lambda r: _col(r, "train_accuracy"), "accuracy"), c,
                     "training (running)", TRAIN_STYLE)
        _draw_series(ax, series, _scaled(lambda r: _eval(r, "accuracy"), "accuracy"), c, "evaluation", EVAL_STYLE)
        first = True
        for epoch, clean, restored in panel.get("measured", []):
            if epoch is None or not all(math.isfinite(v) for v in (clean, restored)):
                continue
            ax.plot([epoch, epoch], [restored * 100, clean * 100], color=c, lw=1.6)
            ax.plot([epoch], [clean * 100], "o", mfc="white", color=c, ms=6,
                    label="clean train (best weights)" if first else None)
            ax.plot([epoch], [restored * 100], "o", color=c, ms=6, label="restored-best eval" if first else None)
            first = False
        ax.set_title(mpl_text(variant), fontsize=10)
        _epoch_axis(ax)
        if k % cols == 0:
            ax.set_ylabel("Accuracy (%)")
        if k == 0:  # the same legend for every panel: shown once
            ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(mpl_text(title or "Accuracy per epoch; bars: the measured generalization gap"), fontsize=11)
    fig.tight_layout()
    _save(fig, path)


def plot_confusion(counts: np.ndarray, class_names: list[str], path, title: str = "") -> None:
    """Row-normalised confusion matrix: row = true class, so the diagonal is each class's recall (in %)."""
    counts = np.asarray(counts, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0) * 100.0
    c = len(class_names)
    side = min(12.0, 3.0 + 0.55 * c)
    fig = _figure(side + 1.2, side)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=100.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="% of the true class")
    names = [mpl_text(textwrap.shorten(visible(n), 28, placeholder="…")) for n in class_names]
    ax.set_xticks(range(c), labels=names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(c), labels=names, fontsize=8)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    if c <= 15:
        for i in range(c):
            for j in range(c):
                ax.text(j, i, f"{norm[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 50 else "black")
    ax.set_title(mpl_text(title))
    fig.tight_layout()
    _save(fig, path)


def _image_grid(images: list[np.ndarray], labels: list[str], cols: int, path, title: str, cell: float = 2.2) -> None:
    """Images in a grid, each with its (one- or two-line) label above it. Laid out by hand: tight_layout over
    dozens of axes costs seconds and changes nothing here."""
    rows = max(1, math.ceil(len(images) / cols))
    label_h = 0.18 + 0.14 * max([str(lab).count("\n") + 1 for lab in labels] or [1])
    head = 0.45 if title else 0.1
    width, height = cols * cell, rows * (cell + label_h) + head
    fig = _figure(width, height)
    pad = 0.06
    for k, (img, label) in enumerate(zip(images, labels)):
        r, c = divmod(k, cols)
        top = head + r * (cell + label_h) + label_h
        ax = fig.add_axes(((c * cell + pad) / width, 1 - (top + cell - pad) / height,
                           (cell - 2 * pad) / width, (cell - 2 * pad) / height))
        ax.imshow(img, interpolation="nearest", aspect="auto")
        ax.set_axis_off()
        fig.text((c + 0.5) * cell / width, 1 - (top - 0.04) / height, label, ha="center", va="bottom", fontsize=7)
    if not images:
        fig.text(0.5, 0.5, "none", ha="center", va="center")
    if title:
        fig.text(0.5, 1 - 0.08 / height, mpl_text(title), ha="center", va="top", fontsize=11)
    _save(fig, path)


def plot_misclassified(images: np.ndarray, true_names: list[str], pred_names: list[str],
                       confidences: list[float], path, title: str = "", cols: int = 4) -> None:
    """The most confidently wrong val images, each titled with its true and predicted class."""
    wrap = lambda s: mpl_text(textwrap.shorten(visible(s), 22, placeholder="…"))  # noqa: E731 - one line each
    labels = [f"true: {wrap(t)}\npred: {wrap(p)} ({c:.0%})" for t, p, c in zip(true_names, pred_names, confidences)]
    _image_grid(list(images), labels, cols, path, title)


def plot_augmentation(images: np.ndarray, augmented: np.ndarray, augment_name: str, path, max_draws: int = 4,
                      max_images: int = 4, title: str = "") -> None:
    """A few training images (rows): the original, then the augmented versions the run drew of it at training
    time. images: (n, H, W, 3) uint8; augmented: (n, draws, H, W, 3) uint8, as samples.npz records them."""
    imgs = np.asarray(images)[:max_images]
    drawn = np.asarray(augmented)[:len(imgs), :max_draws]
    draws = drawn.shape[1]
    name = mpl_text(augment_name)
    grid = [img for original, row in zip(imgs, drawn) for img in [original, *row]]
    labels = [("original" if j == 0 else f"{name} draw {j}") for _ in range(len(drawn)) for j in range(draws + 1)]
    _image_grid(grid, labels, draws + 1, path, title or f"augment = {augment_name}", cell=1.9)


def plot_forest(items: list[dict], path, xlabel: str, limit: float, margin: float = 0.0, title: str = "") -> dict:
    """Differences with their intervals, sorted by effect (largest on top), in percentage points.

    items: dicts with label, diff, lo, hi (nan: no interval), seeds (each seed's value minus the reference mean),
    color. The axis never leaves [-limit, +limit] (the possible range of the difference); an interval that
    reaches beyond what is drawn ends in an arrow at the edge. The zero line is dashed; the ±margin band shaded.
    Returns what was drawn: {"order": labels top to bottom, "xlim": (lo, hi), "arrows": ["label<", "label>", ...]}.
    """
    items = sorted(items, key=lambda d: (-(d["diff"] if math.isfinite(d["diff"]) else -math.inf)))
    n = len(items)
    fig = _figure(8.5, 1.3 + 0.65 * max(n, 1))
    ax = fig.add_subplot(1, 1, 1)
    ends = [v for d in items for v in [d["diff"], d["lo"], d["hi"], *d.get("seeds", [])] if math.isfinite(v)]
    reach = max([abs(v) for v in ends] + [margin * 1.5, 1.0])
    edge = min(limit, reach * 1.12)
    if margin > 0:
        ax.axvspan(-margin, margin, color="#999", alpha=0.15, lw=0, label=f"±{margin:g} pp margin")
    ax.axvline(0.0, color="#555", ls="--", lw=1)
    arrows = []
    for i, d in enumerate(items):
        y = n - 1 - i
        c = d.get("color", color(0))
        lo, hi = d["lo"], d["hi"]
        if math.isfinite(lo) and math.isfinite(hi):
            a, b = max(lo, -edge), min(hi, edge)
            ax.plot([a, b], [y, y], color=c, lw=2.2)
            ends = ((a, lo < -edge or d.get("clipped_lo"), "<"), (b, hi > edge or d.get("clipped_hi"), ">"))
            for end, cut, mark in ends:
                ax.plot([end], [y], marker=mark if cut else "|", color=c, ms=9 if cut else 10, mew=1.5)
                if cut:
                    arrows.append(d["label"] + mark)
            ax.plot([d["diff"]], [y], "o", color=c, ms=7)
        elif math.isfinite(d["diff"]):
            ax.plot([d["diff"]], [y], "o", mfc="white", color=c, ms=7)  # no interval: hollow, does not look tested
        seeds = [s for s in d.get("seeds", []) if math.isfinite(s)]
        if seeds:
            ax.plot(np.clip(seeds, -edge, edge), [y - 0.25] * len(seeds), ".", color=c, alpha=0.7, ms=7)
    ax.set_yticks(range(n), labels=[mpl_text(d["label"]) for d in reversed(items)])
    ax.set_ylim(-0.8, n - 0.4)
    ax.set_xlim(-edge, edge)
    ax.set_xlabel(mpl_text(xlabel))
    if margin > 0:
        ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(mpl_text(title))
    drawn = {"order": [d["label"] for d in items], "xlim": tuple(float(x) for x in ax.get_xlim()), "arrows": arrows}
    fig.tight_layout()
    _save(fig, path)
    return drawn


# ------------------------------------------------------------------------------------------ the diagram


def model_svg(rows: list[dict], image_size: int, in_channels: int = 3, ident: str = "m") -> str:
    """The model as an inline SVG flowchart, drawn from layer-table rows (models.layer_table's, as a run recorded
    them in summary.json): one column per block (the Mermaid diagram's subgraphs), layers top to bottom, arrows in
    data order. Needs no script and no network."""
    groups: OrderedDict[str, list[dict]] = OrderedDict([("Input", [{"label": f"Input {image_size}×{image_size}×"
                                                                              f"{in_channels}"}])])
    for r in rows:
        g = r["name"].split(".")[0]
        title = "Fully connected" if g == "head" else g.replace("block", "Block ")
        groups.setdefault(title, []).append({"label": layer_label(r), "shape": r["output_shape"]})
    box_w, box_h, gap_y, col_w, pad, head = 168, 28, 16, 196, 14, 26
    tallest = max(len(m) for m in groups.values())
    height = pad * 2 + head + tallest * (box_h + gap_y)
    width = pad * 2 + col_w * len(groups) - (col_w - box_w - 12)
    marker = f"arrow-{html.escape(ident)}"
    out = [f'<svg class="model-diagram" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="model diagram">',
           f'<defs><marker id="{marker}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
           '<style>.box{fill:#eef4fb;stroke:#4a78a8;stroke-width:1}.grp{fill:#fafafa;stroke:#bbb;'
           'stroke-dasharray:4 3}.t{font:12px sans-serif;fill:#1d1d1f}.g{font:bold 12px sans-serif;fill:#555}'
           '.a{stroke:#555;stroke-width:1.3;fill:none}</style>']
    centres = []  # (x, y_top, y_bottom) of each box in data order
    for k, (title, members) in enumerate(groups.items()):
        x = pad + k * col_w
        gh = head + len(members) * (box_h + gap_y)
        out.append(f'<rect class="grp" x="{x}" y="{pad}" width="{box_w + 12}" height="{gh}" rx="6"/>')
        out.append(f'<text class="g" x="{x + 8}" y="{pad + 17}">{html.escape(title)}</text>')
        for j, m in enumerate(members):
            y = pad + head + j * (box_h + gap_y)
            out.append(f'<rect class="box" x="{x + 6}" y="{y}" width="{box_w}" height="{box_h}" rx="4"/>')
            out.append(f'<text class="t" x="{x + 6 + box_w / 2}" y="{y + 18}" text-anchor="middle">'
                       f'{html.escape(m["label"])}</text>')
            centres.append((x + 6, y, y + box_h))
    for (x0, t0, b0), (x1, t1, b1) in zip(centres, centres[1:]):
        if x0 == x1:  # same column: straight down
            out.append(f'<path class="a" d="M{x0 + box_w / 2},{b0} V{t1 - 1}" marker-end="url(#{marker})"/>')
        else:  # next column: out of the right side, through the gap between the blocks, into the left side
            mid = (x0 + box_w + x1) / 2
            out.append(f'<path class="a" d="M{x0 + box_w},{(t0 + b0) / 2} H{mid} V{(t1 + b1) / 2} H{x1 - 1}" '
                       f'marker-end="url(#{marker})"/>')
    out.append("</svg>")
    return "".join(out)


def plot_dose_response(panels: list[dict], path, xlabel: str, title: str = "") -> dict:
    """Dose-response curves side by side, one panel per outcome. panels: dicts with title, ylabel, zero (draw y = 0)
    and points: [{x: the dose, mean, lo, hi (nan: no interval), seeds: [each seed's value]}], in the units shown.
    Each dose's interval is a vertical bar, its mean a dot (hollow without an interval) joined in dose order, every
    seed a small dark dot just right of it. The dose axis is linear, or symlog where the positive doses span 100x or
    more (e.g. weight decay). Returns {"xscale": "linear" or "symlog"}."""
    fig = _figure(5.0 * len(panels), 4.0)
    xs = sorted({p["x"] for panel in panels for p in panel["points"]})
    positive = [x for x in xs if x > 0]
    symlog = len(positive) > 1 and positive[-1] / positive[0] >= 100
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        points = sorted(panel["points"], key=lambda p: p["x"])
        c = color(i)
        beside = ax.transData + ScaledTranslation(7 / 72, 0, fig.dpi_scale_trans)  # the seeds 7 points right
        ax.plot([p["x"] for p in points], [p["mean"] for p in points], "-", color=c, lw=1.2, alpha=0.6)
        for p in points:
            if math.isfinite(p["lo"]) and math.isfinite(p["hi"]):
                ax.plot([p["x"], p["x"]], [p["lo"], p["hi"]], color=c, lw=2.2)
                ax.plot([p["x"]], [p["mean"]], "o", color=c, ms=7)
            else:
                ax.plot([p["x"]], [p["mean"]], "o", mfc="white", color=c, ms=7)
            ax.plot([p["x"]] * len(p["seeds"]), p["seeds"], ".", color="#333", alpha=0.6, ms=6, transform=beside)
        if panel.get("zero"):
            ax.axhline(0.0, color="#555", ls="--", lw=1)
        if symlog:
            ax.set_xscale("symlog", linthresh=positive[0])
        ax.set_xticks(xs, labels=[f"{x:g}" for x in xs])
        ax.set_xlabel(mpl_text(xlabel))
        ax.set_ylabel(mpl_text(panel["ylabel"]))
        ax.set_title(mpl_text(panel["title"]))
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(mpl_text(title))
    fig.tight_layout()
    _save(fig, path)
    return {"xscale": "symlog" if symlog else "linear"}


def plot_heatmap(values: list[list[float]], rows: list[str], cols: list[str], path, ylabel: str, xlabel: str,
                 title: str, best: tuple[int, int] | None = None) -> None:
    """A grid of numbers (rows x cols; nan: no value) as a heatmap, each cell written in it, `best` outlined."""
    data = np.array(values, dtype=float)
    fig = _figure(1.6 + 1.1 * len(cols), 1.4 + 0.8 * len(rows))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax)
    for (r, c), v in np.ndenumerate(data):
        light = math.isfinite(v) and image.norm(v) > 0.6  # viridis is light at its top: dark text there
        ax.text(c, r, f"{v:.1f}" if math.isfinite(v) else "n/a", ha="center", va="center",
                color="black" if light else "white", fontsize=9)
    if best is not None:
        r, c = best
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="#d62728", lw=2.5))
    ax.set_xticks(range(len(cols)), labels=[mpl_text(t) for t in cols])
    ax.set_yticks(range(len(rows)), labels=[mpl_text(t) for t in rows])
    ax.set_xlabel(mpl_text(xlabel))
    ax.set_ylabel(mpl_text(ylabel))
    ax.set_title(mpl_text(title))
    fig.tight_layout()
    _save(fig, path)
