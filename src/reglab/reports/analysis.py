"""The statistics behind every number a report states about variants, in one place so that every report says the
same thing the same way (issue 15):

* The headline outcome is the restored-best accuracy on val/ (`restored_val_accuracy`, with its integer count
  `restored_val_correct`). Whether it is an honest test accuracy depends on the design (`chosen_on`): a held-out
  selection split chose the epoch (val/ evaluated once) or val/ itself chose (the notebook's way: optimistic).
* The generalization gap is measured: clean training accuracy (restored-best weights, eval mode, un-augmented
  training images) minus the headline accuracy. Keras's running training accuracy is shown, labelled, never used.
* Seed level: Student t intervals clipped to the quantity's range, none at 2 seeds (df = 1).
* Comparisons against one reference variant form the family (accuracy and gap differences); each gets ONE
  Bonferroni-simultaneous interval and the verdict (differs / equivalent within ±margin / inconclusive) is read
  off that same interval. Welch at the seed level when both groups have >= 2 seeds with some spread, otherwise a
  bootstrap over images (two-level when there are several seeds), with McNemar's exact p at one seed each.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .. import stats
from .common import (ACC_BOUNDS, CONFIDENCE, COUNT, NAN, NONNEG, PCT, PP, SECONDS, Fmt, fmt_level, fmt_margin,
                     pp_abs)
from .document import code
from .facts import RunFacts, Study, Variant

POWER = 0.8
N_BOOT = 2000
BOOT_SEED = 0
RECOMMENDED_SEEDS = 5


# ------------------------------------------------------------------------------ seed-level summaries


def seed_summary(vals: list[float], fmt: Fmt, bounds=ACC_BOUNDS) -> str:
    """One value as is; two as the two values (no interval at df = 1); three or more as mean [95% t interval],
    clipped to the quantity's range (marked)."""
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


def accuracy_cell(v: Variant, chance_flag: bool = True) -> str:
    """The headline accuracy of a variant: one seed with its Wilson interval (images), several as seed_summary."""
    if len(v.runs) == 1:
        f = v.runs[0]
        lo, hi = f.wilson
        text = f"{PCT(f.acc)} ({f.correct:,} of {f.n:,}; Wilson 95% [{PCT(lo)}, {PCT(hi)}])"
    else:
        text = seed_summary(v.values("acc"), PCT)
    k = sum(f.at_chance for f in v.runs)
    if chance_flag and k:
        text += " **at chance**" if k == len(v.runs) else f" (**{k} of {len(v.runs)} at chance**)"
    return text


def epochs_cell(v: Variant) -> str:
    """Epochs run, censored at the cap: '50 (cap)' for one run, '≥ 31.5 (1 of 2 at the 50-epoch cap)' for a mean
    that includes runs stopped by the cap."""
    runs = v.runs
    censored = [f for f in runs if f.censored]
    if len(runs) == 1:
        return runs[0].epochs_cell() + (" (stopped early)" if runs[0].stopped_early else "")
    vals = [float(f.epochs_run) for f in runs]
    if censored:
        cap = f"{censored[0].epochs_max}-epoch " if len({f.epochs_max for f in censored}) == 1 else ""
        return (f"≥ {COUNT(float(np.mean(vals)), mean=True)} ({len(censored)} of {len(runs)} at the {cap}cap; "
                + ", ".join(f.epochs_cell() for f in runs) + ")")
    return seed_summary(vals, COUNT, NONNEG)


def wall_cell(v: Variant) -> str:
    """Wall time: a measurement of the machine (mean and range), never tested."""
    vals = [x for x in v.values("wall_seconds") if math.isfinite(x)]
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
        x = f.value(key)
        text = f.epochs_cell() if key == "epochs_run" else fmt(x)
        if key == "acc" and f.at_chance:
            text += " (at chance)"
        if key == "gap" and not f.gap_measured:
            text += " (old run: running train − final val)"
        out.append(f"seed {f.seed}: {text}")
    return "; ".join(out)


# --------------------------------------------------------------------------------------- comparisons


@dataclass
class Comparison:
    metric: str  # "accuracy" or "gap"
    variant: str
    reference: str
    diff: float
    lo: float = NAN
    hi: float = NAN
    level: float = CONFIDENCE
    clipped: bool = False
    method: str = "none"
    seed_level: bool = False
    df: float = NAN
    p: float = NAN
    mcnemar: dict | None = None
    mdd: float = NAN
    sup: dict | None = None
    verdict: str = "inconclusive"
    not_ranked: bool = False
    note: str = ""
    seeds: list[float] = field(default_factory=list)  # each seed of `variant` minus the reference's mean

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    @property
    def bound(self) -> float:
        """The difference's possible range is [-bound, bound]: 1 for accuracies, 2 for gaps (each spans 1)."""
        return 1.0 if self.metric == "accuracy" else 2.0


@dataclass
class Analysis:
    reference: str
    margin: float
    m: int
    level: float
    accuracy: list[Comparison]
    gap: list[Comparison]

    @property
    def family(self) -> str:
        return (f"{self.m} comparison{'s' if self.m != 1 else ''}, Bonferroni-simultaneous 95% intervals "
                f"(each at {fmt_level(self.level)})")

    def get(self, metric: str, variant: str) -> Comparison:
        return next(c for c in (self.accuracy if metric == "accuracy" else self.gap) if c.variant == variant)


def analyze(study: Study, reference: str, margin: float = 0.01) -> Analysis:
    """Every other variant against `reference`, on the headline accuracy and on the measured gap: the family
    the conclusions draw their verdicts from, with Bonferroni-simultaneous intervals."""
    others = [v for v in study.variants if v != reference]
    m = 2 * len(others)
    level = stats.simultaneous_confidence(CONFIDENCE, m)
    acc = [_compare(study.variants[v], study.variants[reference], "accuracy", level, margin) for v in others]
    gap = [_compare(study.variants[v], study.variants[reference], "gap", level, margin) for v in others]
    return Analysis(reference, margin, m, level, acc, gap)


def min_detectable(sd_a: float, n_a: int, sd_b: float, n_b: int, alpha: float, power: float = POWER) -> float:
    """stats.min_detectable_difference; where scipy's noncentral t returns nan in its far lower tail (small df,
    small alpha: brentq then raises), the same computation with that negligible tail taken as 0."""
    try:
        return stats.min_detectable_difference(sd_a, n_a, sd_b, n_b, alpha=alpha, power=power)
    except ValueError:
        pass
    from scipy import optimize
    from scipy import stats as sps

    va, vb = sd_a * sd_a / n_a, sd_b * sd_b / n_b
    df = (va + vb) ** 2 / (va * va / (n_a - 1) + vb * vb / (n_b - 1))
    crit = float(sps.t.ppf(1.0 - alpha / 2.0, df))

    def pw(nc: float) -> float:
        lower = float(sps.nct.cdf(-crit, df, nc))
        return float(sps.nct.sf(crit, df, nc)) + (lower if math.isfinite(lower) else 0.0)

    hi = 1.0
    while pw(hi) < power and hi < 1e6:
        hi *= 2.0
    try:
        nc = optimize.brentq(lambda c: pw(c) - power, 0.0, hi, xtol=1e-10)
    except ValueError:
        return NAN
    return float(nc * math.sqrt(va + vb))


def _common_images(fs: list[RunFacts]) -> int | None:
    sizes = {f.n for f in fs}
    n = sizes.pop() if len(sizes) == 1 else None
    return n if n else None


def _correctness(fs: list[RunFacts]) -> np.ndarray | None:
    if any(f.correctness is None for f in fs) or len({f.correctness.size for f in fs}) != 1:
        return None
    return np.stack([f.correctness for f in fs])


def _compare(V: Variant, R: Variant, metric: str, level: float, margin: float) -> Comparison:
    key = "acc" if metric == "accuracy" else "gap"
    a, b = V.values(key), R.values(key)
    n_images = _common_images(V.runs + R.runs) if metric == "accuracy" else None
    w = stats.welch(a, b, level, n_images)
    c = Comparison(metric, V.name, R.name, w["diff"], level=level)
    ref_mean = stats.mean_ci(b)["mean"]
    c.seeds = [x - ref_mean for x in a]
    if len(a) >= 2 and len(b) >= 2 and not w["zero_variance"] and math.isfinite(w["lo"]):
        c.lo, c.hi, c.df, c.p, c.seed_level = w["lo"], w["hi"], w["df"], w["p"], True
        c.method = f"Welch t, seed level (df {w['df']:.1f})"
        sd_a, sd_b = stats.mean_ci(a)["sd"], stats.mean_ci(b)["sd"]
        c.mdd = min_detectable(sd_a, len(a), sd_b, len(b), alpha=1 - level)
        c.sup = stats.prob_superiority(a, b)
    else:
        if w["zero_variance"]:
            c.note = "no seed-to-seed spread (every seed of both variants at the same value)"
        elif len(a) < 2 or len(b) < 2:
            c.note = "fewer than 2 seeds on a side"
        else:
            c.note = "no seed-level interval"
        missing = _image_level(c, V, R, metric, level)
        c.note += f", and {missing}" if missing else ": decided at the image level"
    if c.has_interval and (c.lo < -c.bound or c.hi > c.bound):
        c.clipped = True
        c.lo, c.hi = max(c.lo, -c.bound), min(c.hi, c.bound)
    c.verdict = stats.verdict(c.lo, c.hi, margin)
    c.not_ranked = V.at_chance and R.at_chance
    return c


def _image_level(c: Comparison, V: Variant, R: Variant, metric: str, level: float) -> str:
    """Fill c with the image-level interval; returns why there is none ("" when there is one)."""
    cv, cr = _correctness(V.runs), _correctness(R.runs)
    if cv is None or cr is None or cv.shape[1] != cr.shape[1]:
        return "no image-level interval: predictions.npz missing or scored on different images"
    one_each = len(V.runs) == 1 and len(R.runs) == 1
    if metric == "accuracy":
        boot = stats.two_level_bootstrap({"v": cv, "r": cr}, "r", level, N_BOOT, BOOT_SEED)["v"]
        c.lo, c.hi = boot["lo"], boot["hi"]
        if one_each:
            c.mcnemar = stats.mcnemar_exact(cv[0], cr[0])
    else:
        if not all(f.gap_measured and f.clean_n > 0 for f in V.runs + R.runs):
            return "no image-level interval for a gap without a measured clean training accuracy (older runs)"
        c.lo, c.hi = gap_bootstrap(V.runs, R.runs, level)
    c.method = ("bootstrap over images (one seed each)" if one_each else
                "two-level bootstrap (seeds, then images)") + f", {N_BOOT} replicates, seed {BOOT_SEED}"
    return ""


def gap_bootstrap(A: list[RunFacts], R: list[RunFacts], confidence: float, n_boot: int = N_BOOT,
                  seed: int = BOOT_SEED) -> tuple[float, float]:
    """Percentile interval of mean gap(A) - mean gap(R), resampling as stats.two_level_bootstrap does: one shared
    resample of the val/ images per replicate, each variant's seeds resampled, and each run's clean training
    accuracy redrawn from its binomial (its clean sample's images are not stored one by one)."""
    rng = np.random.default_rng(seed)
    groups = [A, R]
    correct = [np.stack([f.correctness for f in g]).T.astype(float) for g in groups]  # (images, seeds)
    clean_p = [np.array([min(max(f.clean, 0.0), 1.0) for f in g]) for g in groups]
    clean_n = [np.array([f.clean_n for f in g]) for g in groups]
    n_img = correct[0].shape[0]
    boot = [np.empty(n_boot), np.empty(n_boot)]
    chunk = 250
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n_img, size=(b, n_img))
        weights = np.bincount((idx + n_img * np.arange(b)[:, None]).ravel(), minlength=b * n_img)
        weights = weights.reshape(b, n_img).astype(float)
        for j in range(2):
            s = correct[j].shape[1]
            val = weights @ correct[j] / n_img
            clean = rng.binomial(clean_n[j], clean_p[j], size=(b, s)) / clean_n[j]
            pick = rng.integers(0, s, size=(b, s))
            boot[j][start:start + b] = np.take_along_axis(clean - val, pick, axis=1).mean(axis=1)
    lo, hi = np.quantile(boot[0] - boot[1], [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def interval_text(c: Comparison) -> str:
    if not c.has_interval:
        return "none"
    return f"[{PP(c.lo)}, {PP(c.hi)}]" + (" (clipped to the possible range)" if c.clipped else "")


def _inside(c: Comparison, margin: float) -> bool:
    return c.has_interval and -margin < c.lo and c.hi < margin


def verdict_text(c: Comparison, margin: float) -> str:
    """The verdict, read off the interval shown beside it (markup)."""
    V, R = code(c.variant), code(c.reference)
    if c.not_ranked:
        return f"**not ranked**: {V} and {R} are both at chance"
    if c.verdict == "differs":
        up = c.lo > 0
        size = pp_abs(c.diff)
        if c.metric == "accuracy":
            what = f"{V} is {'higher' if up else 'lower'} than {R} by {size}"
        else:
            what = (f"{V}'s gap is {'larger (it overfits more)' if up else 'smaller (it overfits less)'} than "
                    f"{R}'s by {size}")
        label = f"differs, but by less than the {fmt_margin(margin)} margin" if _inside(c, margin) else "differs"
        return f"**{label}**: {what}"
    if c.verdict == "equivalent":
        return f"**equivalent within {fmt_margin(margin)}**: the whole interval lies inside the margin"
    if not c.has_interval:
        return f"**inconclusive**: no interval ({c.note or 'too little data'})"
    return f"**inconclusive**: the data allow differences from {PP(c.lo)} to {PP(c.hi)}"


def verdict_word(c: Comparison, margin: float) -> str:
    """The verdict in a few words, for the terminal and table cells."""
    if c.not_ranked:
        return "not ranked (both at chance)"
    if c.verdict == "differs":
        up = c.lo > 0
        word = ("higher" if up else "lower") if c.metric == "accuracy" else ("larger" if up else "smaller")
        small = f", < {fmt_margin(margin)}" if _inside(c, margin) else ""
        return f"differs: {word} by {pp_abs(c.diff)}{small}"
    if c.verdict == "equivalent":
        return f"equivalent within {fmt_margin(margin)}"
    return "inconclusive" + (f" ({PP(c.lo)} to {PP(c.hi)})" if c.has_interval else " (no interval)")


def mdd_text(c: Comparison) -> str:
    if not c.seed_level:
        return "n/a (image level)"
    if math.isfinite(c.mdd) and c.mdd > c.bound:
        return f"none: beyond the possible range (> {pp_abs(c.bound)})"
    return f"≈ {pp_abs(c.mdd)}" if math.isfinite(c.mdd) else "n/a"


def superiority_text(c: Comparison) -> str:
    if not c.sup or not c.sup["pairs"]:
        return "n/a"
    wins = c.sup["p"] * c.sup["pairs"]
    return f"{c.sup['p']:.2f} (in {wins:g} of {c.sup['pairs']} seed pairs; resolution 1/{c.sup['pairs']})"


# ---------------------------------------------------------------------------------- how to read them


def method_notes(an: Analysis | None, study_runs: list[RunFacts]) -> list[str]:
    """How to read the statistics (bullets)."""
    out = []
    if an is not None and an.m:
        out.append(f"**Family:** every comparison the conclusions draw a verdict from (accuracy and gap, each variant "
                   f"against {code(an.reference)}): {an.family}. Bonferroni rather than Holm because Holm's step-down "
                   "has no matching intervals, and a verdict must agree with the interval printed beside it.")
        out.append(f"**Verdicts:** differs / equivalent within {fmt_margin(an.margin)} / inconclusive, read off the "
                   "interval. Inconclusive means these data cannot decide either way; it comes with the range of "
                   "differences the data allow.")
        out.append("**Seed level:** Welch's t on the seeds' values (accuracies as integer correct counts, so seeds at "
                   "the same accuracy have exactly zero spread), when both variants have at least 2 seeds with some "
                   "spread. Next to it: the approximate minimum detectable difference at 80% power, and the "
                   "probability that a seed of one variant beats a seed of the other, over all seed pairs (ties half), "
                   "a description whose resolution is one over the number of pairs.")
        out.append(f"**Image level:** otherwise, a percentile bootstrap ({N_BOOT} replicates, numpy seed {BOOT_SEED}) "
                   "that resamples the validation images (the same resample for both variants: the comparison is "
                   "paired) and, with several seeds, the seeds within each variant (two-level bootstrap); the gap's "
                   "clean training accuracy is redrawn from its binomial. At one seed each, McNemar's exact test on "
                   "the images where the two runs disagree is shown beside it.")
    out.append("**Per variant:** one seed: a Wilson interval for its accuracy (the validation images are a sample); "
               "three or more seeds: Student t intervals clipped to the quantity's range; two seeds: the two "
               "values, no interval (1 degree of freedom).")
    out.append("**At chance:** a run whose accuracy is not shown to be above 1/classes (one-sided exact binomial "
               "test, 5%), or that predicts one class for more than half of the images (and more than twice as often "
               "as that class occurs), is flagged; it stays in the means, flagged, and two variants that are both at "
               "chance are never ranked.")
    out.append("**Epochs:** a run that reached the epoch cap without stopping early is censored: its count is shown "
               "as \"N (cap)\" and a mean over such runs as a lower bound (≥).")
    out.append("**Wall time** is a measurement of the machine the runs used, reported and never tested.")
    if study_runs and min(Counter(f.variant for f in study_runs).values()) < RECOMMENDED_SEEDS:
        out.append(f"**Seeds:** fewer than {RECOMMENDED_SEEDS} seeds per variant: run at least {RECOMMENDED_SEEDS} "
                   f"(`--seeds {RECOMMENDED_SEEDS}`) for seed-level intervals narrow enough to decide anything but "
                   "large effects.")
    return out
