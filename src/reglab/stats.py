"""What a report needs to compare variants from a few seeds and per-image predictions, on scipy.stats.

Seed level (one value per seed, e.g. validation accuracies):
    mean_ci                    mean with its Student t interval, optionally clipped to a metric's range
    welch                      Welch's t test and interval for mean(a) - mean(b); counts when n_images is given
    tost, verdict              equivalence within a margin (two one-sided tests) / differs / inconclusive
    min_detectable_difference  smallest true difference a Welch test would detect with the given power
    prob_superiority           P(a seed of a beats a seed of b), ties counted half
    binomial_ci                exact interval for counts like "4 of 5 seeds finished"
    simultaneous_confidence, bonferroni, holm   multiple-comparison corrections for a family of tests
Image level (bool correctness per image, same image order in every run):
    wilson                     interval for one run's accuracy
    mcnemar_exact              exact paired test of two runs on the images where they disagree
    two_level_bootstrap        interval for accuracy differences resampling both seeds and images
    chance_level               is an accuracy distinguishable from guessing?

Out come plain floats and dicts. Degenerate inputs (fewer than two seeds, no spread, no images) give nan
rather than an exception: a report with one seed must still render, it just cannot claim an interval.
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable, Mapping

import numpy as np
from scipy import optimize
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
    either end moved). Clipping only removes values the metric cannot take, so the clipped interval covers
    the true mean at least as often as the unclipped one: coverage stays at or above the nominal level.
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
    estimate (the caller falls back to an image-level test). Fewer than two values in either sample also
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


def tost(a: Iterable, b: Iterable, margin: float, alpha: float = 0.05, n_images: int | None = None) -> dict:
    """Two one-sided Welch t tests that mean(a) - mean(b) lies inside (-margin, +margin).

    Keys: p_lower (H0: diff <= -margin), p_upper (H0: diff >= +margin), p = max of the two, equivalent
    (p < alpha). Rejecting both at alpha is the same as the (1 - 2 alpha) Welch interval lying inside the
    margin. Same count conversion as welch; nan p (and equivalent False) when welch has no interval.
    """
    _, _, diff, se, df, _ = _welch_core(a, b, n_images)
    out = dict(p_lower=NAN, p_upper=NAN, p=NAN, equivalent=False)
    if math.isnan(df):
        return out
    m = margin * (1.0 if n_images is None else n_images)
    p_lower = float(sps.t.sf((diff + m) / se, df))
    p_upper = float(sps.t.cdf((diff - m) / se, df))
    p = max(p_lower, p_upper)
    return dict(p_lower=p_lower, p_upper=p_upper, p=p, equivalent=bool(p < alpha))


def verdict(lo: float, hi: float, margin: float) -> str:
    """Read an interval for a difference against a practical margin.

    "differs": the interval excludes 0 (this wins even when it also lies inside the margin; the caller can
    say the difference is small). "equivalent": the interval lies inside (-margin, +margin), which for a
    (1 - 2 alpha) interval is the TOST at level alpha (a 95% interval: TOST at 2.5%). "inconclusive":
    otherwise, or when an end is nan.
    """
    if any(math.isnan(v) for v in (lo, hi, margin)):
        return "inconclusive"
    if lo > 0 or hi < 0:
        return "differs"
    if -margin < lo and hi < margin:
        return "equivalent"
    return "inconclusive"


def _welch_power(nc: float, df: float, alpha: float) -> float:
    crit = float(sps.t.ppf(1.0 - alpha / 2.0, df))
    lower = float(sps.nct.cdf(-crit, df, nc))  # the far lower tail: scipy returns nan where it is ~0
    return float(sps.nct.sf(crit, df, nc)) + (0.0 if math.isnan(lower) else lower)


def min_detectable_difference(sd_a: float, n_a: int, sd_b: float, n_b: int, alpha: float = 0.05,
                              power: float = 0.8) -> float:
    """Smallest true |mean(a) - mean(b)| a two-sided Welch test at level alpha detects with the given power.

    Power comes from the noncentral t with Welch-Satterthwaite df (sd taken as the true spread); nan when
    a sample has n < 2 or an sd is nan, 0.0 when both sd are 0 (any difference is then visible). Treating
    the df as known is exact for the pooled t test with equal n and sd, but optimistic for Welch's test at
    very few seeds, whose estimated df is often smaller: at 3 vs 3 seeds the Welch test really detects
    the returned difference about 70% of the time for power=0.8 (about 77% at 5 seeds, 80% at 10).
    """
    if n_a < 2 or n_b < 2 or math.isnan(sd_a) or math.isnan(sd_b) or not 0 < alpha < 1 or not 0 < power < 1:
        return NAN
    va, vb = sd_a * sd_a / n_a, sd_b * sd_b / n_b
    se2 = va + vb
    if se2 == 0.0 or power <= alpha:
        return 0.0
    df = se2 * se2 / (va * va / (n_a - 1) + vb * vb / (n_b - 1))
    hi = 1.0
    while _welch_power(hi, df, alpha) < power:
        hi *= 2.0
    nc = optimize.brentq(lambda c: _welch_power(c, df, alpha) - power, 0.0, hi, xtol=1e-10)
    return float(nc * math.sqrt(se2))


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


def bonferroni(pvalues: Iterable) -> list:
    """Bonferroni adjusted p-values min(1, m p), in input order; nan (or None) kept and not counted in m."""
    p = [NAN if v is None else float(v) for v in pvalues]
    m = sum(not math.isnan(v) for v in p)
    return [v if math.isnan(v) else min(1.0, m * v) for v in p]


def holm(pvalues: Iterable) -> list:
    """Holm-Bonferroni adjusted p-values, in input order: monotone in the raw p, capped at 1, nan kept as nan.

    The family is the non-nan p-values (a comparison that could not be tested does not count toward m).
    """
    p = [NAN if v is None else float(v) for v in pvalues]
    valid = sorted((v, i) for i, v in enumerate(p) if not math.isnan(v))
    m = len(valid)
    out = [NAN] * len(p)
    running = 0.0
    for rank, (v, i) in enumerate(valid):
        running = max(running, min(1.0, (m - rank) * v))
        out[i] = running
    return out


# ------------------------------------------------------------------------------------------ image level


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for one run's accuracy k/n (k correct of n images); nan for n = 0."""
    if n < 1:
        return NAN, NAN
    ci = sps.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar_exact(correct_a, correct_b) -> dict:
    """Exact McNemar test of two runs scored on the same images. Keys: a_only, b_only, p.

    a_only counts images only a gets right, b_only the reverse; p is the two-sided binomial test of
    a_only out of a_only + b_only at 1/2 (1.0 when the runs never disagree).
    """
    ca, cb = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if ca.shape != cb.shape:
        raise ValueError(f"runs scored on different images: shapes {ca.shape} and {cb.shape}")
    a_only, b_only = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
    p = 1.0 if a_only + b_only == 0 else float(sps.binomtest(a_only, a_only + b_only, 0.5).pvalue)
    return dict(a_only=a_only, b_only=b_only, p=p)


def two_level_bootstrap(correct: Mapping[str, np.ndarray], reference: str, confidence: float = 0.95,
                        n_boot: int = 2000, seed: int = 0, chunk: int = 250) -> dict:
    """Percentile bootstrap interval of mean accuracy(v) - mean accuracy(reference), for every v but reference.

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
