"""The compare report: the notebook's "Comparison" section, recomputed from run folders.

`render_compare(DIR)` writes DIR/report.md (figures in DIR/figures/) and a self-contained DIR/report.html.
Every number, direction and verdict in the text comes from the runs' summary.json, metrics.csv and
predictions.npz (see analysis.py for the statistics); nothing is written in advance. `terminal_table` prints the
same "Summary of key differences" on the terminal.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import analysis, common, facts, provenance, sections
from .analysis import Analysis, seed_summary
from .common import COUNT, PCT, PP, fmt_int
from .document import Document, code, esc, write_document
from .facts import Study, Variant
from .plots import plot_augmentation, plot_confusion, plot_misclassified


ARCHITECTURE = (("widths", "filters per block"), ("convs_per_block", "convolutions per block"),
                ("dense_width", "dense width"))  # the config.yaml values that make two architectures differ


def _architecture(v: Variant) -> str:
    cfg = v.runs[0].run.config
    try:
        widths, convs, dense, batchnorm = cfg["widths"], cfg["convs_per_block"], cfg["dense_width"], cfg["batchnorm"]
        return (f"{len(widths)} conv blocks × {convs} conv ({'-'.join(map(str, widths))} filters), "
                f"dense {dense}{', batch norm' if batchnorm else ''}")
    except (KeyError, TypeError) as e:  # a config.yaml without them must not stop the report; it is named instead
        return f"not available ({esc(type(e).__name__)})"


def _params(v: Variant) -> str:
    s = v.runs[0].summary
    t, nt = s.params_trainable, s.params_non_trainable
    if t is None:
        return "not recorded by this run"
    return f"{fmt_int(t + (nt or 0))} total, {fmt_int(t)} trainable"


def _seeds(v: Variant) -> str:
    text = f"{len(v.runs)} of {v.total} finished ({', '.join(str(f.seed) for f in v.runs)})"
    if v.others:
        text += "; " + ", ".join(f"seed {r.seed} {facts.PROBLEM_WORDS.get(r.status, (r.status,))[0]}"
                                 for r in v.others)
    return text


def comparison_rows(study: Study, an: Analysis | None = None) -> list[dict]:
    """The notebook's "Summary of Key Differences": one dict per aspect, {"Aspect": ..., <variant>: cell} (markup)."""
    aspects = [
        ("Architecture", _architecture),
        ("Parameters", _params),
        ("Regularization techniques", sections.regularizers_text),
        ("Seeds", _seeds),
        ("Epochs run", analysis.epochs_cell),
        ("Best epoch", lambda v: seed_summary(v.values("best_epoch"), COUNT, common.NONNEG)),
        ("Training accuracy (final epoch; running, augmentation on)",
         lambda v: seed_summary(v.values("train_accuracy"), PCT)),
        ("Clean training accuracy (restored-best, eval mode)", lambda v: seed_summary(v.values("clean"), PCT)),
        (f"Headline accuracy ({'test' if study.design == 'selection split' else 'restored-best on val/'})",
         analysis.accuracy_cell),
        ("Generalization gap (clean train − headline)", lambda v: seed_summary(v.values("gap"), PP, common.GAP_BOUNDS)),
        ("Wall time (this machine)", analysis.wall_cell),
    ]
    rows = [{"Aspect": name, **{code(n): cell(v) for n, v in study.variants.items()}} for name, cell in aspects]
    if an is not None and an.m:
        for metric, label in (("accuracy", "Verdict on accuracy"), ("gap", "Verdict on the gap")):
            row = {"Aspect": f"{label} vs {code(an.reference)}"}
            for n in study.variants:
                row[code(n)] = "reference" if n == an.reference else analysis.verdict_word(an.get(metric, n), an.margin)
            rows.append(row)
    return rows


def reference_variant(study: Study) -> str:
    """The least-regularized variant (first on ties; one that did not record its regularizers, after those that
    did): the one the others are compared against."""
    order = list(study.variants)

    def n_regs(v: str) -> float:
        regs = study.variants[v].regularizers
        return math.inf if regs is None else len(regs)

    return min(order, key=lambda v: (n_regs(v), order.index(v)))


# ------------------------------------------------------------------------------------------ sections


def _model_section(doc: Document, study: Study, v: Variant) -> None:
    doc.h(2, f"Model {code(v.name)}")
    n = len(v.runs)
    doc.p(f"Regularizers: {sections.regularizers_text(v)}. "
          + ("One seed: every number below is a single run." if n == 1 else f"{n} seeds, with every seed's value."))
    sections.metric_table(doc, v, id=f"metrics-{common.slug(v.name)}")
    doc.p(analysis.epochs_sentence(v) + " Best epoch" + ("s" if n > 1 else "") + ": "
          + ", ".join(COUNT(f.best_epoch) for f in v.runs) + ".")
    sections.architecture(doc, v.runs[0].run, ident=v.name)
    sections.seed_curves_figure(doc, study, v)


def _differences_section(doc: Document, study: Study, an: Analysis) -> None:
    doc.h(1, "Differences and verdicts")
    doc.p(f"Each model against {code(an.reference)} (the least regularized), on the headline accuracy and on the "
          f"measured generalization gap: {an.family}.")
    sections.comparison_table(doc, an, an.accuracy, "accuracy", id="accuracy-difference")
    sections.comparison_table(doc, an, an.gap, "generalization gap", id="gap-difference")
    sections.forest_figure(doc, study, an, an.accuracy, "forest.png", "headline accuracy")
    sections.forest_figure(doc, study, an, an.gap, "forest-gap.png", "generalization gap")


def per_class_section(doc: Document, study: Study) -> None:
    doc.h(1, "Per-class accuracy")
    per_variant, names = {}, None
    for name, v in study.variants.items():
        preds = [(f, f.predictions) for f in v.runs if f.predictions is not None]
        if not preds:
            doc.p(f"{code(name)} has no predictions.npz; no per-class results.")
            continue
        mats = [facts.confusion(p) for _, p in preds]
        if names is not None and mats[0].shape[0] != len(names):
            doc.p(f"{code(name)} was scored on {mats[0].shape[0]} classes, not {len(names)}: left out of the table.")
            continue
        names = names or facts.class_names(preds[0][0].run, mats[0].shape[0])
        with np.errstate(invalid="ignore", divide="ignore"):
            per_variant[name] = np.stack([np.diag(m) / m.sum(axis=1) for m in mats])  # (seeds, classes)
        path, rel = study.figure(f"confusion-{common.slug(name)}.png")
        plot_confusion(sum(mats), names, path, title=f"{name}: confusion matrix (% of each true class)")
        pooled = f", counts summed over {len(mats)} seeds" if len(mats) > 1 else ""
        doc.figure(rel, f"Confusion matrix of {code(name)} on val/, restored-best weights{pooled}; each row (true "
                        "class) sums to 100%.")
    if per_variant:
        header = ["Class"] + [code(v) for v in per_variant]
        rows = [[esc(name)] + [seed_summary(list(acc[:, i]), PCT) for acc in per_variant.values()]
                for i, name in enumerate(names)]
        doc.table(header, rows, id="per-class",
                  note="Recall per true class of the restored-best model, as seed_summary writes it: one seed as is, "
                       "two as both values, three or more as mean [95% t interval].")


def mistakes_section(doc: Document, study: Study) -> None:
    doc.h(1, "Most confidently misclassified validation images")
    for name, v in study.variants.items():
        f = v.runs[0]
        pred = f.predictions
        if pred is None or len(pred.get("worst_index", [])) == 0 or "worst_images" not in pred:
            doc.p(f"{code(name)} (seed {f.seed}): no misclassified images recorded.")
            continue
        idx = pred["worst_index"].astype(np.int64)
        guess = pred["probs"][idx].argmax(axis=1)
        names = facts.class_names(f.run, pred["probs"].shape[1])
        path, rel = study.figure(f"misclassified-{common.slug(name)}.png")
        plot_misclassified(pred["worst_images"], [names[i] for i in pred["labels"][idx]], [names[i] for i in guess],
                           [float(c) for c in pred["probs"][idx, guess]], path, title=f"{name} (seed {f.seed})")
        doc.figure(rel, f"{code(name)}, seed {f.seed}: the {len(idx)} validation images it got wrong with the "
                        "highest confidence, with true and predicted class (and the predicted probability).")


def augmentation_section(doc: Document, study: Study) -> None:
    """One figure per augmentation the variants trained with, drawn from the draws their run recorded in
    samples.npz at training time: today's augmentation code is never re-run on a run's images."""
    doc.h(1, "Data augmentation")
    used, drawn = False, set()
    for name, v in study.variants.items():
        run = v.runs[0].run
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
            path, rel = study.figure(f"augmentation-{common.slug(aug)}.png")
            plot_augmentation(images, draws, aug, path)
            doc.figure(rel, f"augment = {code(aug)} (used by {code(name)}): each row is a training image from "
                            "samples.npz, first as stored, then draws of the run's own augmentation, recorded when "
                            "it trained.")
    if not used:
        doc.p("No variant uses data augmentation.")


# ---------------------------------------------------------------------------------------- conclusion


def _acc_text(v: Variant) -> str:
    if len(v.runs) == 1:
        f = v.runs[0]
        lo, hi = f.wilson
        return f"{PCT(f.acc)} (one seed; Wilson 95% [{PCT(lo)}, {PCT(hi)}])"
    return f"{PCT(v.mean('acc'), mean=True)} (mean of {len(v.runs)} seeds)"


def _gap_text(v: Variant) -> str:
    return PP(v.mean("gap"), mean=len(v.runs) > 1)


def _evidence(c: analysis.Comparison) -> str:
    parts = [f"{common.fmt_level(c.level)} interval {analysis.interval_text(c)}, {c.method}"]
    if c.note and not c.seed_level:
        parts.append(c.note)
    if c.mcnemar:
        parts.append(f"exact McNemar on the {c.mcnemar['a_only'] + c.mcnemar['b_only']} images where the two runs "
                     f"disagree ({c.mcnemar['a_only']} vs {c.mcnemar['b_only']}): {common.p_text(c.mcnemar['p'])}")
    if c.seed_level:
        parts.append(f"minimum detectable difference at 80% power {analysis.mdd_text(c)}")
        parts.append(f"a seed of {code(c.variant)} beats a seed of {code(c.reference)} with probability "
                     f"{analysis.superiority_text(c)}")
    return "; ".join(parts)


def _architecture_note(study: Study, a: str, b: str) -> str:
    ca, cb = study.variants[a].runs[0].run.config, study.variants[b].runs[0].run.config
    diffs = [f"{label} {cb.get(k)} vs {ca.get(k)}" for k, label in ARCHITECTURE if ca.get(k) != cb.get(k)]
    if not diffs:
        return ""
    return (f" The two models also differ in architecture ({'; '.join(diffs)}), so a difference is not due to "
            "regularization alone.")


def conclusion(study: Study, an: Analysis) -> list[str]:
    """Paragraphs whose every number, direction and verdict is computed from the runs."""
    a = an.reference
    A = study.variants[a]
    out = []
    if len(study.variants) == 1:
        out.append(f"This study holds only {code(a)} among its finished runs: there is no other model to compare it "
                   "with.")
    for c_acc in an.accuracy:
        b = c_acc.variant
        B = study.variants[b]
        c_gap = an.get("gap", b)
        text = (f"**{code(b)} against {code(a)}.** Headline accuracy {_acc_text(B)} against {_acc_text(A)}, a "
                f"difference of {PP(c_acc.diff)}. Verdict: {analysis.verdict_text(c_acc, an.margin)} "
                f"({_evidence(c_acc)}).")
        text += (f" Generalization gap (clean training minus headline accuracy, measured) {_gap_text(B)} against "
                 f"{_gap_text(A)}. Verdict: {analysis.verdict_text(c_gap, an.margin)} ({_evidence(c_gap)}).")
        text += (f" Final-epoch running training accuracy (augmentation and dropout on, not used for the gap): "
                 f"{PCT(B.mean('train_accuracy'), mean=len(B.runs) > 1)} against "
                 f"{PCT(A.mean('train_accuracy'), mean=len(A.runs) > 1)}.")
        text += " Epochs: " + " ".join(analysis.epochs_sentence(v) for v in (B, A))
        for v in (B, A):
            flagged = [f for f in v.runs if f.at_chance]
            if flagged and not c_acc.not_ranked:
                text += " " + " ".join(f"{code(v.name)} seed {f.seed} is **at chance** ({f.chance_reason})."
                                       for f in flagged)
        text += _architecture_note(study, a, b)
        out.append(text)
    if len(study.variants) > 1 and study.fewest_seeds == 1:
        out.append("With a single seed on at least one side, the intervals above cover only the sampling of the "
                   "validation images, not seed-to-seed variation: another seed could give another answer. Run "
                   f"at least {analysis.RECOMMENDED_SEEDS} seeds (`--seeds {analysis.RECOMMENDED_SEEDS}`).")
    elif len(study.variants) > 1 and study.fewest_seeds < analysis.RECOMMENDED_SEEDS:
        out.append(f"With {study.fewest_seeds} seeds the seed-level intervals are wide (the minimum detectable "
                   f"differences above say how wide); run at least {analysis.RECOMMENDED_SEEDS} seeds "
                   f"(`--seeds {analysis.RECOMMENDED_SEEDS}`).")
    out.append(facts.design_text(study.runs, study.design))
    return out


# -------------------------------------------------------------------------------------------- render


def render_compare(study_dir, margin: float = 0.01, quiet: bool = False) -> tuple[Path, Path]:
    """Render DIR/report.md and DIR/report.html from the run folders under DIR. Returns both paths."""
    study = facts.load_study(study_dir, warn_stderr=not quiet)
    an = analysis.analyze(study, reference_variant(study), margin)
    names = " vs ".join(study.variants)
    doc = Document(f"reglab compare: {esc(names)}")
    doc.p(sections.GENERATED)
    sections.alerts(doc, study)
    doc.p(facts.design_text(study.runs, study.design))
    sections.runs_section(doc, study)

    doc.h(1, "Summary of key differences")
    rows = comparison_rows(study, an)
    doc.table(list(rows[0]), [list(r.values()) for r in rows], id="key-differences",
              note="Headline = restored-best weights evaluated on val/. Generalization gap = clean training accuracy "
                   "(restored-best weights, eval mode, un-augmented training images) minus the headline accuracy. "
                   "One seed: Wilson interval; two seeds: both values; three or more: mean [95% t interval].")
    if an.m:
        _differences_section(doc, study, an)

    doc.h(1, "Models")
    for v in study.variants.values():
        _model_section(doc, study, v)

    doc.h(1, "Training curves compared")
    sections.overlay_figure(doc, study)
    sections.gap_figure(doc, study)
    per_class_section(doc, study)
    mistakes_section(doc, study)
    augmentation_section(doc, study)

    doc.h(1, "Conclusion")
    for paragraph in conclusion(study, an):
        doc.p(paragraph)
    doc.h(1, "How to read the statistics")
    doc.bullets(analysis.method_notes(an, study.runs))
    provenance.setup_section(doc, study.runs, study.meta)
    return write_document(doc, study.path, "report")


def print_rows(rows: list[dict], title: str, console=None) -> None:
    """Report rows (same-keyed dicts of markup) as a rich table: plain text, no markup, one line per cell."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title), show_lines=True)
    for key in rows[0] if rows else []:
        table.add_column(Text(common.terminal(str(key))), overflow="fold")
    for row in rows:
        table.add_row(*(Text(common.terminal(str(v))) for v in row.values()))
    (console or Console(stderr=False)).print(table)


def terminal_table(study_dir, console=None, margin: float = 0.01) -> None:
    """The report's "Summary of key differences" on the terminal (rich), at-chance runs flagged."""
    study = facts.load_study(study_dir, warn_stderr=False)
    an = analysis.analyze(study, reference_variant(study), margin)
    print_rows(comparison_rows(study, an), "Summary of key differences", console)
