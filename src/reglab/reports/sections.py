"""The document sections that compare, ablation and single-run reports share: the runs and alerts, a variant's
metric table, the comparison tables and forest plots, the architecture, and the curve and gap figures."""

from __future__ import annotations

import math

from .. import stats
from ..models import mermaid
from ..rundir import Run
from .analysis import (Analysis, Comparison, accuracy_cell, epochs_cell, interval_text, mdd_text, per_seed_cell,
                       seed_summary, superiority_text, verdict_text, wall_cell)
from .common import (ACC_BOUNDS, CONFIDENCE, COUNT, GAP_BOUNDS, LOSS, NONNEG, PCT, PP, RATE, SECONDS, fmt_int,
                     fmt_margin, fmt_p, slug)
from .document import Document, code, esc
from .facts import RunFacts, Study, Variant, problem_reason, run_label

# No absolute path here: a copied or moved study folder re-renders to the identical report.
GENERATED = ("Generated from the run folders beside this report (`<variant>/seed-<seed>/`); "
             "every number below is computed from them.")


# ----------------------------------------------------------------------------------- runs and chance


def runs_section(doc: Document, study: Study) -> None:
    """No run vanishes: per variant k of n finished (exact interval), what did not finish, what is at chance."""
    doc.h(1, "Runs")
    rows = []
    for name, v in study.all_variants.items():
        k, n = len(v.runs), v.total
        lo, hi = stats.binomial_ci(k, n, CONFIDENCE)
        chance = [f for f in v.runs if f.at_chance]
        rows.append([code(name), f"{k} of {n}", f"[{RATE(lo)}, {RATE(hi)}]",
                     "; ".join(f"seed {r.seed}: {problem_reason(r)}" for r in v.others) or "none",
                     "; ".join(f"seed {f.seed}" for f in chance) or "none"])
    doc.table(["Variant", "Seeds finished", "95% exact binomial interval (finishing rate)", "Not finished",
               "At chance"], rows, id="runs",
              note="Every run folder under the study is counted here; only finished runs enter the results below.")
    flagged = [f for f in study.runs if f.at_chance]
    if flagged:
        doc.bullets([f"{run_label(f.run)} is **at chance**: {f.chance_reason}. It stays in the means, flagged."
                     for f in flagged])


def regularizers_text(v: Variant) -> str:
    regs = v.regularizers
    if regs is None:
        return "not recorded (an older run)"
    return ", ".join(esc(r) for r in regs) or "none"


def alerts(doc: Document, study: Study) -> None:
    for text in study.alerts:
        doc.warning("**Warning:** " + text)


# ------------------------------------------------------------------------------------------- metrics


RUN_METRICS = [  # key, label, format, bounds
    ("acc", "Restored-best accuracy on val/ (headline)", PCT, ACC_BOUNDS),
    ("clean", "Clean training accuracy (restored-best weights, eval mode, un-augmented)", PCT, ACC_BOUNDS),
    ("gap", "Generalization gap (clean training − headline accuracy)", PP, GAP_BOUNDS),
    ("train_accuracy", "Final-epoch training accuracy (Keras-style running value, augmentation and dropout on)",
     PCT, ACC_BOUNDS),
    ("restored_val_loss", "Restored-best loss on val/", LOSS, NONNEG),
    ("epochs_run", "Epochs run", COUNT, NONNEG),
    ("best_epoch", "Best epoch", COUNT, NONNEG),
    ("wall_seconds", "Wall time (this machine)", SECONDS, NONNEG),
]


def metric_table(doc: Document, v: Variant, id: str = "") -> None:
    """A variant's metrics: one seed as values; several as summary (see seed_summary) and every seed's value."""
    rows = []
    for key, label, fmt, bounds in RUN_METRICS:
        if key == "acc":
            cell = accuracy_cell(v)
        elif key == "epochs_run":
            cell = epochs_cell(v)
        elif key == "wall_seconds":
            cell = wall_cell(v)
        else:
            cell = seed_summary(v.values(key), fmt, bounds)
        rows.append([label, cell] + ([per_seed_cell(v, key, fmt)] if len(v.runs) > 1 else []))
    n = len(v.runs)
    if n > 1:
        header = ["Metric", "Mean [95% t interval]" if n > 2 else "Seeds (mean)", "Per seed"]
        note = (f"{n} seeds: Student t intervals with {n - 1} degrees of freedom, clipped to the quantity's range "
                "(accuracies 0–100%, epochs and times at least 0; a clipped interval is marked)." if n > 2 else
                "2 seeds: no interval is shown, since one with 1 degree of freedom is too wide to mean anything; "
                "the two values are.")
    else:
        header, note = ["Metric", f"Value (seed {v.runs[0].seed})"], \
            "One seed: the Wilson interval covers the sampling of validation images only, not seed-to-seed variation."
    if any(not f.gap_measured for f in v.runs):
        note += (" Older run folders have no clean training accuracy: their gap is final running training accuracy "
                 "minus final validation accuracy, which understates overfitting under augmentation and dropout.")
    doc.table(header, rows, id=id, note=note)


# --------------------------------------------------------------------------------------- comparisons


def comparison_table(doc: Document, an: Analysis, comps: list[Comparison], what: str, id: str = "") -> None:
    rows = []
    for c in comps:
        rows.append([f"{code(c.variant)} − {code(c.reference)}", PP(c.diff), interval_text(c), c.method,
                     verdict_text(c, an.margin), mdd_text(c), superiority_text(c),
                     fmt_p(c.mcnemar["p"]) if c.mcnemar else "n/a"])
    doc.table(["Comparison", f"Difference in {what}", "Simultaneous 95% interval", "Method", "Verdict",
               "Min. detectable difference (80% power)", "P(a seed of the first beats a seed of the second)",
               "McNemar exact p"], rows, id=id,
              note=f"{an.family}; the verdict is read off the interval beside it: differs (the interval excludes 0), "
                   f"equivalent within {fmt_margin(an.margin)} (the interval lies inside the margin: two one-sided "
                   "tests at the same level), otherwise inconclusive. The minimum detectable difference is approximate "
                   "(noncentral t with the Welch degrees of freedom taken as known: optimistic at few seeds).")


def forest_figure(doc: Document, study: Study, an: Analysis, comps: list[Comparison], name: str, what: str) -> None:
    from .plots import plot_forest

    items = [dict(label=f"{c.variant} − {c.reference}", diff=c.diff * 100, lo=c.lo * 100, hi=c.hi * 100,
                  seeds=[s * 100 for s in c.seeds], color=study.colors[c.variant],
                  clipped_lo=c.clipped and c.lo <= -c.bound, clipped_hi=c.clipped and c.hi >= c.bound) for c in comps]
    path, rel = study.figure(name)
    plot_forest(items, path, f"Difference in {what} (pp)", limit=comps[0].bound * 100, margin=an.margin * 100)
    doc.figure(rel, f"Differences in {what}, sorted by effect: the simultaneous interval of each comparison (line; "
                    "an arrow where it runs past the edge of the possible range), its estimate (large dot), and "
                    "every seed of the variant minus the reference's mean (small dots). Dashed: no difference; "
                    f"shaded: the {fmt_margin(an.margin)} margin. A hollow dot has no interval.")


# -------------------------------------------------------------------------------------- architecture


def architecture(doc: Document, run: Run, ident: str, level: int = 3, title: str = "") -> None:
    """The layer table and diagram as the run recorded them when it trained (summary.json's `layers` and parameter
    counts), under a heading of `level` (none at 0): Mermaid in the Markdown, an inline SVG in the HTML. Never
    rebuilt with today's code, which may build something else."""
    from .plots import model_svg

    s = run.summary
    if level:
        doc.h(level, title or f"Architecture of {code(run.variant)}")
    if not s.layers:
        doc.p("Layer table: not recorded by this run (an older run folder).")
        return
    doc.table(["Layer (type)", "Output shape", "Param #"],
              [[f"{esc(r['name'])} ({esc(r['type'])})", esc(r["output_shape"]), fmt_int(r["params"])]
               for r in s.layers])
    t, nt = s.params_trainable, s.params_non_trainable
    doc.p(f"Total params: {fmt_int(t + nt)}; trainable: {fmt_int(t)}; non-trainable (batch-norm statistics): "
          f"{fmt_int(nt)}." if t is not None and nt is not None else "Parameter counts: not recorded by this run.")
    size = run.config.get("image_size")
    doc.diagram(mermaid(s.layers, size), model_svg(s.layers, size, ident=slug(ident)),
                f"The layers of {code(run.variant)} in data order, grouped by block.")


# ----------------------------------------------------------------------------------------- figures


def series(runs: list[RunFacts]) -> dict:
    """{seed: metric rows}, the input of the curve plots."""
    return {f.seed: f.run.metrics for f in runs}


def seed_curves_figure(doc: Document, study: Study, v: Variant) -> None:
    from .plots import plot_seed_curves

    path, rel = study.figure(f"curves-{slug(v.name)}.png")
    n = len(v.runs)
    plot_seed_curves(series(v.runs), path, title=f"{v.name}: {n} seed{'s' if n > 1 else ''}", c=v.color)
    what = "every seed as a thin line, the mean over the epochs all seeds reached in bold" if n > 1 else "one seed"
    doc.figure(rel, f"Loss and accuracy of {code(v.name)} per epoch, training dashed (Keras-style running values, "
                    f"augmentation and dropout on) and evaluation solid: {what}.")


def overlay_figure(doc: Document, study: Study) -> None:
    from .plots import plot_overlay

    path, rel = study.figure("overlay.png")
    plot_overlay({name: series(v.runs) for name, v in study.variants.items()}, path, colors=study.colors)
    doc.figure(rel, "All variants on the same axes, one colour per variant (the same in every figure): evaluation "
                    "solid, training dashed" + (", mean over seeds in bold." if study.multi_seed else "."))


def gap_figure(doc: Document, study: Study) -> None:
    from .plots import plot_gap_grid

    panels = {name: {"series": series(v.runs),
                     "measured": [(f.best_epoch if math.isfinite(f.best_epoch) else f.epochs_run, f.clean, f.acc)
                                  for f in v.runs if f.gap_measured]}
              for name, v in study.variants.items()}
    path, rel = study.figure("gap.png")
    plot_gap_grid(panels, path, colors=study.colors)
    doc.figure(rel, "One panel per variant (shared axes): accuracy per epoch, training dashed (running, augmentation "
                    "on) and evaluation solid; the vertical bar at each seed's best epoch is its measured "
                    "generalization gap, from clean training accuracy (hollow) to restored-best accuracy (dot).")
