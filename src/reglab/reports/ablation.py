"""The ablation report: every variant against a baseline, each difference with one simultaneous interval and the
verdict read off it, beside the seeds a new study needs (see analysis.py). A "no claim" (one seed on a side) is
counted apart and never among the variants that differ.

`ablation(baseline)` is its list of sections; `render_ablation(DIR, baseline="full", margin=0.01)` writes
DIR/report.md (figures in DIR/figures/) and DIR/report.html, and prints the variants table on the terminal
(report.render).
"""

from __future__ import annotations

from pathlib import Path

from . import analysis, common, facts, provenance, sections
from .analysis import Analysis, seed_summary
from .common import COUNT, INTERVAL_NOTE, PCT, PP
from .document import Document, code, esc
from .facts import Study
from .report import Report, render


def _by_mean(study: Study) -> list[str]:
    """Variants by mean headline accuracy of their learned seeds, highest first: a description, not a ranking."""
    return sorted(study.variants, key=lambda v: -study.variants[v].mean("acc"))


def ablation_rows(study: Study, an: Analysis) -> list[dict]:
    """One dict per variant (highest mean accuracy first) of markup cells."""
    rows = []
    for name in _by_mean(study):
        v = study.variants[name]
        base = name == an.reference
        rows.append({
            "Variant": code(name) + (" (baseline)" if base else ""),
            "Headline accuracy": analysis.accuracy_cell(v),
            "Generalization gap": analysis.gap_cell(v),
            "Training accuracy (running)": seed_summary(v.values("train_accuracy"), PCT),
            "Epochs": analysis.epochs_cell(v),
            "Wall time": analysis.wall_cell(v),
            "Seeds finished": f"{len(v.runs)} of {v.total}",
            "Failed or at chance": analysis.failure_cell(v),
            f"Accuracy vs {code(an.reference)}": "baseline" if base else
            analysis.verdict_word(an.get("accuracy", name)),
        })
    for name, v in study.unfinished.items():
        rows.append({"Variant": code(name), "Headline accuracy": "no finished run", "Generalization gap": "n/a",
                     "Training accuracy (running)": "n/a", "Epochs": "n/a", "Wall time": "n/a",
                     "Seeds finished": f"0 of {v.total}", "Failed or at chance": analysis.failure_cell(v),
                     f"Accuracy vs {code(an.reference)}": "not compared"})
    return rows


def resolve_baseline(study: Study, baseline: str) -> tuple[str, str]:
    """(baseline, note). A study without the requested baseline among its finished runs (e.g. `ablate --variants`
    without `full`, or a baseline whose runs all failed) is compared against its first variant, and says so."""
    if baseline in study.variants:
        return baseline, ""
    first = next(iter(study.variants))
    why = "has no finished run" if baseline in study.unfinished else "is not in this study"
    return first, (f"**Note:** the requested baseline {code(baseline)} {why}, so every variant is compared with "
                   f"{code(first)}, the study's first variant with a finished run.")


def _tables(doc: Document, study: Study, an: Analysis) -> None:
    rows = ablation_rows(study, an)
    doc.records(rows, id="ablation",
              note="Sorted by mean headline accuracy: a description, not a ranking the data establish (the verdicts "
                   f"are). {INTERVAL_NOTE}; running training accuracy "
                   "and epochs: two seeds as both values, three or more as mean [95% Student t interval over the "
                   "learned seeds]; clipped to the possible range. Failed or at chance: of the runs that finished or "
                   "failed, with its exact interval. Generalization gap = clean training accuracy minus the headline "
                   "accuracy.")
    doc.h(2, "Per-seed values")
    keys = [("acc", "Headline accuracy", PCT), ("clean", "Clean training accuracy", PCT),
            ("gap", "Generalization gap", PP), ("epochs_run", "Epochs", COUNT), ("best_epoch", "Best epoch", COUNT)]
    doc.table(["Variant"] + [label for _, label, _ in keys],
              [[code(v)] + [analysis.per_seed_cell(study.variants[v], k, f) for k, _, f in keys]
               for v in _by_mean(study)],
              id="per-seed")
    doc.h(2, "What each variant regularizes with")
    doc.table(["Variant", "Regularizers"],
              [[code(n), sections.regularizers_text(v)] for n, v in study.variants.items()])


GROUPS = ("differs", "equivalent", "inconclusive", "no claim", "not ranked")


def conclusions(study: Study, an: Analysis) -> list[str]:
    base = an.reference
    out = [facts.design_text(study.runs, study.design)]
    if not an.m:
        return out + [f"The study holds only {code(base)} among its finished runs: there is nothing to compare it "
                      "with."]
    for what, comps in (("headline accuracy", an.accuracy), ("generalization gap", an.gap)):
        groups = {g: [] for g in GROUPS}
        for c in comps:
            groups["not ranked" if c.not_ranked else c.verdict].append(c)
        out.append(f"**{what.capitalize()} against {code(base)}** ({an.family}): "
                   + ". ".join(_group_line(g, cs, an) for g, cs in groups.items() if cs) + ".")
        out.append(f"{len(groups['differs'])} of {len(comps)} variants differ from {code(base)} in {what}, "
                   f"{len(groups['equivalent'])} are equivalent within {common.fmt_margin(an.margin)}, "
                   f"{len(groups['inconclusive'])} inconclusive"
                   + (f", {len(groups['no claim'])} with no claim" if groups["no claim"] else "")
                   + (f", {len(groups['not ranked'])} not ranked" if groups["not ranked"] else "") + ".")
    for f in study.runs:
        if f.at_chance:
            out.append(f"{code(f.variant)} seed {f.seed} is **at chance** ({f.chance_reason}); it is counted with its "
                       "variant's failures and left out of every interval.")
    out.append(analysis.seeds_advice(an))
    return out


def _group_line(group: str, comps: list, an: Analysis) -> str:
    """One verdict's comparisons, each with the interval it was read from (or why there is none)."""
    if group == "differs":
        return "differs: " + "; ".join(f"{analysis.verdict_text(c).split(': ', 1)[1]} ({analysis.interval_text(c)})"
                                       + (", less than the margin" if "less than" in analysis.verdict_text(c) else "")
                                       for c in comps)
    if group == "equivalent":
        return (f"equivalent within {common.fmt_margin(an.margin)} ({analysis.tost_text(comps[0])}): "
                + "; ".join(f"{code(c.variant)} ({PP(c.diff)}, {analysis.interval_text(c)})" for c in comps))
    if group == "inconclusive":
        return "inconclusive: " + "; ".join(f"{code(c.variant)} ({PP(c.diff)}; the data allow {PP(c.lo)} to "
                                            f"{PP(c.hi)})" for c in comps)
    if group == "no claim":
        return "no claim about the variants: " + "; ".join(f"{code(c.variant)} ({c.why})" for c in comps)
    return "not ranked, both at chance: " + "; ".join(f"{code(c.variant)} and {code(an.reference)}" for c in comps)


def _intro(doc: Document, study: Study, an: Analysis) -> None:
    doc.p(f"{sections.GENERATED} Each variant is compared with the baseline {code(an.reference)} on the headline "
          f"accuracy and on the measured generalization gap: {an.family}.")


def _variants(doc: Document, study: Study, an: Analysis) -> None:
    doc.h(1, "Variants")
    _tables(doc, study, an)


def _differences(doc: Document, study: Study, an: Analysis) -> None:
    if not an.m:
        return
    doc.h(1, f"Differences from {code(an.reference)}")
    sections.comparison_table(doc, an, an.accuracy, "accuracy", id="ablation-differences")
    sections.forest_figure(doc, study, an, an.accuracy, "forest.png", "headline accuracy")
    doc.h(2, "Generalization gap")
    sections.comparison_table(doc, an, an.gap, "generalization gap", id="ablation-gap-differences")
    sections.forest_figure(doc, study, an, an.gap, "forest-gap.png", "generalization gap")


def _conclusions(doc: Document, study: Study, an: Analysis) -> None:
    doc.h(1, "Conclusions")
    doc.bullets(conclusions(study, an))


def _terminal(study: Study, an: Analysis) -> tuple[list[dict], str]:
    keep = ("Variant", "Headline accuracy", "Generalization gap", "Epochs", "Seeds finished", "Failed or at chance",
            f"Accuracy vs {code(an.reference)}")  # the report's table less what a terminal has no room for
    rows = [{k: v for k, v in row.items() if k in keep} for row in ablation_rows(study, an)]
    return rows, "Ablation (report.md has every column)"


def ablation(baseline: str = "full") -> Report:
    """The ablation report against `baseline` (the study's first variant when it has no finished run of it)."""
    def missing_baseline(doc: Document, study: Study, an: Analysis) -> None:
        note = resolve_baseline(study, baseline)[1]
        if note:
            doc.p(note)

    return Report(
        title=lambda study, an: f"reglab ablation against {esc(an.reference)}",
        reference=lambda study: resolve_baseline(study, baseline)[0],
        # what matters first: the headline table and the verdicts, then the runs behind them
        sections=(sections.estimand, _intro, missing_baseline, sections.alerts, sections.design, _variants,
                  _differences, sections.runs_section, sections.training_curves, sections.gap_figure,
                  sections.augmentation, _conclusions, sections.how_to_read, provenance.setup_section),
        terminal=_terminal,
    )


def render_ablation(study_dir, baseline: str = "full", margin: float = 0.01, quiet: bool = False,
                    console=None) -> tuple[Path, Path]:
    """Render DIR/report.md and DIR/report.html for an ablation study (and print its variants table unless quiet).
    Returns both paths."""
    return render(ablation(baseline), facts.load_study(study_dir, warn_stderr=not quiet), margin, quiet, console)
