"""The sweep report (`reglab sweep`): the dose-response of one regularizer setting, or of a grid of two.

Every variant is a dose named by its values (`dropout=0.25`, variants.sweep_doses), trained with the same seeds as
every other, so the differences between doses are paired. The report shows first the dose-response figure (test
accuracy and measured gap against the dose: each seed a dot, each dose its variant-level interval; a grid: a heatmap
of the means) and the verdicts, then the per-dose table, the comparisons, the runs and the method.

The family is every pair of doses, on accuracy and on the gap, Bonferroni-simultaneous at 95% (k doses: k(k-1)
comparisons). The best dose is picked by the same data, so comparing the others with it at the level of its own k-1
comparisons would understate the uncertainty; with every pair covered at once, the comparisons with the best-scoring
dose and the shape statements hold whichever dose the data pick, and the doses not shown below the best-scoring one
contain the truly best dose with at least 95% probability (`SELECTION`).

The shape (one setting): an interior optimum only where the best interior dose is shown above BOTH ends; increasing
or decreasing where the highest dose is shown above or below the lowest and no pair of doses is shown to go the other
way; otherwise "no evidence of an interior optimum", which is never "no effect"; "no claim" where a comparison it is
read from has one learned seed on a side. A grid states the same about its best cell; its shape is left to the
heatmap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .. import stats
from ..errors import UserError
from ..variants import sweep_doses
from . import provenance, sections
from .analysis import (POWER, Analysis, Comparison, accuracy_cell, accuracy_interval, compare, epochs_cell, gap_cell,
                       gap_interval, method_notes, plan_text, seeds_advice, verdict_word)
from .common import CONFIDENCE, fmt_margin
from .document import Document, code, esc
from .facts import Study
from .plots import plot_dose_response, plot_heatmap
from .report import Report

METRICS = ("accuracy", "gap")
NO_OPTIMUM = {"accuracy": "no evidence of an interior optimum (the best interior dose is not shown above both ends)",
              "gap": "no interior maximum or minimum shown"}
SELECTION = ("**Choosing the best by the same data:** the best-scoring dose is picked by these runs, so comparing "
             "the others with it at the level of its own comparisons would understate the uncertainty (the winner's "
             "curse). The family is every pair of doses instead: its intervals hold together with 95% probability "
             "whichever dose the data pick, so the comparisons with the best-scoring dose and the shape read off "
             "them keep their coverage, and the doses not shown below it contain the truly best dose with at least "
             "95% probability (as Hsu's multiple comparisons with the best). The price: wider intervals than a "
             "family of k−1 comparisons would give.")


# ------------------------------------------------------------------------------------------- the doses


def axes(study: Study) -> list[str]:
    """The swept settings, as study.json records them (else read off the variant names)."""
    recorded = study.meta.get("sweep")
    if isinstance(recorded, list) and recorded and all(isinstance(a, dict) and "setting" in a for a in recorded):
        return [str(a["setting"]) for a in recorded]
    return list(doses(study, next(iter(study.variants))))


def doses(study: Study, variant: str) -> dict[str, float]:
    try:
        return sweep_doses(variant)
    except ValueError:
        raise UserError(f"{study.path} holds the variant {variant!r}, which is not a dose (SETTING=VALUE); "
                        "a sweep folder holds only the doses reglab sweep trained") from None


def ordered(study: Study) -> list[str]:
    """The doses with a finished run, in increasing order (a grid: by the first setting, then the second)."""
    names = axes(study)
    return sorted(study.variants, key=lambda v: tuple(doses(study, v).get(n, math.nan) for n in names))


def _mean(study: Study, variant: str, key: str) -> float:
    learned = study.variants[variant].learned
    return sum(f.value(key) for f in learned) / len(learned) if learned else -math.inf


def best(study: Study) -> str:
    """The best-scoring dose: the highest mean headline accuracy over its learned seeds (a tie: the lowest dose)."""
    return max(ordered(study), key=lambda v: _mean(study, v, "acc"))


# ------------------------------------------------------------------------------------------- the analysis


@dataclass
class SweepAnalysis(Analysis):
    order: list[str] = field(default_factory=list)  # the doses with a finished run, increasing
    pairs: dict = field(default_factory=dict)  # (metric, lower dose, higher dose) -> higher minus lower (one setting)


def analyze(study: Study, reference: str, margin: float = stats.DEFAULT_MARGIN, power: float = POWER) -> SweepAnalysis:
    """Every dose against the best-scoring one (`reference`), and for one setting every pair of doses, all at the
    level of the family of every pair on accuracy and gap."""
    order = ordered(study)
    m = len(order) * (len(order) - 1)
    level = stats.simultaneous_confidence(CONFIDENCE, max(m, 1))
    V = study.variants
    vs_best = {metric: [compare(V[v], V[reference], metric, level, margin, power) for v in order if v != reference]
               for metric in METRICS}
    pairs = {}
    if len(axes(study)) == 1:
        # the shape reads only their verdicts: no plan (the seeds a new study needs are planned against the best)
        pairs = {(metric, a, b): compare(V[b], V[a], metric, level, margin, power, plan=False)
                 for metric in METRICS for i, a in enumerate(order) for b in order[i + 1:]}
    return SweepAnalysis(reference, margin, m, level, vs_best["accuracy"], vs_best["gap"], power, order, pairs)


def _above(an: SweepAnalysis, metric: str, a: str, b: str) -> bool:
    """Whether the family shows dose `a` above dose `b` (its interval excludes 0 on that side)."""
    if (metric, b, a) in an.pairs:
        c = an.pairs[(metric, b, a)]
        return c.verdict == "differs" and c.lo > 0
    c = an.pairs[(metric, a, b)]
    return c.verdict == "differs" and c.hi < 0


def _pair(an: SweepAnalysis, metric: str, a: str, b: str) -> Comparison:
    return an.pairs[(metric, a, b) if an.order.index(a) < an.order.index(b) else (metric, b, a)]


def _said(an: SweepAnalysis, metric: str, a: str, b: str) -> str:
    """The pair of doses a and b as the family has it: the higher dose minus the lower, and its verdict."""
    c = _pair(an, metric, a, b)
    return f"{code(c.variant)} − {code(c.reference)}: {verdict_word(c)}"


def indistinguishable(an: SweepAnalysis) -> list[str]:
    """The doses not shown below the best-scoring one (it included), of those compared with a claim: with the
    family's coverage, and a claim about every dose, a set that holds the truly best dose with at least 95%
    probability. Empty when no comparison with the best has a claim."""
    if all(c.verdict == "no claim" for c in an.accuracy):
        return []
    left_out = {c.variant for c in an.accuracy if c.verdict == "no claim" or (c.verdict == "differs" and c.hi < 0)}
    return [v for v in an.order if v not in left_out]


@dataclass(frozen=True)
class Shape:
    label: str  # interior optimum/maximum, interior minimum, increasing, decreasing, not monotone,
    #             no evidence of an interior optimum, no claim
    text: str  # markup: the statement and the comparisons it is read from


def shape(study: Study, an: SweepAnalysis, metric: str) -> Shape:
    """The shape of one setting's response on `metric`, read off the family's pairwise intervals."""
    what = "test accuracy" if metric == "accuracy" else "measured gap"
    order = an.order
    if len(order) < 2:
        return Shape("no claim", f"no claim about the {what}'s shape: fewer than two doses have a finished run")
    pending = [c for (m, _, _), c in an.pairs.items() if m == metric and c.verdict == "no claim"]
    if pending:
        return Shape("no claim", f"no claim about the {what}'s shape: {pending[0].why} (at least 2 learned seeds a "
                                 "dose are needed)")
    key = "acc" if metric == "accuracy" else "gap"
    low, high = order[0], order[-1]
    ends = _pair(an, metric, low, high)
    end_text = _said(an, metric, low, high)
    interior = order[1:-1]
    if interior:
        peak = max(interior, key=lambda v: _mean(study, v, key))
        trough = min(interior, key=lambda v: _mean(study, v, key))
        for label, dose, sign in (("interior maximum", peak, 1), ("interior minimum", trough, -1)):
            hi_side = [(dose, e) if sign > 0 else (e, dose) for e in (low, high)]
            if all(_above(an, metric, a, b) for a, b in hi_side):
                if metric == "accuracy" and sign > 0:
                    label = "interior optimum"
                said = "; ".join(_said(an, metric, dose, e) for e in (low, high))
                return Shape(label, f"**{label}** of the {what} at {code(dose)}: shown "
                                    f"{'above' if sign > 0 else 'below'} both ends ({said})")
    up, down = _above(an, metric, high, low), _above(an, metric, low, high)
    if up or down:
        # a pair shown going the other way: a lower dose above a higher one (rising), below it (falling)
        against = [(a, b) for i, a in enumerate(order) for b in order[i + 1:]
                   if (_above(an, metric, a, b) if up else _above(an, metric, b, a))]
        if not against:
            label = "increasing" if up else "decreasing"
            return Shape(label, f"**{label}**: the {what} at the highest dose is shown {'above' if up else 'below'} "
                                f"the lowest ({end_text}), and no pair of doses is shown to go the other way "
                                "(consistent with a monotone response; each step is not shown on its own)"
                                + (f"; {NO_OPTIMUM[metric]}" if interior else ""))
        a, b = against[0]
        return Shape("not monotone", f"**not monotone**: the ends differ ({end_text}), but {code(a)} is shown "
                                     f"{'above' if up else 'below'} the higher dose {code(b)}; {NO_OPTIMUM[metric]}")
    ends_said = (f"the ends are equivalent within {fmt_margin(an.margin)}" if ends.verdict == "equivalent" else
                 f"the ends are not shown to differ ({end_text})")
    if not interior:
        return Shape("no evidence of an interior optimum", f"**no evidence of an interior optimum** (two doses, no "
                                                           f"interior one): {ends_said}; this is not a finding of "
                                                           "no effect")
    peak = max(interior, key=lambda v: _mean(study, v, key))
    said = "; ".join(_said(an, metric, peak, e) for e in (low, high))
    return Shape("no evidence of an interior optimum",
                 f"**no evidence of an interior optimum**: the interior dose with the highest mean, {code(peak)}, is "
                 f"not shown above both ends ({said}), and {ends_said}; this is not a finding of no effect, only what "
                 "these seeds could resolve")


# ------------------------------------------------------------------------------------------- the sections


def _names(study: Study) -> str:
    return " × ".join(code(n) for n in axes(study))


def _intro(doc: Document, study: Study, an: SweepAnalysis) -> None:
    seeds = sorted({f.seed for f in study.runs})
    doc.p(f"{sections.GENERATED} A dose-response sweep of {_names(study)} over {len(an.order)} dose"
          f"{'s' if len(an.order) != 1 else ''}, the same seeds ({', '.join(map(str, seeds))}) at every dose so "
          f"that differences between doses are paired; every other setting as the command gave it (Setup). "
          f"Verdicts come from one family, every pair of doses on accuracy and gap: {an.family}.")


def _points(study: Study, an: SweepAnalysis, metric: str) -> list[dict]:
    """One dose-response point per dose (values in % or pp): its interval (none for one network), every seed."""
    out = []
    for v in an.order:
        var = study.variants[v]
        iv = accuracy_interval(var) if metric == "accuracy" else gap_interval(var)
        one = iv is None or iv["estimand"] == "network"
        key = "acc" if metric == "accuracy" else "gap"
        mean = _mean(study, v, key) * 100 if var.learned else math.nan  # no learned seed: nothing to draw
        out.append(dict(x=doses(study, v)[axes(study)[0]], mean=mean,
                        lo=math.nan if one else iv["lo"] * 100, hi=math.nan if one else iv["hi"] * 100,
                        seeds=[f.value(key) * 100 for f in var.learned]))
    return out


def _headline(doc: Document, study: Study, an: SweepAnalysis) -> None:
    doc.h(1, "Dose-response")
    names = axes(study)
    if len(names) == 1:
        path, rel = study.figure("dose-response.png")
        plot_dose_response([dict(title="Test accuracy", ylabel="accuracy (%)", points=_points(study, an, "accuracy")),
                            dict(title="Measured generalization gap", ylabel="gap (pp)", zero=True,
                                 points=_points(study, an, "gap"))], path, names[0])
        doc.figure(rel, f"Test accuracy (left) and measured generalization gap (right) against {code(names[0])}: "
                        "each learned seed a small dot, each dose's mean a large dot joined in dose order, and its "
                        "variant-level 95% interval (seeds and val images) a vertical bar; a hollow dot has one "
                        "learned seed, so no interval about the dose. Each bar is an interval for that dose alone; "
                        "the verdicts below come from the simultaneous family.")
    else:
        _heatmap(doc, study, an, names)
    doc.h(2, "Verdicts")
    doc.bullets(verdicts(study, an))


def _heatmap(doc: Document, study: Study, an: SweepAnalysis, names: list[str]) -> None:
    rows = sorted({doses(study, v)[names[0]] for v in an.order})
    cols = sorted({doses(study, v)[names[1]] for v in an.order})
    cell = {(doses(study, v)[names[0]], doses(study, v)[names[1]]): v for v in an.order}
    means = [[_mean(study, cell[(r, c)], "acc") * 100 if (r, c) in cell else math.nan for c in cols] for r in rows]
    b = doses(study, an.reference)
    path, rel = study.figure("dose-heatmap.png")
    plot_heatmap(means, [f"{r:g}" for r in rows], [f"{c:g}" for c in cols], path, names[0], names[1],
                 "Mean test accuracy (%)", best=(rows.index(b[names[0]]), cols.index(b[names[1]])))
    doc.figure(rel, f"Mean test accuracy over the learned seeds of each cell ({code(names[0])} down, "
                    f"{code(names[1])} across); the outlined cell scores best. A mean has no interval: each "
                    "cell's interval is in the table of doses, the verdicts below come from the simultaneous family.")


def verdicts(study: Study, an: SweepAnalysis) -> list[str]:
    """The headline statements: the best-scoring dose, the doses indistinguishable from it, the shape, the seeds."""
    ref = an.reference
    if not study.variants[ref].learned:  # the best mean is over no network: there is no best dose to speak of
        return ["**No dose learned**: every seed of every dose is at chance or failed, so there is no best dose, no "
                "shape and no verdict about the doses; train longer, on more images or at a larger size."]
    out = [f"Best-scoring dose: {code(ref)}, {accuracy_cell(study.variants[ref])} (chosen by these data; see "
           "the method notes for why the verdicts keep their coverage)."]
    if not an.accuracy:
        return out + ["Only one dose has a finished run: there is nothing to compare it with."]
    same = indistinguishable(an)
    unclaimed = [c for c in an.accuracy if c.verdict == "no claim"]
    if not same:
        out.append(f"**No claim** about which doses are indistinguishable from {code(ref)}: {unclaimed[0].why} (a "
                   "claim needs at least 2 learned seeds a dose).")
    else:
        others = [v for v in same if v != ref]
        out.append(f"**Indistinguishable from the best** (not shown below {code(ref)} in accuracy): "
                   + (", ".join(code(v) for v in same) if others else f"{code(ref)} alone: every other dose "
                      "compared is shown lower")
                   + (". With the family's coverage this set holds the truly best dose with at least 95% probability."
                      if not unclaimed else "; **no claim** about " + "; ".join(f"{code(c.variant)} ({c.why})"
                                                                               for c in unclaimed)
                      + ", so the set carries no 95% guarantee of holding the truly best dose (a claim needs at "
                      "least 2 learned seeds a dose)."))
        lower = [c for c in an.accuracy if c.verdict == "differs" and c.hi < 0]
        if lower:
            out.append("Shown below the best: " + "; ".join(f"{code(c.variant)} ({verdict_word(c)})" for c in lower)
                       + ".")
    if len(axes(study)) == 1:
        for metric in METRICS:
            out.append(f"Shape of the {'test accuracy' if metric == 'accuracy' else 'measured gap'}: "
                       f"{shape(study, an, metric).text}.")
    else:
        out.append("A grid's shape is not tested: read it off the heatmap; the statements above are about its best "
                   "cell.")
    detect = [f"{code(c.variant)}: {plan_text(c, 'detect')}" for c in an.accuracy]
    out.append("What the seeds could detect: the seeds a dose a new study needs to show each observed accuracy "
               f"difference from the best at this family's level with {an.power:.0%} power: " + "; ".join(detect)
               + ".")
    out.append(seeds_advice(an))
    return out


def dose_rows(study: Study, an: SweepAnalysis) -> list[dict]:
    names = axes(study)
    rows = []
    for v in an.order:
        var, d = study.variants[v], doses(study, v)
        c = next((c for c in an.accuracy if c.variant == v), None)
        rows.append({**{code(n): f"{d[n]:g}" for n in names},
                     "Headline accuracy": accuracy_cell(var), "Generalization gap": gap_cell(var),
                     "Epochs": epochs_cell(var), "Seeds finished": f"{len(var.runs)} of {var.total}",
                     f"Accuracy vs the best ({code(an.reference)})": "best-scoring" if c is None else verdict_word(c)})
    return rows


def _doses(doc: Document, study: Study, an: SweepAnalysis) -> None:
    doc.h(1, "Doses")
    rows = dose_rows(study, an)
    doc.records(rows, id="doses",
              note="In dose order. Headline accuracy and gap: each dose's variant-level 95% interval over its learned "
                   "seeds, accounting for the seeds and the val images (one learned seed: that network only). The "
                   "last column is read off the simultaneous family (Differences).")
    for name, v in study.unfinished.items():
        doc.p(f"{code(name)}: no finished run ({len(v.others)} not finished); it is in no comparison.")


def _differences(doc: Document, study: Study, an: SweepAnalysis) -> None:
    if not an.accuracy:
        return
    doc.h(1, f"Differences from the best-scoring dose {code(an.reference)}")
    sections.comparison_table(doc, an, an.accuracy, "accuracy", id="sweep-vs-best")
    doc.h(2, "Generalization gap")
    sections.comparison_table(doc, an, an.gap, "generalization gap", id="sweep-gap-vs-best")
    if an.pairs:
        doc.h(2, "Every pair of doses (the shape is read from these)")
        doc.p("Each is the higher dose minus the lower, in the same family. Their columns of seeds a new study needs "
              "are n/a: those are planned against the best-scoring dose, above.")
        for metric in METRICS:
            comps = [c for (m, _, _), c in an.pairs.items() if m == metric]
            sections.comparison_table(doc, an, comps, "accuracy" if metric == "accuracy" else "generalization gap",
                                      id=f"sweep-pairs-{metric}")


def _how_to_read(doc: Document, study: Study, an: SweepAnalysis) -> None:
    doc.h(1, "How to read the statistics")
    notes = [n for n in method_notes(an, study) if not n.startswith("**Family:**")]
    family = (f"**Family:** every pair of the {len(an.order)} doses, on accuracy and on the gap: {an.family}. "
              "Bonferroni rather than Holm because a verdict must agree with the interval printed beside it.")
    shape_note = ("**Shape:** an interior optimum only where the best interior dose is shown above both ends; "
                  "increasing (decreasing) where the highest dose is shown above (below) the lowest and no pair of "
                  "doses is shown to go the other way; otherwise no evidence of an interior optimum, which is what "
                  "these seeds could resolve and not a finding of no effect.")
    doc.bullets(notes[:2] + [family, SELECTION, shape_note] + notes[2:])


def _terminal(study: Study, an: SweepAnalysis) -> tuple[list[dict], str]:
    keep = ("Headline accuracy", "Generalization gap", "Seeds finished")
    rows = [{k: v for i, (k, v) in enumerate(row.items()) if i < len(axes(study)) or k in keep or "best" in k}
            for row in dose_rows(study, an)]
    return rows, f"Sweep of {', '.join(axes(study))} (report.md has every column and the verdicts)"


def _title(study: Study, an: Analysis) -> str:
    return "reglab sweep: " + " × ".join(esc(n) for n in axes(study))


SWEEP = Report(
    title=_title,
    reference=best,
    sections=(sections.estimand, _intro, sections.alerts, sections.design, _headline, _doses, _differences,
              sections.runs_section, sections.training_curves, sections.gap_figure, _how_to_read,
              provenance.setup_section),
    terminal=_terminal,
    analyze=analyze,
)
