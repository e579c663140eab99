"""The report of one run folder: `reglab report RUN_DIR` writes RUN_DIR/report.md, report.html and figures/.

Its curves, a summary table (the headline accuracy with its Wilson interval, the measured gap, epochs, time),
the confusion matrix and per-class recall, the most confident mistakes, the augmentation grid, the architecture
and the provenance: all read from the run folder alone. A run that did not finish is rendered with what it has,
and says so first.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import stats
from ..rundir import load_run
from . import common
from .analysis import method_notes
from .common import COUNT, LOSS, PCT, PP, SECONDS, fmt_int
from .document import Document, code, esc, plain, write_document
from .facts import (PROBLEM_WORDS, RunFacts, class_names, confusion, data_changes, design_text, problem_detail,
                    run_facts)
from .plots import color, plot_augmentation, plot_confusion, plot_misclassified, plot_seed_curves
from .provenance import setup_section
from .sections import architecture


def _figure(run_dir: Path, name: str) -> tuple[Path, str]:
    return run_dir / "figures" / name, f"figures/{name}"


def _summary_rows(f: RunFacts) -> list[list[str]]:
    s = f.summary
    lo, hi = f.wilson
    chooser = "selection split" if f.chosen_on == "selection split" else "val/"
    rows = [
        ["Restored-best accuracy on val/ (headline)",
         f"{PCT(f.acc)} ({f.correct:,} of {f.n:,} images; Wilson 95% [{PCT(lo)}, {PCT(hi)}])"
         + (" **at chance**" if f.at_chance else "")],
        ["Restored-best loss on val/", LOSS(common._num(s.restored_val_loss))],
        ["Clean training accuracy (restored-best weights, eval mode, un-augmented)",
         f"{PCT(f.clean)} ({fmt_int(f.clean_n)} training images)" if f.gap_measured else "not measured (an older run)"],
        ["Generalization gap (clean training − headline accuracy)",
         PP(f.gap) + ("" if f.gap_measured else " (older run: final running train − final val accuracy)")],
        ["Final-epoch training accuracy (Keras-style running value, augmentation and dropout on)",
         PCT(common._num(s.train_accuracy))],
        ["Final-epoch training loss (running)", LOSS(common._num(s.train_loss))],
    ]
    if f.chosen_on == "selection split":
        rows += [["Final-epoch selection-split accuracy", PCT(common._num(s.select_accuracy))],
                 ["Final-epoch selection-split loss", LOSS(common._num(s.select_loss))]]
    else:
        rows += [["Final-epoch val/ accuracy", PCT(common._num(s.val_accuracy))],
                 ["Final-epoch val/ loss", LOSS(common._num(s.val_loss))]]
    rows += [
        ["Epochs", f"{f.epochs_text()}" + (f" (cap {f.epochs_max})" if f.epochs_max and not f.censored else "")],
        [f"Best epoch (chosen on {chooser})", COUNT(f.best_epoch)],
        ["Wall time (this machine)", SECONDS(common._num(s.wall_seconds))],
        ["Training throughput", f"{common._num(s.train_images_per_second):.1f} images/s"
         if math.isfinite(common._num(s.train_images_per_second)) else "n/a"],
        ["Precision", esc(s.precision or "not recorded")],
        ["Parameters", f"{fmt_int(s.params_trainable)} trainable, "
                       f"{fmt_int(s.params_non_trainable)} non-trainable"],
        ["Regularizers", ", ".join(esc(r) for r in s.regularizers or []) or "none"],
    ]
    return rows


def render_single(run_dir, quiet: bool = False) -> tuple[Path, Path]:
    """Render RUN_DIR/report.md and RUN_DIR/report.html for one run folder. Returns both paths."""
    run_dir = Path(run_dir)
    run = load_run(run_dir, check_predictions=False)
    every = run_facts(run)  # for the architecture and the provenance, whatever the status
    evaluated = run.summary.restored_val_accuracy is not None
    facts = every if evaluated else None
    c = color(0)
    doc = Document(f"reglab run: {esc(run.variant)}, seed {run.seed}")
    doc.p("Generated from the files of this run folder; every number below is computed from them.")
    if run.status != "finished":
        reason = problem_detail(run)
        doc.warning(f"**Warning:** this run is not finished (status {esc(run.status)}): {reason}. The report shows "
                    "what the folder holds so far.")
        if not quiet:
            common.warn(f"run {run_dir} {PROBLEM_WORDS.get(run.status, ('', 'is ' + run.status))[1]}: "
                        f"{plain(reason)}")
    for path, change in data_changes([run.summary]):
        doc.warning(f"**Warning: the data has changed since this run was trained**: {esc(path)}: {esc(change)}. The "
                    "numbers below are those of the data as it was; `--resume` would refuse to continue on it.")
        if not quiet:
            common.warn(f"the data at {path} has changed since {run_dir} was trained: {change}")
    if facts is not None:
        doc.p(design_text([facts], facts.chosen_on))
        if facts.at_chance:
            doc.warning(f"**Warning:** this run is **at chance**: {facts.chance_reason}.")
            if not quiet:
                common.warn(f"run {run_dir} is at chance: {plain(facts.chance_reason)}")

    doc.h(1, "Summary")
    if facts is not None:
        doc.table(["Metric", "Value"], _summary_rows(facts), id="summary",
                  note="The Wilson interval covers the sampling of validation images only; a single run says nothing "
                       "about seed-to-seed variation.")
    else:
        doc.p("No results yet: the run has not been evaluated.")

    doc.h(1, "Training curves")
    if run.metrics:
        path, rel = _figure(run_dir, "curves.png")
        plot_seed_curves({run.seed: run.metrics}, path, title=f"{run.variant} (seed {run.seed})", c=c)
        doc.figure(rel, "Loss and accuracy per epoch: training dashed (Keras-style running values, augmentation and "
                        "dropout on), the split that chooses the best epoch solid.")
    else:
        doc.p("metrics.csv holds no epoch yet.")

    pred = facts.predictions if facts is not None else None
    if pred is None and (run_dir / "predictions.npz").exists():
        pred = run.predictions()
    doc.h(1, "Per-class accuracy")
    if pred is not None:
        names = class_names(run, pred["probs"].shape[1])
        mat = confusion(pred)
        path, rel = _figure(run_dir, "confusion.png")
        plot_confusion(mat, names, path, title="confusion matrix (% of each true class)")
        doc.figure(rel, "Confusion matrix on val/, restored-best weights; each row (true class) sums to 100%.")
        rows = []
        for i, name in enumerate(names):
            n = int(mat[i].sum())
            k = int(mat[i, i])
            lo, hi = stats.wilson(k, n) if n else (float("nan"), float("nan"))
            rows.append([esc(name), f"{k:,} of {n:,}", PCT(k / n) if n else "n/a", f"[{PCT(lo)}, {PCT(hi)}]"])
        doc.table(["Class", "Right", "Recall", "Wilson 95%"], rows, id="per-class")
        doc.h(1, "Most confidently misclassified validation images")
        idx = np.asarray(pred.get("worst_index", []), dtype=np.int64)
        if idx.size and "worst_images" in pred:
            guess = pred["probs"][idx].argmax(axis=1)
            path, rel = _figure(run_dir, "misclassified.png")
            plot_misclassified(pred["worst_images"], [names[i] for i in pred["labels"][idx]], [names[i] for i in guess],
                               [float(p) for p in pred["probs"][idx, guess]], path)
            doc.figure(rel, f"The {idx.size} validation images this run got wrong with the highest confidence, with "
                            "true and predicted class (and the predicted probability).")
        else:
            doc.p("No misclassified images recorded.")
    else:
        doc.p("No predictions.npz: no per-class results.")

    doc.h(1, "Data augmentation")
    aug = str(run.config.get("augment", "none"))
    samples = run.samples() or {}
    images, draws = samples.get("images"), samples.get("augmented")
    if aug == "none":
        doc.p("This run uses no data augmentation.")
    elif images is None or len(images) == 0:
        doc.p(f"augment = {code(aug)}, but the run folder has no samples.npz to illustrate it.")
    elif draws is None:
        doc.p(f"augment = {code(aug)}, but the run folder records no draws of it (a run older than that record): not "
              "redrawn with today's code, which may augment differently.")
    else:
        path, rel = _figure(run_dir, "augmentation.png")
        plot_augmentation(images, draws, aug, path)
        doc.figure(rel, f"augment = {code(aug)}: each row is a training image from samples.npz, first as stored, "
                        "then draws of the run's own augmentation, recorded when it trained.")

    architecture(doc, run, ident=run.variant, level=1, title="Architecture")
    doc.h(1, "How to read the numbers")
    doc.bullets(method_notes(None, []))
    setup_section(doc, [every])
    return write_document(doc, run_dir, "report")
