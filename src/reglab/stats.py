"""What a report needs to compare variants from a few seeds and per-image predictions, on numpy and scipy.stats.

Variant level (issue 21). The estimand of every interval and verdict: a variant's (training recipe's) accuracy on
images from the distribution val/ was drawn from, averaged over seeds. Input: each learned seed's per-image
correctness on the shared val images, bool (seeds, images), the same images in the same order for every variant.
Every function below but the planning ones also takes a batch (..., seeds, images) of independent studies and then
returns arrays over the leading axes (the calibration simulation, reglab.calibration, runs them that way).
    variant_interval  the variant's accuracy, accounting for seed and val-image sampling; with one seed, an
                      interval for that network only, and said so (estimand "network")
    gap_interval      its generalization gap (clean training accuracy - val accuracy), the same way
    compare_variants  accuracy of a minus b: interval, verdict (differs / equivalent / inconclusive; "no claim"
                      below 2 seeds a side, with what the networks do on these images), variance components
    compare_gaps      the same for the gap (val part paired, each run's clean accuracy a binomial)
    failure_rate      k failed or at-chance seeds of n, with its exact interval (performance uses the others)
    seeds_needed      seeds per variant to detect the observed difference / show equivalence within the margin,
                      with a range from the seed variance's uncertainty; "unreachable" where the val-image term
                      alone (which more seeds do not shrink) prevents it
    planned_power     the probability behind seeds_needed, at any seed count
How and why, with the simulation's numbers against the older methods: docs/STATISTICS.md.

Seed level (one value per seed), for the quantities that have no per-image record (clean training accuracy,
losses, epochs) and for tests:
    mean_ci                    mean with its Student t interval, optionally clipped to a metric's range
    welch                      Welch's t test and interval for mean(a) - mean(b); counts when n_images is given
    prob_superiority           P(a seed of a beats a seed of b), ties counted half
    binomial_ci                exact interval for counts like "4 of 5 seeds finished"
    simultaneous_confidence    the Bonferroni per-comparison level of a family of intervals
Image level (bool correctness per image, same image order in every run):
    wilson                     interval for one run's accuracy
    chance_level               is an accuracy distinguishable from guessing?
    two_level_bootstrap        the reports' old interval for accuracy differences (seeds, then images), kept for
                               the comparison in docs/STATISTICS.md (bench/calibrate.py): too narrow at few seeds

Out come plain floats and dicts. Degenerate inputs (fewer than two seeds, no spread, no images) give nan
rather than an exception: a report with one seed must still render, it just cannot claim an interval.
Misshapen inputs to the variant-level functions (no images, variants scored on different images, a clean
accuracy outside [0, 1]) raise ValueError.
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable, Mapping, NamedTuple

import numpy as np
from scipy import stats as sps

NAN = float("nan")
DEFAULT_MARGIN = 0.01  # equivalence margin of the verdicts: 1 percentage point
_NOISE_ULPS = 16  # a sample whose spread is below this many ulps of its magnitude is treated as constant


def _clean(values: Iterable) -> np.ndarray:
    """Finite floats only: a missing metric (None, nan) must not poison the mean of the others."""
    arr = np.array([NAN if v is None else float(v) for v in values], dtype=float)
    return arr[np.isfinite(arr)]


def _denoise(x: np.ndarray) -> np.ndarray:
    """Equal-up-to-rounding values become exactly equal, so their variance is exactly 0 and not ~1e-34.

    Seeds at the same accuracy written as k/n through different float paths differ in the last bits; a t
    statistic divided by that noise would give p = 1e-57 for no real difference.
    """
    if x.size >= 2 and np.ptp(x) <= _NOISE_ULPS * np.finfo(float).eps * float(np.max(np.abs(x))):
        return np.full_like(x, x[0])
    return x


def _mean_var(x: np.ndarray) -> tuple[float, float]:
    """Mean and variance (ddof=1) about the first value: shift-invariant, and exact (var 0) for equal values.

    np.var([v, v, v]) is not 0 when sum([v, v, v]) / 3 rounds away from v; x - x[0] is exactly 0 instead.
    """
    d = x - x[0]
    return float(x[0] + d.mean()), float(d.var(ddof=1)) if x.size >= 2 else NAN


def _counts(x: np.ndarray, n_images: int | None) -> np.ndarray:
    """Accuracies k/n_images as integer correct counts k (as floats); unchanged values when n_images is None."""
    return _denoise(x) if n_images is None else np.round(x * n_images)


# ------------------------------------------------------------------------------------------- seed level


def mean_ci(values: Iterable, confidence: float = 0.95, bounds: tuple[float, float] | None = None) -> dict:
    """Mean with its Student t interval. Keys: mean, lo, hi, sd (ddof=1), n, clipped.

    None/nan values are skipped; n < 2 gives lo = hi = sd = nan. bounds=(low, high), e.g. (0, 1) for an
    accuracy or (0, inf) for a time, intersects the interval with the metric's range (clipped says whether
    either end moved). Clipping only removes values the metric cannot take and the true mean is one it can,
    so the clipped interval covers it exactly when the unclipped one does: coverage is unchanged.
    """
    x = _denoise(_clean(values))
    n = int(x.size)
    out = dict(mean=NAN, lo=NAN, hi=NAN, sd=NAN, n=n, clipped=False)
    if n == 0:
        return out
    mean, var = _mean_var(x)
    out["mean"] = mean
    if n < 2:
        return out
    sd = math.sqrt(var)
    half = float(sps.t.ppf(0.5 + confidence / 2.0, n - 1)) * sd / math.sqrt(n)
    lo, hi = mean - half, mean + half
    if bounds is not None:
        low, high = bounds
        clipped = lo < low or hi > high
        lo, hi = max(lo, low), min(hi, high)
        out["clipped"] = bool(clipped)
    out.update(lo=float(lo), hi=float(hi), sd=sd)
    return out


def _welch_core(a: Iterable, b: Iterable, n_images: int | None) -> tuple:
    """(x, y, diff, se, df, zero_variance) on the count scale when n_images is given; scale-free df."""
    x, y = _counts(_clean(a), n_images), _counts(_clean(b), n_images)
    diff = _mean_var(x)[0] - _mean_var(y)[0] if x.size and y.size else NAN
    if x.size < 2 or y.size < 2:
        return x, y, diff, NAN, NAN, False
    vx, vy = _mean_var(x)[1] / x.size, _mean_var(y)[1] / y.size
    se2 = vx + vy
    if se2 == 0.0:
        return x, y, diff, 0.0, NAN, True
    df = se2 * se2 / (vx * vx / (x.size - 1) + vy * vy / (y.size - 1))
    return x, y, diff, math.sqrt(se2), float(df), False


def welch(a: Iterable, b: Iterable, confidence: float = 0.95, n_images: int | None = None) -> dict:
    """Welch's unequal-variance t test of mean(a) - mean(b). Keys: diff, lo, hi, p, df, se, zero_variance.

    With n_images, the values are accuracies k/n_images and are turned into integer counts round(v * n_images)
    before any variance is computed, so seeds at the same accuracy have exactly zero spread; diff, lo, hi
    and se are still reported as accuracies. zero_variance is True when the standard error is exactly 0
    (both samples constant): diff is then exact but lo = hi = p = df = nan, as there is no seed-level noise
    estimate. Seeds only: it holds the val images fixed, so it is about these images, not the variants (use
    compare_variants for that). Fewer than two values in either sample also
    gives nan lo, hi, p, df, se (zero_variance False); diff is nan only when a sample is empty.
    """
    x, y, diff, se, df, zero = _welch_core(a, b, n_images)
    scale = 1.0 if n_images is None else float(n_images)
    out = dict(diff=diff / scale, lo=NAN, hi=NAN, p=NAN, df=df, se=se / scale, zero_variance=zero)
    if n_images is not None and x.size and y.size:  # integer arithmetic and one rounding: the exact diff
        out["diff"] = (int(x.sum()) * y.size - int(y.sum()) * x.size) / (x.size * y.size * int(n_images))
    if math.isnan(df):
        return out
    shift = x[0]  # exactly constant samples stay exactly constant (see _mean_var); p is shift-invariant
    with warnings.catch_warnings():  # scipy's "precision loss" note on a constant sample: its variance is 0
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        p = float(sps.ttest_ind(x - shift, y - shift, equal_var=False).pvalue)
    half = float(sps.t.ppf(0.5 + confidence / 2.0, df)) * se
    out.update(lo=(diff - half) / scale, hi=(diff + half) / scale, p=p)
    return out


def prob_superiority(a: Iterable, b: Iterable) -> dict:
    """P(a > b) + 0.5 P(a == b) over all seed pairs (common-language effect size). Keys: p, resolution, pairs.

    resolution = 1 / pairs is the smallest step p can take: with 3 x 3 seeds, p moves in ninths.
    """
    x, y = _clean(a), _clean(b)
    pairs = int(x.size * y.size)
    if pairs == 0:
        return dict(p=NAN, resolution=NAN, pairs=0)
    gt = np.sum(x[:, None] > y[None, :])
    eq = np.sum(x[:, None] == y[None, :])
    return dict(p=float((gt + 0.5 * eq) / pairs), resolution=1.0 / pairs, pairs=pairs)


def binomial_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for k successes in n, e.g. "4 of 5 seeds finished"; nan for n = 0."""
    if n < 1:
        return NAN, NAN
    ci = sps.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def simultaneous_confidence(confidence: float, m: int) -> float:
    """Bonferroni per-comparison level, 1 - (1 - confidence) / m, so m intervals hold jointly at confidence."""
    return confidence if m < 1 else 1.0 - (1.0 - confidence) / m


# ------------------------------------------------------------------------------------------ image level


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for one run's accuracy k/n (k correct of n images); nan for n = 0."""
    if n < 1:
        return NAN, NAN
    ci = sps.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def two_level_bootstrap(correct: Mapping[str, np.ndarray], reference: str, confidence: float = 0.95,
                        n_boot: int = 2000, seed: int = 0, chunk: int = 250) -> dict:
    """Percentile bootstrap interval of mean accuracy(v) - mean accuracy(reference), for every v but reference.

    The reports' old method, replaced by compare_variants: kept for docs/STATISTICS.md's comparison (bench/
    calibrate.py), which shows it covers too rarely at two seeds and counts the churn twice.

    correct[v] is a bool array (seeds, images), same images in the same order for every variant (seed counts
    may differ). Each replicate draws one resample of image indices shared by all variants (the paired
    image-level noise) and, per variant, an independent resample of its seeds. Returns {v: dict(diff, lo,
    hi)} with diff the observed difference. Reproducible for a given seed (numpy default_rng).
    """
    arrays = {v: np.atleast_2d(np.asarray(c, dtype=bool)) for v, c in correct.items()}
    n_img = arrays[reference].shape[1]
    if any(c.shape[1] != n_img for c in arrays.values()):
        raise ValueError("variants were scored on different numbers of images")
    as_float = {v: c.T.astype(float) for v, c in arrays.items()}  # (images, seeds) correct indicators
    rng = np.random.default_rng(seed)
    names = list(arrays)
    boot = {v: np.empty(n_boot) for v in names}
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n_img, size=(b, n_img))
        # how often each image appears in each replicate: (b, n_img) weights, without a (b, n_img, seeds) array
        weights = np.bincount((idx + n_img * np.arange(b)[:, None]).ravel(), minlength=b * n_img)
        weights = weights.reshape(b, n_img).astype(float)
        for v in names:
            s = arrays[v].shape[0]
            if s == 0:
                boot[v][start:start + b] = NAN
                continue
            per_seed = weights @ as_float[v] / n_img  # (b, seeds): each seed's accuracy on the resample
            pick = rng.integers(0, s, size=(b, s))
            boot[v][start:start + b] = np.take_along_axis(per_seed, pick, axis=1).mean(axis=1)
    observed = {v: float(c.mean()) if c.size else NAN for v, c in arrays.items()}
    q = [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0]
    out = {}
    for v in names:
        if v == reference:
            continue
        d = boot[v] - boot[reference]
        lo, hi = (NAN, NAN) if np.isnan(d).any() else np.quantile(d, q)
        out[v] = dict(diff=observed[v] - observed[reference], lo=float(lo), hi=float(hi))
    return out


def chance_level(k: int, n: int, num_classes: int, alpha: float = 0.05) -> dict:
    """One-sided exact binomial test of accuracy k/n > 1/num_classes. Keys: p, at_chance (p >= alpha).

    No images (n = 0) or fewer than two classes give p = nan and at_chance True: nothing shows learning.
    """
    if n < 1 or num_classes < 2:
        return dict(p=NAN, at_chance=True)
    p = float(sps.binomtest(int(k), int(n), 1.0 / num_classes, alternative="greater").pvalue)
    return dict(p=p, at_chance=bool(p >= alpha))


# ------------------------------------------------------------------------------------------ variant level
#
# The estimand: a variant's (training recipe's) accuracy on images from the distribution val/ was drawn from,
# averaged over seeds. Each seed's correctness on the shared val images is a row of a (seeds, images) array, and
# the array's mean has the variance of a crossed seed x image design,
#     var(seed effect) / seeds + var(image effect) / images + var(churn) / (seeds * images),
# estimated by the method of moments (two-way ANOVA mean squares): the seeds' own values carry the first and the
# last term, the per-image seed means the second and the last, so the image term subtracts the churn.

NEAR_BOUND = 0.1  # a decision bound within this fraction of the half-width from an interval end: a close call


class _Side(NamedTuple):
    """One variant's val correctness (..., seeds, images) with its correct counts per seed and per image."""

    c: np.ndarray
    per_seed: np.ndarray
    per_image: np.ndarray

    @property
    def seeds(self) -> int:
        return self.c.shape[-2]

    @property
    def images(self) -> int:
        return self.c.shape[-1]

    @property
    def acc(self) -> np.ndarray:
        """Each seed's accuracy (..., seeds)."""
        return self.per_seed / self.images

    @property
    def image_means(self) -> np.ndarray:
        """Each image's fraction of seeds right (..., images)."""
        return self.per_image / self.seeds

    @property
    def churn(self) -> np.ndarray:
        """Residual mean square of the seeds x images ANOVA (nan at one seed): how much seeds disagree image by
        image beyond their overall levels, the seed x image interaction."""
        s, n = self.seeds, self.images
        if s < 2:
            return np.full(self.c.shape[:-2], NAN)
        total = self.per_seed.sum(axis=-1)
        ss = total - (self.per_image ** 2).sum(-1) / s - (self.per_seed ** 2).sum(-1) / n + total ** 2 / (s * n)
        return np.maximum(ss, 0.0) / ((s - 1) * (n - 1))


def _side(correct) -> _Side:
    c = np.asarray(correct, dtype=bool)
    if c.ndim < 2 or c.shape[-2] < 1 or c.shape[-1] < 2:
        raise ValueError(f"correctness must be shaped (..., seeds >= 1, images >= 2), got {c.shape}")
    return _Side(c, c.sum(axis=-1, dtype=np.int32).astype(float), c.sum(axis=-2, dtype=np.int32).astype(float))


def _seed_var(x: np.ndarray) -> np.ndarray:
    """Variance (ddof=1) over the seeds (last axis), about the first value: exactly 0 for equal values."""
    if x.shape[-1] < 2:
        return np.full(x.shape[:-1], NAN)
    return (x - x[..., :1]).var(axis=-1, ddof=1)


def _image_term(contrast: np.ndarray, churn_in_seed_term: np.ndarray) -> np.ndarray:
    """Image part of se^2: variance over images of a per-image contrast of seed means, less the churn that the
    seed term already counts (clipped at 0), divided by the number of images."""
    raw = contrast.var(axis=-1, ddof=1)
    return np.maximum(raw - churn_in_seed_term, 0.0) / contrast.shape[-1]


def _quantile(confidence: float, df) -> np.ndarray:
    return sps.t.ppf(0.5 + confidence / 2.0, df)


def _seed_half2(var_a: np.ndarray, k_a: int, var_b: np.ndarray, k_b: int, confidence: float) -> tuple:
    """(squared half-width of two variants' seed terms, Welch's df or nan). Terms are variances of means.

    Equal seed counts: one pooled term with Welch's df (with equal counts the t statistic is robust to unequal
    variances). Unequal counts: each term its own Student t quantile, combined in quadrature (Banerjee 1961): Welch's
    df is liberal when the side with fewer seeds is the noisier (docs/STATISTICS.md), Banerjee's interval is not.
    """
    if k_a == k_b:
        total = var_a + var_b
        spread = total > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            df = np.where(spread, total ** 2 / (var_a ** 2 / k_a + var_b ** 2 / k_b), NAN)
        return np.where(spread, _quantile(confidence, np.where(spread, df, 1.0)) ** 2 * total, 0.0), df
    half2 = _quantile(confidence, k_a) ** 2 * var_a + _quantile(confidence, k_b) ** 2 * var_b
    return half2, np.full(np.shape(half2), NAN)


def _plain(values: dict) -> dict:
    """0-d arrays and numpy scalars as Python scalars (one study); arrays over leading axes (a batch) stay."""
    out = {}
    for k, v in values.items():
        if isinstance(v, dict):
            v = _plain(v)
        elif isinstance(v, np.ndarray) and v.ndim == 0 or isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def _wilson(p: np.ndarray, n: int, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval, vectorised (stats.wilson for one count)."""
    z = float(sps.norm.ppf(0.5 + confidence / 2.0))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def _clip(out: dict, low: float, high: float) -> dict:
    """Intersect [lo, hi] with the quantity's range; the true value lies in it, so coverage is unchanged."""
    with np.errstate(invalid="ignore"):
        out["clipped"] = (out["lo"] < low) | (out["hi"] > high)
    out["lo"], out["hi"] = np.clip(out["lo"], low, high), np.clip(out["hi"], low, high)
    return out


def _network(diff: np.ndarray, contrast: np.ndarray, extra_var, confidence: float) -> tuple:
    """(lo, hi, se) with the networks held fixed: image sampling (and extra_var, clean binomials) only."""
    n = contrast.shape[-1]
    se = np.sqrt(contrast.var(axis=-1, ddof=1) / n + extra_var)
    half = _quantile(confidence, n - 1) * se
    return diff - half, diff + half, se


def _per_variant(values: np.ndarray, side: _Side, confidence: float, network: tuple, low: float) -> dict:
    """Interval for the mean over seeds of `values` (..., seeds) on side's images; network = (lo, hi, se) at one
    seed; the quantity's range is [low, 1]."""
    s, n = side.seeds, side.images
    mean = values.mean(axis=-1)
    if s == 1:
        lo, hi, se = network
        out = dict(mean=mean, lo=lo, hi=hi, se=se, estimand="network",
                   method="one network: val-image sampling only",
                   level_note="one seed: an interval for this network on images like val/, not for the variant "
                              "(one seed shows nothing of the seed-to-seed variation)",
                   components=dict(seed_var=np.full(np.shape(mean), NAN), image_term=side.c[..., 0, :].var(-1) / n,
                                   churn=np.full(np.shape(mean), NAN)))
    else:
        churn, seed_var = side.churn, _seed_var(values)
        image = _image_term(side.image_means, churn / s)
        half = np.sqrt(_quantile(confidence, s - 1) ** 2 * seed_var / s + _quantile(confidence, n - 1) ** 2 * image)
        out = dict(mean=mean, lo=mean - half, hi=mean + half, se=np.sqrt(seed_var / s + image), estimand="variant",
                   method=f"seed and val-image sampling: Student t terms ({s - 1} and {n - 1} df) in quadrature",
                   level_note=f"the variant's mean over seeds on images like val/ ({s} seeds, {n} images)",
                   components=dict(seed_var=seed_var, image_term=image, churn=churn))
    out.update(n_seeds=s, n_images=n, confidence=confidence)
    return _plain(_clip(out, low, 1.0))


def variant_interval(correct, confidence: float = 0.95) -> dict:
    """Interval for a variant's population accuracy from its seeds' correctness on the val images.

    correct: bool (seeds, images), or (..., seeds, images) for a batch of independent studies (every value is then
    an array over the leading axes). Keys: mean, lo, hi, se, n_seeds, n_images, confidence, estimand, method,
    level_note, clipped, components (seed_var: variance of the seeds' accuracies; image_term: the val-image part of
    se^2; churn: the seed x image residual mean square).

    Two or more seeds, estimand "variant": the mean over seeds of the accuracy on images like val/. The interval
    adds a Student t term for the seeds (seeds - 1 df) and one for the images (images - 1 df) in quadrature: at or
    above the stated coverage at any seed count (docs/STATISTICS.md). One seed, estimand "network": a Wilson interval
    for that network's accuracy on images like val/, and level_note says it claims nothing about other seeds.
    Intervals are clipped to [0, 1] (clipped says so; coverage unchanged).
    """
    side = _side(correct)
    network = None
    if side.seeds == 1:
        p, n = side.acc[..., 0], side.images
        network = (*_wilson(p, n, confidence), np.sqrt(p * (1 - p) / n))
    return _per_variant(side.acc, side, confidence, network, 0.0)


def _gaps(side: _Side, clean, clean_n) -> tuple[np.ndarray, np.ndarray]:
    """Each seed's gap, clean - accuracy (..., seeds), and the binomial variance of its clean accuracy."""
    clean = np.asarray(clean, dtype=float)
    if clean.shape != side.c.shape[:-1]:
        raise ValueError(f"clean accuracies shaped {clean.shape}, expected one per seed: {side.c.shape[:-1]}")
    n = np.broadcast_to(np.asarray(clean_n, dtype=float), clean.shape)
    if np.any(n < 1) or np.any((clean < 0) | (clean > 1)):
        raise ValueError("clean accuracies must lie in [0, 1], each measured on at least one image")
    return clean - side.acc, clean * (1 - clean) / n


def gap_interval(correct, clean, clean_n, confidence: float = 0.95) -> dict:
    """Interval for a variant's generalization gap: clean training accuracy minus accuracy on images like val/.

    correct as in variant_interval; clean (..., seeds): each run's clean training accuracy, measured on its own
    sample of clean_n training images (an int, or one per seed). Keys and method as variant_interval: the seeds'
    gaps carry the seed term (each run's clean-sample noise with it: the samples are independent), the val
    correctness the image term. One seed: the clean binomial and the val images, for that network only.
    """
    side = _side(correct)
    gap, clean_var = _gaps(side, clean, clean_n)
    network = None
    if side.seeds == 1:
        network = _network(gap[..., 0], side.c[..., 0, :], clean_var[..., 0], confidence)
    return _per_variant(gap, side, confidence, network, -1.0)


def _mcnemar(a_only: np.ndarray, b_only: np.ndarray) -> np.ndarray:
    """Exact two-sided McNemar p (binomial at 1/2 on the discordant images), vectorised; 1 when none disagree."""
    m = a_only + b_only
    return np.where(m > 0, np.minimum(1.0, 2 * sps.binom.cdf(np.minimum(a_only, b_only), np.maximum(m, 1), 0.5)),
                    1.0)


def _verdicts(lo, hi, margin: float, claim: bool) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        v = np.where((lo > 0) | (hi < 0), "differs",
                     np.where((-margin < lo) & (hi < margin), "equivalent", "inconclusive"))
    return v if claim else np.full(np.shape(lo), "no claim")


def _near_bound(lo, hi, margin: float) -> np.ndarray:
    """A decision bound (0 or +-margin) within NEAR_BOUND of the half-width from an interval end."""
    tol = NEAR_BOUND * (hi - lo) / 2
    with np.errstate(invalid="ignore"):
        return np.any([np.abs(end - b) < tol for end in (lo, hi) for b in (0.0, -margin, margin)], axis=0)


def _compare(xa: np.ndarray, a: _Side, xb: np.ndarray, b: _Side, confidence: float, margin: float, bound: float,
             clean_var: tuple | None) -> dict:
    """mean(xa) - mean(xb) over seeds, with its interval and verdict; a and b the val correctness behind them."""
    if a.c.shape[:-2] != b.c.shape[:-2] or a.images != b.images:
        raise ValueError(f"variants scored on different images (or batches): shapes {a.c.shape} and {b.c.shape}")
    sa, sb, n = a.seeds, b.seeds, a.images
    diff = xa.mean(axis=-1) - xb.mean(axis=-1)
    contrast = a.image_means - b.image_means
    claim = sa >= 2 and sb >= 2
    out = dict(diff=diff, confidence=confidence, margin=margin, tost_level=round((1.0 - confidence) / 2.0, 12),
               n_seeds=(sa, sb), n_images=n)
    nan = np.full(np.shape(diff), NAN)
    if claim:
        churn_a, churn_b = a.churn, b.churn
        var_a, var_b = _seed_var(xa), _seed_var(xb)
        image = _image_term(contrast, churn_a / sa + churn_b / sb)
        half2, df = _seed_half2(var_a / sa, sa - 1, var_b / sb, sb - 1, confidence)
        half = np.sqrt(half2 + _quantile(confidence, n - 1) ** 2 * image)
        pooled = "one seed term with Welch's df" if sa == sb else "each seed term its own Student t (Banerjee)"
        out.update(lo=diff - half, hi=diff + half, se=np.sqrt(var_a / sa + var_b / sb + image),
                   estimand="variant difference",
                   method=f"seed and val-image sampling, paired images: {pooled}, image term t with {n - 1} df, "
                          "in quadrature",
                   components=dict(seed_var_a=var_a, seed_var_b=var_b, seed_term=var_a / sa + var_b / sb,
                                   image_term=image, churn_a=churn_a, churn_b=churn_b, df_seed=df))
    else:
        out.update(lo=nan, hi=nan, se=nan, estimand="none", method="no claim: fewer than 2 seeds on a side",
                   components=dict(seed_var_a=nan, seed_var_b=nan, seed_term=nan, image_term=nan, churn_a=nan,
                                   churn_b=nan, df_seed=nan))
        extra = 0.0 if clean_var is None else clean_var[0].sum(-1) / sa ** 2 + clean_var[1].sum(-1) / sb ** 2
        lo, hi, se = _network(diff, contrast, extra, confidence)
        out["networks"] = dict(diff=diff, lo=lo, hi=hi, se=se,
                               note=f"about these {sa} + {sb} networks on images like val/ (image sampling only), "
                                    "not about the variants: that needs at least 2 seeds a side")
        if sa == sb == 1 and clean_var is None:
            a_only = (a.c[..., 0, :] & ~b.c[..., 0, :]).sum(-1)
            b_only = (~a.c[..., 0, :] & b.c[..., 0, :]).sum(-1)
            out["networks"].update(a_only=a_only, b_only=b_only, p_unadjusted=_mcnemar(a_only, b_only))
    _clip(out, -bound, bound)
    lo, hi = out["lo"], out["hi"]
    out["verdict"] = _verdicts(lo, hi, margin, claim)
    with np.errstate(invalid="ignore"):
        out["at_least"] = np.where(lo > 0, lo, np.where(hi < 0, -hi, nan))
    out["near_bound"] = _near_bound(lo, hi, margin) & claim
    return _plain(out)


def compare_variants(correct_a, correct_b, confidence: float = 0.95, margin: float = DEFAULT_MARGIN) -> dict:
    """Accuracy of variant a minus variant b (population accuracies, over seeds), with its interval and verdict.

    correct_a, correct_b: bool (seeds, images) on the same val images in the same order (seed counts may differ),
    or (..., seeds, images) for a batch of studies. Pass only the seeds that learned (failure_rate counts the
    others). confidence is the per-comparison level (the caller's Bonferroni level for a family).
    Keys: diff, lo, hi, se, confidence, margin, tost_level, n_seeds (a, b), n_images, estimand, method, verdict,
    at_least, near_bound, clipped, components (seed_var_a, seed_var_b: variances of the seeds' accuracies;
    seed_term, image_term: the two parts of se^2; churn_a, churn_b; df_seed: Welch's df, nan for unequal counts).

    verdict: "differs" (the interval excludes 0; at_least is the distance of its nearer end from 0),
    "equivalent" (inside +-margin: a TOST at tost_level = (1 - confidence) / 2), "inconclusive", or "no claim"
    with fewer than 2 seeds on a side: lo = hi = nan, and `networks` says what these networks do on images like
    val/ (diff, lo, hi; at one seed each also the discordant counts a_only, b_only and McNemar's exact p, labelled
    unadjusted). near_bound: a bound (0, +-margin) lies within 10% of the half-width from an interval end.
    """
    a, b = _side(correct_a), _side(correct_b)
    return _compare(a.acc, a, b.acc, b, confidence, margin, 1.0, None)


def compare_gaps(correct_a, clean_a, clean_n_a, correct_b, clean_b, clean_n_b, confidence: float = 0.95,
                 margin: float = DEFAULT_MARGIN) -> dict:
    """Generalization gap (clean training accuracy - val accuracy) of variant a minus variant b.

    Inputs as compare_variants and gap_interval; the same keys and verdicts. The val part is paired (shared images,
    its image term as for accuracy); each run's clean accuracy comes from its own training-image sample, so its
    binomial noise sits in the seed term (with one seed a side, in the networks' interval).
    """
    a, b = _side(correct_a), _side(correct_b)
    (gap_a, var_a), (gap_b, var_b) = _gaps(a, clean_a, clean_n_a), _gaps(b, clean_b, clean_n_b)
    return _compare(gap_a, a, gap_b, b, confidence, margin, 2.0, (var_a, var_b))


def failure_rate(k_failed: int, n: int, confidence: float = 0.95) -> dict:
    """How often a variant's seeds fail or end at chance: k of n, with the exact (Clopper-Pearson) interval.

    Keys: k, n, rate, lo, hi, confidence, method. nan rate and interval for n = 0.
    """
    lo, hi = binomial_ci(k_failed, n, confidence)
    return dict(k=int(k_failed), n=int(n), rate=k_failed / n if n else NAN, lo=lo, hi=hi, confidence=confidence,
                method="Clopper-Pearson exact")


# ---------------------------------------------------------------------------------------------- planning

_NODES = 32  # Gauss-Legendre nodes per variant over the distribution of its seed-variance estimate


def _planned_power(kind: str, effect: float, var_a: float, var_b: float, image: float, n_images: int,
                   seeds: np.ndarray, confidence: float) -> np.ndarray:
    """P(verdict) at `seeds` per side (array) for compare_variants' interval with equal seed counts.

    kind "detect": P(the interval excludes 0) at true difference `effect`; "equivalent": P(inside +-effect) at a
    true difference of 0. var_a, var_b: per-seed variances; image: the image term. Each variant's seed-variance
    estimate is random (chi-square with seeds - 1 df) and so are Welch's df and the interval's width: the power
    integrates over both estimates instead of taking them at their expected values, which at 2 or 3 seeds
    would overstate it several-fold.
    """
    seeds = np.asarray(seeds, dtype=float)[:, None, None]  # (seed counts, nodes of a, nodes of b)
    x, w = np.polynomial.legendre.leggauss(_NODES)
    k = seeds - 1
    ratio = sps.chi2.ppf((x[None, :, None] + 1) / 2, k) / k  # a seed-variance estimate over its expectation
    term_a, term_b = var_a / seeds * ratio, var_b / seeds * np.swapaxes(ratio, 1, 2)
    total = term_a + term_b
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(total > 0, total ** 2 / ((term_a ** 2 + term_b ** 2) / k), 1.0)
    half = np.sqrt(_quantile(confidence, df) ** 2 * total + _quantile(confidence, n_images - 1) ** 2 * image)
    sd = np.sqrt((var_a + var_b) / seeds + image)
    with np.errstate(divide="ignore"):  # no variance at all (identical networks): the z-scores are +-inf, as meant
        if kind == "detect":
            p = sps.norm.cdf((effect - half) / sd) + sps.norm.cdf((-effect - half) / sd)
        else:
            p = np.maximum(2 * sps.norm.cdf((effect - half) / sd) - 1, 0.0)
    weights = np.outer(w, w) / 4
    return (p * weights).sum(axis=(-2, -1))


def _fewest(kind: str, effect: float, var_a: float, var_b: float, image: float, n_images: int, confidence: float,
            power: float, max_seeds: int) -> int | None:
    """The fewest seeds per side (>= 2) reaching `power`, None beyond max_seeds. Power grows with seeds: a coarse
    geometric grid brackets the answer, then every count inside the bracket is evaluated."""
    grid = np.unique(np.rint(np.geomspace(2, max_seeds, 40))).astype(int)
    ok = _planned_power(kind, effect, var_a, var_b, image, n_images, grid, confidence) >= power
    if not ok[-1]:
        return None
    i = int(np.argmax(ok))
    if i == 0:
        return int(grid[0])
    inside = np.arange(grid[i - 1] + 1, grid[i] + 1)
    ok = _planned_power(kind, effect, var_a, var_b, image, n_images, inside, confidence) >= power
    return int(inside[np.argmax(ok)])


def planned_power(comparison: dict, seeds, kind: str = "detect", effect: float | None = None) -> np.ndarray:
    """Probability that a new study with `seeds` per variant (an int or array; equal on both sides) reaches the
    verdict, from a compare_variants/compare_gaps result's components taken as the truth.

    kind "detect": the interval excludes 0 when the true difference is `effect` (default: the observed one);
    "equivalent": it lies inside +-effect (default: the margin) when the true difference is 0.
    """
    comp = comparison["components"]
    if effect is None:
        effect = abs(comparison["diff"]) if kind == "detect" else comparison["margin"]
    return _planned_power(kind, effect, comp["seed_var_a"], comp["seed_var_b"], comp["image_term"],
                          comparison["n_images"], np.atleast_1d(seeds), comparison["confidence"])


def seeds_needed(comparison: dict, power: float = 0.8, range_confidence: float = 0.95,
                 max_seeds: int = 1000) -> dict:
    """Seeds per variant (equal on both sides) a new study needs, from a compare_variants/compare_gaps result.

    Keys "detect" (for the interval to exclude 0 with probability `power` if the true difference were the observed
    one) and "equivalent" (for it to lie inside +-margin with that probability if the true difference were 0), each
    a dict: seeds (None: not within max_seeds, or unreachable), range (seeds at the ends of the range_confidence
    chi-square interval of the seed variance, an uncertainty the seeds seen leave), reachable (False: the val-image
    term alone, which more seeds do not shrink, prevents it on these images at any seed count), limit (the smallest
    true difference, resp. margin, reachable with infinitely many seeds). Also: power, confidence, note. The observed
    difference overstates a true one that was selected for being large; the image term is treated as known
    (thousands of images). Nothing to plan from with fewer than 2 seeds a side: both entries say so.
    """
    conf, margin = comparison["confidence"], comparison["margin"]
    comp = comparison["components"]
    var_a, var_b, image = comp["seed_var_a"], comp["seed_var_b"], comp["image_term"]
    n_images = comparison["n_images"]
    if comparison["verdict"] == "no claim" or not math.isfinite(var_a + var_b):
        empty = dict(seeds=None, range=(None, None), reachable=None, limit=NAN)
        return dict(detect=dict(empty), equivalent=dict(empty), power=power, confidence=conf,
                    note="no seed variance to plan from: run at least 2 seeds a side first")
    k_a, k_b = comparison["n_seeds"][0] - 1, comparison["n_seeds"][1] - 1
    total = var_a + var_b
    df = total ** 2 / (var_a ** 2 / k_a + var_b ** 2 / k_b) if total > 0 else math.inf
    scale = [df / sps.chi2.ppf(q, df) if total > 0 else 1.0 for q in ((1 + range_confidence) / 2,
                                                                         (1 - range_confidence) / 2)]
    q_image = float(_quantile(conf, n_images - 1))
    sd_image = math.sqrt(image)
    limits = dict(detect=(q_image + float(sps.norm.ppf(power))) * sd_image,
                  equivalent=(q_image + float(sps.norm.ppf((1 + power) / 2))) * sd_image)
    effects = dict(detect=abs(comparison["diff"]), equivalent=margin)
    out = dict(power=power, confidence=conf,
               note=f"the val-image term ({math.sqrt(image) * 100:.2f} pp of standard error) does not shrink with "
                    "more seeds; only a larger val set would")
    for kind, effect in effects.items():
        reachable = effect > limits[kind]
        plans = [_fewest(kind, effect, var_a * s, var_b * s, image, n_images, conf, power, max_seeds)
                 if reachable else None for s in (1.0, *scale)]
        out[kind] = dict(seeds=plans[0], range=(plans[1], plans[2]), reachable=bool(reachable), limit=limits[kind],
                         effect=effect)
    return out
