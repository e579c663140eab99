"""reglab.stats against scipy.stats (a test-only dependency), on known and random inputs."""

import math

import numpy as np
import pytest

from reglab import stats

scipy_stats = pytest.importorskip("scipy.stats")

TOL = 1e-6


def close(ours, ref, tol=TOL):
    """Absolute tolerance, relative for large magnitudes (quantiles of t with df=1 reach 1e6)."""
    return abs(ours - ref) <= tol * max(1.0, abs(ref))


@pytest.mark.parametrize("df", [1, 2, 3, 4.7, 9, 30, 120, 1e4])
@pytest.mark.parametrize("q", [1e-7, 0.01, 0.025, 0.3, 0.5, 0.6, 0.9, 0.975, 0.995, 1 - 1e-7])
def test_t_ppf_matches_scipy(df, q):
    assert close(stats.t_ppf(q, df), scipy_stats.t.ppf(q, df))


@pytest.mark.parametrize("df", [1, 2.5, 7, 50, 1e5])
@pytest.mark.parametrize("t", [-40.0, -2.0, -0.3, 0.0, 0.1, 1.0, 2.2, 6.0, 80.0])
def test_t_cdf_and_two_sided_tail_match_scipy(df, t):
    assert close(stats.t_cdf(t, df), scipy_stats.t.cdf(t, df))
    ref = 2 * scipy_stats.t.sf(abs(t), df)
    assert close(stats.t_sf2(t, df), ref)
    if ref > 1e-300:  # tiny p-values are accurate relatively too, not just absolutely
        assert stats.t_sf2(t, df) == pytest.approx(ref, rel=1e-8)


def test_t_edge_cases():
    assert stats.t_ppf(0.5, 3) == 0.0
    assert stats.t_ppf(1.0, 3) == math.inf and stats.t_ppf(0.0, 3) == -math.inf
    assert math.isnan(stats.t_ppf(0.9, 0)) and math.isnan(stats.t_ppf(1.5, 3))
    assert stats.t_sf2(math.inf, 4) == 0.0
    assert close(stats.t_sf2(1.96, math.inf), 2 * scipy_stats.norm.sf(1.96))


def scipy_mean_ci(x, confidence):
    x = np.asarray(x, float)
    lo, hi = scipy_stats.t.interval(confidence, x.size - 1, loc=x.mean(), scale=scipy_stats.sem(x))
    return x.mean(), lo, hi


def test_mean_ci_known_values():
    out = stats.mean_ci([0.8, 0.82, 0.79])
    mean, lo, hi = scipy_mean_ci([0.8, 0.82, 0.79], 0.95)
    assert out["n"] == 3
    assert close(out["mean"], mean) and close(out["lo"], lo) and close(out["hi"], hi)
    assert close(out["sd"], np.std([0.8, 0.82, 0.79], ddof=1))


def test_mean_ci_random_against_scipy():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 40))
        x = rng.normal(rng.normal(), rng.uniform(0.01, 3), n)
        conf = float(rng.choice([0.8, 0.9, 0.95, 0.99]))
        out = stats.mean_ci(x, conf)
        mean, lo, hi = scipy_mean_ci(x, conf)
        assert close(out["mean"], mean) and close(out["lo"], lo) and close(out["hi"], hi)


def test_mean_ci_degenerate():
    one = stats.mean_ci([0.7])
    assert one["mean"] == 0.7 and one["n"] == 1
    assert all(math.isnan(one[k]) for k in ("lo", "hi", "sd"))
    empty = stats.mean_ci([])
    assert empty["n"] == 0 and math.isnan(empty["mean"])
    same = stats.mean_ci([0.5, 0.5, 0.5])  # zero spread: a zero-width interval, not a crash
    assert same["lo"] == same["hi"] == 0.5
    assert stats.mean_ci([0.5, None, float("nan"), 0.7])["n"] == 2  # missing values are skipped


def check_welch(a, b, conf=0.95):
    out = stats.welch(a, b, conf)
    ref = scipy_stats.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(conf)
    assert close(out["diff"], np.mean(a) - np.mean(b))
    assert close(out["p"], ref.pvalue)
    assert close(out["df"], ref.df)
    assert close(out["lo"], ci.low) and close(out["hi"], ci.high)


@pytest.mark.filterwarnings("ignore:Precision loss occurred")  # scipy warns on the zero-spread sample
def test_welch_known_values():
    check_welch([0.8, 0.82, 0.79], [0.7, 0.69, 0.72, 0.71])
    check_welch([1.0, 2.0, 3.0], [1.0, 2.0, 5.0])
    check_welch([0.5, 0.5, 0.5], [0.4, 0.45])  # one sample without spread still has a df


def test_welch_random_against_scipy():
    rng = np.random.default_rng(1)
    for _ in range(200):
        a = rng.normal(rng.normal(), rng.uniform(0.01, 2), int(rng.integers(2, 20)))
        b = rng.normal(rng.normal(), rng.uniform(0.01, 2), int(rng.integers(2, 20)))
        check_welch(a, b, float(rng.choice([0.9, 0.95, 0.99])))


def test_welch_degenerate_gives_nan_not_exception():
    for a, b in ([[1.0], [2.0, 3.0]], [[1.0, 1.0], [2.0, 2.0]], [[], [1.0, 2.0]]):
        out = stats.welch(a, b)
        assert all(math.isnan(out[k]) for k in ("lo", "hi", "p", "df"))
    assert stats.welch([1.0], [2.0, 3.0])["diff"] == -1.5
    assert stats.welch([1.0, 1.0], [2.0, 2.0])["diff"] == -1.0


def reference_holm(p):
    """Holm's step-down procedure, written from its definition."""
    m = len(p)
    order = np.argsort(p)
    adj = np.empty(m)
    for k, i in enumerate(order):
        adj[i] = min(1.0, max((m - j) * p[order[j]] for j in range(k + 1)))
    return adj


def test_holm_known_values():
    assert stats.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([]) == []


def test_holm_random_and_monotone():
    rng = np.random.default_rng(2)
    for _ in range(100):
        p = rng.uniform(0, 0.2, int(rng.integers(1, 12)))
        adj = np.array(stats.holm(p))
        assert np.allclose(adj, reference_holm(p), atol=1e-12)
        order = np.argsort(p)
        assert np.all(np.diff(adj[order]) >= 0) and np.all(adj <= 1) and np.all(adj >= p)


def test_holm_passes_nan_through():
    adj = stats.holm([0.01, float("nan"), 0.04, None])
    assert math.isnan(adj[1]) and math.isnan(adj[3])
    assert adj[0] == pytest.approx(0.02) and adj[2] == pytest.approx(0.04)  # m = 2 tested comparisons
