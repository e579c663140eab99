"""The compare report: the notebook's "Comparison" section, recomputed from run folders.

`COMPARE` is its list of sections; `render_compare(DIR)` writes DIR/report.md (figures in DIR/figures/) and a
self-contained DIR/report.html, and prints the same "Summary of key differences" on the terminal (report.render).
Every number, direction and verdict in the text comes from the runs' summary.json, config.yaml, metrics.csv and
predictions.npz (see analysis.py for the statistics); nothing is written in advance. With one seed a side (the
default `reglab compare`) it opens with a warning and makes no claim about the variants anywhere: what the two
networks did on these images is said, labelled as such.
"""

from __future__ import annotations

import math
from pathlib import Path

from . import analysis, common, facts, provenance, sections
from .analysis import Analysis, seed_summary
from .common import INTERVAL_NOTE, PCT, fmt_int
from .document import Document, code, esc
from .facts import Study, Variant
from .report import Report, render

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


def comparison_rows(study: Study, an: Analysis) -> list[dict]:
    """The notebook's "Summary of Key Differences": one dict per aspect, {"Aspect": ..., <variant>: cell} (markup)."""
    aspects = [
        ("Architecture", _architecture),
        ("Parameters", _params),
        ("Regularization techniques", sections.regularizers_text),
        ("Seeds", _seeds),
        ("Failed or at chance (95% exact interval)", analysis.failure_cell),
        ("Epochs run", analysis.epochs_cell),
        ("Best epoch", analysis.best_epoch_cell),
        ("Training accuracy (final epoch; running, augmentation on)",
         lambda v: seed_summary(v.values("train_accuracy"), PCT)),
        ("Clean training accuracy (restored-best, eval mode)", lambda v: seed_summary(v.values("clean"), PCT)),
        (f"Headline accuracy ({'test' if study.design == 'selection split' else 'restored-best on val/'})",
         analysis.accuracy_cell),
        ("Generalization gap (clean train − headline)", analysis.gap_cell),
        ("Wall time (this machine)", analysis.wall_cell),
    ]
    rows = [{"Aspect": name, **{code(n): cell(v) for n, v in study.variants.items()}} for name, cell in aspects]
    if an.m:
        for metric, label in (("accuracy", "Verdict on accuracy"), ("gap", "Verdict on the gap")):
            row = {"Aspect": f"{label} vs {code(an.reference)}"}
            for n in study.variants:
                row[code(n)] = "reference" if n == an.reference else analysis.verdict_word(an.get(metric, n))
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


def key_differences(doc: Document, study: Study, an: Analysis) -> None:
    doc.h(1, "Summary of key differences")
    rows = comparison_rows(study, an)
    doc.records(rows, id="key-differences",
              note="Headline = restored-best weights evaluated on val/. Generalization gap = clean training accuracy "
                   "(restored-best weights, eval mode, un-augmented training images) minus the headline accuracy. "
                   f"{INTERVAL_NOTE}. Other rows: one seed as is, two as both values, three or more as mean [95% "
                   "Student t interval over the learned seeds]. Failed or "
                   "at chance: of the runs that finished or failed, with its exact (Clopper-Pearson) interval.")


def differences(doc: Document, study: Study, an: Analysis) -> None:
    if not an.m:
        return
    doc.h(1, "Differences and verdicts")
    doc.p(f"Each model against {code(an.reference)} (the least regularized), on the headline accuracy and on the "
          f"measured generalization gap: {an.family}. {analysis.seeds_advice(an)}")
    sections.comparison_table(doc, an, an.accuracy, "accuracy", id="accuracy-difference")
    sections.comparison_table(doc, an, an.gap, "generalization gap", id="gap-difference")
    sections.forest_figure(doc, study, an, an.accuracy, "forest.png", "headline accuracy")
    sections.forest_figure(doc, study, an, an.gap, "forest-gap.png", "generalization gap")


def models(doc: Document, study: Study, an: Analysis) -> None:
    doc.h(1, "Models")
    for v in study.variants.values():
        _model(doc, study, v)


def _model(doc: Document, study: Study, v: Variant) -> None:
    doc.h(2, f"Model {code(v.name)}")
    n = len(v.runs)
    doc.p(f"Regularizers: {sections.regularizers_text(v)}. "
          + ("One seed: every number below is a single run." if n == 1 else f"{n} seeds, with every seed's value."))
    sections.metric_table(doc, v, id=f"metrics-{common.slug(v.name)}")
    doc.p(analysis.epochs_sentence(v) + " Best epoch" + ("s" if n > 1 else "") + ": "
          + ", ".join(f.best_epoch_cell() for f in v.runs) + ".")
    sections.architecture(doc, v.runs[0].run, ident=v.name)
    sections.seed_curves_figure(doc, study, v)


def curves_compared(doc: Document, study: Study, an: Analysis) -> None:
    doc.h(1, "Training curves compared")
    sections.overlay_figure(doc, study, an)
    sections.gap_figure(doc, study, an)


# ---------------------------------------------------------------------------------------- conclusion


def _acc_text(v: Variant) -> str:
    if len(v.learned) == 1:
        f = v.learned[0]
        lo, hi = f.wilson
        return f"{PCT(f.acc)} (one seed: this network, Wilson 95% [{PCT(lo)}, {PCT(hi)}] over images like val/)"
    return f"{analysis.accuracy_cell(v)} (the variant, {len(v.learned)} learned seeds)"


def _evidence(c: analysis.Comparison) -> str:
    """What a verdict rests on, in words: the interval and its method, or what the networks do (no claim)."""
    if c.networks:
        return f". {analysis.networks_text(c)}."
    if not c.has_interval:
        return "."
    return (f" ({common.fmt_level(c.level)} interval {analysis.interval_text(c)}, {c.n_seeds[0]} vs {c.n_seeds[1]} "
            f"learned seeds; {c.method}; seeds a new study needs: {analysis.plan_text(c, 'detect')} to detect this "
            f"difference, {analysis.plan_text(c, 'equivalent')} to show equivalence within "
            f"{common.fmt_margin(c.margin)}; a seed of {code(c.variant)} beats a seed of {code(c.reference)} on "
            f"these val images with probability {analysis.superiority_text(c)}).")


def _architecture_note(study: Study, a: str, b: str) -> str:
    ca, cb = study.variants[a].runs[0].run.config, study.variants[b].runs[0].run.config
    diffs = [f"{label} {cb.get(k)} vs {ca.get(k)}" for k, label in ARCHITECTURE if ca.get(k) != cb.get(k)]
    if not diffs:
        return ""
    return (f" The two models also differ in architecture ({'; '.join(diffs)}), so a difference is not due to "
            "regularization alone.")


def conclusion_section(doc: Document, study: Study, an: Analysis) -> None:
    doc.h(1, "Conclusion")
    for paragraph in conclusion(study, an):
        doc.p(paragraph)


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
        text = (f"**{code(b)} against {code(a)}.** Headline accuracy {_acc_text(B)} against {_acc_text(A)}. "
                f"Verdict: {analysis.verdict_text(c_acc)}{_evidence(c_acc)}")
        text += (f" Generalization gap (clean training minus headline accuracy, measured) {analysis.gap_cell(B)} "
                 f"against {analysis.gap_cell(A)}. Verdict: {analysis.verdict_text(c_gap)}{_evidence(c_gap)}")
        text += (f" Final-epoch running training accuracy (augmentation and dropout on, not used for the gap): "
                 f"{PCT(B.mean('train_accuracy'), mean=len(B.runs) > 1)} against "
                 f"{PCT(A.mean('train_accuracy'), mean=len(A.runs) > 1)}.")
        text += " Epochs: " + " ".join(analysis.epochs_sentence(v) for v in (B, A))
        for v in (B, A):
            flagged = [f for f in v.runs if f.at_chance]
            if flagged and not c_acc.not_ranked:
                text += " " + " ".join(f"{code(v.name)} seed {f.seed} is **at chance** ({f.chance_reason}); it is "
                                       "in no interval." for f in flagged)
        text += _architecture_note(study, a, b)
        out.append(text)
    if any(c.one_seed for c in an.accuracy):
        out.append("With a single seed on a side, nothing here is about the variants: what the two networks did on "
                   "these images is all one seed shows, and another seed could give another answer. "
                   + analysis.seeds_advice(an))
    elif an.m:
        out.append(analysis.seeds_advice(an))
    out.append(facts.design_text(study.runs, study.design))
    return out


# -------------------------------------------------------------------------------------------- report


COMPARE = Report(
    title=lambda study, an: f"reglab compare: {esc(' vs '.join(study.variants))}",
    reference=reference_variant,
    # what matters first: the headline table and the verdicts, then the runs and models behind them
    sections=(sections.estimand, sections.generated, sections.alerts, sections.design, key_differences, differences,
              sections.runs_section, models, curves_compared, sections.per_class, sections.mistakes,
              sections.augmentation, conclusion_section, sections.how_to_read, provenance.setup_section),
    terminal=lambda study, an: (comparison_rows(study, an), "Summary of key differences" + (
        ": one seed on a side, no claim about the variants" if any(c.one_seed for c in an.accuracy) else "")),
)


def render_compare(study_dir, margin: float = 0.01, quiet: bool = False, console=None) -> tuple[Path, Path]:
    """Render DIR/report.md and DIR/report.html from the run folders under DIR (and print the summary table unless
    quiet). Returns both paths."""
    return render(COMPARE, facts.load_study(study_dir, warn_stderr=not quiet), margin, quiet, console)
