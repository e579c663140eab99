"""Small-sample statistics for multi-seed results: t intervals, Welch's test, Holm's correction.

Pure math/numpy on purpose: scipy is heavy and only a test dependency (the tests check these functions
against scipy.stats). The Student t CDF is computed through the regularized incomplete beta function
(continued fraction, as in Numerical Recipes), and its quantile by bisection on that CDF.

Degenerate inputs (fewer than two values, zero variance) give nan rather than an exception: a report
with one seed must still render, it just cannot claim an interval.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

NAN = float("nan")
_EPS = 1e-15
_TINY = 1e-300
_MAX_ITER = 20000  # the continued fraction needs O(sqrt(a)) terms; large Welch df need many


def _clean(values: Iterable) -> np.ndarray:
    """Finite floats only: a missing metric (None, nan) must not poison the mean of the others."""
    arr = np.array([NAN if v is None else float(v) for v in values], dtype=float)
    return arr[np.isfinite(arr)]


def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta (modified Lentz); converges fast for x < (a+1)/(a+b+2)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITER + 1):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + aa / c
            c = c if abs(c) > _TINY else _TINY
            delta = d * c
            h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def betainc(a: float, b: float, x: float, y: float | None = None) -> float:
    """Regularized incomplete beta I_x(a, b). Pass y = 1 - x when it is known more exactly than 1 - x."""
    y = 1.0 - x if y is None else y
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_cf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_cf(b, a, y) / b


def t_sf2(t: float, df: float) -> float:
    """Two-sided tail probability P(|T| >= |t|) for Student's t with df degrees of freedom."""
    if math.isnan(t) or math.isnan(df) or df <= 0:
        return NAN
    if math.isinf(t):
        return 0.0
    if math.isinf(df):
        return math.erfc(abs(t) / math.sqrt(2.0))
    t2 = t * t
    # x = df / (df + t^2) and 1 - x = t^2 / (df + t^2), both without cancellation
    return betainc(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2))


def t_cdf(t: float, df: float) -> float:
    p2 = t_sf2(t, df)
    if math.isnan(p2):
        return NAN
    return 1.0 - p2 / 2.0 if t > 0 else p2 / 2.0


def t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t: bisection on the CDF (monotone, so it cannot fail to converge)."""
    if math.isnan(q) or math.isnan(df) or df <= 0 or not 0.0 <= q <= 1.0:
        return NAN
    if q == 0.0 or q == 1.0:
        return math.copysign(math.inf, q - 0.5)
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    if q == 0.5:
        return 0.0
    tail = 2.0 * (1.0 - q)  # solve two-sided p(t) = tail: more precise than cdf(t) = q near q = 1
    lo, hi = 0.0, 1.0
    while t_sf2(hi, df) > tail:
        lo, hi = hi, hi * 2.0
        if hi > 1e300:
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if t_sf2(mid, df) > tail:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def mean_ci(values: Iterable, confidence: float = 0.95) -> dict:
    """Mean with its Student t interval. Keys: mean, lo, hi, sd (ddof=1), n. n < 2 gives lo = hi = sd = nan."""
    x = _clean(values)
    n = int(x.size)
    if n == 0:
        return dict(mean=NAN, lo=NAN, hi=NAN, sd=NAN, n=0)
    mean = float(x.mean())
    if n < 2:
        return dict(mean=mean, lo=NAN, hi=NAN, sd=NAN, n=n)
    sd = float(x.std(ddof=1))
    half = t_ppf(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return dict(mean=mean, lo=mean - half, hi=mean + half, sd=sd, n=n)


def welch(a: Iterable, b: Iterable, confidence: float = 0.95) -> dict:
    """Welch's unequal-variance t test of mean(a) - mean(b): diff, its t interval (lo, hi), two-sided p, df.

    diff is nan only when a sample is empty; lo, hi, p and df are nan when either sample has fewer than two
    values or both have zero variance (no estimate of the noise, so no interval).
    """
    x, y = _clean(a), _clean(b)
    diff = float(x.mean() - y.mean()) if x.size and y.size else NAN
    out = dict(diff=diff, lo=NAN, hi=NAN, p=NAN, df=NAN)
    if x.size < 2 or y.size < 2:
        return out
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se2 = float(vx + vy)
    if se2 <= 0.0:
        return out
    df = float(se2 * se2 / (vx * vx / (x.size - 1) + vy * vy / (y.size - 1)))
    se = math.sqrt(se2)
    half = t_ppf(0.5 + confidence / 2.0, df) * se
    out.update(lo=diff - half, hi=diff + half, p=t_sf2(diff / se, df), df=df)
    return out


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
