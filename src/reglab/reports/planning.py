"""`reglab plan STUDY`: how many seeds a new study needs, from a pilot study's run folders.

The pilot is loaded and analysed as its report analyses it (the same reference, family and margin). For each
comparison, stats.seeds_needed at the given power gives the seeds a side to detect the observed difference and to show
equivalence within the margin, each with the range the seed variance's uncertainty leaves, or says that no seed count
resolves it on this val set (the val-image term does not shrink with more seeds). A comparison is planned for
detection when its observed difference is at least the margin, else for equivalence (analysis.recommendation); the
recommended `--seeds` is the largest over the family (analysis.recommended_seeds). It reads, and writes nothing.
"""

from __future__ import annotations

from pathlib import Path

from .. import rundir
from ..errors import UserError
from . import analysis, render
from .analysis import Analysis, Comparison
from .common import PP, terminal
from .document import code
from .report import print_rows


def plan(out: str | Path, margin: float | None = None, power: float = analysis.POWER, quiet: bool = False) -> dict:
    """Plan a new study from the pilot study in `out`; print the table unless quiet. Returns {seeds, range, power,
    level, margin, comparisons: [{metric, variant, reference, diff, verdict, learned_seeds, seeds, range, kind,
    detect, equivalent, note}]} (seeds None: nothing to recommend)."""
    out = Path(out)
    if rundir.classify(out) != "study":
        raise UserError(f"{out} is not a study folder; plan reads the --out folder of a compare or ablate (a pilot "
                        "study)")
    report, study = render.load(out, "study", quiet=quiet)
    reference = report.reference(study)
    an = report.analysed(study, render.study_margin(study, margin), power)
    if not an.m:
        raise UserError(f"{out} has finished runs of one variant only ({reference}); plan needs two to compare")
    rec = analysis.recommended_seeds(an)
    result = dict(seeds=rec["seeds"], range=rec["range"], power=power, level=an.level, margin=an.margin,
                  comparisons=[_planned(c) for c in an.comparisons])
    if not quiet:
        print_rows([_row(c) for c in an.comparisons],
                   f"Seeds a new study needs: {power:.0%} power, {an.family}, margin ±{an.margin * 100:g} pp")
        print(terminal(_summary(an, rec)))
    return result


def _planned(c: Comparison) -> dict:
    rec = analysis.recommendation(c)
    kind, entry = rec if rec else (None, None)
    return dict(metric=c.metric, variant=c.variant, reference=c.reference, diff=c.diff, verdict=c.verdict,
                learned_seeds=c.n_seeds, seeds=entry["seeds"] if entry else None,
                range=entry["range"] if entry else (None, None), kind=kind,
                detect=c.plan["detect"] if c.plan else None, equivalent=c.plan["equivalent"] if c.plan else None,
                note=_recommended(c))


def _recommended(c: Comparison) -> str:
    """The --seeds this comparison needs, what for, or why there is no count (markup)."""
    rec = analysis.recommendation(c)
    if rec:
        kind, e = rec
        hi = e["range"][1]
        goal = "to detect this difference" if kind == "detect" else f"to show equivalence within ±{c.margin * 100:g} pp"
        return f"`--seeds {e['seeds']}` (range {e['range'][0]} to {hi if hi is not None else 'over 1,000'}) {goal}"
    if c.plan is None:
        return "at least 2 seeds a side first" if c.one_seed else f"nothing to plan from: {c.why}"
    return "cannot be resolved on this val set at any seed count"


def _row(c: Comparison) -> dict:
    return {"Comparison": f"{code(c.variant)} − {code(c.reference)}", "Metric": c.metric,
            "Learned seeds": f"{c.n_seeds[0]} vs {c.n_seeds[1]}",
            "Estimate": PP(c.diff) if c.has_interval else "n/a (no claim)", "Verdict now": analysis.verdict_word(c),
            "Recommended": _recommended(c), "To detect it": analysis.plan_text(c, "detect"),
            "To show equivalence": analysis.plan_text(c, "equivalent")}


def _summary(an: Analysis, rec: dict) -> str:
    if rec["seeds"] is None:
        if rec["pending"]:
            return ("Nothing to plan from yet: a plan needs the seed-to-seed variance, so run at least 2 seeds a side "
                    "(--seeds 2 or more; 3 or more narrows the plan's range), then plan again.")
        return "No seed count resolves these comparisons on this val set: only a larger val set would."
    lo, hi = rec["range"]
    text = (f"Recommended: --seeds {rec['seeds']} (range {lo} to {hi if hi is not None else 'over 1,000'}) for every "
            "comparison that can be resolved; an estimate from the pilot's seeds, optimistic for a difference "
            "noticed for being large.")
    if rec["unresolved"]:
        text += " Not resolvable on this val set: " + ", ".join(f"{c.variant} ({c.metric})" for c in rec["unresolved"])
        text += "."
    if rec["pending"]:
        text += " Nothing to plan from (no claim): " + ", ".join(f"{c.variant} ({c.metric})" for c in rec["pending"])
        text += "."
    return text
