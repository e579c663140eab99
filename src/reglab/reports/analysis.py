"""The statistics behind every number a report states about variants, chosen and worded in one place so that every
report says the same thing the same way (issues 15 and 21); the statistics themselves are stats.py's.

* One estimand, named at the top of every report (`estimand_text`): a variant's (training recipe's) accuracy on
  images from the distribution val/ was drawn from, averaged over the seeds that learn. Every interval and verdict
  about it accounts for both things sampled, the seeds and the val images, from each run's per-image correctness in
  predictions.npz (paired between variants): stats.variant_interval / gap_interval per variant and compare_variants /
  compare_gaps per comparison, at any seed count, balanced or not. Whatever is about one network or about these val
  images only says so beside it.
* The headline outcome is the restored-best accuracy on val/; whether it is an honest test accuracy depends on the
  design (`chosen_on`). The generalization gap is measured: clean training accuracy (restored-best weights, eval
  mode, un-augmented training images) minus the headline accuracy.
* Seeds decide what can be claimed: with one learned seed on a side a comparison is "no claim", and the report says
  what the two networks do on these images (labelled so) and that a claim needs at least 2 seeds a side. A no claim
  never counts as "differs".
* Failures apart from performance: failed and at-chance runs are counted per variant with an exact interval
  (Variant.failures) and are in no interval, which is over the seeds that learned.
* The family: every comparison against one reference (accuracy and gap), Bonferroni-simultaneous at 95%; the verdict
  (differs: at least X / equivalent within the margin, a TOST at a stated level / inconclusive: the range allowed /
  no claim) is read off the interval printed beside it.
* Planning: beside every comparison, stats.seeds_needed, the seeds a side a new study needs to detect the observed
  difference and to show equivalence within the margin, with its range; `recommended_seeds` turns a study's plans
  into one `--seeds` (what `reglab plan` prints).
* Quantities with no per-image record (clean training accuracy, losses, epochs): Student t over the learned seeds,
  clipped to the quantity's range (clipping leaves coverage unchanged), the two values at two seeds. Wall time is a
  measurement of the machine, never tested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import stats
from .common import (ACC_BOUNDS, CONFIDENCE, COUNT, NAN, NONNEG, PCT, PP, RATE, SECONDS, Fmt, fmt_level, fmt_margin,
                     pp_abs)
from .document import code
from .facts import STALE_ADVICE, RunFacts, Study, Variant

POWER = 0.8  # the probability a planned study reaches its verdict
ONE_SEED = "one seed on a side"
STATISTICS = "`docs/STATISTICS.md` in reglab's source"


# ------------------------------------------------------------------------------------------- per variant


def seed_summary(vals: list[float], fmt: Fmt, bounds=ACC_BOUNDS) -> str:
    """A quantity with one value per seed and no per-image record: one value as is; two as the two values (no
    interval at df = 1); three or more as mean [95% Student t interval], clipped to the quantity's range (marked)."""
    ci = stats.mean_ci(vals, CONFIDENCE, bounds)
    finite = [v for v in vals if v is not None and math.isfinite(v)]
    if ci["n"] == 0:
        return "n/a"
    if ci["n"] == 1:
        return fmt(finite[0])
    if min(finite) == max(finite):
        return f"{fmt(finite[0])} ({'both' if ci['n'] == 2 else 'all ' + str(ci['n'])} seeds)"
    if ci["n"] == 2:
        return f"{fmt(finite[0])}, {fmt(finite[1])} (mean {fmt(ci['mean'], mean=True)})"
    clipped = " (clipped)" if ci["clipped"] else ""
    return f"{fmt(ci['mean'], mean=True)} [{fmt(ci['lo'], mean=True)}, {fmt(ci['hi'], mean=True)}]{clipped}"


def accuracy_interval(v: Variant) -> dict | None:
    """stats.variant_interval over the learned seeds (None without per-image predictions)."""
    correct = v.correctness()
    return None if correct is None else stats.variant_interval(correct, CONFIDENCE)


def gap_interval(v: Variant) -> dict | None:
    """stats.gap_interval over the learned seeds (None without predictions or a measured clean accuracy)."""
    correct = v.correctness()
    if correct is None or not all(f.gap_measured and f.clean_n for f in v.learned):
        return None
    return stats.gap_interval(correct, [f.clean for f in v.learned], [f.clean_n for f in v.learned], CONFIDENCE)


def _interval_cell(iv: dict, fmt: Fmt) -> str:
    one = iv["estimand"] == "network"
    text = f"{fmt(iv['mean'], mean=not one)} [{fmt(iv['lo'], mean=not one)}, {fmt(iv['hi'], mean=not one)}]"
    return text + (" (clipped)" if iv["clipped"] else "") + (" for this one network" if one else "")


def _chance_flag(v: Variant) -> str:
    k = len(v.runs) - len(v.learned)
    if not k:
        return ""
    return " **at chance**" if not v.learned else f" (**{k} of {len(v.runs)} at chance**: not in the interval)"


def accuracy_cell(v: Variant) -> str:
    """The headline accuracy of a variant's learned seeds: one network with its Wilson interval (val images only),
    several with the variant's interval (seeds and val images); at-chance seeds flagged and left out."""
    learned = v.learned
    if not learned:
        return ", ".join(PCT(f.acc) for f in v.runs) + _chance_flag(v)
    if len(learned) == 1:
        f = learned[0]
        lo, hi = f.wilson
        text = f"{PCT(f.acc)} ({f.correct:,} of {f.n:,}; Wilson 95% [{PCT(lo)}, {PCT(hi)}]) for this one network"
    else:
        iv = accuracy_interval(v)
        text = _interval_cell(iv, PCT) if iv else f"{PCT(v.mean('acc'), mean=True)} (no per-image predictions)"
    return text + _chance_flag(v)


def gap_cell(v: Variant) -> str:
    """The measured generalization gap as accuracy_cell words the accuracy; older runs: the mean, no interval."""
    if not v.learned:
        return ", ".join(PP(f.gap) for f in v.runs) + _chance_flag(v)
    iv = gap_interval(v)
    if iv is None:
        why = "older runs: no measured clean accuracy" if not all(f.gap_measured for f in v.learned) else \
            "no per-image predictions"
        return f"{PP(v.mean('gap'), mean=len(v.learned) > 1)} (no interval: {why})" + _chance_flag(v)
    return _interval_cell(iv, PP) + _chance_flag(v)


def failure_cell(v: Variant) -> str:
    """Failed or at chance: k of n with its exact 95% interval."""
    fr = v.failures
    return f"{fr['k']} of {fr['n']} [{RATE(fr['lo'])}, {RATE(fr['hi'])}]" if fr["n"] else "n/a"


def _capped_cell(v: Variant, key: str, at_cap, cell) -> str:
    runs = v.summarized
    if len(runs) == 1:
        return cell(runs[0]) + (" (stopped early)" if key == "epochs_run" and runs[0].stopped_early else "")
    vals = [f.value(key) for f in runs]
    capped = [f for f in runs if at_cap(f)]
    if capped:
        cap = f"{capped[0].epochs_max}-epoch " if len({f.epochs_max for f in capped}) == 1 else ""
        return (f"≥ {COUNT(float(np.mean(vals)), mean=True)} ({len(capped)} of {len(runs)} at the {cap}cap; "
                + ", ".join(cell(f) for f in runs) + ")")
    return seed_summary(vals, COUNT, NONNEG)


def epochs_cell(v: Variant) -> str:
    """Epochs run, censored at the cap: '50 (cap)' for one run, '≥ 31.5 (1 of 2 at the 50-epoch cap; ...)' for a mean
    over runs some of which the cap stopped."""
    return _capped_cell(v, "epochs_run", lambda f: f.censored, RunFacts.epochs_cell)


def best_epoch_cell(v: Variant) -> str:
    """The best epoch, censored where it is the last epoch of a run the cap stopped (the best might come later)."""
    return _capped_cell(v, "best_epoch", lambda f: f.best_censored, RunFacts.best_epoch_cell)


def wall_cell(v: Variant) -> str:
    """Wall time: a measurement of the machine (mean and range over every finished run), never tested."""
    vals = [x for x in (f.value("wall_seconds") for f in v.runs) if math.isfinite(x)]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return SECONDS(vals[0])
    return f"{SECONDS(float(np.mean(vals)))} (range {SECONDS(min(vals))} to {SECONDS(max(vals))})"


def epochs_sentence(v: Variant) -> str:
    """'`basic` seed 0 stopped early at epoch 12.' or '`basic`: seed 0 ran all 50 epochs (the cap); seed 1 ...'"""
    if len(v.runs) == 1:
        return f"{code(v.name)} seed {v.runs[0].seed} {v.runs[0].epochs_text()}."
    return f"{code(v.name)}: " + "; ".join(f"seed {f.seed} {f.epochs_text()}" for f in v.runs) + "."


def per_seed_cell(v: Variant, key: str, fmt: Fmt) -> str:
    out = []
    for f in v.runs:
        cells = {"epochs_run": f.epochs_cell, "best_epoch": f.best_epoch_cell}
        text = cells[key]() if key in cells else fmt(f.value(key))
        if key == "acc" and f.at_chance:
            text += " (at chance)"
        if key == "gap" and not f.gap_measured:
            text += " (old run: running train − final val)"
        out.append(f"seed {f.seed}: {text}")
    return "; ".join(out)


def estimand_text(study: Study) -> str:
    """The one sentence at the top of every report that says what its intervals and verdicts are about."""
    if study.single:
        return ("**What this report is about:** one network (one seed) and its accuracy on images like val/; "
                "nothing in it is about its training recipe, since one seed shows nothing of how much seeds vary.")
    sizes = sorted({f.n for f in study.runs if f.n})
    images = f" {sizes[0]:,}" if len(sizes) == 1 else ""
    return ("**What the intervals and verdicts estimate:** each variant's (training recipe's) accuracy on images from "
            f"the same distribution as val/ (whose{images} images are one sample of it), averaged over the seeds that "
            "learn; every interval about a variant accounts for both the seeds and the sampling of the val images.")


# --------------------------------------------------------------------------------------- comparisons


@dataclass
class Comparison:
    """One comparison of the family: `variant` minus `reference` on a metric, from stats.compare_variants or
    compare_gaps over the learned seeds. verdict: differs / equivalent / inconclusive / "no claim" (`why` says why:
    one seed on a side, with `networks` saying what the networks do on these images, or data the method needs)."""

    metric: str  # "accuracy" or "gap"
    variant: str
    reference: str
    level: float  # the per-comparison (Bonferroni) confidence
    margin: float
    diff: float = NAN  # mean over the learned seeds of variant minus reference
    lo: float = NAN
    hi: float = NAN
    verdict: str = "no claim"
    at_least: float = NAN  # differs: the distance of the interval's near end from 0
    near_bound: bool = False
    tost_level: float = NAN
    clipped: bool = False
    method: str = ""
    n_seeds: tuple[int, int] = (0, 0)  # learned seeds of variant, reference
    why: str = ""  # why no claim
    networks: dict | None = None  # no claim at one seed: what these networks do on these images
    plan: dict | None = None  # stats.seeds_needed
    not_ranked: bool = False
    sup: dict | None = None  # P(a seed of variant beats one of reference), on these val images
    seeds: list[float] = field(default_factory=list)  # each learned seed of variant minus the reference's mean
    bn_stale: list[str] = field(default_factory=list)  # the sides whose BatchNorm statistics look stale

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    @property
    def bound(self) -> float:
        """The difference's possible range is [-bound, bound]: 1 for accuracies, 2 for gaps (each spans 1)."""
        return 1.0 if self.metric == "accuracy" else 2.0

    @property
    def one_seed(self) -> bool:
        return self.why == ONE_SEED


@dataclass
class Analysis:
    reference: str
    margin: float
    m: int
    level: float
    accuracy: list[Comparison]
    gap: list[Comparison]
    power: float = POWER

    @property
    def family(self) -> str:
        return (f"{self.m} comparison{'s' if self.m != 1 else ''}, Bonferroni-simultaneous 95% intervals "
                f"(each at {fmt_level(self.level)})")

    @property
    def comparisons(self) -> list[Comparison]:
        return self.accuracy + self.gap

    def get(self, metric: str, variant: str) -> Comparison:
        return next(c for c in (self.accuracy if metric == "accuracy" else self.gap) if c.variant == variant)


def analyze(study: Study, reference: str, margin: float = stats.DEFAULT_MARGIN, power: float = POWER) -> Analysis:
    """Every other variant against `reference`, on the headline accuracy and on the measured gap: the family the
    conclusions draw their verdicts from, with Bonferroni-simultaneous intervals and a plan beside each."""
    others = [v for v in study.variants if v != reference]
    m = 2 * len(others)
    level = stats.simultaneous_confidence(CONFIDENCE, m)
    ref = study.variants.get(reference)
    comps = {metric: [_compare(study.variants[v], ref, metric, level, margin, power) for v in others]
             for metric in ("accuracy", "gap")}
    return Analysis(reference, margin, m, level, comps["accuracy"], comps["gap"], power)


def compare(V: Variant, R: Variant, metric: str, level: float, margin: float, power: float = POWER,
            plan: bool = True) -> Comparison:
    """`V` minus `R` on `metric` at the per-comparison confidence `level` of a family the caller defines (the sweep
    report's: every pair of doses), worded as every comparison here; planned (stats.seeds_needed) unless not `plan`."""
    return _compare(V, R, metric, level, margin, power, plan)


def _why_no_claim(V: Variant, R: Variant, metric: str) -> str:
    """What keeps the method from this comparison ("" when nothing does)."""
    for v in (V, R):
        if not v.learned:
            return f"no seed of {code(v.name)} learned (every one at chance)"
    cv, cr = V.correctness(), R.correctness()
    if cv is None or cr is None:
        return "a run has no per-image predictions (predictions.npz)"
    if cv.shape[1] != cr.shape[1]:
        return "the variants were scored on different val sets"
    if metric == "gap" and not all(f.gap_measured and f.clean_n for f in V.learned + R.learned):
        return "a run has no measured clean training accuracy (an older run folder)"
    return ""


def _compare(V: Variant, R: Variant, metric: str, level: float, margin: float, power: float,
             plan: bool = True) -> Comparison:
    key = "acc" if metric == "accuracy" else "gap"
    c = Comparison(metric, V.name, R.name, level, margin, not_ranked=V.at_chance and R.at_chance,
                   bn_stale=[v.name for v in (V, R) if v.bn_stale])
    a, b = [f.value(key) for f in V.learned], [f.value(key) for f in R.learned]
    c.n_seeds = (len(a), len(b))
    if a and b:
        c.diff = float(np.mean(a) - np.mean(b))
        c.seeds = [x - float(np.mean(b)) for x in a]
    if len(a) >= 2 and len(b) >= 2:
        c.sup = stats.prob_superiority(a, b)
    c.why = _why_no_claim(V, R, metric)
    if c.why:
        return c
    cv, cr = V.correctness(), R.correctness()
    if metric == "accuracy":
        result = stats.compare_variants(cv, cr, level, margin)
    else:
        result = stats.compare_gaps(cv, [f.clean for f in V.learned], [f.clean_n for f in V.learned],
                                    cr, [f.clean for f in R.learned], [f.clean_n for f in R.learned], level, margin)
    for name in ("diff", "lo", "hi", "verdict", "at_least", "near_bound", "tost_level", "clipped", "method"):
        setattr(c, name, result[name])
    if result["verdict"] == "no claim":
        c.why, c.networks = ONE_SEED, result["networks"]
    elif plan:
        c.plan = stats.seeds_needed(result, power)
    return c


# ------------------------------------------------------------------------------------------ their words


def interval_text(c: Comparison) -> str:
    if not c.has_interval:
        return "none: no claim"
    return f"[{PP(c.lo)}, {PP(c.hi)}]" + (" (clipped to the possible range)" if c.clipped else "")


def _inside(c: Comparison) -> bool:
    return c.has_interval and -c.margin < c.lo and c.hi < c.margin


def tost_text(c: Comparison) -> str:
    return f"a TOST at {c.tost_level * 100:.3g}% on each side"


def _direction(c: Comparison) -> tuple[str, str]:
    """(word, aside) for a difference that excludes 0: higher/lower for accuracy, larger/smaller for the gap."""
    up = c.lo > 0
    if c.metric == "accuracy":
        return ("higher" if up else "lower"), ""
    return ("larger" if up else "smaller"), ("; it overfits more" if up else "; it overfits less")


def verdict_text(c: Comparison) -> str:
    """The verdict, read off the interval shown beside it (markup); with stale BatchNorm statistics on a side, said
    to be no verdict on the regularizers first."""
    text = _verdict_text(c)
    if c.bn_stale:
        return (f"**BatchNorm statistics stale** in {', '.join(code(n) for n in c.bn_stale)}: not a verdict on the "
                f"regularizers; {STALE_ADVICE} (the interval alone reads: {text})")
    return text


def _verdict_text(c: Comparison) -> str:
    V, R = code(c.variant), code(c.reference)
    if c.not_ranked:
        return f"**not ranked**: {V} and {R} are both at chance"
    if c.verdict == "differs":
        word, aside = _direction(c)
        size = f"at least {pp_abs(c.at_least)} {word}"
        what = f"{V} is {size} than {R}" if c.metric == "accuracy" else f"{V}'s gap is {size} than {R}'s"
        label = f"differs, but by less than the {fmt_margin(c.margin)} margin" if _inside(c) else "differs"
        return f"**{label}**: {what} (estimate {PP(c.diff)}{aside})" + _close_call(c)
    if c.verdict == "equivalent":
        return (f"**equivalent within {fmt_margin(c.margin)}** ({tost_text(c)}): the whole interval lies inside the "
                "margin" + _close_call(c))
    if c.verdict == "inconclusive":
        return f"**inconclusive**: the data allow differences from {PP(c.lo)} to {PP(c.hi)}" + _close_call(c)
    if c.one_seed:
        return "**no claim about the variants**: one seed on a side"
    return f"**no claim**: {c.why}"


def _close_call(c: Comparison) -> str:
    return "; a close call (an end of the interval lies near 0 or the margin)" if c.near_bound else ""


def verdict_word(c: Comparison) -> str:
    """The verdict in a few words, for the terminal and table cells."""
    if c.bn_stale:
        return "no verdict: BatchNorm statistics stale (rerun with --precise-bn)"
    if c.not_ranked:
        return "not ranked (both at chance)"
    if c.verdict == "differs":
        word, _ = _direction(c)
        small = f", < {fmt_margin(c.margin)}" if _inside(c) else ""
        return f"differs: at least {pp_abs(c.at_least)} {word}{small}"
    if c.verdict == "equivalent":
        return f"equivalent within {fmt_margin(c.margin)} (TOST {c.tost_level * 100:.3g}%)"
    if c.verdict == "inconclusive":
        return f"inconclusive ({PP(c.lo)} to {PP(c.hi)})"
    return f"no claim: {ONE_SEED}" if c.one_seed else "no claim"


def networks_text(c: Comparison) -> str:
    """What the networks of a one-seed comparison do on images like val/, labelled as being about them only."""
    n = c.networks
    if n is None:
        return ""
    which = "these two networks" if c.n_seeds == (1, 1) else \
        f"these networks ({c.n_seeds[0]} of {code(c.variant)}, {c.n_seeds[1]} of {code(c.reference)})"
    what = "accuracy" if c.metric == "accuracy" else "gap"
    text = (f"**{which[0].upper() + which[1:]} on these images, not the variants:** {what} difference {PP(n['diff'])}, "
            f"{fmt_level(c.level)} interval [{PP(n['lo'])}, {PP(n['hi'])}] over images like val/ (image sampling only)")
    if "a_only" in n:
        text += (f"; right only for {code(c.variant)}'s network on {n['a_only']:,} images, only for "
                 f"{code(c.reference)}'s on {n['b_only']:,}, exact McNemar p = {n['p_unadjusted']:.3g} "
                 "(unadjusted: outside the family)")
    return text


def plan_text(c: Comparison, kind: str) -> str:
    """Seeds a side a new study needs (stats.seeds_needed) to detect the observed difference ("detect") or to show
    equivalence within the margin ("equivalent"), with its 95% range; or why there is no count."""
    if c.plan is None:
        return "at least 2 seeds a side first, then `reglab plan`" if c.one_seed else "n/a"
    e = c.plan[kind]
    if not e["reachable"]:
        what = "difference" if kind == "detect" else "margin"
        return f"none on this val set: it cannot resolve a {what} below {pp_abs(e['limit'])} at any seed count"
    if e["seeds"] is None:
        return "more than 1,000 a side"
    lo, hi = e["range"]
    return f"≈ {e['seeds']} a side (range {lo} to {hi if hi is not None else 'over 1,000'})"


def superiority_text(c: Comparison) -> str:
    if not c.sup or not c.sup["pairs"]:
        return "n/a"
    wins = c.sup["p"] * c.sup["pairs"]
    return f"{c.sup['p']:.2f} (in {wins:g} of {c.sup['pairs']} seed pairs; resolution 1/{c.sup['pairs']})"


# ------------------------------------------------------------------------------------------- planning


def recommendation(c: Comparison) -> tuple[str, dict] | None:
    """(kind, seeds_needed entry) a new study should plan this comparison for: detection when the observed
    difference is at least the margin, else equivalence; the other where that one is unreachable; None when
    neither can be resolved on this val set, or there is nothing to plan from."""
    if c.plan is None:
        return None
    order = ("detect", "equivalent") if abs(c.diff) >= c.margin else ("equivalent", "detect")
    for kind in order:
        if c.plan[kind]["reachable"] and c.plan[kind]["seeds"] is not None:
            return kind, c.plan[kind]
    return None


def recommended_seeds(an: Analysis) -> dict:
    """One `--seeds` for a new study: the largest recommendation over the family (so every comparison that can be
    resolved is planned for), with the largest ends of their ranges. Keys: seeds (None: nothing to recommend),
    range, unresolved (comparisons no seed count resolves on this val set), pending (no claim: nothing to plan)."""
    plans, unresolved, pending = [], [], []
    for c in an.comparisons:
        rec = recommendation(c)
        if rec:
            plans.append(rec[1])
        elif c.plan is None:
            pending.append(c)
        else:
            unresolved.append(c)
    if not plans:
        return dict(seeds=None, range=(None, None), unresolved=unresolved, pending=pending)
    his = [p["range"][1] for p in plans]
    return dict(seeds=max(p["seeds"] for p in plans), range=(max(p["range"][0] for p in plans),
                                                            None if None in his else max(his)),
                unresolved=unresolved, pending=pending)


def seeds_advice(an: Analysis) -> str:
    """What --seeds a new study needs, in one sentence for the reports."""
    rec = recommended_seeds(an)
    if rec["seeds"] is None:
        if rec["pending"]:
            return ("A claim about the variants needs at least 2 seeds a side: run `--seeds 2` or more (3 or more "
                    "makes the plan less uncertain), then `reglab plan DIR` estimates the `--seeds` each comparison "
                    "needs.")
        return ("No seed count resolves these comparisons on this val set (the val-image term does not shrink with "
                "more seeds): only a larger val set would.")
    lo, hi = rec["range"]
    text = (f"Recommended for a new study: `--seeds {rec['seeds']}` (range {lo} to "
            f"{hi if hi is not None else 'over 1,000'}), so that each comparison that can be resolved is, with "
            f"{POWER:.0%} probability if its difference is the one observed here; an estimate from these seeds, and "
            "optimistic for a difference noticed for being large (`reglab plan DIR` shows each comparison).")
    if rec["unresolved"]:
        text += (" Not resolvable on this val set at any seed count: " + ", ".join(
            f"{code(c.variant)} ({c.metric})" for c in rec["unresolved"]) + ".")
    return text


# ---------------------------------------------------------------------------------- how to read them


def verdict_rules(an: Analysis) -> str:
    """How the verdicts are read off the intervals; where no comparison can claim (one seed on a side), only that."""
    no_claim = ("with one learned seed on a side there is no claim about the variants (a claim needs at least 2 seeds "
                "a side): what the networks do on these images is shown instead, labelled, with McNemar's exact p "
                "where there is one network each (unadjusted, outside the family)")
    if all(c.verdict == "no claim" for c in an.comparisons):
        return f"none here: {no_claim}."
    return (f"read off the interval beside each: differs, with the interval's near end as the size the data "
            f"establish (\"at least X\"); equivalent within {fmt_margin(an.margin)}, when the interval lies inside the "
            f"margin, which is a TOST at {(1 - an.level) / 2 * 100:.3g}% on each side; inconclusive, with the range of "
            f"differences the data allow; a close call is marked; {no_claim}.")


def method_notes(an: Analysis | None, study: Study) -> list[str]:
    """How to read the statistics (bullets): the method in a few lines, the details in docs/STATISTICS.md."""
    out = [estimand_text(study)]
    if an is not None and an.m:
        out.append("**Intervals:** a variant's accuracy (and gap) over its learned seeds; each comparison's "
                   "difference over the learned seeds of both, paired on the same val images. Two variance terms, "
                   "one for the seeds (their spread, Student t; unequal seed counts each with its own t) and one for "
                   "the val images (the per-image contrast less what the seed term already counts), in quadrature: "
                   f"at or above the stated coverage at any seed count in reglab's simulation ({STATISTICS}). "
                   "Clipped to the possible range, which leaves coverage unchanged; marked where clipped.")
        out.append(f"**Family:** every comparison the conclusions draw a verdict from (accuracy and gap, each variant "
                   f"against {code(an.reference)}): {an.family}. Bonferroni rather than Holm because Holm's step-down "
                   "has no matching intervals, and a verdict must agree with the interval printed beside it.")
        out.append(f"**Verdicts:** {verdict_rules(an)}")
        out.append(f"**Planning:** beside each comparison, the seeds a side a new study needs for its interval to "
                   f"exclude 0 with {an.power:.0%} probability if the true difference were the one observed, and to "
                   "lie inside the margin if it were 0, at this family's level: an estimate from the seed and "
                   "val-image variance seen, with the range that the seed variance's uncertainty leaves, optimistic "
                   "for a difference noticed for being large. \"None on this val set\": the val-image term alone, "
                   "which more seeds do not shrink, prevents it. `reglab plan DIR` turns them into one `--seeds`.")
    out.append("**One network:** with one learned seed, an accuracy's interval is a Wilson interval over the val "
               "images, about that network only: one seed shows nothing of seed-to-seed variation.")
    out.append("**At chance:** a run whose accuracy is not shown to be above 1/classes (one-sided exact binomial test, "
               "5%), or that predicts one class for more than half of the images (and more than twice as often as "
               "that class occurs), is flagged, counted with its variant's failures (failed or at chance, with an "
               "exact Clopper-Pearson interval) and left out of every interval; two variants that are both at chance "
               "are never ranked.")
    out.append("**Other quantities** (clean training accuracy, losses, epochs) have no per-image record: Student t "
               "intervals over the learned seeds (about this training set, or these val images), clipped to the "
               "quantity's range; two seeds: the two values.")
    out.append("**Epochs:** a run that reached the epoch cap without stopping early is censored: its count is shown as "
               "\"N (cap)\", a best epoch at that cap too (the best might have come later), and a mean over such runs "
               "as a minimum (≥).")
    out.append("**Wall time** is a measurement of the machine the runs used, reported and never tested.")
    return out
