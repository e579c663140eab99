"""Simulated benchmark studies whose truth is known, to check what stats.py's intervals and verdicts claim.

The one model of a study behind tests/test_calibration.py and bench/calibrate.py (which regenerates the figures
and numbers of docs/STATISTICS.md). Numpy only, vectorised over studies; no training.

* Images: every study draws a fresh finite val set from an infinite population. Image i has a difficulty shared
  by all variants and one of its own per variant: two variants have correlated but different per-image profiles.
* A variant (Recipe) maps an image to p_i, the probability that a random seed of the recipe gets it right
  (probit of the image's difficulties). Its population accuracy E[p_i] is the estimand, exact by construction.
* A seed shifts every p_i by delta_s * w_i with w_i = p_i (1 - p_i) / E[p (1 - p)] (a logit-like shift that keeps
  p_i in [0, 1] and has mean delta_s), so the seed's own population accuracy is accuracy + delta_s; then each image
  is right or wrong independently with its probability: seeds disagree image by image (churn) beyond their level.
* Clean training accuracy (for the gap): each seed's clean accuracy is a binomial on clean_n training images at
  clean + delta_s + its own seed noise (sd clean_sd); the variant's gap is clean - accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from functools import cached_property

import numpy as np
from scipy import optimize, special
from scipy import stats as sps

from . import stats

CLEAN_N = 2000  # images in each run's clean training-accuracy sample, as reglab measures it


@dataclass(frozen=True)
class Recipe:
    """A training recipe as a distribution of networks (all accuracies are fractions)."""

    accuracy: float  # population accuracy, over images and seeds: the estimand
    disagreement: float  # probability that two seeds disagree on a random image
    seed_sd: float  # sd over seeds of a network's population accuracy (beyond the image-by-image churn)
    profile: float = 0.8  # loading of p_i on the difficulty shared by all variants (1: the same profile)
    clean: float = 0.9  # expected clean training accuracy
    clean_sd: float = 0.005  # seed sd of the clean accuracy beyond the shared seed shift

    @cached_property
    def _probit(self) -> tuple[float, float]:
        """(intercept, scale) of p_i = Phi(intercept + scale * difficulty) giving accuracy and disagreement."""
        def churn(scale: float) -> float:
            return _churn(_intercept(self.accuracy, scale), scale) - self.disagreement / 2
        scale = optimize.brentq(churn, 1e-3, 50.0, xtol=1e-12)
        return _intercept(self.accuracy, scale), scale

    @property
    def churn(self) -> float:
        """E[p (1 - p)]: the per-image Bernoulli variance of one seed, half the disagreement rate."""
        return self.disagreement / 2

    @property
    def gap(self) -> float:
        return self.clean - self.accuracy

    def shifted(self, accuracy: float) -> Recipe:
        """The same recipe at another population accuracy (and the same clean accuracy)."""
        return replace(self, accuracy=accuracy)


def _intercept(accuracy: float, scale: float) -> float:
    return float(sps.norm.ppf(accuracy)) * math.sqrt(1 + scale * scale)


def _churn(intercept: float, scale: float) -> float:
    """E[Phi(X) (1 - Phi(X))] for X = intercept + scale * N(0, 1): P(Z1 < X) - P(Z1 < X, Z2 < X)."""
    h = intercept / math.sqrt(1 + scale * scale)
    rho = scale * scale / (1 + scale * scale)
    both = sps.multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]]).cdf([h, h])
    return float(sps.norm.cdf(h) - both)


@dataclass(frozen=True)
class Scenario:
    """Two variants, a (the one with fewer seeds in unbalanced designs) and b, on a val set of `images`."""

    name: str
    a: Recipe
    b: Recipe
    images: int = 3925


@dataclass
class Studies:
    """Simulated studies: leading axis = study. correct_* (studies, seeds, images) bool on the shared val images;
    clean_* (studies, seeds) measured clean accuracies; network_* and network_clean_* (studies, seeds): each
    network's population accuracy and expected clean accuracy (the truth about one network)."""

    correct_a: np.ndarray
    correct_b: np.ndarray
    clean_a: np.ndarray
    clean_b: np.ndarray
    network_a: np.ndarray
    network_b: np.ndarray
    network_clean_a: np.ndarray
    network_clean_b: np.ndarray

    def first(self, seeds_a: int, seeds_b: int) -> Studies:
        """The same studies with only their first seeds: nested designs share their draws."""
        return Studies(*(getattr(self, f.name)[:, :seeds_a if f.name.endswith("_a") else seeds_b]
                         for f in fields(self)))


def simulate(scenario: Scenario, seeds_a: int, seeds_b: int, studies: int, rng: np.random.Generator,
             clean_n: int = CLEAN_N) -> Studies:
    """`studies` independent studies of the scenario, each with its own val set and seeds."""
    n = scenario.images
    shared = rng.standard_normal((studies, n))
    out = []
    for recipe, seeds in ((scenario.a, seeds_a), (scenario.b, seeds_b)):
        intercept, scale = recipe._probit
        own = rng.standard_normal((studies, n))
        r = recipe.profile
        p = special.ndtr(intercept + scale * (r * shared + math.sqrt(1 - r * r) * own)).astype(np.float32)
        w = p * (1 - p) / np.float32(recipe.churn)
        # |delta| <= churn keeps p + delta * w inside [0, 1]; at a seed sd of a few pp the clip is never reached
        delta = np.clip(rng.normal(0.0, recipe.seed_sd, (studies, seeds)), -recipe.churn, recipe.churn)
        prob = delta.astype(np.float32)[:, :, None] * w[:, None, :]
        prob += p[:, None, :]
        # 16-bit uniforms: P(u < round(65536 prob)) is prob to within 2**-17, far below any error measured here
        prob *= 65536.0
        prob += 0.5
        threshold = np.minimum(prob, 65535.0, out=prob).astype(np.uint16)
        u = np.frombuffer(rng.bytes(2 * threshold.size), dtype=np.uint16).reshape(threshold.shape)
        clean_p = np.clip(recipe.clean + delta + rng.normal(0.0, recipe.clean_sd, delta.shape), 0.0, 1.0)
        out.append((u < threshold, rng.binomial(clean_n, clean_p) / clean_n, recipe.accuracy + delta, clean_p))
    (a, b) = out
    return Studies(*(x for pair in zip(a, b) for x in pair))


# ------------------------------------------------------------------------------------------ the scenarios

ISSUE = Recipe(accuracy=0.80, disagreement=0.12, seed_sd=0.01)
SCENARIOS = {
    # issue 21's study: 3,925 val images at 80%, seeds disagreeing on 12-14% of the images, a seed sd of 1 pp,
    # and per-image profiles that differ between the variants (val-image term of the difference ~0.47 pp)
    "different profiles": Scenario("different profiles", ISSUE, replace(ISSUE, disagreement=0.14)),
    # all seed variation is image-by-image churn (seed sd 0): the case that double-counts churn
    "churn only": Scenario("churn only", replace(ISSUE, seed_sd=0.0), replace(ISSUE, disagreement=0.14, seed_sd=0.0)),
    # a small change to a recipe: nearly the same per-image profile, so equivalence within 1 pp is reachable
    "similar profiles": Scenario("similar profiles", replace(ISSUE, profile=0.995, seed_sd=0.005),
                                 replace(ISSUE, profile=0.995, seed_sd=0.005)),
    # the variant that loses seeds is the unstable one: 2 seeds at a seed sd of 2 pp against 5 at 0.7 pp
    "noisier small side": Scenario("noisier small side", replace(ISSUE, seed_sd=0.02),
                                   replace(ISSUE, disagreement=0.14, seed_sd=0.007)),
}
DESIGNS = ((1, 1), (3, 3), (5, 5), (10, 10), (2, 5))
FAMILY = 0.95  # the report's family: the accuracy and the gap comparison, Bonferroni
CONFIDENCE = 1 - (1 - FAMILY) / 2  # each comparison's level
MARGIN = 0.01


def at_margin(scenario: Scenario, margin: float = MARGIN) -> Scenario:
    """The scenario with b lower by exactly the margin: a claim of equivalence would be false."""
    return replace(scenario, name=f"{scenario.name}, b lower by the margin", b=scenario.b.shifted(
        scenario.a.accuracy - margin))


def outcomes(study: Studies, scenario: Scenario, confidence: float = CONFIDENCE, margin: float = MARGIN) -> dict:
    """What stats.py concludes in each study (bool arrays over studies), judged against the scenario's truth.

    differs / equivalent: the accuracy verdict; family_differs: the accuracy or the gap verdict says differs;
    covers: the interval of the difference holds the true difference (with a claim); covers_a: a's per-variant
    interval holds a's population accuracy (at one seed: that network's own); covers_gap_a: likewise for its gap;
    at one seed a side, networks_cover: the networks' interval holds the networks' difference, and
    network_covers_variant: the one network's interval holds the variant's accuracy (which it does not claim).
    """
    a, b = scenario.a, scenario.b
    acc = stats.compare_variants(study.correct_a, study.correct_b, confidence, margin)
    gap = stats.compare_gaps(study.correct_a, study.clean_a, CLEAN_N, study.correct_b, study.clean_b, CLEAN_N,
                             confidence, margin)
    one = study.correct_a.shape[1] == 1
    truth_a = study.network_a[:, 0] if one else a.accuracy
    truth_gap_a = study.network_clean_a[:, 0] - truth_a if one else a.gap
    per_a = stats.variant_interval(study.correct_a, confidence)
    gap_a = stats.gap_interval(study.correct_a, study.clean_a, CLEAN_N, confidence)
    out = dict(differs=acc["verdict"] == "differs", equivalent=acc["verdict"] == "equivalent",
               family_differs=(acc["verdict"] == "differs") | (gap["verdict"] == "differs"),
               covers=_inside(a.accuracy - b.accuracy, acc), covers_a=_inside(truth_a, per_a),
               covers_gap_a=_inside(truth_gap_a, gap_a))
    if "networks" in acc:
        out["networks_cover"] = _inside(study.network_a.mean(1) - study.network_b.mean(1), acc["networks"])
    if one:
        out["network_covers_variant"] = _inside(a.accuracy, per_a)
    return out


def _inside(truth, interval: dict) -> np.ndarray:
    return (interval["lo"] <= truth) & (truth <= interval["hi"])


# ------------------------------------------------------------------------ the methods reglab did not choose


def alternatives(acc: dict, confidence: float = CONFIDENCE, margin: float = MARGIN) -> dict:
    """Intervals (lo, hi arrays) the same studies get from methods considered, from compare_variants' output.

    "Welch (seeds only)": reglab's old seed-level path, which ignores the val-image sampling; "Welch + image
    term": the image term added, Welch's seed df kept (issue 21's suggestion); "Satterthwaite": one df for all
    three terms; "Welch df at any seed counts": reglab's quadrature interval without Banerjee's per-side quantiles.
    With one seed a side, "image only (old)": the networks' image-level interval read as a variant verdict (the old
    McNemar / image-bootstrap path).
    """
    sa, sb = acc["n_seeds"]
    n, diff = acc["n_images"], acc["diff"]
    if min(sa, sb) < 2:
        return {"image only (old)": (acc["networks"]["lo"], acc["networks"]["hi"])}
    comp = acc["components"]
    ta, tb, image = comp["seed_var_a"] / sa, comp["seed_var_b"] / sb, comp["image_term"]
    with np.errstate(invalid="ignore", divide="ignore"):
        welch_df = (ta + tb) ** 2 / (ta ** 2 / (sa - 1) + tb ** 2 / (sb - 1))
        satt_df = (ta + tb + image) ** 2 / (ta ** 2 / (sa - 1) + tb ** 2 / (sb - 1) + image ** 2 / (n - 1))
    q_welch, q_satt, q_image = (sps.t.ppf(0.5 + confidence / 2, df) for df in (welch_df, satt_df, n - 1))
    half = {"Welch (seeds only)": q_welch * np.sqrt(ta + tb),
            "Welch + image term": q_welch * np.sqrt(ta + tb + image),
            "Satterthwaite": q_satt * np.sqrt(ta + tb + image),
            "Welch df at any seed counts": np.sqrt(q_welch ** 2 * (ta + tb) + q_image ** 2 * image)}
    return {k: (diff - h, diff + h) for k, h in half.items()}


def t_over_seeds(correct: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """reglab's old per-variant interval: Student t over the seeds' accuracies (stats.mean_ci), vectorised."""
    acc = correct.mean(axis=-1)
    s = acc.shape[-1]
    half = sps.t.ppf(0.5 + confidence / 2, s - 1) * acc.std(axis=-1, ddof=1) / math.sqrt(s)
    return acc.mean(-1) - half, acc.mean(-1) + half


def verdict_rates(lo: np.ndarray, hi: np.ndarray, margin: float = MARGIN) -> dict:
    """differs / equivalent indicators of intervals (stats.verdict, vectorised)."""
    return dict(differs=(lo > 0) | (hi < 0), equivalent=(-margin < lo) & (hi < margin))


# ---------------------------------------------------------------------------------------------- tallies


@dataclass
class Rate:
    """events of trials, with a Clopper-Pearson interval for the true rate."""

    events: int
    trials: int

    @property
    def rate(self) -> float:
        return self.events / self.trials if self.trials else math.nan

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        return stats.binomial_ci(self.events, self.trials, confidence)

    def exceeds(self, nominal: float, confidence: float = 0.999) -> bool:
        """Whether the simulated rate is above `nominal` beyond Monte Carlo error: the one-sided lower
        Clopper-Pearson bound at `confidence` lies above it."""
        return self.interval(2 * confidence - 1)[0] > nominal


def run(scenario: Scenario, designs=DESIGNS, studies: int = 2000, seed: int = 0, chunk: int = 250,
        confidence: float = CONFIDENCE, margin: float = MARGIN) -> dict:
    """Simulate `studies` studies of the scenario at the largest seed counts of `designs` and judge each design on
    its first seeds (nested designs share draws). Returns {(design, method, measure): Rate}: method "reglab" for
    stats.py (measures as in outcomes), the alternatives' differs / equivalent / covers, and "t over seeds (old)"
    for the per-variant covers_a."""
    rng = np.random.default_rng(seed)
    most_a, most_b = max(d[0] for d in designs), max(d[1] for d in designs)
    tally: dict = {}

    def add(key, hits: np.ndarray):
        r = tally.setdefault(key, Rate(0, 0))
        r.events += int(np.count_nonzero(hits))
        r.trials += int(hits.size)

    for start in range(0, studies, chunk):
        batch = simulate(scenario, most_a, most_b, min(chunk, studies - start), rng)
        for design in designs:
            study = batch.first(*design)
            for measure, hits in outcomes(study, scenario, confidence, margin).items():
                if measure != "covers" or min(design) >= 2:
                    add((design, "reglab", measure), hits)
            acc = stats.compare_variants(study.correct_a, study.correct_b, confidence, margin)
            truth = scenario.a.accuracy - scenario.b.accuracy
            for method, (lo, hi) in alternatives(acc, confidence, margin).items():
                for measure, hits in verdict_rates(lo, hi, margin).items():
                    add((design, method, measure), hits)
                add((design, method, "covers"), (lo <= truth) & (truth <= hi))
            if design[0] >= 2:
                lo, hi = t_over_seeds(study.correct_a, confidence)
                truth_a = scenario.a.accuracy
                add((design, "t over seeds (old)", "covers_a"), (lo <= truth_a) & (truth_a <= hi))
    return tally
