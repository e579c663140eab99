"""The ablation report: every variant against a baseline, with multi-seed intervals and Holm's correction.

`render_ablation(DIR, baseline="full")` writes DIR/report.md (figures in DIR/figures/) and DIR/report.html.
The conclusions are generated from the numbers: a difference is called distinguishable from noise only
when its Holm-adjusted p is below 0.05 and its 95% interval excludes 0.
"""

from __future__ import annotations

from pathlib import Path

from .. import stats
from . import common
from .common import COUNT, PCT, PP, SECONDS, Difference, Study, config_of, summary_cell, values
from .document import Document, write_document

METRICS = [
    ("restored_val_accuracy", "Restored-best val accuracy", PCT),
    ("train_accuracy", "Final train accuracy", PCT),
    ("gap", "Generalization gap", PP),
    ("epochs_run", "Epochs", COUNT),
    ("wall_seconds", "Wall time", SECONDS),
]


def _mean(runs, key) -> float:
    return stats.mean_ci(values(runs, key))["mean"]


def _ranked(study: Study) -> list[str]:
    """Variants by mean restored-best val accuracy, best first."""
    return sorted(study.groups, key=lambda v: -_mean(study.groups[v], "restored_val_accuracy"))


def ablation_rows(study: Study, baseline: str) -> list[dict]:
    """One dict per variant, best first: {"Variant", <metric>: mean ± CI (or the value), "Seeds"}."""
    return [{"Variant": f"`{v}`" + (" (baseline)" if v == baseline else ""),
             **{name: summary_cell(values(study.groups[v], k), f) for k, name, f in METRICS},
             "Seeds": str(len(study.groups[v]))} for v in _ranked(study)]


def print_ablation_table(study_dir, baseline: str = "full", console=None) -> None:
    """The report's variants table on the terminal (rich)."""
    study = common.load_study(study_dir)
    common.print_table(ablation_rows(study, resolve_baseline(study, baseline)[0]), title="Ablation", console=console)


def resolve_baseline(study: Study, baseline: str) -> tuple[str, str]:
    """(baseline, note). A study without the requested baseline (e.g. `ablate --variants` without `full`)
    is compared against its first variant instead of failing after all the training, and the report says so."""
    if baseline in study.groups:
        return baseline, ""
    first = next(iter(study.groups))
    return first, (f"**Note:** the requested baseline `{baseline}` is not in this study, so every variant is compared "
                   f"with `{first}`, the study's first variant.")


def _tables(doc: Document, study: Study, baseline: str) -> None:
    rows = ablation_rows(study, baseline)
    doc.table(list(rows[0]), [list(r.values()) for r in rows], id="ablation",
              note=("Mean ± 95% confidence interval (Student's t) over seeds; " if study.multi_seed else "")
              + "sorted by restored-best validation accuracy. Generalization gap = final train accuracy − final val accuracy.")
    label = lambda v: f"`{v}`" + (" (baseline)" if v == baseline else "")  # noqa: E731
    doc.h(2, "Per-seed values")
    doc.table(["Variant"] + [name for _, name, _ in METRICS],
              [[label(v)] + [common.per_seed_cell(study.groups[v], values(study.groups[v], k), f) for k, _, f in METRICS]
               for v in _ranked(study)])
    doc.h(2, "What each variant regularizes with")
    doc.table(["Variant", "Regularizers"],
              [[label(v), ", ".join(config_of(study.groups[v][0]).regularizers()) or "none"] for v in study.groups])


def _reason(d: Difference) -> str:
    """Why a difference is not called distinguishable, from its own numbers."""
    if not d.tested:
        return "no interval (a single seed or zero variance)"
    if d.lo <= 0 <= d.hi:
        return f"the 95% CI {common.interval_text(d, PP)} includes 0, {common.p_text(d.p_holm, 'Holm p')}"
    return (f"the 95% CI {common.interval_text(d, PP)} excludes 0 but the Holm-adjusted {common.p_text(d.p_holm)} "
            f"is not below {common.ALPHA:g}")


def conclusions(study: Study, baseline: str) -> list[str]:
    acc = common.differences(study.groups, baseline, "restored_val_accuracy")
    gap = common.differences(study.groups, baseline, "gap")
    best = _ranked(study)[0]
    base_acc = PCT(_mean(study.groups[baseline], "restored_val_accuracy"))
    if best == baseline:
        out = [f"Highest mean restored-best validation accuracy: the baseline `{baseline}`, at {base_acc}."]
    else:
        out = [f"Highest mean restored-best validation accuracy: `{best}` at "
               f"{PCT(_mean(study.groups[best], 'restored_val_accuracy'))}; the baseline `{baseline}` reaches {base_acc}."]
    if not study.multi_seed:
        out.append("At least one variant has a single seed, so seed-to-seed noise is unknown for it: its differences "
                   "are anecdotes, and none of them can be called distinguishable from noise.")
    for what, diffs, up, down in (("restored-best validation accuracy", acc, "higher", "lower"),
                                  ("generalization gap", gap, "larger (overfits more)", "smaller (overfits less)")):
        yes = [d for d in diffs if d.distinguishable]
        no = [d for d in diffs if not d.distinguishable]
        if yes:
            out.append(f"Distinguishable from noise in {what}: " + "; ".join(
                f"`{d.variant}` is {up if d.diff > 0 else down} than `{baseline}` by {PP(abs(d.diff)).lstrip('+')} "
                f"(95% CI {common.interval_text(d, PP)}, {common.p_text(d.p_holm, 'Holm p')})" for d in yes) + ".")
        if no:
            out.append(f"Not distinguishable from noise in {what}: " + "; ".join(
                f"`{d.variant}` {PP(d.diff)} ({_reason(d)})" for d in no) + ".")
        out.append(f"{len(yes)} of {len(diffs)} variants differ distinguishably from `{baseline}` in {what}.")
    return out


def render_ablation(study_dir, baseline: str = "full") -> tuple[Path, Path]:
    """Render DIR/report.md and DIR/report.html for an ablation study. Returns both paths."""
    study = common.load_study(study_dir)
    baseline, note = resolve_baseline(study, baseline)
    doc = Document(f"reglab ablation against {baseline}")
    doc.p(f"{common.GENERATED} "
          f"Each variant is compared with the baseline `{baseline}` on restored-best validation accuracy "
          "(Welch's t test, Holm-corrected over all variants).")
    if note:
        doc.p(note)
    common.provenance(doc, study)

    doc.h(1, "Variants")
    _tables(doc, study, baseline)

    acc = common.differences(study.groups, baseline, "restored_val_accuracy")
    if acc:
        doc.h(1, f"Differences from `{baseline}`")
        common.difference_table(doc, acc, PP, "Restored-best val accuracy", id="ablation-differences")
        common.forest_figure(doc, study, acc, "forest.png", f"Restored-best val accuracy minus {baseline} (pp)")
        doc.h(2, "Generalization gap")
        common.difference_table(doc, common.differences(study.groups, baseline, "gap"), PP, "Generalization gap")

    doc.h(1, "Training curves")
    for variant in study.groups:
        common.seed_curves_figure(doc, study, variant)
    common.gap_figure(doc, study, side_by_side=True)

    doc.h(1, "Conclusions")
    doc.bullets(conclusions(study, baseline) if acc else
                [f"The study holds only `{baseline}`: there is nothing to compare it with."])
    return write_document(doc, study.path, "report")
