"""The compare report: the notebook's "Comparison" section, recomputed from run folders.

`render_compare(DIR)` writes DIR/report.md (figures in DIR/figures/) and a self-contained DIR/report.html.
Every number and every direction in the text comes from the runs' summary.json, metrics.csv and
predictions.npz; nothing is written in advance. `comparison_rows` + `print_table` give the CLI the same
"Summary of Key Differences" table for the terminal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import stats
from ..models import build_model, count_params, layer_table, mermaid
from ..rundir import Run
from . import common
from .common import (COUNT, LOSS, PCT, PP, SECONDS, Difference, Study, config_of, fmt_int, print_table,  # noqa: F401
                     summary_cell, values)
from .document import Document, write_document
from .plots import plot_augmentation, plot_confusion, plot_misclassified

MODEL_METRICS = [
    ("train_loss", "Final train loss", LOSS),
    ("train_accuracy", "Final train accuracy", PCT),
    ("val_loss", "Final val loss", LOSS),
    ("val_accuracy", "Final val accuracy", PCT),
    ("restored_val_loss", "Restored-best val loss (the notebook's test loss)", LOSS),
    ("restored_val_accuracy", "Restored-best val accuracy (the notebook's test accuracy)", PCT),
    ("gap", "Overfitting gap (final train − final val accuracy)", PP),
    ("epochs_run", "Epochs run", COUNT),
    ("best_epoch", "Best epoch (lowest val loss)", COUNT),
    ("wall_seconds", "Wall time", SECONDS),
]


def _group(runs: list[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.variant, []).append(r)
    return groups


def _architecture(runs: list[Run]) -> str:
    cfg = config_of(runs[0])
    s = runs[0].summary
    total = (s.get("params_trainable") or 0) + (s.get("params_non_trainable") or 0)
    return (f"{len(cfg.widths)} conv blocks × {cfg.convs_per_block} conv ({'-'.join(map(str, cfg.widths))} filters), "
            f"dense {cfg.dense_width}{', batch norm' if cfg.batchnorm else ''}; {fmt_int(total)} params")


def comparison_rows(runs: list[Run]) -> list[dict]:
    """The notebook's "Summary of Key Differences": one dict per aspect, {"Aspect": ..., <variant>: cell}."""
    groups = _group(runs)
    aspects = [
        ("Architecture", _architecture),
        ("Epochs to convergence", lambda rs: f"best epoch {summary_cell(values(rs, 'best_epoch'), COUNT)}, "
                                             f"stopped after {summary_cell(values(rs, 'epochs_run'), COUNT)}"),
        ("Training accuracy (final epoch)", lambda rs: summary_cell(values(rs, "train_accuracy"), PCT)),
        ("Validation accuracy (final epoch)", lambda rs: summary_cell(values(rs, "val_accuracy"), PCT)),
        ("Restored-best val accuracy (\"test\")", lambda rs: summary_cell(values(rs, "restored_val_accuracy"), PCT)),
        ("Overfitting gap (train − val accuracy)", lambda rs: summary_cell(values(rs, "gap"), PP)),
        ("Regularization techniques", lambda rs: ", ".join(config_of(rs[0]).regularizers()) or "none"),
        ("Seeds", lambda rs: ", ".join(str(r.seed) for r in rs)),
    ]
    return [{"Aspect": name, **{v: cell(rs) for v, rs in groups.items()}} for name, cell in aspects]


def reference_variant(study: Study) -> str:
    """The least-regularized variant (first on ties): the one the others are compared against."""
    order = list(study.groups)
    return min(order, key=lambda v: (len(config_of(study.groups[v][0]).regularizers()), order.index(v)))


# ------------------------------------------------------------------------------------------ sections


def _model_section(doc: Document, study: Study, variant: str) -> None:
    runs = study.groups[variant]
    run = runs[0]
    cfg = config_of(run)
    num_classes = len((run.summary.get("dataset") or {}).get("classes") or []) or _num_classes(run)
    doc.h(2, f"Model `{variant}`")
    regs = cfg.regularizers()
    doc.p(f"Regularizers: {', '.join(regs) if regs else 'none'}. "
          + ("One seed: every number below is a single run." if len(runs) == 1 else
             f"{len(runs)} seeds: mean ± {common.CONFIDENCE:.0%} confidence interval, with every seed's value."))
    common.metric_table(doc, runs, MODEL_METRICS, id=f"metrics-{common.slug(variant)}")
    trainable = sorted({fmt_int(r.summary.get("params_trainable")) for r in runs})
    frozen = sorted({fmt_int(r.summary.get("params_non_trainable")) for r in runs})
    doc.p(f"Trainable parameters: {', '.join(trainable)}; non-trainable (batch-norm statistics): {', '.join(frozen)}.")

    # The architecture is rebuilt from the run's own config.yaml, so the table shows what was trained.
    model = build_model(cfg, num_classes)
    table = layer_table(model, cfg.image_size)
    doc.h(3, f"Architecture of `{variant}`")
    doc.table(["Layer (type)", "Output shape", "Param #"],
              [[f"{r['name']} ({r['type']})", str(r["output_shape"]), fmt_int(r["params"])] for r in table])
    t, nt = count_params(model)
    doc.p(f"Total params: {fmt_int(t + nt)}; trainable: {fmt_int(t)}; non-trainable: {fmt_int(nt)}.")
    doc.code(mermaid(model, cfg.image_size), "mermaid")
    common.seed_curves_figure(doc, study, variant)


def _num_classes(run: Run) -> int:
    pred = run.predictions()
    return int(pred["probs"].shape[1]) if pred is not None else 10


def _differences_section(doc: Document, study: Study, reference: str) -> tuple[list[Difference], list[Difference]]:
    acc = common.differences(study.groups, reference, "restored_val_accuracy")
    gap = common.differences(study.groups, reference, "gap")
    doc.h(1, "Difference between the models")
    if not study.multi_seed:
        doc.p("At least one model has a single seed, so there is no estimate of seed-to-seed noise: the differences "
              "below are point estimates without intervals or p-values. A single seed is an anecdote.")
    common.difference_table(doc, acc, PP, "Restored-best val accuracy", id="accuracy-difference")
    common.difference_table(doc, gap, PP, "Overfitting gap")
    common.forest_figure(doc, study, acc, "forest.png", "Difference in restored-best val accuracy (pp)")
    return acc, gap


def _per_class_section(doc: Document, study: Study) -> None:
    doc.h(1, "Per-class accuracy")
    per_variant, names = {}, None
    for variant, runs in study.groups.items():
        preds = [(r, r.predictions()) for r in runs]
        preds = [(r, p) for r, p in preds if p is not None]
        if not preds:
            doc.p(f"`{variant}` has no predictions.npz; no per-class results.")
            continue
        mats = [common.confusion(p) for _, p in preds]
        names = names or common.class_names(preds[0][0], mats[0].shape[0])
        with np.errstate(invalid="ignore", divide="ignore"):
            per_variant[variant] = np.stack([np.diag(m) / m.sum(axis=1) for m in mats])  # (seeds, classes)
        path, rel = study.figure(f"confusion-{common.slug(variant)}.png")
        plot_confusion(sum(mats), names, path, title=f"{variant}: confusion matrix (row-normalised)")
        pooled = f", counts summed over {len(mats)} seeds" if len(mats) > 1 else ""
        doc.figure(rel, f"Confusion matrix of `{variant}` on the validation split, restored-best weights{pooled}; "
                        "each row (true class) sums to 1.")
    if per_variant:
        header = ["Class"] + [f"`{v}`" for v in per_variant]
        rows = [[name] + [summary_cell(list(acc[:, i]), PCT) for acc in per_variant.values()]
                for i, name in enumerate(names)]
        doc.table(header, rows, id="per-class",
                  note="Recall per true class of the restored-best model; mean ± 95% CI over seeds where there are several.")


def _misclassified_section(doc: Document, study: Study) -> None:
    doc.h(1, "Most confidently misclassified validation images")
    for variant, runs in study.groups.items():
        run = runs[0]
        pred = run.predictions()
        if pred is None or len(pred.get("worst_index", [])) == 0:
            doc.p(f"`{variant}` (seed {run.seed}): no misclassified images recorded.")
            continue
        idx = pred["worst_index"].astype(np.int64)
        guess = pred["probs"][idx].argmax(axis=1)
        names = common.class_names(run, pred["probs"].shape[1])
        path, rel = study.figure(f"misclassified-{common.slug(variant)}.png")
        plot_misclassified(pred["worst_images"], [names[i] for i in pred["labels"][idx]], [names[i] for i in guess],
                           [float(c) for c in pred["probs"][idx, guess]], path, title=f"{variant} (seed {run.seed})")
        doc.figure(rel, f"`{variant}`, seed {run.seed}: the {len(idx)} validation images it got wrong with the highest "
                        "confidence, with true and predicted class (and the predicted probability).")


def augmentation_section(doc: Document, study: Study) -> None:
    doc.h(1, "Data augmentation")
    shown = set()
    for variant, runs in study.groups.items():
        name = config_of(runs[0]).augment
        if name == "none" or name in shown:
            continue
        images = runs[0].samples()
        if images is None or len(images) == 0:
            doc.p(f"`{variant}` uses augment = `{name}` but its run folder has no samples.npz to illustrate it.")
            continue
        shown.add(name)
        path, rel = study.figure(f"augmentation-{common.slug(name)}.png")
        plot_augmentation(images, name, path)
        doc.figure(rel, f"augment = `{name}` (used by `{variant}`): each row is a training image from samples.npz, "
                        "first as stored, then independent draws of the training code's own augmentation.")
    if not shown:
        doc.p("No variant uses data augmentation.")


# ---------------------------------------------------------------------------------------- conclusion


def _means(study: Study, variant: str, key: str) -> float:
    return stats.mean_ci(values(study.groups[variant], key))["mean"]


def _ci(d: Difference) -> str:
    return f"95% CI {common.interval_text(d, PP)}, {common.p_text(d.p, 'Welch p')}"


def _architecture_note(study: Study, a: str, b: str) -> str:
    ca, cb = config_of(study.groups[a][0]), config_of(study.groups[b][0])
    fields = [("widths", "filters per block"), ("convs_per_block", "convolutions per block"), ("dense_width", "dense width")]
    diffs = [f"{label} {getattr(cb, f)} vs {getattr(ca, f)}" for f, label in fields if getattr(ca, f) != getattr(cb, f)]
    if not diffs:
        return ""
    return (f" The two models also differ in architecture ({'; '.join(diffs)}), so the difference is not due to "
            "regularization alone.")


def conclusion(study: Study) -> list[str]:
    """Paragraphs whose every number and direction is computed from the runs."""
    a = reference_variant(study)
    acc = {d.variant: d for d in common.differences(study.groups, a, "restored_val_accuracy")}
    gap = {d.variant: d for d in common.differences(study.groups, a, "gap")}
    out = []
    if len(study.groups) == 1:
        out.append(f"This study holds only `{a}`: there is no other model to compare it with.")
    elif not study.multi_seed:
        out.append("With a single seed per model this comparison is an anecdote, not evidence: seed-to-seed variation "
                   "is unknown, so no interval or p-value can be given and any difference below may be noise. "
                   "Run more seeds (`--seeds 3` or more) to test it.")
    for b in (v for v in study.groups if v != a):
        d, g = acc[b], gap[b]
        ma, mb = _means(study, a, "restored_val_accuracy"), _means(study, b, "restored_val_accuracy")
        acc_text = f"{PCT(mb)} against {PCT(ma)} restored-best validation accuracy, a difference of {PP(d.diff)}"
        if not d.tested:
            lead = "On this evidence" if study.multi_seed else "On this one seed"
            verb = "generalises better than" if d.diff > 0 else "does not generalise better than"
            text = f"{lead}, `{b}` {verb} `{a}`: {acc_text} (no interval: too few seeds or zero variance)."
        elif d.distinguishable and d.diff > 0:
            text = f"`{b}` generalises better than `{a}`: {acc_text} ({_ci(d)}), distinguishable from noise."
        elif d.distinguishable:
            text = (f"`{b}` does not generalise better than `{a}`: {acc_text} ({_ci(d)}); "
                    f"`{a}` is better by more than the seed-to-seed noise.")
        else:
            favoured = b if d.diff > 0 else a
            text = (f"`{b}` does not generalise distinguishably better than `{a}`: {acc_text} ({_ci(d)}). "
                    f"The point estimate favours `{favoured}`, but the difference is not distinguishable from noise.")
        ga, gb = _means(study, a, "gap"), _means(study, b, "gap")
        direction = "smaller" if gb < ga else "larger" if gb > ga else "the same"
        text += (f" Its overfitting gap (final train minus final validation accuracy) is {PP(gb)} against {PP(ga)}, "
                 f"{direction} by {PP(abs(g.diff)).lstrip('+')}")
        if g.tested:
            text += f" ({_ci(g)}; {'distinguishable' if g.distinguishable else 'not distinguishable'} from noise)."
        else:
            text += "."
        text += (f" It ends at {PCT(_means(study, b, 'train_accuracy'))} training accuracy against "
                 f"{PCT(_means(study, a, 'train_accuracy'))}, and stopped after "
                 f"{COUNT(_means(study, b, 'epochs_run'), mean=not _single(study))} epochs against "
                 f"{COUNT(_means(study, a, 'epochs_run'), mean=not _single(study))} "
                 f"(best epoch {COUNT(_means(study, b, 'best_epoch'), mean=not _single(study))} against "
                 f"{COUNT(_means(study, a, 'best_epoch'), mean=not _single(study))}).")
        text += _architecture_note(study, a, b)
        out.append(text)
    out.append("Restored-best accuracy is measured on the validation split that also chose the best epoch (the notebook "
               "calls it test accuracy), so it is slightly optimistic for every model alike.")
    return out


def _single(study: Study) -> bool:
    return all(len(rs) == 1 for rs in study.groups.values())


# -------------------------------------------------------------------------------------------- render


def render_compare(study_dir) -> tuple[Path, Path]:
    """Render DIR/report.md and DIR/report.html from the run folders under DIR. Returns both paths."""
    study = common.load_study(study_dir)
    names = " vs ".join(f"`{v}`" for v in study.groups)
    doc = Document(f"reglab compare: {names.replace('`', '')}")
    doc.p(f"{common.GENERATED} "
          + ("Each model has a single seed: a single seed is an anecdote, not evidence."
             if not study.multi_seed else
             f"Each metric is the mean ± {common.CONFIDENCE:.0%} confidence interval (Student's t) over seeds, "
             "followed by every seed's value."))
    common.provenance(doc, study)

    doc.h(1, "Summary of key differences")
    rows = comparison_rows(study.runs)
    doc.table(list(rows[0]), [list(r.values()) for r in rows], id="key-differences",
              note="Overfitting gap = final-epoch training accuracy minus final-epoch validation accuracy. "
                   "Restored-best = the weights with the lowest validation loss, evaluated again on the validation "
                   "split (what the notebook reports as test accuracy).")

    doc.h(1, "Models")
    for variant in study.groups:
        _model_section(doc, study, variant)

    doc.h(1, "Training curves compared")
    common.overlay_figure(doc, study)
    common.gap_figure(doc, study, side_by_side=False)

    if len(study.groups) >= 2:
        _differences_section(doc, study, reference_variant(study))
    _per_class_section(doc, study)
    _misclassified_section(doc, study)
    augmentation_section(doc, study)

    doc.h(1, "Conclusion")
    for paragraph in conclusion(study):
        doc.p(paragraph)
    return write_document(doc, study.path, "report")
