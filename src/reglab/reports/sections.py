"""The sections every report is made of. A section is a function `(doc, study, an)` that appends its blocks for
one loaded study and its one analysis; a report (report.py) is a title and a list of sections, so a new section is
one function here and one line in each report that shows it. The building blocks below the sections (a variant's
metric table, a comparison table, a forest plot, an architecture, a curve figure) take what they draw.

A run folder is a study of one variant and one seed (`Study.single`): the same sections, its own figure names."""

from __future__ import annotations

import math

import numpy as np

from .. import stats
from ..models import mermaid
from ..rundir import Run
from .analysis import (POWER, Analysis, Comparison, accuracy_cell, best_epoch_cell, epochs_cell, estimand_text,
                       gap_cell, interval_text, method_notes, networks_text, per_seed_cell, plan_text, seed_summary,
                       seeds_advice, superiority_text, verdict_rules, verdict_text, wall_cell)
from .common import (ACC_BOUNDS, CONFIDENCE, COUNT, GAP_BOUNDS, LOSS, NONNEG, PCT, PP, RATE, SECONDS, _num, fmt_int,
                     fmt_margin, slug)
from .document import Document, code, esc
from .facts import Study, Variant, class_names, confusion, design_text, problem_reason, run_label
from .plots import (model_svg, plot_augmentation, plot_confusion, plot_forest, plot_gap_grid, plot_misclassified,
                    plot_overlay, plot_seed_curves)

# No absolute path here: a copied or moved study folder re-renders to the identical report.
GENERATED = ("Generated from the run folders beside this report (`<variant>/seed-<seed>/`); "
             "every number below is computed from them.")
RUN_GENERATED = "Generated from the files of this run folder; every number below is computed from them."
NOT_EVALUATED = "No results yet: the run has not been evaluated."


# ------------------------------------------------------------------------------ the top of a report


def estimand(doc: Document, study: Study, an: Analysis) -> None:
    """Before anything else: a plain warning where one seed on a side allows no claim about the variants (the default
    one-seed `reglab compare`), then what the report's intervals and verdicts are about, in one sentence."""
    warning = one_seed_warning(study, an)
    if warning:
        doc.warning(warning)
    doc.p(estimand_text(study))


def one_seed_warning(study: Study, an: Analysis) -> str:
    """No claim about the variants where a comparison has one learned seed on a side: what the networks did on these
    images instead (labelled), and the seeds a claim needs. Empty when every comparison can claim."""
    comps = [c for c in an.accuracy if c.one_seed]
    if not comps:
        return ""
    if len(comps) == len(an.accuracy):
        head = "**No claim about the variants: one seed on a side.**"
        which = "which variant"
        advice = seeds_advice(an)
    else:
        head = (f"**No claim about {', '.join(code(c.variant) for c in comps)} against {code(an.reference)}: one "
                "learned seed on a side.**")
        which = "which of them"
        advice = ("A claim needs at least 2 seeds that learn on each side: run more seeds (`--seeds`), then "
                  "`reglab plan DIR` estimates how many.")
    names = [c.variant for c in comps] + [an.reference]
    networks = [f"{code(n)}'s network {PCT(study.variants[n].learned[0].acc)}" for n in study.variants
                if n in names and len(study.variants[n].learned) == 1]
    images = study.variants[an.reference].learned[0].n
    return (f"{head} One seed shows nothing of how much seeds vary, so nothing in this report says {which} is "
            f"better. What the networks did on these {images:,} val images: {'; '.join(networks)}. "
            + ". ".join(networks_text(c) for c in comps) + f". {advice}")


def generated(doc: Document, study: Study, an: Analysis) -> None:
    doc.p(RUN_GENERATED if study.single else GENERATED)


def alerts(doc: Document, study: Study, an: Analysis) -> None:
    for text in study.alerts:
        doc.warning("**Warning:** " + text)


def design(doc: Document, study: Study, an: Analysis) -> None:
    """Which design produced the headline accuracy (nothing to say before a run is evaluated)."""
    if study.runs:
        doc.p(design_text(study.runs, study.design))
    precise = [code(name) for name, v in study.variants.items()
               if any(f.run.config.get("precise_bn") is True for f in v.runs)]
    if precise:
        doc.p(f"**BatchNorm statistics re-estimated** (`--precise-bn`) in {', '.join(precise)}: before the final "
              "evaluation, from the restored weights, on each run's clean training sample; the epoch was chosen with "
              "the statistics training kept.")


def runs_section(doc: Document, study: Study, an: Analysis) -> None:
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
        doc.bullets([f"{run_label(f.run)} is **at chance**: {f.chance_reason}. It is counted with its variant's "
                     "failures and left out of every interval." for f in flagged])
    retried = study.meta.get("retried")
    if isinstance(retried, dict) and retried:
        doc.p("Retried runs: their worker or its node was lost, and the run was sent again, continuing from its "
              "last finished epoch exactly as `--resume` does (on a CPU: the same metrics and weights as an "
              "uninterrupted run):")
        doc.bullets([f"{code(run)}: {_retries_text(events)}" for run, events in sorted(retried.items())])


def _retries_text(events) -> str:
    """A retried run's events from study.json: how many, and for each where and why, and where it resumed."""
    events = [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []
    said = []
    for e in events:
        epoch = e.get("after_epoch")
        resumed = f"resumed after epoch {epoch}" if isinstance(epoch, int) else "started again"
        said.append(f"lost on node {esc(e.get('node', '?'))} ({esc(e.get('reason', '?'))}), {resumed}")
    return f"retried {len(events)} time{'s' if len(events) != 1 else ''}: " + "; ".join(said)


# ------------------------------------------------------------------------------------------- metrics


def regularizers_text(v: Variant) -> str:
    regs = v.regularizers
    if regs is None:
        return "not recorded (an older run)"
    return ", ".join(esc(r) for r in regs) or "none"


def run_summary(doc: Document, study: Study, an: Analysis) -> None:
    """The one run of a run folder, metric by metric (the headline with its Wilson interval over images)."""
    doc.h(1, "Summary")
    if not study.runs:
        doc.p(NOT_EVALUATED)
        return
    v = next(iter(study.variants.values()))
    doc.table(["Metric", "Value"], _run_rows(v), id="summary",
              note="The Wilson interval covers the sampling of validation images only; a single run says nothing "
                   "about seed-to-seed variation.")


def _run_rows(v: Variant) -> list[list[str]]:
    f = v.runs[0]
    s = f.summary
    lo, hi = f.wilson
    chooser = "selection split" if f.chosen_on == "selection split" else "val/"
    rows = [
        ["Restored-best accuracy on val/ (headline)",
         f"{PCT(f.acc)} ({f.correct:,} of {f.n:,} images; Wilson 95% [{PCT(lo)}, {PCT(hi)}])"
         + (" **at chance**" if f.at_chance else "")],
        ["Restored-best loss on val/", LOSS(_num(s.restored_val_loss))],
        ["Clean training accuracy (restored-best weights, eval mode, un-augmented)",
         f"{PCT(f.clean)} ({fmt_int(f.clean_n)} training images)" if f.gap_measured else "not measured (an older run)"],
        ["Generalization gap (clean training − headline accuracy)",
         PP(f.gap) + ("" if f.gap_measured else " (older run: final running train − final val accuracy)")],
        ["Final-epoch training accuracy (Keras-style running value, augmentation and dropout on)",
         PCT(_num(s.train_accuracy))],
        ["Final-epoch training loss (running)", LOSS(_num(s.train_loss))],
    ]
    if f.chosen_on == "selection split":
        rows += [["Final-epoch selection-split accuracy", PCT(_num(s.select_accuracy))],
                 ["Final-epoch selection-split loss", LOSS(_num(s.select_loss))]]
    else:
        rows += [["Final-epoch val/ accuracy", PCT(_num(s.val_accuracy))],
                 ["Final-epoch val/ loss", LOSS(_num(s.val_loss))]]
    speed = _num(s.train_images_per_second)
    rows += [
        ["Epochs", f"{f.epochs_text()}" + (f" (cap {f.epochs_max})" if f.epochs_max and not f.censored else "")],
        [f"Best epoch (chosen on {chooser})", f.best_epoch_cell()],
        ["Wall time (this machine)", SECONDS(_num(s.wall_seconds))],
        ["Training throughput", f"{speed:.1f} images/s" if math.isfinite(speed) else "n/a"],
        ["Precision", esc(s.precision or "not recorded")],
        ["Parameters", f"{fmt_int(s.params_trainable)} trainable, {fmt_int(s.params_non_trainable)} non-trainable"
         if s.params_trainable is not None else "not recorded by this run"],
        ["Regularizers", regularizers_text(v)],
    ]
    return rows


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
    """A variant's metrics: one seed as values; several as summary (the variant's interval for the accuracy and the
    gap, seed_summary for the rest) and every seed's value."""
    cells = {"acc": accuracy_cell, "gap": gap_cell, "epochs_run": epochs_cell, "best_epoch": best_epoch_cell,
             "wall_seconds": wall_cell}
    rows = []
    for key, label, fmt, bounds in RUN_METRICS:
        cell = cells[key](v) if key in cells else seed_summary(v.values(key), fmt, bounds)
        rows.append([label, cell] + ([per_seed_cell(v, key, fmt)] if len(v.runs) > 1 else []))
    if len(v.runs) > 1:
        header = ["Metric", "Mean [95% interval]", "Per seed"]
        note = ("Accuracy and gap: the variant's, over its learned seeds, on images like val/ (seeds and val images "
                "both sampled). Other rows: Student t intervals over the learned seeds (about this training set, or "
                "these val images), clipped to the quantity's range (marked); two seeds: the two values. Seeds at "
                "chance are listed per seed and are in no interval.")
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
        verdict = verdict_text(c) + (f"; {networks_text(c)}" if c.networks else "")
        rows.append([f"{code(c.variant)} − {code(c.reference)}", f"{c.n_seeds[0]} vs {c.n_seeds[1]}",
                     PP(c.diff) if c.has_interval else "n/a (no claim)", interval_text(c), verdict,
                     plan_text(c, "detect"), plan_text(c, "equivalent"), superiority_text(c)])
    doc.table(["Comparison", "Learned seeds", f"Difference in {what} (estimate)", "Simultaneous 95% interval",
               "Verdict", f"Seeds a new study needs to detect this difference ({POWER:.0%} power)",
               f"Seeds it needs to show equivalence within {fmt_margin(an.margin)}",
               "P(a seed of the first beats a seed of the second), on these val images"], rows, id=id,
              note=f"{an.family}, over the learned seeds, accounting for the seeds and the val images (paired). "
                   f"Verdicts: {verdict_rules(an)} Seeds a new study needs: estimates from the variance seen here, "
                   "with the range the seed variance's uncertainty leaves.")


def forest_figure(doc: Document, study: Study, an: Analysis, comps: list[Comparison], name: str, what: str) -> None:
    items = [dict(label=f"{c.variant} − {c.reference}", diff=c.diff * 100, lo=c.lo * 100, hi=c.hi * 100,
                  seeds=[s * 100 for s in c.seeds], color=study.colors[c.variant],
                  clipped_lo=c.clipped and c.lo <= -c.bound, clipped_hi=c.clipped and c.hi >= c.bound) for c in comps]
    path, rel = study.figure(name)
    plot_forest(items, path, f"Difference in {what} (pp)", limit=comps[0].bound * 100, margin=an.margin * 100)
    doc.figure(rel, f"Differences in {what}, sorted by estimate: the simultaneous interval of each comparison (line; "
                    "an arrow where it runs past the edge of the possible range), its estimate (large dot), and "
                    "every learned seed of the variant minus the reference's mean on these val images (small dots). "
                    f"Dashed: no difference; shaded: the {fmt_margin(an.margin)} margin. A hollow dot has no interval: "
                    "no claim about the variants.")


# -------------------------------------------------------------------------------------- architecture


def architecture(doc: Document, run: Run, ident: str, level: int = 3, title: str = "") -> None:
    """The layer table and diagram as the run recorded them when it trained (summary.json's `layers` and parameter
    counts), under a heading of `level` (none at 0): Mermaid in the Markdown, an inline SVG in the HTML. Never
    rebuilt with today's code, which may build something else."""
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


def architectures(doc: Document, study: Study, an: Analysis) -> None:
    """Every variant's architecture under one heading (the compare report shows each in its model's section)."""
    doc.h(1, "Architecture")
    several = len(study.shown) > 1
    for name, v in study.shown.items():
        architecture(doc, v.described[0], ident=name, level=2 if several else 0)


# ----------------------------------------------------------------------------------------- figures


def seed_curves_figure(doc: Document, study: Study, v: Variant) -> None:
    series = {seed: rows for seed, rows in v.series.items() if rows}
    if not series:
        doc.p(f"{code(v.name)}: metrics.csv holds no epoch yet.")
        return
    path, rel = study.figure_of("curves", v.name)
    n = len(series)
    plot_seed_curves(series, path, title=f"{v.name}: {n} seed{'s' if n > 1 else ''}", c=v.color)
    what = "every seed as a thin line, the mean over the epochs all seeds reached in bold" if n > 1 else "one seed"
    doc.figure(rel, f"Loss and accuracy of {code(v.name)} per epoch, training dashed (Keras-style running values, "
                    f"augmentation and dropout on) and evaluation solid: {what}.")


def training_curves(doc: Document, study: Study, an: Analysis) -> None:
    doc.h(1, "Training curves")
    for v in study.shown.values():
        seed_curves_figure(doc, study, v)


def overlay_figure(doc: Document, study: Study, an: Analysis) -> None:
    path, rel = study.figure("overlay.png")
    plot_overlay({name: v.series for name, v in study.variants.items()}, path, colors=study.colors)
    doc.figure(rel, "All variants on the same axes, one colour per variant (the same in every figure): evaluation "
                    "solid, training dashed" + (", mean over seeds in bold." if study.multi_seed else "."))


def gap_figure(doc: Document, study: Study, an: Analysis) -> None:
    panels = {name: {"series": v.series,
                     "measured": [(f.best_epoch if math.isfinite(f.best_epoch) else f.epochs_run, f.clean, f.acc)
                                  for f in v.runs if f.gap_measured]}
              for name, v in study.variants.items()}
    path, rel = study.figure("gap.png")
    plot_gap_grid(panels, path, colors=study.colors)
    doc.figure(rel, "One panel per variant (shared axes): accuracy per epoch, training dashed (running, augmentation "
                    "on) and evaluation solid; the vertical bar at each seed's best epoch is its measured "
                    "generalization gap, from clean training accuracy (hollow) to restored-best accuracy (dot).")


# ------------------------------------------------------------------------- per class, mistakes, inputs


def per_class(doc: Document, study: Study, an: Analysis) -> None:
    doc.h(1, "Per-class accuracy")
    if not study.runs:
        doc.p(NOT_EVALUATED)
        return
    per_variant, names = {}, None
    for name, v in study.variants.items():
        preds = [(f, f.predictions) for f in v.summarized if f.predictions is not None]
        if not preds:
            doc.p(f"{code(name)} has no predictions.npz; no per-class results.")
            continue
        mats = [confusion(p) for _, p in preds]
        if names is not None and mats[0].shape[0] != len(names):
            doc.p(f"{code(name)} was scored on {mats[0].shape[0]} classes, not {len(names)}: left out of the table.")
            continue
        names = names or class_names(preds[0][0].run, mats[0].shape[0])
        with np.errstate(invalid="ignore", divide="ignore"):
            per_variant[name] = np.stack([np.diag(m) / m.sum(axis=1) for m in mats])  # (seeds, classes)
        path, rel = study.figure_of("confusion", name)
        plot_confusion(sum(mats), names, path, title=f"{name}: confusion matrix (% of each true class)")
        pooled = f", counts summed over {len(mats)} seeds" if len(mats) > 1 else ""
        doc.figure(rel, f"Confusion matrix of {code(name)} on val/, restored-best weights{pooled}; each row (true "
                        "class) sums to 100%.")
    if per_variant:
        header = ["Class"] + [code(v) for v in per_variant]
        rows = [[esc(name)] + [seed_summary(list(acc[:, i]), PCT) for acc in per_variant.values()]
                for i, name in enumerate(names)]
        doc.table(header, rows, id="per-class",
                  note="Recall per true class of the restored-best model on these val images, over the seeds that "
                       "learned: one seed as is, two as both values, three or more as mean [95% Student t interval "
                       "over the seeds, about these val images only].")


def mistakes(doc: Document, study: Study, an: Analysis) -> None:
    doc.h(1, "Most confidently misclassified validation images")
    if not study.runs:
        doc.p(NOT_EVALUATED)
        return
    for name, v in study.variants.items():
        f = v.runs[0]
        pred = f.predictions
        if pred is None or len(pred.get("worst_index", [])) == 0 or "worst_images" not in pred:
            doc.p(f"{code(name)} (seed {f.seed}): no misclassified images recorded.")
            continue
        idx = pred["worst_index"].astype(np.int64)
        guess = pred["probs"][idx].argmax(axis=1)
        names = class_names(f.run, pred["probs"].shape[1])
        path, rel = study.figure_of("misclassified", name)
        plot_misclassified(pred["worst_images"], [names[i] for i in pred["labels"][idx]], [names[i] for i in guess],
                           [float(c) for c in pred["probs"][idx, guess]], path, title=f"{name} (seed {f.seed})")
        doc.figure(rel, f"{code(name)}, seed {f.seed}: the {len(idx)} validation images it got wrong with the "
                        "highest confidence, with true and predicted class (and the predicted probability).")


def augmentation(doc: Document, study: Study, an: Analysis) -> None:
    """One figure per augmentation the variants trained with, drawn from the draws their run recorded in
    samples.npz at training time: today's augmentation code is never re-run on a run's images."""
    doc.h(1, "Data augmentation")
    used, drawn = False, set()
    for name, v in study.shown.items():
        run = v.described[0]
        aug = str(run.config.get("augment", "none"))
        if aug == "none" or aug in drawn:
            continue
        used = True
        samples = run.samples() or {}
        images, draws = samples.get("images"), samples.get("augmented")
        if images is None or len(images) == 0:
            doc.p(f"{code(name)} uses augment = {code(aug)} but its run folder has no samples.npz to illustrate it.")
        elif draws is None:
            doc.p(f"{code(name)} uses augment = {code(aug)}, but its run folder records no draws of it (a run older "
                  "than that record): not redrawn with today's code, which may augment differently.")
        elif draws.ndim != 5 or draws.shape[0] < 1 or draws.shape[2:] != images.shape[1:]:
            doc.p(f"{code(name)} uses augment = {code(aug)}, but its samples.npz holds draws of shape "
                  f"{esc(draws.shape)}, not (images, draws, height, width, 3): not drawn.")
        else:
            drawn.add(aug)
            path, rel = study.figure_of("augmentation", aug)
            plot_augmentation(images, draws, aug, path)
            doc.figure(rel, f"augment = {code(aug)} (used by {code(name)}): each row is a training image from "
                            "samples.npz, first as stored, then draws of the run's own augmentation, recorded when "
                            "it trained.")
    if not used:
        doc.p("This run uses no data augmentation." if study.single else "No variant uses data augmentation.")


# ----------------------------------------------------------------------------------- how to read it


def how_to_read(doc: Document, study: Study, an: Analysis) -> None:
    doc.h(1, "How to read the statistics")
    doc.bullets(method_notes(an, study))
